"""Issue 14's "what it must show": transient refusals retried by the senders themselves with backoff, permanent
ones never retried, one Message-ID across attempts.

Real processes (``runmailer``, ``send_mail``, ``retry_deferred`` children of ``tests.project``) against a
fresh database of the vendor under test and a real SMTP relay on loopback (:class:`FlakyRelay`) scripted to
refuse. Retry settings are small (tens of milliseconds to seconds) so that the backoff plays out in the test.
The first tests check the relay itself, with :mod:`smtplib` as the client.
"""

from __future__ import annotations

import datetime
import json
import re
import smtplib
import time
from collections import Counter
from contextlib import contextmanager

import pytest

from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.project_db import relay_project as project
from tests.support.project_db import run_in_project, send_mail_in_project, table_counts
from tests.support.relays import DROP, GREYLISTED, NO_SUCH_USER, THROTTLED, UNAVAILABLE, FlakyRelay
from tests.support.senders import SenderProcess

# Retries in milliseconds: attempt n + 1 comes at most min(0.5, 0.05 * 2 ** (n - 1)) s after attempt n fails.
FAST_RETRIES = {"MAILER_RETRY_DELAY": 0.05, "MAILER_RETRY_MAX_DELAY": 0.5, "MAILER_RETRY_MAX_ATTEMPTS": 50}
# How late a retry may reach the relay after its time: starting the pass, and two CPUs shared with the
# database server and other test runs.
LATENESS = 0.6

DATA = b"Message-ID: <one@example.com>\r\nSubject: s\r\n\r\nbody\r\n"


# --- The relay ------------------------------------------------------------------------------------------


def deliver(relay: FlakyRelay, to: str, data: bytes = DATA) -> object:
    """One message over a new connection: smtplib's refused-recipients dict, or the exception it raised."""
    client = smtplib.SMTP(relay.host, relay.port, timeout=10)
    try:
        return client.sendmail("from@example.com", [to], data)
    except smtplib.SMTPException as exc:
        return exc
    finally:
        try:
            client.quit()
        except smtplib.SMTPException:
            pass  # the relay closed the connection (421, or a drop)


def test_the_relay_plays_a_script_per_recipient_and_records_every_attempt():
    script = {"grey@example.com": [GREYLISTED, GREYLISTED], "odd@example.com": [("DATA", UNAVAILABLE), DROP, None]}
    with FlakyRelay(script=script, refuse={"nobody@example.com": NO_SUCH_USER}) as relay:
        outcomes = [deliver(relay, to) for to in ["grey@example.com"] * 3 + ["nobody@example.com"]]
        outcomes += [deliver(relay, "odd@example.com") for _ in range(4)]

    assert [type(o).__name__ for o in outcomes] == [
        "SMTPRecipientsRefused", "SMTPRecipientsRefused", "dict", "SMTPRecipientsRefused",
        "SMTPDataError", "SMTPServerDisconnected", "dict", "dict",
    ]  # fmt: skip
    assert outcomes[4].smtp_code == 421
    grey = relay.attempts_to("grey@example.com")
    assert [(a.stage, a.reply, a.accepted) for a in grey] == [
        ("RCPT", GREYLISTED, False), ("RCPT", GREYLISTED, False), ("DATA", grey[2].reply, True),
    ]  # fmt: skip
    assert grey[0].refused == {"grey@example.com": GREYLISTED} and grey[0].message_id is None
    assert grey[2].message_id == "<one@example.com>" and grey[0].at < grey[1].at < grey[2].at
    [nobody] = relay.attempts_to("nobody@example.com")
    assert (nobody.stage, nobody.reply) == ("RCPT", NO_SUCH_USER)
    odd = relay.attempts_to("odd@example.com")
    assert [(a.stage, a.reply, a.dropped, a.message_id) for a in odd[:2]] == [
        ("DATA", UNAVAILABLE, False, "<one@example.com>"), ("RCPT", None, True, None),
    ]  # fmt: skip
    assert [a.accepted for a in odd] == [False, False, True, True]
    assert relay.received() == ["grey@example.com", "odd@example.com", "odd@example.com"]
    assert relay.connections == 8


