"""What reading the Prometheus metrics costs on PostgreSQL with a large queue and log.

    python benchmarks/metrics.py                        # 200,000 queued rows, 200,000 log entries, 15 rounds
    python benchmarks/metrics.py --rows 1000000 --rounds 30 --json metrics.json

Creates a database ``bench_metrics_<run id>`` on the server the test suite uses (``PGHOST``/``PGPORT``/
``PGUSER``/``PGPASSWORD``, default 127.0.0.1 as ``postgres``), migrates it, fills the queue and the log with
``COPY``, then times :func:`mailer.metrics.prometheus_text` (everything a scrape of ``mailer.views.metrics``
or ``mailer_status --prometheus`` costs but the HTTP request or the interpreter start) in this process,
counting its queries, and between its readings :func:`mailer.status.queue_status` as ``mailer_status`` reads
it (the log's last day only, not the whole log), to show what counting the whole log costs. The database
is dropped at the end (``--keep`` keeps it). See ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.dbconfig import database, pg_params  # noqa: E402

TARGET = 1.0  # seconds, at most, for the median reading
# Where the queued rows stand: due at each priority, deferred, waiting for a retry, scheduled.
SHARES = (("high", 0.10), ("medium", 0.55), ("low", 0.20), ("deferred", 0.05), ("waiting", 0.06), ("scheduled", 0.04))
PRIORITY = {"high": 1, "medium": 2, "low": 3, "deferred": 4, "waiting": 2, "scheduled": 3}
RESULTS = (("1", 0.90), ("2", 0.03), ("3", 0.07))  # success, don't send, failure


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def admin_connection():
    import psycopg

    return psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=10, **pg_params())


def setup_django(name: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="django-mailer-benchmark-not-secret",
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["mailer"],
        DATABASES={"default": database(name, "postgres")},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        EMAIL_BACKEND="mailer.backend.DbBackend",
        MAILER_EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
    )
    django.setup()


def fill(args: argparse.Namespace) -> None:
    """The queue and the log, with COPY in one transaction each; then VACUUM ANALYZE, as autovacuum would."""
    from django.db import connection

    rng = random.Random(args.seed)
    now = datetime.datetime.now(datetime.UTC)
    data = "x" * args.data_bytes
    aliases = [None, *(f"alias{n}" for n in range(1, args.aliases))]
    kinds, weights = zip(*SHARES, strict=True)
    started = time.monotonic()
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3's cursor: COPY
        columns = "message_data, when_added, priority, retry_count, mailer, not_before, attempts"
        with raw.copy(f"COPY mailer_message ({columns}) FROM STDIN") as copy:
            for _ in range(args.rows):
                kind = rng.choices(kinds, weights)[0]
                added = now - datetime.timedelta(seconds=rng.uniform(0, 2 * 86400))
                not_before, attempts = None, 0
                if kind == "waiting":
                    not_before, attempts = now + datetime.timedelta(seconds=rng.uniform(60, 6 * 3600)), 3
                elif kind == "scheduled":
                    not_before = now + datetime.timedelta(seconds=rng.uniform(60, 7 * 86400))
                copy.write_row((data, added, PRIORITY[kind], 0, rng.choice(aliases), not_before, attempts))
        codes, result_weights = zip(*RESULTS, strict=True)
        stamps = sorted(now - datetime.timedelta(seconds=rng.uniform(0, 3 * 86400)) for _ in range(args.log_rows))
        with raw.copy(
            "COPY mailer_messagelog (message_data, when_added, priority, when_attempted, result, log_message) "
            "FROM STDIN"
        ) as copy:
            for attempted in stamps:  # in the order they were attempted, as senders write them
                code = rng.choices(codes, result_weights)[0]
                copy.write_row((data, attempted - datetime.timedelta(seconds=5), 2, attempted, code, ""))
        if args.paused:
            cursor.execute(
                "INSERT INTO mailer_relaystate (relay, paused_until, pause_seconds) VALUES ('default', %s, 600)",
                [now + datetime.timedelta(minutes=10)],
            )
    log(f"filled {args.rows:,} queued rows and {args.log_rows:,} log entries in {time.monotonic() - started:.1f} s")
    import psycopg

    with psycopg.connect(dbname=connection.settings_dict["NAME"], autocommit=True, **pg_params()) as conn:
        conn.execute("VACUUM ANALYZE mailer_message")
        conn.execute("VACUUM ANALYZE mailer_messagelog")


def measure(args: argparse.Namespace) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mailer.metrics import prometheus_text
    from mailer.status import queue_status

    prometheus_text()  # warm: connection, first plans
    queue_status()
    times, status_times, queries, status_queries, per_query, status_per_query = [], [], set(), set(), {}, {}
    for _ in range(args.rounds):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            text = prometheus_text()
            times.append(time.perf_counter() - started)
        queries.add(len(captured))
        _per_query(captured, per_query)
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            queue_status()
            status_times.append(time.perf_counter() - started)
        status_queries.add(len(captured))
        _per_query(captured, status_per_query)
    status = queue_status(whole_log=True)

    def summary(values: list[float]) -> dict:
        ordered = sorted(values)
        return {
            "median": statistics.median(ordered),
            "min": ordered[0],
            "max": ordered[-1],
            "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            "stdev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        }

    return {
        "rows": args.rows,
        "log_rows": args.log_rows,
        "aliases": args.aliases,
        "rounds": args.rounds,
        "queries": sorted(queries),
        "queue_status_queries": sorted(status_queries),
        "prometheus_text": summary(times),
        "queue_status": summary(status_times),
        "per_query_median": {name: statistics.median(values) for name, values in per_query.items()},
        "queue_status_per_query_median": {name: statistics.median(v) for name, v in status_per_query.items()},
        "total_counted": status.total,
        "log_counted": sum(vars(status.log_total).values()),
        "log_last_day": sum(vars(status.last_day).values()),
        "behind_pauses": status.behind_pauses,
        "output_bytes": len(text.encode()),
        "postgres": connection.cursor().connection.info.server_version,
        "python": platform.python_version(),
    }


def _per_query(captured, times: dict[str, list[float]]) -> None:
    for n, query in enumerate(captured.captured_queries):
        times.setdefault(f"{n + 1}. {_kind(query['sql'])}", []).append(float(query["time"]))


def _kind(sql: str) -> str:
    """What a query of a reading reads, for the report."""
    if "mailer_relaystate" in sql:
        return "relays' pauses"
    if "mailer_message" in sql and "mailer_messagelog" not in sql:
        return "queue, GROUP BY priority, mailer"
    if "COUNT(" in sql and '"id" >' in sql:
        return "log, last day, GROUP BY result"
    if "COUNT(" in sql:
        return "log, whole, GROUP BY result"
    if '"result" =' in sql:
        return "log, last success before the day"
    return "log, start of the last day"


def report(result: dict) -> None:
    def ms(value: float) -> str:
        return f"{value * 1000:8.1f} ms"

    print(
        f"\n{result['rows']:,} queued rows ({result['aliases']} aliases), {result['log_counted']:,} log entries "
        f"({result['log_last_day']:,} in the last day), {result['rounds']} rounds, PostgreSQL "
        f"{result['postgres']}, Python {result['python']}"
    )
    print(f"{'':18}{'median':>11}{'min':>11}{'p90':>11}{'max':>11}{'stdev':>11}")
    for name in ("prometheus_text", "queue_status"):
        s = result[name]
        print(f"{name:18}" + "".join(f" {ms(s[key])}" for key in ("median", "min", "p90", "max", "stdev")))
    for title, key in (("prometheus_text", "per_query_median"), ("queue_status", "queue_status_per_query_median")):
        print(f"  {title}, median per query:")
        for name, seconds in result[key].items():
            print(f"    query {name:36} {ms(seconds)}")
    print(f"queries per reading: prometheus_text {result['queries']}, queue_status {result['queue_status_queries']}")
    print(f"output {result['output_bytes']:,} bytes")
    met = result["prometheus_text"]["median"] < TARGET
    print(f"target: median under {TARGET:g} s: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="queued rows (default 200,000)")
    parser.add_argument("--log-rows", type=int, default=200_000, help="log entries over 3 days (default 200,000)")
    parser.add_argument("--aliases", type=int, default=4, help="aliases the rows are queued through (default 4)")
    parser.add_argument("--data-bytes", type=int, default=1024, help="size of each row's message_data")
    parser.add_argument("--rounds", type=int, default=15, help="timed readings (default 15)")
    parser.add_argument("--no-paused", dest="paused", action="store_false", help="no paused relay")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    name = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    with admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        setup_django(name)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        fill(args)
        result = measure(args)
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            with admin_connection() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
