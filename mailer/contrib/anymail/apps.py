from importlib.util import find_spec

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AnymailTrackingConfig(AppConfig):
    """Listens to django-anymail's ``tracking`` signal, when django-anymail is installed (its check says if not)."""

    name = "mailer.contrib.anymail"
    label = "mailer_anymail"
    verbose_name = _("Mailer: ESP events")

    def ready(self) -> None:
        from mailer.contrib.anymail import checks  # noqa: F401  (registers the system check)

        if find_spec("anymail") is not None:
            from mailer.contrib.anymail import receivers

            receivers.connect()