def test_the_relay_throttles_the_first_data_commands():
    with FlakyRelay(fail_data_first=(2, THROTTLED)) as relay:
        outcomes = [deliver(relay, "to@example.com") for _ in range(3)]
    assert [getattr(o, "smtp_code", None) for o in outcomes] == [454, 454, None]
    assert [a.reply for a in relay.snapshot()][:2] == [THROTTLED, THROTTLED]
    assert relay.data_commands == 3 and relay.received() == ["to@example.com"]


def test_the_relay_refuses_and_drops_at_random_reproducibly():
    """One connection for as long as it lasts, as a sender keeps it: the fates are those the seed draws."""

    def run() -> tuple[Counter, list]:
        outcomes: Counter = Counter()
        with FlakyRelay(refuse_rate=0.3, drop_rate=0.05, seed=7) as relay:
            client = smtplib.SMTP(relay.host, relay.port, timeout=10)
            for n in range(400):
                try:
                    client.sendmail("from@example.com", [f"r{n}@example.com"], DATA)
                    outcomes["accepted"] += 1
                except smtplib.SMTPServerDisconnected:
                    outcomes["dropped"] += 1
                    client = smtplib.SMTP(relay.host, relay.port, timeout=10)
                except smtplib.SMTPResponseException as exc:
                    outcomes[exc.smtp_code] += 1
                except smtplib.SMTPRecipientsRefused as exc:
                    [(code, _)] = exc.recipients.values()
                    outcomes[code] += 1
                if client.sock is None:  # smtplib closes the connection itself on a 421
                    client = smtplib.SMTP(relay.host, relay.port, timeout=10)
            client.quit()
            return outcomes, [(a.stage, a.reply, a.accepted) for a in relay.snapshot()]

    outcomes, attempts = run()
    assert run() == (outcomes, attempts)
    assert len(attempts) == 400 and sum(outcomes.values()) == 400
    assert 0.55 < outcomes["accepted"] / 400 < 0.75, outcomes
    assert outcomes[451] > 30 and outcomes[421] > 30 and outcomes["dropped"] > 5, outcomes
    assert {stage for stage, reply, _ in attempts if reply is None} == {"MAIL", "RCPT", "DATA"}


# --- Scenarios with real senders ------------------------------------------------------------------------


@contextmanager
def runmailer(env: dict, tmp_path, settings: dict, command: str = "runmailer"):
    """``runmailer`` (or ``command``) running for the block, then stopped with SIGTERM; its log printed."""
    child = SenderProcess(command, env, tmp_path / f"{command}.log", settings=settings)
    try:
        yield child
        assert child.stop() == 0, child.log()
    finally:
        child.kill()
        print(f"--- {command} ---\n{child.log()[-20000:]}")


def send_mail(env: dict, settings: dict) -> None:
    done = manage("send_mail", env={**env, "MAILER_TEST_SETTINGS": json.dumps(settings)})
    assert done.returncode == 0, done.stderr


QUEUE = """
import mailer
for to in {addresses!r}:
    mailer.send_mail(f"to {{to}}", "body", "from@example.com", [to])
"""


QUEUE_ONE = """
import mailer
mailer.send_mail("to many", "body", "from@example.com", {to!r})
"""


def queue_to(env: dict, *addresses: str) -> None:
    """One message to each address, queued in a child process through ``mailer.send_mail()``."""
    run_in_project(env, QUEUE.format(addresses=list(addresses)))


LOGS = """
import datetime
import json
import re
from mailer.models import MessageLog
print(json.dumps([
    {"result": log.result, "to": log.email.to if log.email else None, "text": log.log_message,
     "message_id": log.message_id}
    for log in MessageLog.objects.order_by("id")
]))
"""

QUEUED = """
import datetime
import json
import re
from mailer.models import Message
print(json.dumps([
    {"to": m.email.to, "priority": m.priority, "attempts": m.attempts, "last_error": m.last_error,
     "not_before": m.not_before.timestamp() if m.not_before else None}
    for m in Message.objects.order_by("id")
]))
"""

