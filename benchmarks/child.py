"""One benchmark step, run in a child process by ``benchmarks/run.py``, for either package.

This file is copied into a temporary directory next to the settings module (``bench_settings.py``) and run
from there with the interpreter of the side under test, so it must not import anything from the repository:
the django-mailer 2.3.2 side must never see the working tree, which has the same import name ``mailer``.

Usage: ``python child.py ACTION '{"json": "parameters"}'``. The configuration (database, backend, SMTP port,
lock...) comes from ``BENCH_CONFIG`` through the settings module. The child prints ``RESULT <json>`` as its
last line. With ``"wait_go": true`` it first prints ``READY`` once Django is set up and connected, and waits
for a line on stdin, so that the parent can start several children at the same moment.
"""

import json
import os
import sys
import time


def emit(tag, payload=None):
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_go():
    emit("READY")
    if not sys.stdin.readline():
        sys.exit("parent went away")


def memory_kib(field):
    """``VmRSS`` / ``VmHWM`` of this process from /proc, in KiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


BODY = (
    "Hello,\n\nThis is a benchmark message of about one kilobyte, the size of a typical notification "
    "with a short text part. " * 8
)


def make_email(i, extra_headers=None):
    from django.core.mail import EmailMessage

    headers = {"X-Bench-Id": str(i)}
    headers.update(extra_headers or {})
    return EmailMessage(
        subject=f"Benchmark message {i}",
        body=BODY,
        from_email="Benchmark <bench@example.com>",
        to=[f"rcpt{i}@example.com"],
        headers=headers,
    )


def check_origin():
    """Make sure the package under test is the one imported (2.3.2 must not pick up the working tree)."""
    import mailer

    expected = os.environ.get("BENCH_EXPECT_MAILER_DIR")
    location = os.path.dirname(os.path.abspath(mailer.__file__))
    if expected and not location.startswith(expected):
        sys.exit(f"mailer imported from {location}, expected it under {expected}")
    return location


def action_info(params):
    import platform

    import django
    from django.db import connection

    import mailer

    defaults = []
    try:
        from mailer.conf import DEFAULTS

        defaults = sorted(DEFAULTS)
    except ImportError:
        pass
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("select sqlite_version()")
        else:
            cursor.execute("select version()")
        server = cursor.fetchone()[0]
    return {
        "mailer_version": getattr(mailer, "__version__", "?"),
        "mailer_dir": check_origin(),
        "django": django.get_version(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "database": f"{connection.vendor} {server}",
        "mailer_settings": defaults,
    }


def action_migrate(params):
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return {}


def action_fill(params):
    """Queue ``n`` messages through the package's own ``DbBackend`` (untimed set-up for the drain scenarios)."""
    from django.core.mail import get_connection
    from django.db import transaction

    n, start, chunk = params["n"], params.get("start", 0), 1000
    connection = get_connection()
    with transaction.atomic():
        for first in range(start, start + n, chunk):
            last = min(first + chunk, start + n)
            connection.send_messages([make_email(i) for i in range(first, last)])
    return {"queued": n}


def action_enqueue_single(params):
    """``n`` calls of Django's ``send_mail``, each queued (and committed) on its own."""
    from django.core.mail import send_mail

    n = params["n"]
    started = time.perf_counter()
    for i in range(n):
        send_mail(f"Benchmark message {i}", BODY, "Benchmark <bench@example.com>", [f"rcpt{i}@example.com"])
    return {"seconds": time.perf_counter() - started, "n": n}


def action_enqueue_batch(params):
    """One ``send_messages()`` call on the queue backend with ``n`` emails (built before the timer starts)."""
    from django.core.mail import get_connection

    n = params["n"]
    emails = [make_email(i) for i in range(n)]
    started = time.perf_counter()
    queued = get_connection().send_messages(emails)
    seconds = time.perf_counter() - started
    if queued != n:
        sys.exit(f"send_messages queued {queued} of {n}")
    return {"seconds": seconds, "n": n}


def action_command(params):
    """A management command (``send_mail``, ``runmailer_pg``), timed from inside."""
    from django.core.management import call_command
    from django.db import connection

    connection.ensure_connection()
    if params.get("wait_go"):
        wait_for_go()
    rss_before = memory_kib("VmRSS")
    wall_start = time.time()
    started, cpu_started = time.perf_counter(), time.process_time()
    call_command(params["name"], *params.get("args", []))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started,  # this process only: less swayed by a busy machine
        "start": wall_start,
        "end": wall_start + seconds,
        "rss_before_kib": rss_before,
        "hwm_kib": memory_kib("VmHWM"),
    }


