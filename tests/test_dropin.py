"""The drop-in test: a database left by django-mailer 2.3.2 keeps working when our package replaces it.

What it proves, end to end and on whatever database ``MAILER_TEST_DB`` names (sqlite, postgres, mysql):

1. The real django-mailer 2.3.2 (from PyPI, in a throwaway virtualenv cached under
   ``~/.cache/django-mailer-tests``, see ``tests/dropin/legacy_venv.py``) migrates a fresh database and
   queues mail through its own API (``tests/dropin/legacy_queue.py``): ``mailer.send_mail``,
   ``send_html_mail``, ``send_mass_mail``, ``mail_admins``, a binary attachment stored with
   ``make_message``, Django's ``send_mail`` and ``EmailMessage.send()`` through ``DbBackend`` (2.3.2 pickles
   the backend instance inside those rows), every priority, cc/bcc/reply-to/custom headers/own Message-ID,
   unicode, a deferred message, and one message it sends itself (a legacy ``MessageLog`` row).
2. Our package, on that same database, with the same settings, code and commands:
   - ``showmigrations mailer`` sees 2.3.2's 0001-0007 as applied (same names), only our 0008+ pending;
     ``migrate`` applies nothing else;
   - ``send_mail`` delivers every non-deferred message intact over SMTP (subject, plain body, HTML
     alternative, attachment bytes, envelope recipients for to/cc/bcc, headers, unicode), in priority
     order, and leaves the deferred one queued;
   - ``retry_deferred`` + ``send_mail`` deliver the deferred one;
   - the log has a success row per message whose ``message_id`` is the Message-ID that arrived, and
     2.3.2's own log row still decodes.
"""

import base64
import json
import re
import shutil
import subprocess
import textwrap
from email.utils import getaddresses
from pathlib import Path

import pytest

from tests.dropin.legacy_venv import LEGACY_MIGRATIONS, LEGACY_VERSION, legacy_python
from tests.support import dbconfig
from tests.support.procs import manage
from tests.support.services import fresh_database

HERE = Path(__file__).resolve().parent
MARKER = re.compile(r"\[dropin:(\w+)\]")


@pytest.fixture(scope="session")
def legacy_venv_python():
    """Interpreter of the cached django-mailer 2.3.2 venv, built once per session (and kept across sessions)."""
    return legacy_python(dbconfig.vendor())