POSTPONE = """
import datetime
from django.utils import timezone
from mailer.models import Message
Message.objects.update(not_before=timezone.now() + datetime.timedelta(seconds={seconds}))
"""


def last_json(output: str):
    return json.loads(output.strip().splitlines()[-1])


def logs(env: dict) -> list[dict]:
    """Every MessageLog row, oldest first: result ("1" success, "3" failure), recipients, text, Message-ID."""
    return last_json(run_in_project(env, LOGS))


def queued(env: dict) -> list[dict]:
    """Every queued message: recipients, priority, attempts, last_error, not_before (a time.time() value)."""
    return last_json(run_in_project(env, QUEUED))


def retry_time(text: str) -> float:
    """The ``time.time()`` of the "trying again at <ISO time>" a transient failure's log entry ends with."""
    match = re.search(r"trying again at (\S+)\]", text)
    assert match, text
    return datetime.datetime.fromisoformat(match.group(1)).timestamp()


@pytest.mark.parametrize("command", ["runmailer", "runmailer_pg"])
def test_2000_messages_through_a_relay_refusing_a_third_of_attempts_are_all_delivered_once(tmp_path, command):
    """30% of attempts refused with 451 or 421 (at MAIL, RCPT or DATA), 5% dropped without a reply:
    ``runmailer`` alone (or ``runmailer_pg``) delivers all 2,000 messages, each exactly once, with no
    ``retry_deferred``.

    The longest test of the module, kept at 2,000 as the issue asks: measured on two shared CPUs, 11 s on
    PostgreSQL (either command), 16 s on MariaDB, 35 s on SQLite, about 4 s of it queueing; it prints its
    timings (``-s``)."""
    if command == "runmailer_pg" and dbconfig.vendor() != "postgres":
        pytest.skip("runmailer_pg needs PostgreSQL: runs with MAILER_TEST_DB=postgres")
    count = 2000
    with (
        FlakyRelay(refuse_rate=0.30, drop_rate=0.05, seed=14) as relay,
        project(tmp_path, relay, "retry2000") as env,
    ):
        started = time.monotonic()
        send_mail_in_project(env, count, to="r{n}@example.com")
        queued_at = time.monotonic()
        with runmailer(env, tmp_path, FAST_RETRIES, command):
            relay.wait_until(lambda r: len(r.transactions) >= count, timeout=120, message=f"{count} delivered")
            delivered_at = time.monotonic()
        counts = table_counts(env)
        attempts = relay.snapshot()  # final: the sender has exited
        received = relay.received()
    print(
        f"queueing {queued_at - started:.1f}s, delivering {delivered_at - queued_at:.1f}s; {relay.summary()}; {counts}"
    )

    copies = Counter(received)
    assert len(copies) == count and set(copies.values()) == {1}, copies.most_common(3)
    ids = Counter(a.message_id for a in attempts if a.accepted)
    assert len(ids) == count and None not in ids and set(ids.values()) == {1}, ids.most_common(3)
    refused = [a for a in attempts if not a.accepted]
    # The relay did refuse about 35% of the attempts: about 0.35 / 0.65 * 2000 refusals.
    assert 800 < len(refused) < 1400, relay.summary()
    assert {a.reply[:3] for a in refused if a.reply} == {"451", "421"} and any(a.dropped for a in refused)
    assert counts["queued"] == 0 and counts["deferred"] == 0, counts
    assert counts["logs"]["1"] == count, counts
    # One failure entry per attempt that failed, no more: no message charged with an attempt that never
    # reached the relay (a connection the relay had closed, used again).
    assert counts["logs"]["3"] == len(refused), (counts, relay.summary())


