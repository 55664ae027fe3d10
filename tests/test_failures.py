"""``mailer.failures``: what a failed delivery means (transient, permanent, unknown), and the backoff.

The exceptions are the real ones: smtplib's, the OS's, and django-anymail's (installed in the test venv).
What the engine does with each kind is in test_retry_policy.py.
"""

import datetime
import random
import smtplib
import statistics

import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailInvalidAddress, AnymailRecipientsRefused
from django.utils import timezone

from mailer import failures
from mailer.failures import PERMANENT, TRANSIENT, classify, from_reply
from tests.support.classifiers import HERE as CLASSIFIERS

T, P = TRANSIENT, PERMANENT

# (exception, kind, code, enhanced status); the reason is checked separately.
TABLE = [
    pytest.param(smtplib.SMTPDataError(451, b"4.3.0 try again later"), T, 451, "4.3.0", id="data-451"),
    pytest.param(smtplib.SMTPDataError(452, b"4.3.1 insufficient storage"), T, 452, "4.3.1", id="data-452"),
    pytest.param(smtplib.SMTPDataError(554, b"5.6.0 rejected"), P, 554, "5.6.0", id="data-554"),
    pytest.param(smtplib.SMTPDataError(552, b"5.3.4 message too large"), P, 552, "5.3.4", id="data-552"),
    pytest.param(smtplib.SMTPSenderRefused(451, b"4.7.1 later", "f@example.com"), T, 451, "4.7.1", id="sender-451"),
    pytest.param(
        smtplib.SMTPSenderRefused(553, b"5.7.1 not allowed", "f@example.com"), P, 553, "5.7.1", id="sender-553"
    ),
    pytest.param(smtplib.SMTPResponseException(421, b"4.4.2 service not available"), T, 421, "4.4.2", id="resp-421"),
    pytest.param(smtplib.SMTPResponseException(550, b"rejected"), P, 550, None, id="resp-550-no-enhanced"),
    pytest.param(smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), T, 535, "5.7.8", id="auth-535"),
    pytest.param(smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), T, None, None, id="disconnected"),
    pytest.param(ConnectionRefusedError(111, "Connection refused"), T, None, None, id="conn-refused"),
    pytest.param(TimeoutError("timed out"), T, None, None, id="timeout"),
    pytest.param(OSError("network is unreachable"), T, None, None, id="oserror"),
]


@pytest.mark.parametrize(("exc", "kind", "code", "enhanced"), TABLE)
def test_classification_table(exc, kind, code, enhanced):
    failure = classify(exc)
    assert (failure.kind, failure.code, failure.enhanced) == (kind, code, enhanced)
    assert failure.transient == (kind == T) and failure.permanent == (kind == P)


def test_an_smtp_reply_is_its_code_and_text_on_one_line():
    failure = classify(smtplib.SMTPDataError(554, b"5.6.0 rejected\nby   policy"))
    assert failure.reason == "554 5.6.0 rejected by policy"


def test_a_connection_failure_names_the_exception():
    assert classify(ConnectionRefusedError(111, "Connection refused")).reason == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert classify(TimeoutError()).reason == "TimeoutError"


@pytest.mark.parametrize(
    ("recipients", "kind", "code"),
    [
        pytest.param({"a@x.org": (550, b"5.1.1 no such user"), "b@x.org": (553, b"5.1.3 bad")}, P, 550, id="all-5xx"),
        pytest.param({"a@x.org": (550, b"5.1.1 no such user"), "b@x.org": (451, b"4.3.0 later")}, T, 451, id="mixed"),
        pytest.param({"a@x.org": (450, b"4.2.1 busy"), "b@x.org": (451, b"4.3.0 later")}, T, 450, id="all-4xx"),
    ],
)
def test_recipients_refused_is_transient_if_any_recipient_may_take_it_later(recipients, kind, code):
    failure = classify(smtplib.SMTPRecipientsRefused(recipients))
    assert (failure.kind, failure.code) == (kind, code)
    for address, (reply_code, reply) in recipients.items():  # every recipient's reply is kept
        assert f"{address}: {reply_code} {reply.decode()}" in failure.reason


@pytest.mark.parametrize(
    ("code", "reply", "unknown"),
    [
        (550, "5.1.1 <bob@example.com>: Recipient address rejected: User unknown", True),
        (556, "5.1.10 recipient address has null MX", True),
        (550, "5.2.1 mailbox disabled, not accepting messages", True),
        (550, "5.7.1 rejected by policy", False),
        (550, "5.1.2 bad destination system address", False),
        (450, "4.1.1 mailbox temporarily unavailable", False),  # the right status, but not permanent
        (550, "no such user here", False),  # no enhanced status at all
    ],
)
def test_user_unknown_needs_a_permanent_reply_with_5_1_1_5_1_10_or_5_2_1(code, reply, unknown):
    failure = classify(smtplib.SMTPRecipientsRefused({"bob@example.com": (code, reply.encode())}))
    assert failure.user_unknown is unknown