class Legacy:
    """Runs django-admin and scripts in the 2.3.2 venv, with its own settings module in a temp directory."""

    def __init__(self, python: Path, workdir: Path, db_name: str):
        self.python = python
        self.workdir = workdir
        workdir.mkdir()
        settings = f"""\
            SECRET_KEY = "a-project-still-on-django-mailer-2.3.2"
            USE_TZ = True
            TIME_ZONE = "UTC"
            INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "mailer"]
            DATABASES = {{"default": {dbconfig.database(db_name)!r}}}
            DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
            EMAIL_BACKEND = "mailer.backend.DbBackend"
            MAILER_EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
            MAILER_LOCK_PATH = {str(workdir / "send_mail")!r}
            ADMINS = [("Admin", "admin@example.com")]
            """
        (workdir / "legacy_settings.py").write_text(textwrap.dedent(settings))
        shutil.copy(HERE / "dropin" / "legacy_queue.py", workdir / "legacy_queue.py")

    def run(self, *args) -> subprocess.CompletedProcess:
        # Only the temp directory is importable besides the venv: our own ``mailer`` must stay out of reach.
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "DJANGO_SETTINGS_MODULE": "legacy_settings",
            "PYTHONPATH": str(self.workdir),
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        result = subprocess.run(
            [str(self.python), *map(str, args)], cwd=self.workdir, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"2.3.2 {args} failed:\n{result.stdout}\n{result.stderr}"
        return result


def _ours(*args, env):
    result = manage(*args, env=env)
    assert result.returncode == 0, f"our {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _showmigrations(output: str) -> list[tuple[str, bool]]:
    return [(m[2], m[1] == "X") for m in re.finditer(r"^\s*\[([ X])\]\s+(\S+)", output, re.M)]


# Reads the database through OUR models, in a child on the same settings; prints JSON.
_DUMP = """
import json
from mailer.models import Message, MessageLog
print(json.dumps({
    "queue": [
        {"id": m.id, "priority": m.priority, "retry_count": m.retry_count, "subject": m.subject}
        for m in Message.objects.order_by("id")
    ],
    "log": [
        {"id": g.id, "result": g.result, "message_id": g.message_id, "subject": g.subject,
         "priority": g.priority, "to": g.to_addresses, "log_message": g.log_message}
        for g in MessageLog.objects.order_by("id")
    ],
}))
"""


def _dump(env) -> dict:
    return json.loads(_ours("shell", "-c", _DUMP, env=env).stdout.strip().splitlines()[-1])


def _addr_specs(addresses) -> list[str]:
    return [addr for _, addr in getaddresses(list(addresses))]


def _text(part) -> str:
    return part.get_content().replace("\r\n", "\n")


def _check_delivered(expected: dict, received):
    """Compare one message as 2.3.2 queued it with what reached the SMTP server."""
    key = expected["key"]
    msg = received.message
    assert msg["Subject"] == expected["subject"], key
    assert _addr_specs([str(msg["From"])]) == _addr_specs([expected["from"]]), key
    assert msg["From"].addresses[0].display_name == getaddresses([expected["from"]])[0][0], key
    assert _addr_specs(str(h) for h in msg.get_all("To", [])) == _addr_specs(expected["to"]), key
    for name, _addr in getaddresses(expected["to"]):
        if name:
            assert name in [a.display_name for a in msg["To"].addresses], (key, name)
    if expected["cc"]:
        assert _addr_specs([str(msg["Cc"])]) == _addr_specs(expected["cc"]), key
    else:
        assert msg["Cc"] is None, key
    if expected["reply_to"]:
        assert _addr_specs([str(msg["Reply-To"])]) == _addr_specs(expected["reply_to"]), key
    assert msg["Bcc"] is None, f"{key}: Bcc must not be in the headers"
    envelope = _addr_specs(expected["to"] + expected["cc"] + expected["bcc"])
    assert sorted(received.rcpt_tos) == sorted(envelope), key
    assert received.mail_from == _addr_specs([expected["from"]])[0], key

    for name, value in expected["headers"].items():
        assert msg[name] == value, (key, name, msg[name])
    assert msg["Message-ID"], f"{key}: no Message-ID"

    assert _text(msg.get_body(preferencelist=("plain",))) == expected["body"], key
    html = msg.get_body(preferencelist=("html",))
    if expected["html"] is None:
        assert html is None, key
    else:
        assert html is not None, f"{key}: the text/html alternative is missing"
        assert _text(html) == expected["html"], key

    attachments = [
        [part.get_filename(), part.get_content_type(), part.get_payload(decode=True)] for part in msg.iter_attachments()
    ]
    wanted = [[name, mimetype, base64.b64decode(content)] for name, mimetype, content in expected["attachments"]]
    assert attachments == wanted, key


def test_database_of_django_mailer_232_keeps_working(legacy_venv_python, tmp_path, smtp_server):
    with fresh_database(tmp_path, "mailer_dropin") as db_name:
        # --- django-mailer 2.3.2 sets up the database and queues mail -------------------------------------
        legacy = Legacy(legacy_venv_python, tmp_path / "legacy", db_name)
        legacy.run("-m", "django", "migrate", "--noinput")
        legacy_migrations = _showmigrations(legacy.run("-m", "django", "showmigrations", "mailer").stdout)
        assert legacy_migrations == [(name, True) for name in LEGACY_MIGRATIONS]
        manifest = json.loads(legacy.run("legacy_queue.py").stdout.strip().splitlines()[-1])
        assert manifest["mailer_version"] == LEGACY_VERSION
        expected = {m["key"]: m for m in manifest["messages"]}
        assert len(expected) == len(manifest["messages"]) == manifest["queue"]["total"]
        assert [k for k, m in expected.items() if m["pickled_connection"]] == ["django", "ccbcc"]

        # --- our package takes over: same database, same commands ------------------------------------------
        env = {
            "MAILER_TEST_DB": dbconfig.vendor(),
            "MAILER_TEST_DB_NAME": db_name,
            "MAILER_TEST_SMTP_PORT": smtp_server.port,
            "MAILER_TEST_USE_FILE_LOCK": "0",
        }
        before = _showmigrations(_ours("showmigrations", "mailer", env=env).stdout)
        assert before[: len(LEGACY_MIGRATIONS)] == [(name, True) for name in LEGACY_MIGRATIONS], before
        ours_only = before[len(LEGACY_MIGRATIONS) :]
        assert all(not applied and name[:4].isdigit() and int(name[:4]) >= 8 for name, applied in ours_only), before

        migrate = _ours("migrate", "--noinput", env=env).stdout
        applied = re.findall(r"Applying (\S+)\.{3}", migrate)
        assert applied == [f"mailer.{name}" for name, _ in ours_only], migrate
        after = _showmigrations(_ours("showmigrations", env=env).stdout)
        assert after and all(done for _, done in after), after

        # Our models read 2.3.2's queue and log as they are.
        state = _dump(env)
        assert {m["subject"] for m in state["queue"]} == {m["subject"] for m in expected.values()}
        presend = manifest["presend"]
        assert [(g["result"], g["message_id"], g["subject"], g["to"]) for g in state["log"]] == [
            ("1", presend["message_id"], presend["subject"], presend["to"])
        ]

        # --- first run: everything but the deferred message goes out ------------------------------------
        _ours("send_mail", env=env)
        live = [m for m in expected.values() if not m["deferred"]]
        received = smtp_server.received()  # final: send_mail has exited
        assert len(received) == len(live)
        by_key = {}
        for r in received:
            match = MARKER.search(r.message["Subject"])
            assert match, r.message["Subject"]
            assert match[1] not in by_key, f"{match[1]} delivered twice"
            by_key[match[1]] = r
        assert sorted(by_key) == sorted(m["key"] for m in live)
        for m in live:
            _check_delivered(m, by_key[m["key"]])

        order = [MARKER.search(r.message["Subject"])[1] for r in received]
        priorities = [expected[k]["priority"] for k in order]
        assert priorities == sorted(priorities), f"not sent in priority order: {order}"

        state = _dump(env)
        assert [(m["subject"], m["priority"]) for m in state["queue"]] == [(expected["deferred"]["subject"], 4)]

        # --- retry_deferred, then the deferred one goes out ----------------------------------------------
        _ours("retry_deferred", env=env)
        state = _dump(env)
        assert [(m["priority"], m["retry_count"]) for m in state["queue"]] == [(2, 1)]
        _ours("send_mail", env=env)
        received = smtp_server.received()  # final: send_mail has exited
        assert len(received) == len(expected)
        _check_delivered(expected["deferred"], received[-1])

        # --- the log: 2.3.2's row plus a success row per message, with the Message-ID that arrived ----------
        state = _dump(env)
        assert state["queue"] == []
        message_ids = {MARKER.search(r.message["Subject"])[1]: r.message["Message-ID"] for r in received}
        assert message_ids["ccbcc"] == "<dropin-ccbcc@example.com>"
        logged = {}
        for g in state["log"][1:]:
            assert g["result"] == "1", g
            key = MARKER.search(g["subject"])[1]
            assert key not in logged, f"{key} logged twice"
            logged[key] = g
        assert sorted(logged) == sorted(expected)
        for key, g in logged.items():
            assert g["message_id"] == message_ids[key], key
            assert g["priority"] == (2 if key == "deferred" else expected[key]["priority"]), key
            assert g["to"] == expected[key]["to"], key  # to_addresses is email.to, as in 2.3.2
