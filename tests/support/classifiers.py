"""Failure classifiers for ``MAILER_FAILURE_CLASSIFIER`` (by dotted path: ``HERE + ".greylist_is_permanent"``)."""

import smtplib

HERE = __name__  # "tests.support.classifiers"


def value_errors_are_transient(exc: BaseException) -> str | None:
    """A project whose backend raises ``ValueError`` for a busy API: worth another attempt."""
    if isinstance(exc, ValueError):
        return "transient"
    return None


def greylist_is_permanent(exc: BaseException) -> str | None:
    """A project that gives up at the first 4xx reply (and leaves everything else to the built-in rules)."""
    if isinstance(exc, smtplib.SMTPResponseException) and 400 <= exc.smtp_code < 500:
        return "permanent"
    return None


def says_nonsense(exc: BaseException) -> str:
    """Not "transient", "permanent" nor None: ignored, the built-in rules decide."""
    return "maybe"


def broken(exc: BaseException) -> str | None:
    """A project's classifier with a bug: the engine must still record the batch."""
    raise RuntimeError("the classifier is broken")