def test_enhanced_status_is_read_from_the_reply_not_from_an_address_or_a_number_in_it():
    failure = from_reply(550, "5.1.1 <user.5.1.2@example.com> unknown; see http://10.2.3.4/")
    assert failure.enhanced == "5.1.1"
    assert from_reply(550, "rejected, ref 25.1.10").enhanced is None


@pytest.mark.parametrize(
    ("code", "reply", "throttled"),
    [
        (454, "4.7.0 Throttling failure: Maximum sending rate exceeded.", True),  # Amazon SES
        (454, "4.7.0 TLS not available due to local problem", True),  # 454 itself asks to slow down
        (451, "4.7.1 rate limit exceeded, slow down", True),
        (421, "4.7.0 Too many connections from your IP", True),
        (450, "4.2.1 too many messages, try again later", True),
        (451, "4.3.0 try again later", False),
        (421, "4.4.2 service not available", False),
        (550, "5.7.1 throttled for ever", False),  # permanent: throttled only describes transient refusals
    ],
)
def test_throttled_for_454_and_throttling_texts(code, reply, throttled):
    failure = classify(smtplib.SMTPDataError(code, reply.encode()))
    assert failure.throttled is throttled


def test_a_reply_without_an_error_code_is_not_known():
    assert from_reply(250, "2.0.0 OK").kind is None
    assert from_reply(None, "connection dropped").kind == T


# --- django-anymail's real exceptions ------------------------------------------------------------


def api_error(status: int, text: str) -> AnymailAPIError:
    """An ``AnymailAPIError`` as anymail's backends raise it: with the ESP's HTTP response."""
    response = requests.Response()
    response.status_code = status
    response.reason = text
    response._content = b'{"message": "%s"}' % text.encode()
    return AnymailAPIError(f"ESP API response {status}", status_code=status, response=response)


@pytest.mark.parametrize(
    ("exc", "kind", "code", "throttled"),
    [
        pytest.param(AnymailRecipientsRefused("All recipients refused"), P, None, False, id="recipients-refused"),
        pytest.param(AnymailInvalidAddress("Invalid 'to' address 'not an address'"), P, None, False, id="invalid"),
        pytest.param(api_error(429, "Too Many Requests"), T, 429, True, id="api-429"),
        pytest.param(api_error(500, "Internal Server Error"), T, 500, False, id="api-500"),
        pytest.param(api_error(503, "Service Unavailable"), T, 503, False, id="api-503"),
        pytest.param(api_error(400, "Bad Request"), P, 400, False, id="api-400"),
        pytest.param(AnymailAPIError("no response"), T, None, False, id="api-no-status"),
    ],
)
def test_anymail_exceptions(exc, kind, code, throttled):
    failure = classify(exc)
    assert (failure.kind, failure.code, failure.throttled) == (kind, code, throttled)
    assert failure.reason.startswith(type(exc).__name__)


def test_an_exception_whose_str_fails_is_still_classified():
    """anymail's ``__str__`` fails for an API error with a status but no response: the reason falls back to args."""
    exc = AnymailAPIError("server error", status_code=500)
    with pytest.raises(AttributeError):
        str(exc)
    failure = classify(exc)
    assert (failure.kind, failure.code) == (T, 500)
    assert failure.reason == "AnymailAPIError: ('server error',)"


@pytest.mark.parametrize("exc", [ValueError("bad value"), KeyError("x"), RuntimeError("other"), ImportError("y")])
def test_an_unknown_exception_stays_unknown(exc):
    failure = classify(exc)
    assert failure.kind is None
    assert not failure.transient and not failure.permanent and not failure.user_unknown
    assert failure.reason.startswith(type(exc).__name__)


# --- MAILER_FAILURE_CLASSIFIER -------------------------------------------------------------------


def test_a_project_classifier_decides_first(settings):
    settings.MAILER_FAILURE_CLASSIFIER = f"{CLASSIFIERS}.value_errors_are_transient"
    assert classify(ValueError("busy")).kind == T
    # None from the project's classifier: the built-in rules decide.
    assert classify(smtplib.SMTPDataError(554, b"5.6.0 rejected")).kind == P
    assert classify(KeyError("x")).kind is None


