"""Issue 12 item 3: a sender that cannot decode intact rows leaves them queued, says why, and fails loudly.

A healthy row becomes undecodable for one process only when the sender has another ``SECRET_KEY`` (no
fallback) than the process that queued it. That is not corrupt data: the rows stay queued, untouched,
``send_mail`` exits non-zero and ``mailer_status``'s health check fails; the right sender sends them all.
A row whose email is of a class the sender cannot import (old code during a rolling deploy, or the class
removed) is sent as Django's class since issue 16 (tests/test_unpicklable.py too).
"""

import json
from collections import Counter

import pytest

from tests.support.procs import REPO_ROOT, manage
from tests.support.project_db import migrated_project, run_in_project, table_counts

QUEUE = """
import mailer
from django.core.mail import EmailMessage
{setup}
for n in range({count}):
    {make}
print("queued", mailer.models.Message.objects.count())
"""
PLAIN = (
    "EmailMessage(f'{prefix}{{n}}', 'body', 'from@example.com', ['to@example.com'], "
    "headers={{'X-Test-Seq': f'{prefix}{{n}}'}}).send()"
)

NEW_CLASS_MODULE = '''
from django.core.mail import EmailMessage


class ShinyMessage(EmailMessage):
    """An email class only the new code has."""
'''


def queue_in_child(env, count, prefix, make=None, setup=""):
    code = QUEUE.format(setup=setup, count=count, make=make or PLAIN.format(prefix=prefix))
    return run_in_project(env, code)


def unhealthy(env):
    done = manage("mailer_status", "--max-age", "3600", "--max-deferred", "10", env=env)
    return done.returncode, done.stderr


def delivered(smtp_server):
    return Counter(r.message["X-Test-Seq"][:1] for r in smtp_server.messages)


def test_another_secret_key_leaves_the_queue_alone_and_fails(tmp_path, smtp_server):
    smtp = {"MAILER_TEST_SMTP_PORT": str(smtp_server.port)}
    with migrated_project(tmp_path, "mailer_heldkey", **smtp) as env:
        assert "queued 200" in queue_in_child(env, 200, "k")
        assert unhealthy(env)[0] == 0

        other_key = {**env, "MAILER_TEST_SETTINGS": json.dumps({"SECRET_KEY": "another key " * 5})}
        done = manage("send_mail", env=other_key)
        assert done.returncode != 0, done.stderr
        assert "SECRET_KEY_FALLBACKS" in done.stderr
        counts = table_counts(env)
        assert counts == {"queued": 200, "deferred": 0, "logs": {"1": 0, "2": 0, "3": 0}}, counts
        assert smtp_server.messages == []
        code, problems = unhealthy(other_key)
        assert code == 1 and "SECRET_KEY" in problems, problems

        done = manage("send_mail", env=env)
        assert done.returncode == 0, done.stderr
        assert delivered(smtp_server) == {"k": 200}
        assert table_counts(env)["logs"]["1"] == 200
        assert unhealthy(env)[0] == 0


def test_a_class_only_the_queueing_code_has_is_sent_as_djangos_class_and_logged_so(tmp_path, smtp_server):
    """Issue 16 changed this: the row is sent as a plain EmailMessage with the same content (the queue stores
    rendered content), and its log entry says so. Before, it was held back until the senders had the class."""
    new_code = tmp_path / "newcode"
    new_code.mkdir()
    (new_code / "shiny_mail.py").write_text(NEW_CLASS_MODULE)
    smtp = {"MAILER_TEST_SMTP_PORT": str(smtp_server.port)}
    with migrated_project(tmp_path, "mailer_heldclass", **smtp) as env:
        new_env = {**env, "PYTHONPATH": f"{REPO_ROOT}:{new_code}"}
        assert "queued 5" in queue_in_child(env, 5, "p")
        make = PLAIN.format(prefix="s").replace("EmailMessage(", "ShinyMessage(")
        assert "queued 205" in queue_in_child(new_env, 200, "s", make=make, setup="from shiny_mail import ShinyMessage")
        assert unhealthy(env)[0] == 0  # a sender with the old code can send them all

        done = manage("send_mail", env=env)  # old code
        assert done.returncode == 0, done.stderr
        assert "its class shiny_mail.ShinyMessage cannot be imported here" in done.stderr, done.stderr[-2000:]
        assert delivered(smtp_server) == {"p": 5, "s": 200}
        assert {r.message["Subject"] for r in smtp_server.messages} == {f"p{n}" for n in range(5)} | {
            f"s{n}" for n in range(200)
        }
        assert table_counts(env) == {"queued": 0, "deferred": 0, "logs": {"1": 205, "2": 0, "3": 0}}
        notes = run_in_project(
            env,
            "from mailer.models import MessageLog\n"
            "print(MessageLog.objects.filter(log_message__startswith='sent as a plain django.core.mail.EmailMessage: "
            "its class shiny_mail.ShinyMessage cannot be imported here').count())",
        )
        assert notes.strip().splitlines()[-1] == "200"


@pytest.mark.django_db(transaction=True)
def test_send_loop_stops_as_for_misconfiguration_when_nothing_can_be_decoded(settings):
    """runmailer's loop: a pass that could decode nothing raises QueueNotDecodable (an ImproperlyConfigured)."""
    import threading

    from django.core.exceptions import ImproperlyConfigured

    import mailer
    from mailer.engine import QueueNotDecodable, send_loop
    from mailer.models import Message

    for n in range(3):
        mailer.send_mail(f"m{n}", "body", "from@example.com", ["to@example.com"])
    before = list(Message.objects.values_list("pk", "priority", "message_data"))
    settings.SECRET_KEY = "another key " * 5
    with pytest.raises(QueueNotDecodable) as raised:
        send_loop(stop=threading.Event())
    assert isinstance(raised.value, ImproperlyConfigured)
    assert list(Message.objects.values_list("pk", "priority", "message_data")) == before


@pytest.mark.django_db
def test_a_held_back_message_does_not_skip_the_ones_before_it_that_the_batch_did_not_reach(settings, monkeypatch):
    """The batch commits after each message (log budget of one byte); the held-back row is fourth in the
    claim: the three before it are still sent in this pass, and so is the one after it."""
    import mailer
    from mailer import engine, outcomes
    from mailer.models import Message

    settings.MAILER_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    monkeypatch.setattr(outcomes, "LOG_BYTES_PER_COMMIT", 1)
    for subject in ("s0", "s1", "s2"):
        mailer.send_mail(subject, "body", "from@example.com", ["to@example.com"])
    key = settings.SECRET_KEY
    settings.SECRET_KEY = "another key " * 5
    mailer.send_mail("held", "body", "from@example.com", ["to@example.com"])
    settings.SECRET_KEY = key
    mailer.send_mail("s4", "body", "from@example.com", ["to@example.com"])

    result = engine.send_all()

    from django.core import mail

    assert [m.subject for m in mail.outbox] == ["s0", "s1", "s2", "s4"]
    assert (result.sent, result.held) == (4, 1)
    assert Message.objects.count() == 1
