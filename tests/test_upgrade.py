"""The upgrade test: mail our package queued under Django 5.2 is sent intact by it after the upgrade to Django 6.1.

What it proves, end to end and on whatever database ``MAILER_TEST_DB`` names (sqlite, postgres, mysql), with
our package from the working tree in two cached virtualenvs that share that one database
(``tests/upgrade/django_venv.py``):

1. Django 5.2 (this interpreter's Python): ``migrate``, then ``tests/upgrade/queue_mail.py`` queues mail
   through ``EMAIL_BACKEND = "mailer.backend.DbBackend"`` (Django's ``send_mail`` with HTML,
   ``EmailMultiAlternatives`` with unicode, cc, bcc, reply-to, custom headers, its own Message-ID, an HTML
   alternative, a text and a binary attachment) and through ``mailer.send_mail`` / ``send_html_mail``, at
   high, medium and low priority.
2. Django 6.1 (Python 3.12+), the project now configured with ``MAILERS`` (``"default"`` queues and delivers
   through ``"smtp"``): ``migrate`` applies none of our migrations, ``makemigrations --check`` finds no
   change, and ``send_mail`` delivers every message over SMTP, in priority order, with the same subject,
   body, alternatives, attachments (bytes and mimetype), headers, addresses and envelope recipients, and no
   Bcc header. The queue is then empty and the log has a success row per message, with the Message-ID
   that arrived. No run prints a traceback or a warning (deprecations included).
"""

import base64
import json
import os
import re
import subprocess
from email.utils import getaddresses
from pathlib import Path

import pytest

from tests.support import dbconfig
from tests.support.procs import REPO_ROOT, project_env
from tests.support.services import fresh_database
from tests.upgrade.django_venv import django_python, find_python

MARKER = re.compile(r"\[upgrade:(\w+)\]")


@pytest.fixture(scope="session")
def pythons():
    """Interpreters of the Django 5.2 and 6.1 venvs (cached across sessions), with our vendor's driver."""
    new = find_python((3, 12))  # Django 6.1 needs Python 3.12+: find it before building anything
    return django_python("5.2", vendor=dbconfig.vendor()), django_python("6.1", new, vendor=dbconfig.vendor())


