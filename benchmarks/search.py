"""The admin's search of a large log: by recipient (an index) and by words of the subject (a scan).

    python benchmarks/search.py [--db postgres|mysql|sqlite] [--rows 200000] [--repeat 30] [--keep]

A new database (``bench_search_<id>``; on SQLite a file in a temporary directory) is migrated and filled with
``--rows`` log entries through the senders' own write (:func:`mailer.writes.insert_logs`: ``COPY`` on
PostgreSQL with psycopg 3), in batches of 5,000: each entry to its own address, one in five with a Cc shared
by about 80 entries, one in twenty with a Bcc shared by all of those; subjects from a short list, some with the
entry's number. Statistics are then gathered (``VACUUM ANALYZE``), and each search is timed ``--repeat``
times, after one warm-up:

* ``queryset``: what the change list asks the database for the search: the matching entries' count and the
  first page of 100, newest first (``MessageLog.objects.search(term)``);
* ``admin page``: the whole change list page with that search, through Django's test client as a
  superuser (the page also decodes the 100 entries it shows).

It prints the median, the fastest and the slowest of each, and the database's plan (``EXPLAIN ANALYZE``
on PostgreSQL) of the queryset of each search. The database is dropped at the end unless ``--keep``.
Uses the working tree's ``mailer``; see benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.dbconfig import database, mysql_params, pg_params  # noqa: E402

BATCH = 5000
SUBJECTS = ["Password reset", "Your invoice {n}", "Weekly digest", "Welcome aboard", "Order {n} has shipped"]


def searches(rows: int) -> list[tuple[str, str]]:
    """(label, term) of each search timed; the single entries are a bit past the middle of the log."""
    n = (rows * 3 // 5) // len(SUBJECTS) * len(SUBJECTS) + 1  # an entry whose subject is "Your invoice {n}"
    return [
        ("recipient, 1 entry", f"User{n}@Example.com"),
        ("recipient in Cc, ~80 entries", "team7@example.com"),
        ("recipient in Bcc, 1 in 20", "audit@example.com"),
        ("nobody (falls back to Message-IDs)", "nobody@example.com"),
        ("subject words", "password reset"),
        ("subject word, rare", f"invoice {n}"),
    ]


def configure(kind: str, name: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench-search",
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        USE_TZ=True,
        TIME_ZONE="UTC",  # MariaDB without time zone tables converts no other zone (the date hierarchy needs it)
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.admin",
            "mailer",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="tests.urls",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={"default": database(name, kind)},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    django.setup()


def create_database(kind: str, name: str) -> None:
    if kind == "postgres":
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **pg_params()) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    elif kind == "mysql":
        import MySQLdb

        p = mysql_params()
        admin = MySQLdb.connect(host=p["host"], port=p["port"], user=p["user"], password=p["password"])
        admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        admin.close()


def drop_database(kind: str, name: str) -> None:
    from django.db import connections

    connections.close_all()
    if kind == "postgres":
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **pg_params()) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    elif kind == "mysql":
        import MySQLdb

        p = mysql_params()
        admin = MySQLdb.connect(host=p["host"], port=p["port"], user=p["user"], password=p["password"])
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def fill(rows: int) -> float:
    """Write ``rows`` log entries as senders do; seconds taken."""
    from django.core.mail import EmailMessage
    from django.db import transaction
    from django.utils import timezone

    from mailer import serialization, writes
    from mailer.models import Result
    from mailer.searchcols import log_columns

    body = "Hello,\n\n" + "This is the text of a typical transactional message. " * 12
    started = time.perf_counter()
    start = timezone.now() - timezone.timedelta(days=30)
    for first in range(0, rows, BATCH):
        logs = []
        for n in range(first, min(first + BATCH, rows)):
            email = EmailMessage(
                SUBJECTS[n % len(SUBJECTS)].format(n=n),
                body,
                "shop@example.com",
                [f"user{n}@example.com"],
                cc=[f"team{n % 499}@example.com"] if n % 5 == 0 else [],
                bcc=["audit@example.com"] if n % 20 == 0 else [],
                headers={"Message-ID": f"<{n}.{uuid.uuid4().hex}@bench.example.com>"},
            )
            when = start + timezone.timedelta(seconds=n * 10)
            logs.append(
                {
                    "message_data": serialization.dumps(email) if n < 2 * BATCH else SHARED_DATA[n % 2],
                    "message_id": email.extra_headers["Message-ID"],
                    "provider_message_id": None,
                    "when_added": when,
                    "when_attempted": when,
                    "priority": 2,
                    "result": Result.SUCCESS if n % 50 else Result.FAILURE,
                    "log_message": "",
                    "mailer": None,
                    **log_columns(email),
                }
            )
            if n < 2:
                SHARED_DATA.append(logs[-1]["message_data"])
        with transaction.atomic():
            writes.insert_logs(logs, "default")
    return time.perf_counter() - started


SHARED_DATA: list[str] = []  # every entry after the first 10,000 keeps the data of one of the first two


def analyze(kind: str) -> None:
    from django.db import connection

    from mailer.models import LogRecipient, MessageLog

    with connection.cursor() as cursor:
        for model in (MessageLog, LogRecipient):
            table = connection.ops.quote_name(model._meta.db_table)
            if kind == "postgres":
                cursor.execute(f"VACUUM ANALYZE {table}")
            elif kind == "mysql":
                cursor.execute(f"ANALYZE TABLE {table}")
                cursor.fetchall()
            else:
                cursor.execute("ANALYZE")


def time_it(function, repeat: int) -> list[float]:
    function()  # warm-up: caches, the first query's plan
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return times


def plan(kind: str, term: str) -> str:
    from mailer.models import MessageLog

    queryset = MessageLog.objects.search(term).order_by("-pk")[:100]
    if kind == "postgres":
        return queryset.explain(analyze=True)
    return queryset.explain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgres", "mysql", "sqlite"], default="postgres")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    args = parser.parse_args()

    name = f"bench_search_{uuid.uuid4().hex[:8]}"
    if args.db == "sqlite":
        name = str(Path(tempfile.mkdtemp()) / f"{name}.sqlite3")
    create_database(args.db, name)
    configure(args.db, name)
    try:
        run(args)
    finally:
        if args.keep:
            print(f"database kept: {name}")
        else:
            drop_database(args.db, name)


def run(args) -> None:
    import django
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from mailer.models import LogRecipient, MessageLog

    call_command("migrate", verbosity=0)
    seconds = fill(args.rows)
    analyze(args.db)
    print(
        f"{MessageLog.objects.count():,} log entries, {LogRecipient.objects.count():,} address rows, written in "
        f"{seconds:.1f} s; {connection.display_name} {'.'.join(map(str, connection.get_database_version()))},"
        f" Django {django.get_version()}, Python {sys.version.split()[0]}\n"
    )
    setup_test_environment()
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    url = "/admin/mailer/messagelog/"

    queries = []
    print(f"{'search':38} {'term':26} {'found':>7} {'queryset ms (median, min-max)':>31} {'admin page ms':>24}")
    searched = searches(args.rows)
    for label, term in searched:
        found = MessageLog.objects.search(term).count()

        def query(term=term):
            queryset = MessageLog.objects.search(term)
            queryset.count()
            list(queryset.order_by("-pk")[:100])

        def page(term=term):
            response = client.get(url, {"q": term})
            assert response.status_code == 200, response.status_code

        with CaptureQueriesContext(connection) as captured:
            page()
        queries.append((term, captured.captured_queries))

        q, p = time_it(query, args.repeat), time_it(page, max(5, args.repeat // 3))
        print(
            f"{label:38} {term:26} {found:>7,} {statistics.median(q):>12.1f} ({min(q):.1f}-{max(q):.1f})"
            f"{'':>6} {statistics.median(p):>9.1f} ({min(p):.1f}-{max(p):.1f})"
        )
    print("\nThe admin page's queries (one load of each search), slowest first:")
    for term, captured in queries:
        slowest = sorted(captured, key=lambda q: -float(q["time"]))[:3]
        shown = "; ".join(f"{float(q['time']) * 1000:.0f} ms {q['sql'][:90]}" for q in slowest)
        print(f"  {term}: {len(captured)} queries; {shown}")
    for label, term in searched[:1] + searched[4:5]:
        print(f"\nPlan of the search for {term!r} ({label}), first page:\n{plan(args.db, term)}")


if __name__ == "__main__":
    main()