def test_a_project_classifier_can_make_a_transient_reply_permanent_and_keeps_the_details(settings):
    settings.MAILER_FAILURE_CLASSIFIER = f"{CLASSIFIERS}.greylist_is_permanent"
    failure = classify(smtplib.SMTPDataError(454, b"4.7.0 Throttling failure"))
    assert (failure.kind, failure.code, failure.enhanced, failure.throttled) == (P, 454, "4.7.0", True)
    assert failure.reason == "454 4.7.0 Throttling failure"
    assert classify(ConnectionRefusedError(111, "refused")).kind == T  # not an SMTP reply: built-in rule


def test_a_project_classifier_answering_something_else_is_ignored(settings):
    settings.MAILER_FAILURE_CLASSIFIER = f"{CLASSIFIERS}.says_nonsense"
    assert classify(smtplib.SMTPDataError(554, b"rejected")).kind == P
    assert classify(ValueError("x")).kind is None


def test_without_a_project_classifier_the_built_in_rules_apply(settings):
    settings.MAILER_FAILURE_CLASSIFIER = None
    assert classify(ValueError("busy")).kind is None


# --- Backoff ---------------------------------------------------------------------------------------


@pytest.fixture
def delays(settings):
    settings.MAILER_RETRY_DELAY = 60
    settings.MAILER_RETRY_MAX_DELAY = 21600
    return settings


def test_the_cap_doubles_from_retry_delay_up_to_retry_max_delay(delays):
    caps = [failures.retry_cap(n) for n in range(1, 12)]
    assert caps == [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600]
    assert failures.retry_cap(0) == 60  # no failed attempt yet: the first delay, not half of it


def test_the_cap_follows_the_settings_at_call_time(settings):
    settings.MAILER_RETRY_DELAY = 0.5
    settings.MAILER_RETRY_MAX_DELAY = 3
    assert [failures.retry_cap(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("attempts", [64, 65, 1000, 10_000, 10**9])
def test_no_overflow_after_very_many_attempts(delays, attempts):
    assert failures.retry_cap(attempts) == 21600
    assert 0 <= failures.retry_delay(attempts) <= 21600


def test_no_overflow_with_a_float_delay(settings):
    settings.MAILER_RETRY_DELAY = 0.1
    settings.MAILER_RETRY_MAX_DELAY = 1e300
    assert failures.retry_cap(10_000) == 1e300


DRAWS = 20_000


@pytest.mark.parametrize("attempts", [1, 2, 5, 9, 10, 40])
def test_full_jitter_draws_are_uniform_between_0_and_the_cap(delays, attempts):
    rng = random.Random(1400 + attempts)
    cap = failures.retry_cap(attempts)
    draws = [failures.retry_delay(attempts, rng) for _ in range(DRAWS)]
    assert all(0 <= d <= cap for d in draws)
    # Uniform on [0, cap]: mean cap/2 (standard error cap/sqrt(12 * DRAWS), about 0.002 cap).
    assert abs(statistics.fmean(draws) - cap / 2) < 0.01 * cap
    assert abs(statistics.pstdev(draws) - cap / 12**0.5) < 0.01 * cap
    # Each tenth of the range gets about a tenth of the draws (2,000 each; a standard deviation is about 42).
    deciles = [0] * 10
    for d in draws:
        deciles[min(9, int(d / cap * 10))] += 1
    assert all(abs(count - DRAWS / 10) < 200 for count in deciles), deciles
    # Full jitter, not "cap/2 plus jitter": some waits are very short, some close to the cap.
    assert min(draws) < 0.001 * cap and max(draws) > 0.999 * cap


def test_retry_delay_without_a_generator_uses_the_random_module(delays, monkeypatch):
    monkeypatch.setattr(failures, "random", random)  # undo conftest's seeded generator
    state = random.getstate()
    try:
        random.seed(7)
        first = [failures.retry_delay(3) for _ in range(5)]
        random.seed(7)
        assert [failures.retry_delay(3) for _ in range(5)] == first
    finally:
        random.setstate(state)  # other tests (free ports...) draw from it too
    assert len(set(first)) == 5 and all(0 <= d <= 240 for d in first)


def test_next_attempt_is_within_the_cap_from_now(delays):
    for attempts in (1, 4):
        before = timezone.now()
        when = failures.next_attempt(attempts)
        after = timezone.now()
        assert before <= when <= after + datetime.timedelta(seconds=failures.retry_cap(attempts))
        assert timezone.is_aware(when)


def test_attempts_left_counts_every_attempt(settings):
    settings.MAILER_RETRY_MAX_ATTEMPTS = 3
    assert [failures.attempts_left(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    settings.MAILER_RETRY_MAX_ATTEMPTS = 1  # no automatic retry
    assert not failures.attempts_left(1)