@pytest.mark.parametrize("connections", [1, 3])
def test_two_runmailers_share_a_flaky_relay_and_deliver_every_message_once(tmp_path, connections):
    """The scenario above with two ``runmailer`` processes at once (each with ``connections`` connections),
    on the servers whose row locks let senders share the queue: every message once, none lost."""
    if dbconfig.vendor() == "sqlite":
        pytest.skip("two senders at once on SQLite only take turns on its write lock (mailer.W003)")
    count = 600
    with (
        FlakyRelay(refuse_rate=0.30, drop_rate=0.05, seed=41) as relay,
        project(tmp_path, relay, "retry2x") as env,
    ):
        send_mail_in_project(env, count, to="r{n}@example.com")
        settings = {**FAST_RETRIES, "MAILER_SENDER_CONNECTIONS": connections}
        started = time.monotonic()
        with two_runmailers(env, tmp_path, settings):
            relay.wait_until(lambda r: len(r.transactions) >= count, timeout=120, message=f"{count} delivered")
        print(f"delivering {time.monotonic() - started:.1f}s; {relay.summary()}")
        counts = table_counts(env)
        attempts = relay.snapshot()
        received = relay.received()

    copies = Counter(received)
    assert len(copies) == count and set(copies.values()) == {1}, copies.most_common(3)
    refused = [a for a in attempts if not a.accepted]
    assert counts["queued"] == 0 and counts["logs"]["1"] == count, counts
    assert counts["logs"]["3"] == len(refused), (counts, relay.summary())


@contextmanager
def two_runmailers(env: dict, tmp_path, settings: dict):
    children = [SenderProcess("runmailer", env, tmp_path / f"runmailer-{n}.log", settings=settings) for n in range(2)]
    try:
        yield children
        for child in children:
            assert child.stop() == 0, child.log()
    finally:
        for n, child in enumerate(children):
            child.kill()
            print(f"--- runmailer {n} ---\n{child.log()[-10000:]}")


def test_a_recipient_refused_with_550_is_tried_once_whatever_runs(tmp_path):
    """550 5.1.1 at RCPT: one attempt, while ``runmailer`` goes on, ``send_mail`` runs again and again, and
    ``retry_deferred`` runs; the failure is logged with the relay's reply and the message leaves the queue.

    A canary queued with it is greylisted three times: when it is delivered, ``runmailer`` has made
    passes across three backoff delays, in which a 550 taken for a transient failure would have been retried.
    """
    reply = "550 5.1.1 <nobody@example.com>: No such user"
    script = {"canary@example.com": [GREYLISTED] * 3}
    with (
        FlakyRelay(refuse={"nobody@example.com": reply}, script=script) as relay,
        project(tmp_path, relay, "r550") as env,
    ):
        queue_to(env, "nobody@example.com", "canary@example.com")
        with runmailer(env, tmp_path, FAST_RETRIES):
            relay.wait_for_attempts("nobody@example.com", 1)
            relay.wait_until(lambda r: r.delivered_to("canary@example.com"), timeout=30, message="canary delivered")
            for _ in range(3):
                send_mail(env, FAST_RETRIES)
            assert manage("retry_deferred", env=env).returncode == 0
            send_mail(env, FAST_RETRIES)
            queue_to(env, "later@example.com")
            relay.wait_until(lambda r: r.delivered_to("later@example.com"), timeout=30, message="later delivered")
        rows = logs(env)
        left = queued(env)

    [attempt] = relay.attempts_to("nobody@example.com")
    assert (attempt.stage, attempt.reply) == ("RCPT", reply)
    assert len(relay.attempts_to("canary@example.com")) == 4
    assert left == []
    [failure] = [row for row in rows if row["to"] == ["nobody@example.com"]]
    assert failure["result"] == "3", failure
    assert reply in failure["text"], failure


