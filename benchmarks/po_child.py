"""One benchmark step for the django-post-office side of ``benchmarks/postoffice.py`` (copied as ``child.py``).

The counterpart of ``child.py`` for django-post-office, with the same protocol (``python child.py ACTION
'{json}'``, a ``RESULT <json>`` last line, ``READY`` then a line on stdin with ``"wait_go": true``) and the
same messages (body, sender, one recipient, an ``X-Bench-Id`` header). It runs under the post-office venv's
interpreter from a temporary directory and imports nothing from the repository.
"""

import json
import os
import sys
import time

BODY = (
    "Hello,\n\nThis is a benchmark message of about one kilobyte, the size of a typical notification "
    "with a short text part. " * 8
)


def emit(tag, payload=None):
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check_origin():
    """Make sure post_office comes from the venv the benchmark built."""
    import post_office

    expected = os.environ.get("BENCH_EXPECT_MAILER_DIR")
    location = os.path.dirname(os.path.abspath(post_office.__file__))
    if expected and not location.startswith(expected):
        sys.exit(f"post_office imported from {location}, expected it under {expected}")
    return location


def action_info(params):
    import importlib.metadata
    import platform

    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("select sqlite_version()" if connection.vendor == "sqlite" else "select version()")
        server = cursor.fetchone()[0]
    return {
        "mailer_version": importlib.metadata.version("django-post-office"),
        "mailer_dir": check_origin(),
        "django": django.get_version(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "database": f"{connection.vendor} {server}",
    }


def action_migrate(params):
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return {}


def action_fill(params):
    """Queue ``n`` messages with post-office's own bulk call (untimed set-up), at its default priority."""
    from django.db import transaction
    from post_office import mail

    n, start, chunk = params["n"], params.get("start", 0), 1000
    with transaction.atomic():
        for first in range(start, start + n, chunk):
            mail.send_many(
                [
                    {
                        "recipients": [f"rcpt{i}@example.com"],
                        "sender": "Benchmark <bench@example.com>",
                        "subject": f"Benchmark message {i}",
                        "message": BODY,
                        "headers": {"X-Bench-Id": str(i)},
                    }
                    for i in range(first, min(first + chunk, start + n))
                ]
            )
    return {"queued": n}


def action_command(params):
    """``send_queued_mail`` (which returns once the queue is empty), timed from inside like ``child.py``."""
    from django.core.management import call_command
    from django.db import connection

    connection.ensure_connection()
    started, cpu_started = time.perf_counter(), time.process_time()
    call_command(params["name"], *params.get("args", []))
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}


def action_stats(params):
    from django.db.models import Count
    from post_office.models import STATUS, Email, Log

    by_status = dict(Email.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "queued": by_status.get(STATUS.queued, 0) + by_status.get(STATUS.requeued, 0),
        "sent": by_status.get(STATUS.sent, 0),
        "failed": by_status.get(STATUS.failed, 0),
        "logged": Log.objects.count(),
    }


ACTIONS = {
    "info": action_info,
    "migrate": action_migrate,
    "fill": action_fill,
    "command": action_command,
    "stats": action_stats,
}


def main():
    action = sys.argv[1]
    params = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_settings")
    import django

    django.setup()
    check_origin()
    emit("RESULT", ACTIONS[action](params))


if __name__ == "__main__":
    main()