def action_produce(params):
    """Queue messages one at a time, each committed on its own, for the latency of ``runmailer_pg``.

    After ``go``, sends ``warmup`` messages and prints ``WARM``; after a second ``go``, sends ``n`` messages
    ``interval`` seconds apart and reports when each one was committed.
    """
    from django.db import connection

    connection.ensure_connection()
    wait_for_go()
    for i in range(params["warmup"]):
        make_email(f"warm-{i}").send()
    emit("WARM")
    if not sys.stdin.readline():
        sys.exit("parent went away")
    committed = {}
    for i in range(params["n"]):
        # The header is informative; the reported time is taken once send() returned, i.e. after the commit.
        make_email(i, {"X-Bench-Committed": f"{time.time():.6f}"}).send()
        committed[str(i)] = time.time()
        time.sleep(params["interval"])
    return {"committed": committed}


def action_fill_scheduled(params):
    """Queue the messages of a schedule (``benchmarks/scheduled.py``; this package only, not 2.3.2).

    The schedule is a JSON file: ``[[bench_id, send_at, expires_at, priority, expire_while_waiting], ...]``,
    times in seconds since the epoch (``expires_at`` may be null), priority "high", "medium" or "low".
    Messages are queued through the ``DbBackend`` with ``send_at`` / ``expires_at`` attributes, 1,000 per
    transaction. The queueing API
    refuses an ``expires_at`` before ``send_at``; the rows marked ``expire_while_waiting`` are given one
    afterwards, halfway between now and their ``send_at`` (as if their expiry had been brought forward
    while they waited), by an ``UPDATE`` in the same transaction.
    """
    import datetime

    from django.core.mail import get_connection
    from django.db import transaction

    from mailer.models import Message

    def aware(seconds):
        return None if seconds is None else datetime.datetime.fromtimestamp(seconds, datetime.UTC)

    with open(params["schedule"]) as f:
        schedule = json.load(f)
    connections = {priority: get_connection(priority=priority) for priority in ("high", "medium", "low")}
    started = time.time()
    for first in range(0, len(schedule), 1000):
        with transaction.atomic():
            last_pk = Message.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            chunk = []  # in the order queued: one send_messages() per priority, so ids follow this order
            for priority, connection in connections.items():
                entries = [entry for entry in schedule[first : first + 1000] if entry[3] == priority]
                emails = []
                for bench_id, send_at, expires_at, _, _ in entries:
                    email = make_email(bench_id, {"X-Bench-Send-At": f"{send_at:.6f}"})
                    email.send_at = aware(send_at)
                    email.expires_at = aware(expires_at)
                    emails.append(email)
                if emails and connection.send_messages(emails) != len(emails):
                    sys.exit("send_messages did not queue every message")
                chunk.extend(entries)
            rows = list(Message.objects.filter(pk__gt=last_pk).order_by("pk").values_list("pk", "not_before"))
            if len(rows) != len(chunk):
                sys.exit(f"queued {len(rows)} rows for {len(chunk)} messages")
            now = datetime.datetime.now(datetime.UTC)
            for (pk, not_before), entry in zip(rows, chunk, strict=True):
                if entry[4]:
                    Message.objects.filter(pk=pk).update(expires_at=now + (not_before - now) / 2)
    return {"seconds": time.time() - started, "ended": time.time()}


def action_scheduled_stats(params):
    """What is left after a scheduled run: queued rows, log rows by result, expiries, Message-IDs sent."""
    from django.db.models import Count

    from mailer.models import Message, MessageLog

    by_result = dict(MessageLog.objects.values_list("result").annotate(n=Count("id")).order_by())
    return {
        "queued": Message.objects.count(),
        "logged": by_result,
        "expired": MessageLog.objects.filter(log_message__startswith="expired:").count(),
        "sent_message_ids": list(MessageLog.objects.filter(result="1").values_list("message_id", flat=True)),
    }


def action_stats(params):
    from mailer.models import Message, MessageLog

    return {"queued": Message.objects.count(), "logged": MessageLog.objects.count()}


ACTIONS = {
    "info": action_info,
    "migrate": action_migrate,
    "fill": action_fill,
    "enqueue_single": action_enqueue_single,
    "enqueue_batch": action_enqueue_batch,
    "command": action_command,
    "produce": action_produce,
    "stats": action_stats,
    "fill_scheduled": action_fill_scheduled,
    "scheduled_stats": action_scheduled_stats,
}


def main():
    action = sys.argv[1]
    params = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_settings")
    import django

    django.setup()
    check_origin()
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        emit("RESULT", ACTIONS[action](params))
        return
    import cProfile

    profiler = cProfile.Profile()
    result = profiler.runcall(ACTIONS[action], params)
    profiler.dump_stats(profile_path)
    emit("RESULT", result)


if __name__ == "__main__":
    main()
