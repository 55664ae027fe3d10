"""System checks of the automatic retry settings (issue 14): mailer.E007 to mailer.E011.

Each bad value is an error that names the setting and the value, with a hint; the defaults and sensible
values pass. ``manage.py check`` reports them (and so does every command that runs the checks).
"""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from mailer.checks import LONGEST_RETRY_DELAY, check_retries


def always_transient(exc):
    """A classifier for MAILER_FAILURE_CLASSIFIER to name."""
    return "transient"


NOT_A_FUNCTION = {"transient": True}


def found():
    return [(message.id, message.msg) for message in check_retries()]


def test_the_defaults_pass():
    assert check_retries() == []


# --- MAILER_RETRY_DELAY and MAILER_RETRY_MAX_DELAY: mailer.E007, mailer.E008 ------------------------------------

BAD_DELAYS = [-1, -0.5, True, False, None, "60", float("nan"), float("inf"), LONGEST_RETRY_DELAY + 1, [60]]


@pytest.mark.parametrize("name", ["MAILER_RETRY_DELAY", "MAILER_RETRY_MAX_DELAY"])
@pytest.mark.parametrize("value", BAD_DELAYS, ids=repr)
def test_a_delay_that_is_not_a_number_of_seconds_is_an_error(settings, name, value):
    setattr(settings, name, value)
    [error] = check_retries()
    assert error.id == "mailer.E007"
    assert error.msg.startswith(f"{name} is {value!r};")
    assert "number of seconds" in error.msg and "default" in error.hint


@pytest.mark.parametrize("delay, max_delay", [(0, 0), (0, 60), (0.5, 1.5), (60, 60), (60, 21600), (1, 86400.0)])
def test_sensible_delays_pass(settings, delay, max_delay):
    settings.MAILER_RETRY_DELAY = delay
    settings.MAILER_RETRY_MAX_DELAY = max_delay
    assert check_retries() == []


def test_the_first_delay_greater_than_the_cap_is_an_error(settings):
    settings.MAILER_RETRY_DELAY = 600
    settings.MAILER_RETRY_MAX_DELAY = 59.5
    [(check_id, msg)] = found()
    assert check_id == "mailer.E008"
    assert msg == "MAILER_RETRY_DELAY (600) is greater than MAILER_RETRY_MAX_DELAY (59.5)."


def test_both_delays_bad_gives_two_errors_and_no_comparison(settings):
    settings.MAILER_RETRY_DELAY = "1 minute"
    settings.MAILER_RETRY_MAX_DELAY = -5
    assert [check_id for check_id, _ in found()] == ["mailer.E007", "mailer.E007"]


# --- MAILER_RETRY_MAX_ATTEMPTS: mailer.E009 ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, None, True, 1.0, 2.5, "15"], ids=repr)
def test_max_attempts_must_be_a_positive_whole_number(settings, value):
    settings.MAILER_RETRY_MAX_ATTEMPTS = value
    [error] = check_retries()
    assert error.id == "mailer.E009"
    assert error.msg.startswith(f"MAILER_RETRY_MAX_ATTEMPTS is {value!r};")
    assert "no 'unlimited'" in error.hint


@pytest.mark.parametrize("value", [1, 2, 15, 1000])
def test_max_attempts_that_pass(settings, value):
    settings.MAILER_RETRY_MAX_ATTEMPTS = value
    assert check_retries() == []


# --- MAILER_FAILURE_CLASSIFIER: mailer.E010 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, problem",
    [
        ("tests.no_such_module.classify", "cannot be imported: No module named 'tests.no_such_module'"),
        ("tests.test_retry_checks.no_such_function", "cannot be imported"),
        ("classify", "cannot be imported: classify doesn't look like a module path"),
        ("tests.test_retry_checks.NOT_A_FUNCTION", "that is a dict, not a function"),
        (42, "it must be the dotted path of a function, or None"),
        (b"tests.test_retry_checks.always_transient", "it must be the dotted path of a function, or None"),
    ],
    ids=["no-module", "no-attribute", "not-a-path", "not-callable", "a-number", "bytes"],
)
def test_a_classifier_that_cannot_be_used_is_an_error(settings, value, problem):
    settings.MAILER_FAILURE_CLASSIFIER = value
    [error] = check_retries()
    assert error.id == "mailer.E010"
    assert error.msg.startswith(f"MAILER_FAILURE_CLASSIFIER is {value!r}; ")
    assert problem in error.msg
    assert "'transient', 'permanent' or None" in error.hint


@pytest.mark.parametrize("value", ["tests.test_retry_checks.always_transient", always_transient, None])
def test_a_classifier_that_imports_or_the_function_itself_passes(settings, value):
    settings.MAILER_FAILURE_CLASSIFIER = value
    assert check_retries() == []


# --- MAILER_DEFER_PERMANENT_FAILURES, MAILER_DONT_SEND_UNKNOWN_RECIPIENTS, MAILER_DROP_UNPICKLABLE_ATTRIBUTES: E011 --

SWITCHES = {
    "MAILER_DEFER_PERMANENT_FAILURES": False,
    "MAILER_DONT_SEND_UNKNOWN_RECIPIENTS": False,
    "MAILER_DROP_UNPICKLABLE_ATTRIBUTES": True,
}


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", ["False", "", 0, 1, None], ids=repr)
def test_the_switches_must_be_booleans(settings, name, value):
    setattr(settings, name, value)
    [error] = check_retries()
    assert error.id == "mailer.E011"
    assert error.msg == f"{name} is {value!r}; it must be True or False."
    assert "environment" in error.hint and f"The default is {SWITCHES[name]}." in error.hint


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", [True, False])
def test_the_switches_pass_as_booleans(settings, name, value):
    setattr(settings, name, value)
    assert check_retries() == []


# --- Through manage.py check ------------------------------------------------------------------------------------


def test_manage_py_check_reports_them_all_and_fails(settings):
    settings.MAILER_RETRY_DELAY = -1
    settings.MAILER_RETRY_MAX_ATTEMPTS = 0
    settings.MAILER_FAILURE_CLASSIFIER = "no.such.path"
    settings.MAILER_DONT_SEND_UNKNOWN_RECIPIENTS = "yes"
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    report = str(raised.value)
    for check_id in ("mailer.E007", "mailer.E009", "mailer.E010", "mailer.E011"):
        assert check_id in report
    assert "MAILER_RETRY_DELAY is -1" in report and "MAILER_DONT_SEND_UNKNOWN_RECIPIENTS is 'yes'" in report
