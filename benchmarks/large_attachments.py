"""Peak memory of a sending run of messages with a large attachment, with and without ``MAILER_STORAGE``.

    python benchmarks/large_attachments.py [--db sqlite|postgres|mysql] [--messages 10] [--mib 20]
                                          [--only storage|row]

For each mode, a fresh database is migrated and ``--messages`` emails, each with one ``--mib`` MiB attachment
(random bytes), are queued by one process; another process then sends them all (``send_all()``) through
Django's SMTP backend to an aiosmtpd server on loopback, and reports its peak RSS (``VmHWM``) and time. The
queue and log row sizes are printed too. "storage" keeps the attachments in a FileSystemStorage
(``MAILER_STORAGE``); "row" keeps them in the rows, as without the setting (refused on MariaDB at its default
``max_allowed_packet``). Uses the working tree's ``mailer``; see benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child(step: str, config: dict) -> dict:
    """Run in a process of its own: ``fill`` (migrate, queue) or ``send``."""
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="benchmark-not-secret",
        USE_TZ=True,
        INSTALLED_APPS=["mailer"],
        DATABASES={"default": config["database"]},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        EMAIL_BACKEND="mailer.backend.DbBackend",
        MAILER_EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=config["port"],
        MAILER_USE_FILE_LOCK=False,
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "mail": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": config["files"]},
            },
        },
        MAILER_STORAGE="mail" if config["mode"] == "storage" else None,
    )
    django.setup()
    from django.core.mail import EmailMessage
    from django.core.management import call_command
    from django.db.models.functions import Length

    from mailer.engine import send_all
    from mailer.models import Message, MessageLog

    if step == "fill":
        call_command("migrate", verbosity=0, interactive=False)
        for i in range(config["messages"]):
            email = EmailMessage(f"report {i}", "See the attachment.", "from@example.org", [f"to{i}@example.org"])
            email.attach(f"report{i}.pdf", os.urandom(config["mib"] * 1024 * 1024), "application/pdf")
            email.send()
        row = Message.objects.annotate(n=Length("message_data")).values_list("n", flat=True).first()  # all alike
        return {"queue_row_bytes": row}
    started = time.perf_counter()
    result = send_all()
    seconds = time.perf_counter() - started
    log_row = MessageLog.objects.annotate(n=Length("message_data")).values_list("n", flat=True).first()
    return {"sent": result.sent, "seconds": seconds, "peak_rss_mib": _peak_kib() / 1024, "log_row_bytes": log_row}


def run_child(step: str, config: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", step, json.dumps(config)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Sink:
    """An SMTP server on loopback that counts what it receives (and keeps none of it)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: list[int] = []
        self.lock = threading.Lock()
        with socket.socket() as probe:  # a free port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, data_size_limit=256 * 1024 * 1024)

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.received.append(len(envelope.content))
        return "250 OK"

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def database(kind: str, tmp: Path) -> tuple[dict, object]:
    """A fresh database entry, and a function that drops it."""
    sys.path.insert(0, str(REPO))
    from tests.support.dbconfig import mysql_params, pg_params

    if kind == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / f"{uuid.uuid4().hex}.sqlite3")}, lambda: None
    name = f"bench_attach_{uuid.uuid4().hex[:8]}"
    if kind == "postgres":
        import psycopg

        params = pg_params()

        def execute(sql: str) -> None:
            with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
                conn.execute(sql)

        execute(f'CREATE DATABASE "{name}"')
        entry = {"ENGINE": "django.db.backends.postgresql", "NAME": name, "HOST": params["host"]}
        entry.update(PORT=params["port"], USER=params["user"], PASSWORD=params["password"])
        return entry, lambda: execute(f'DROP DATABASE "{name}"')
    import MySQLdb

    params = mysql_params()

    def execute(sql: str) -> None:
        conn = MySQLdb.connect(host=params["host"], port=params["port"], user=params["user"], passwd=params["password"])
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    entry = {"ENGINE": "django.db.backends.mysql", "NAME": name, "HOST": params["host"], "PORT": params["port"]}
    entry.update(USER=params["user"], PASSWORD=params["password"], OPTIONS={"charset": "utf8mb4"})
    return entry, lambda: execute(f"DROP DATABASE `{name}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres", "mysql"])
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--only", choices=["storage", "row"])
    args = parser.parse_args()
    modes = [args.only] if args.only else ["storage", "row"]
    print(f"{args.messages} messages with a {args.mib} MiB attachment each, {args.db}, one sending run")
    print(f"{'mode':8} {'queue row':>12} {'log row':>12} {'sent':>5} {'seconds':>8} {'peak RSS MiB':>13}")
    with tempfile.TemporaryDirectory() as tmp, Sink() as sink:
        for mode in modes:
            entry, drop = database(args.db, Path(tmp))
            files = Path(tmp, f"files-{mode}")
            config = {"database": entry, "port": sink.port, "files": str(files), "mode": mode}
            config.update(messages=args.messages, mib=args.mib)
            try:
                filled = run_child("fill", config)
                sent = run_child("send", config)
            except RuntimeError as exc:
                print(f"{mode:8} failed: {str(exc).strip().splitlines()[-1]}")
                continue
            finally:
                drop()
            print(
                f"{mode:8} {filled['queue_row_bytes']:>12,} {sent['log_row_bytes'] or 0:>12,} {sent['sent']:>5}"
                f" {sent['seconds']:>8.1f} {sent['peak_rss_mib']:>13.0f}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        main()
