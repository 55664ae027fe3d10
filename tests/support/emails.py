"""``make_email()``: an ``EmailMessage`` with plain defaults, for tests that store or compare one."""

from django.core.mail import EmailMessage


def make_email(subject: str = "Hello", to: list[str] | tuple[str, ...] = ("to@example.org",), **kwargs) -> EmailMessage:
    """``EmailMessage(subject, body="Body", from_email="from@example.org", to)``; other keywords pass through."""
    return EmailMessage(
        subject, kwargs.pop("body", "Body"), kwargs.pop("from_email", "from@example.org"), list(to), **kwargs
    )