@pytest.mark.parametrize("command", ["runmailer", "runmailer_pg"])
def test_greylisted_twice_then_accepted_on_the_third_attempt_within_the_backoff(tmp_path, command):
    """451 twice, then 250, for 8 messages under ``runmailer`` (or ``runmailer_pg``): each delivered on its
    third attempt, never before the time its last failure set; the gap before attempt n + 1 is at most
    min(MAX_DELAY, DELAY * 2 ** (n - 1)) plus scheduling, and the gaps differ (full jitter), rather than all
    being the same fixed delay.

    ``MAILER_EMPTY_QUEUE_SLEEP`` is 30 s: the sender must wake up when a retry falls due, not after its nap.
    """
    if command == "runmailer_pg" and dbconfig.vendor() != "postgres":
        pytest.skip("runmailer_pg needs PostgreSQL: runs with MAILER_TEST_DB=postgres")
    settings = {
        "MAILER_RETRY_DELAY": 1,
        "MAILER_RETRY_MAX_DELAY": 1.5,
        "MAILER_RETRY_MAX_ATTEMPTS": 5,
        "MAILER_EMPTY_QUEUE_SLEEP": 30,
    }
    addresses = [f"grey{n}@example.com" for n in range(8)]
    script = {address: [GREYLISTED, GREYLISTED] for address in addresses}
    with FlakyRelay(script=script) as relay, project(tmp_path, relay, "greylist") as env:
        queue_to(env, *addresses)
        with runmailer(env, tmp_path, settings, command):
            for address in addresses:
                relay.wait_until(lambda r, a=address: r.delivered_to(a), timeout=30, message=f"{address} delivered")
        rows = logs(env)
        left = queued(env)

    assert left == []
    gaps: dict[int, list[float]] = {1: [], 2: []}
    for address in addresses:
        attempts = relay.attempts_to(address)
        assert [(a.reply, a.accepted) for a in attempts[:2]] == [(GREYLISTED, False)] * 2, attempts
        assert len(attempts) == 3 and attempts[2].accepted, attempts
        assert len({a.message_id for a in attempts if a.message_id}) == 1
        for n in (1, 2):
            gaps[n].append(attempts[n].at - attempts[n - 1].at)
        mine = [row for row in rows if row["to"] == [address]]
        assert [row["result"] for row in mine] == ["3", "3", "1"], mine
        assert all("451 4.3.0" in row["text"] for row in mine[:2]), mine
        # Never before the time the failure set ("trying again at ..." in its log entry: the row's not_before).
        for n in (1, 2):
            assert attempts[n].wall >= retry_time(mine[n - 1]["text"]), (attempts[n], mine[n - 1])
    print({n: [round(g, 3) for g in sorted(values)] for n, values in gaps.items()})
    for n, values in gaps.items():
        bound = min(1.5, 1 * 2 ** (n - 1))
        assert max(values) <= bound + LATENESS, (n, values)
        assert max(values) - min(values) > 0.1 * bound, (n, values)  # drawn, not a fixed delay


@pytest.mark.parametrize("command", ["runmailer", "runmailer_pg"])
def test_a_retry_falling_due_during_a_pass_is_sent_without_waiting_for_the_nap(tmp_path, command):
    """One pass claims both messages: "early" is greylisted (its retry due within 0.5 s), then the relay
    takes 2 s to refuse "slow" for good. When the pass ends, early's retry is already due: the sender must
    send it then, not after ``MAILER_EMPTY_QUEUE_SLEEP`` (30 s) or, for ``runmailer_pg``, the next
    notification."""
    if command == "runmailer_pg" and dbconfig.vendor() != "postgres":
        pytest.skip("runmailer_pg needs PostgreSQL: runs with MAILER_TEST_DB=postgres")
    settings = {
        "MAILER_RETRY_DELAY": 0.5,
        "MAILER_RETRY_MAX_DELAY": 0.5,
        "MAILER_RETRY_MAX_ATTEMPTS": 5,
        "MAILER_EMPTY_QUEUE_SLEEP": 30,
    }
    relay = FlakyRelay(
        script={"early@example.com": [GREYLISTED]},
        refuse={"slow@example.com": NO_SUCH_USER},
        slow={"slow@example.com": 2},
    )
    with relay, project(tmp_path, relay, "duepass") as env:
        queue_to(env, "early@example.com", "slow@example.com")
        with runmailer(env, tmp_path, settings, command):
            [refused] = relay.wait_for_attempts("slow@example.com", 1, timeout=15)
            relay.wait_until(lambda r: r.delivered_to("early@example.com"), timeout=40, message="early delivered")

    first, second = relay.attempts_to("early@example.com")
    assert first.at < refused.at and first.reply == GREYLISTED
    answered = refused.at + 2  # the relay answered "slow" then: the pass ended just after
    print(f"early's retry came {second.at - answered:.2f}s after the pass")
    assert second.at - answered < LATENESS + 1, second.at - answered