def _run(python: Path, *args, env: dict) -> subprocess.CompletedProcess:
    """Run ``python args`` on tests.project.settings, with our package importable from the working tree only."""
    full = project_env(env)
    full["PYTHONPATH"] = str(REPO_ROOT)
    full["PYTHONNOUSERSITE"] = "1"
    full["PYTHONWARNINGS"] = "default"  # show every warning, deprecations included, once per place
    for name in ("VIRTUAL_ENV", "PYTHONHOME"):
        full.pop(name, None)
    result = subprocess.run(
        [str(python), *map(str, args)], env=full, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{python} {args} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"{python} {args}:\n{result.stderr}"
    assert not re.search(r"^.*:\d+: \w*Warning: ", result.stderr, re.M), f"{python} {args}:\n{result.stderr}"
    return result


def _last_json(result: subprocess.CompletedProcess):
    return json.loads(result.stdout.strip().splitlines()[-1])


# Runs in the Django 6.1 venv: what the database holds, read through our models. "queue" lists the
# connection attributes of each queued email as decoded: Django 6.1's EmailMessage.send() reads ``_connection``.
_DUMP = """
import json, django, mailer
from mailer.models import Message, MessageLog
print(json.dumps({
    "django": django.get_version(), "mailer_file": mailer.__file__,
    "queue": [{k: repr(v) for k, v in vars(m.email).items() if "connection" in k} for m in Message.objects.all()],
    "log": [[g.result, g.message_id, g.subject, g.priority] for g in MessageLog.objects.order_by("id")],
}))
"""


def _addresses(values) -> list[tuple[str, str]]:
    return getaddresses([str(value) for value in values])


def _text(part) -> str:
    return part.get_content().replace("\r\n", "\n")


def _ended(text: str) -> str:
    """Django 6 ends every text part with a newline (``email.contentmanager``), as for mail it queues itself."""
    return text if text.endswith("\n") else text + "\n"


def _check_delivered(expected: dict, received):
    """Compare one message as it was queued under Django 5.2 with what reached the SMTP server."""
    key, msg = expected["key"], received.message
    assert msg["Subject"] == expected["subject"], key
    assert _addresses(msg.get_all("From")) == _addresses([expected["from_email"]]), key
    for header, field in (("To", "to"), ("Cc", "cc"), ("Reply-To", "reply_to")):
        assert _addresses(msg.get_all(header, [])) == _addresses(expected[field]), (key, header)
    assert msg["Bcc"] is None, f"{key}: Bcc must not be in the headers"
    assert received.mail_from == _addresses([expected["from_email"]])[0][1], key
    envelope = [addr for _, addr in _addresses(expected["to"] + expected["cc"] + expected["bcc"])]
    assert sorted(received.rcpt_tos) == sorted(envelope), key
    for name, value in expected["headers"].items():
        assert msg[name] == value, (key, name, msg[name])

    # The body and its alternatives: every part that is not an attachment, in order.
    parts = [(p.get_content_type(), _text(p)) for p in msg.walk() if not p.is_multipart() and not p.is_attachment()]
    wanted = [("text/plain", expected["body"]), *((mime, content) for content, mime in expected["alternatives"])]
    wanted = [(mimetype, _ended(content)) for mimetype, content in wanted]
    assert parts == wanted, key

    attachments = []
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        if part.get_content_maintype() == "text":
            data = data.replace(b"\r\n", b"\n")
        attachments.append([part.get_filename(), data, part.get_content_type()])
    wanted = [[name, base64.b64decode(data), mimetype] for name, data, mimetype in expected["attachments"]]
    assert attachments == wanted, key


def test_mail_queued_on_django_52_is_sent_intact_on_django_61(pythons, tmp_path, smtp_server):
    old, new = pythons
    with fresh_database(tmp_path, "mailer_upgrade") as db_name:
        env = {"MAILER_TEST_DB": dbconfig.vendor(), "MAILER_TEST_DB_NAME": db_name}
        ours = os.path.join(str(REPO_ROOT), "mailer", "__init__.py")

        # --- Django 5.2: set up the database, queue mail ------------------------------------------------
        _run(old, "-m", "django", "migrate", "--noinput", env=env)
        queued = _last_json(_run(old, "-m", "tests.upgrade.queue_mail", env=env))
        assert queued["django"].startswith("5.2"), queued["django"]
        assert queued["mailer_file"] == ours
        assert queued["email_backend"] == "mailer.backend.DbBackend"
        expected = {m["key"]: m for m in queued["messages"]}
        assert queued["queue"] == sorted(m["priority"] for m in expected.values())

        # --- Django 6.1: the project now uses MAILERS --------------------------------------------------
        env |= {
            "MAILER_TEST_MAILERS": "1",
            "MAILER_TEST_SMTP_PORT": smtp_server.port,
            "MAILER_TEST_LOCK_PATH": tmp_path / "send_mail",
        }
        migrate = _run(new, "-m", "django", "migrate", "--noinput", env=env).stdout
        assert not re.findall(r"Applying mailer\.", migrate), migrate
        _run(new, "-m", "django", "makemigrations", "--check", "--dry-run", "mailer", env=env)

        state = _last_json(_run(new, "-m", "django", "shell", "-c", _DUMP, env=env))
        assert state["django"].startswith("6.1"), state["django"]
        assert state["mailer_file"] == ours
        assert state["queue"] == [{"_connection": "None"}] * len(expected), "queued emails do not fit Django 6.1"

        _run(new, "-m", "django", "send_mail", env=env)
        received = smtp_server.received()  # final: send_mail has exited
        assert len(received) == len(expected)
        keys = [MARKER.search(r.message["Subject"])[1] for r in received]
        assert sorted(keys) == sorted(expected), keys
        for key, r in zip(keys, received, strict=True):
            _check_delivered(expected[key], r)
        priorities = [expected[key]["priority"] for key in keys]
        assert priorities == sorted(priorities), f"not sent in priority order: {keys}"

        state = _last_json(_run(new, "-m", "django", "shell", "-c", _DUMP, env=env))
        assert state["queue"] == []
        arrived = {key: r.message["Message-ID"] for key, r in zip(keys, received, strict=True)}
        assert arrived["multi"] == "<upgrade-multi@example.com>"
        logged = sorted((MARKER.search(subject)[1], result, mid, prio) for result, mid, subject, prio in state["log"])
        assert logged == sorted((key, "1", arrived[key], m["priority"]) for key, m in expected.items())
