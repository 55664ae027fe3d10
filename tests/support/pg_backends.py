"""Email backends for the ``runmailer_pg`` tests, imported by the child process from the repository.

:class:`PickyBackend` is Django's SMTP backend, except for two subjects: ``"poison"`` raises a
``ValueError`` (an unexpected error, which the default ``MAILER_ERROR_HANDLER`` re-raises), and
``"fatal"`` raises :class:`Fatal`, a ``BaseException`` that nothing in the engine may swallow.
:class:`MisconfiguredBackend` cannot even be opened: it raises ``ImproperlyConfigured``, as a backend
missing its credentials would (the system checks only see that it can be imported).
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.smtp import EmailBackend


class Fatal(BaseException):
    """Stands for what must end the process: not an ``Exception``, so no ``except Exception`` catches it."""


class PickyBackend(EmailBackend):
    def send_messages(self, email_messages):
        for message in email_messages:
            if message.subject == "poison":
                raise ValueError("this message is poison")
            if message.subject == "fatal":
                raise Fatal("the backend gave up for good")
        return super().send_messages(email_messages)


class MisconfiguredBackend(EmailBackend):
    def __init__(self, *args, **kwargs):
        raise ImproperlyConfigured("no relay configured")