def test_a_recipient_greylisted_inside_an_accepted_message_gets_it_later_and_nobody_gets_it_twice(tmp_path):
    """To a, b, c, d: the relay takes a and d, greylists b once, refuses c for good. a and d get it once, b on
    the retry (a transaction to b alone), c is tried once; the message then leaves the queue."""
    script = {"b@example.com": [GREYLISTED]}
    with (
        FlakyRelay(script=script, refuse={"c@example.com": NO_SUCH_USER}) as relay,
        project(tmp_path, relay, "part") as env,
    ):
        run_in_project(env, QUEUE_ONE.format(to=["a@example.com", "b@example.com", "c@example.com", "d@example.com"]))
        with runmailer(env, tmp_path, FAST_RETRIES):
            relay.wait_until(lambda r: r.delivered_to("b@example.com"), timeout=30, message="b delivered")
            queue_to(env, "later@example.com")  # delivered after the retry: c had its chance to come again
            relay.wait_until(lambda r: r.delivered_to("later@example.com"), timeout=30, message="later delivered")
        rows = logs(env)
        left = queued(env)

    assert sorted(relay.received()) == ["a@example.com", "b@example.com", "d@example.com", "later@example.com"]
    first, retry = [t for t in relay.transactions if t.rcpt_tos != ["later@example.com"]]
    assert (first.rcpt_tos, retry.rcpt_tos) == (["a@example.com", "d@example.com"], ["b@example.com"])
    assert len(relay.attempts_to("c@example.com")) == 1
    assert left == []
    failures = [row for row in rows if row["result"] == "3"]
    assert any(row["to"] == ["c@example.com"] and NO_SUCH_USER in row["text"] for row in failures), rows
    assert any(row["to"] == ["b@example.com"] and GREYLISTED in row["text"] for row in failures), rows


@pytest.mark.parametrize("step", [UNAVAILABLE, DROP])
def test_a_421_or_a_drop_at_one_recipient_loses_none_of_the_others(tmp_path, step):
    """To a, b, c: the relay takes a at RCPT, then answers b with 421 and closes the connection (or drops
    it). smtplib raises SMTPRecipientsRefused naming b alone (or SMTPServerDisconnected): nobody got the
    message, so a, b and c must all get it on a later attempt, once each."""
    script = {"b@example.com": [step]}
    with FlakyRelay(script=script) as relay, project(tmp_path, relay, "rcpt421") as env:
        run_in_project(env, QUEUE_ONE.format(to=["a@example.com", "b@example.com", "c@example.com"]))
        with runmailer(env, tmp_path, FAST_RETRIES):
            relay.wait_for_attempts("b@example.com", 2, timeout=30)
            queue_to(env, "later@example.com")
            relay.wait_until(lambda r: r.delivered_to("later@example.com"), timeout=30, message="later delivered")
        left = queued(env)

    assert sorted(relay.received()) == ["a@example.com", "b@example.com", "c@example.com", "later@example.com"]
    assert left == []


def test_a_421_in_a_later_transaction_loses_none_of_its_recipients(tmp_path):
    """To a, b, c, d through a relay taking 2 recipients per transaction: a and b get it in the first; in the
    second the relay answers c with 421 and closes the connection before d. c and d both still need it."""
    script = {"c@example.com": [None, UNAVAILABLE]}  # the first RCPT of c is the one "too many" refuses
    with FlakyRelay(script=script, max_recipients=2) as relay, project(tmp_path, relay, "later421") as env:
        to = ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
        run_in_project(env, QUEUE_ONE.format(to=to))
        with runmailer(env, tmp_path, FAST_RETRIES):
            relay.wait_for_attempts("c@example.com", 3, timeout=30)
            queue_to(env, "later@example.com")
            relay.wait_until(lambda r: r.delivered_to("later@example.com"), timeout=30, message="later delivered")
        left = queued(env)

    assert sorted(relay.received()) == [*to, "later@example.com"]
    assert left == []


