"""A database router that keeps django-mailer's tables in a database of their own ("mail"), for test_routing."""


class MailRouter:
    def db_for_read(self, model, **hints):
        return "mail" if model._meta.app_label == "mailer" else None

    def db_for_write(self, model, **hints):
        return "mail" if model._meta.app_label == "mailer" else None

    def allow_migrate(self, db, app_label, **hints):
        if app_label == "mailer":
            return db == "mail"
        return db == "default"


class HeartbeatsElsewhere:
    """The senders' heartbeats in a database of their own ("beats"), for a heartbeat that cannot be written."""

    def db_for_read(self, model, **hints):
        return "beats" if model._meta.model_name == "senderheartbeat" else None

    def db_for_write(self, model, **hints):
        return "beats" if model._meta.model_name == "senderheartbeat" else None

    def allow_migrate(self, db, app_label, **hints):
        return False if db == "beats" else None  # never opened by migrate or the system checks
