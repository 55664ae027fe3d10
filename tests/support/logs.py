"""Reading what the ``caplog`` fixture captured."""

import pytest


def mailer_lines(caplog: pytest.LogCaptureFixture, prefix: str = "mailer") -> list[str]:
    """The messages logged by the loggers whose names start with ``prefix`` (default: all of ours), in order."""
    return [r.getMessage() for r in caplog.records if r.name.startswith(prefix)]