def test_a_recipient_greylisted_for_ever_is_given_up_after_max_attempts(tmp_path):
    """451 every time, ``MAILER_RETRY_MAX_ATTEMPTS`` = 3: three attempts, then a failure entry saying so and
    no more attempts; the message leaves the queue."""
    settings = {**FAST_RETRIES, "MAILER_RETRY_MAX_ATTEMPTS": 3}
    with (
        FlakyRelay(script={"grey@example.com": [GREYLISTED] * 10}) as relay,
        project(tmp_path, relay, "maxatt") as env,
    ):
        queue_to(env, "grey@example.com")
        with runmailer(env, tmp_path, settings):
            relay.wait_for_attempts("grey@example.com", 3, timeout=30)
            send_mail(env, settings)
            queue_to(env, "later@example.com")
            relay.wait_until(lambda r: r.delivered_to("later@example.com"), timeout=30, message="later delivered")
        rows = logs(env)
        left = queued(env)

    assert [a.reply for a in relay.attempts_to("grey@example.com")] == [GREYLISTED] * 3
    mine = [row for row in rows if row["to"] == ["grey@example.com"]]
    assert [row["result"] for row in mine] == ["3", "3", "3"], mine
    assert "MAILER_RETRY_MAX_ATTEMPTS" in mine[-1]["text"] and GREYLISTED in mine[-1]["text"], mine
    assert left == []


def test_send_mail_run_again_and_again_never_sends_before_the_retry_time(tmp_path):
    """451 twice, then 250, with only ``send_mail`` runs: no attempt reaches the relay before the time the
    previous failure set (the message's ``not_before``), however many runs come before it.

    The engine's own draw can be a few milliseconds away (full jitter starts at 0); when it is closer than
    twice the time a run takes here (at least 2 s) the test moves it that far away, so that runs do come in
    between, however slow a loaded machine makes each child process."""
    settings = {"MAILER_RETRY_DELAY": 3, "MAILER_RETRY_MAX_DELAY": 3, "MAILER_RETRY_MAX_ATTEMPTS": 5}
    address = "grey@example.com"
    with (
        FlakyRelay(script={address: [GREYLISTED, GREYLISTED]}) as relay,
        project(tmp_path, relay, "early") as env,
    ):
        queue_to(env, address)
        started = time.time()
        send_mail(env, settings)
        margin = max(2.0, 2 * (time.time() - started))  # seconds: room for runs before the retry time
        early_runs = 0
        for failed in (1, 2):
            assert len(relay.attempts_to(address)) == failed
            [row] = queued(env)
            assert row["attempts"] == failed and GREYLISTED in row["last_error"], row
            attempted_at = relay.attempts_to(address)[-1].wall
            assert attempted_at < row["not_before"] <= attempted_at + 3 + 1, row
            if row["not_before"] - time.time() < margin:
                run_in_project(env, POSTPONE.format(seconds=margin))
                [row] = queued(env)
            while len(relay.attempts_to(address)) == failed:
                before = time.time() < row["not_before"]
                send_mail(env, settings)
                early_runs += before
            assert relay.attempts_to(address)[failed].wall >= row["not_before"]
        assert early_runs >= 2
        assert relay.delivered_to(address) == 1 and len(relay.attempts_to(address)) == 3
        assert queued(env) == []


def test_a_message_throttled_at_data_is_delivered_with_the_same_message_id(tmp_path):
    """454 4.7.0 at DATA, then 250: the delivered data carries the Message-ID the refused attempt had."""
    with FlakyRelay(fail_data_first=(1, THROTTLED)) as relay, project(tmp_path, relay, "throttle") as env:
        queue_to(env, "to@example.com")
        with runmailer(env, tmp_path, FAST_RETRIES):
            relay.wait_until(lambda r: r.delivered_to("to@example.com"), timeout=30, message="delivered")
        rows = logs(env)

    refused, delivered = relay.attempts_to("to@example.com")
    assert (refused.stage, refused.reply, delivered.accepted) == ("DATA", THROTTLED, True)
    assert refused.message_id is not None
    assert delivered.message_id == refused.message_id
    # Throttling is not a failed attempt (issue 15): the relay was paused, and only the delivery is logged.
    assert [row["result"] for row in rows] == ["1"], rows
    assert rows[0]["message_id"] == delivered.message_id, rows
