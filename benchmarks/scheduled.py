"""Scheduled mail on PostgreSQL: does ``runmailer_pg`` send each message on time, never early, never twice?

    python benchmarks/scheduled.py                          # 10,000 messages due over 10 minutes
    python benchmarks/scheduled.py --minutes 1 --count 1000 # a short check, about 1.5 minutes

One real ``manage.py runmailer_pg`` process (this package, from the working tree) sends to an SMTP sink on
loopback that notes when each message arrives and with which Message-ID. The queue is filled while it
runs with messages whose ``send_at`` is spread over the next ``--minutes``: most at random moments, some in
bursts (many due at the same instant, like a newsletter at 9:00), a few with an ``expires_at`` shortly after
their ``send_at`` (they must arrive), and a few whose expiry falls while they wait (they must never arrive).
See ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from databases import Postgres  # noqa: E402
from run import log, percentile  # noqa: E402
from sides import REPO_ROOT, BenchError, Side  # noqa: E402
from sink import SMTPSink  # noqa: E402

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
PRIORITIES = (("high", 0.1), ("medium", 0.8), ("low", 0.1))
PREFIXES = {"spread": "s", "burst": "b", "expires_after": "a", "expires_waiting": "w"}  # of the X-Bench-Id
TARGET_P99 = 1.0  # seconds of lateness, at most, for 99% of the messages


def make_schedule(args: argparse.Namespace, start: float) -> list[dict]:
    """The messages to queue: id, send_at, expires_at (epoch seconds), priority and kind.

    Kinds: ``spread`` (a random moment of the span), ``burst`` (one of the span's few instants at which
    many fall due together), ``expires_after`` (``expires_at`` 5 s after ``send_at``: must arrive) and
    ``expires_waiting`` (its expiry is set, after queueing, halfway through its wait: must not arrive).
    """
    rng = random.Random(args.seed)
    span = args.minutes * 60
    n = args.count
    bursts = max(1, round(args.minutes))
    counts = {
        "burst": round(n * args.burst_fraction),
        "expires_after": round(n * args.expire_fraction),
        "expires_waiting": round(n * args.expire_fraction),
    }
    counts["spread"] = n - sum(counts.values())
    instants = [start + span * (k + 0.5) / bursts for k in range(bursts)]
    names, weights = zip(*PRIORITIES, strict=True)
    schedule = []
    for kind, count in counts.items():
        for i in range(count):
            send_at = instants[i % bursts] if kind == "burst" else start + rng.uniform(0, span)
            schedule.append(
                {
                    "id": f"{PREFIXES[kind]}{i}",
                    "send_at": send_at,
                    "expires_at": send_at + 5 if kind == "expires_after" else None,
                    "priority": rng.choices(names, weights)[0],
                    "kind": kind,
                }
            )
    rng.shuffle(schedule)  # queued in no particular order of send_at, as a site queues them
    return schedule


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mailer-scheduled-"))
        python = args.python or sys.executable
        self.side = Side.create("ours", "ours", python, self.tmp / "ours", [str(REPO_ROOT)], str(REPO_ROOT / "mailer"))
        (self.tmp / "postgres").mkdir()
        self.vendor = Postgres(self.tmp / "postgres", self.migrate)

    def config(self, database: dict, **extra) -> dict:
        lock_dir = self.tmp / "locks" / f"{time.monotonic_ns()}"
        lock_dir.mkdir(parents=True)
        return {"database": database, "lock_path": str(lock_dir / "send_mail"), "extra_settings": {}, **extra}

    def migrate(self, side: Side, database: dict) -> None:
        side.run("migrate", {}, self.config(database), timeout=600)

    def run(self) -> dict:
        args = self.args
        sink = SMTPSink().start()
        try:
            with self.vendor.fresh(self.side) as db:
                cfg = self.config(db, backend=SMTP_BACKEND, smtp_port=sink.port)
                info = self.side.run("info", {}, cfg)
                mailer = self.side.start("command", {"name": "runmailer_pg", "wait_go": True}, cfg)
                try:
                    mailer.expect("READY")
                    mailer.go()
                    start = time.time() + args.lead
                    schedule = make_schedule(args, start)
                    path = self.tmp / "schedule.json"
                    rows = [
                        [m["id"], m["send_at"], m["expires_at"], m["priority"], m["kind"] == "expires_waiting"]
                        for m in schedule
                    ]
                    path.write_text(json.dumps(rows))
                    log(
                        f"queueing {len(schedule)} messages, due {args.lead:g} s from now and over {args.minutes:g} min"
                    )
                    filled = self.side.run("fill_scheduled", {"schedule": str(path)}, cfg)
                    log(f"queued in {filled['seconds']:.1f} s")
                    if filled["ended"] > start:
                        raise BenchError(
                            f"queueing ended {filled['ended'] - start:.1f} s after the first send_at: give more --lead"
                        )
                    self.wait(sink, schedule, mailer)
                finally:
                    code = mailer.interrupt()
                stats = self.side.run("scheduled_stats", {}, cfg)
                cpu = getattr(mailer, "cpu", None)
                if code != 0:
                    raise BenchError(f"runmailer_pg exited with {code}:\n{mailer.stderr_tail()}")
            with sink._lock:
                arrivals = dict(sink.first_arrival)
                message_ids = dict(sink.message_ids)
                got = {"received": sink.count, "duplicates": sink.count - len(sink.ids)}
        finally:
            sink.stop()
            try:
                self.vendor.close()
            finally:
                if not args.keep:
                    shutil.rmtree(self.tmp, ignore_errors=True)
        return {
            "info": info,
            "filled_seconds": filled["seconds"],
            "sender_cpu_seconds": cpu,
            **figures(schedule, arrivals, message_ids, got, stats),
        }

    def wait(self, sink: SMTPSink, schedule: list[dict], mailer) -> None:
        """Until every message that must arrive has, and the last ``send_at`` is a few seconds past."""
        expected = {m["id"] for m in schedule if m["kind"] != "expires_waiting"}
        last = max(m["send_at"] for m in schedule)
        deadline = last + self.args.grace
        next_report = time.time() + 60
        while True:
            now = time.time()
            with sink._lock:
                arrived = len(expected.intersection(sink.first_arrival))
            if arrived == len(expected) and now > last + 2:
                return
            if now > deadline:
                log(f"gave up: {arrived} of {len(expected)} arrived {self.args.grace:g} s after the last send_at")
                return
            if mailer._exit is not None:
                raise BenchError(f"runmailer_pg ended early:\n{mailer.stderr_tail()}")
            if now >= next_report:
                log(f"{arrived} of {len(expected)} arrived so far")
                next_report += 60
            time.sleep(min(1.0, max(0.05, deadline - now)))


def figures(schedule: list[dict], arrivals: dict, message_ids: dict, got: dict, stats: dict) -> dict:
    by_id = {m["id"]: m for m in schedule}
    must_arrive = [m for m in schedule if m["kind"] != "expires_waiting"]
    lateness = {m["id"]: arrivals[m["id"]] - m["send_at"] for m in must_arrive if m["id"] in arrivals}
    values = list(lateness.values())
    early = [i for i, late in lateness.items() if late < 0]
    expired_arrived = [m["id"] for m in schedule if m["kind"] == "expires_waiting" and m["id"] in arrivals]
    sent_ids = set(stats["sent_message_ids"])
    arrived_ids = {mid for mid in message_ids.values() if mid}
    per_kind = {}
    for kind in ("spread", "burst", "expires_after"):
        late = [lateness[m["id"]] for m in schedule if m["kind"] == kind and m["id"] in lateness]
        if late:
            per_kind[kind] = {"n": len(late), "median": statistics.median(late), "p99": percentile(late, 0.99)}
    worst = sorted(lateness.items(), key=lambda item: item[1], reverse=True)[:5]
    return {
        "messages": len(schedule),
        "must_arrive": len(must_arrive),
        "must_not_arrive": len(schedule) - len(must_arrive),
        "arrived": len(lateness),
        "early": len(early),
        "earliest_s": min(values) if values else None,
        "median_s": statistics.median(values) if values else None,
        "p95_s": percentile(values, 0.95),
        "p99_s": percentile(values, 0.99),
        "max_s": max(values) if values else None,
        "over_1s": sum(1 for v in values if v > 1.0),
        "per_kind": per_kind,
        "worst": [
            {"id": i, "late_s": late, "kind": by_id[i]["kind"], "priority": by_id[i]["priority"]} for i, late in worst
        ],
        "lost": len(must_arrive) - len(lateness),
        "twice": got["duplicates"],
        "expired_arrived": len(expired_arrived),
        "expired_logged": stats["expired"],
        "left_queued": stats["queued"],
        "logged": stats["logged"],
        "distinct_message_ids": len(arrived_ids),
        "arrived_not_logged_sent": len(arrived_ids - sent_ids),
        "logged_sent_not_arrived": len(sent_ids - arrived_ids),
    }


def render(result: dict, args: argparse.Namespace, elapsed: float) -> str:
    def s(value) -> str:
        return "n/a" if value is None else f"{value * 1000:.0f} ms" if abs(value) < 10 else f"{value:.1f} s"

    checks = [
        ("arrived early (must be 0)", result["early"], result["early"] == 0),
        (
            f"lateness p99 (must be under {TARGET_P99:g} s)",
            s(result["p99_s"]),
            result["p99_s"] is not None and result["p99_s"] < TARGET_P99,
        ),
        ("lost (must be 0)", result["lost"], result["lost"] == 0),
        ("arrived twice (must be 0)", result["twice"], result["twice"] == 0),
        ("expired that arrived (must be 0)", result["expired_arrived"], result["expired_arrived"] == 0),
        (
            "expired, logged as such",
            f"{result['expired_logged']} of {result['must_not_arrive']}",
            result["expired_logged"] == result["must_not_arrive"],
        ),
        ("left on the queue", result["left_queued"], result["left_queued"] == 0),
    ]
    info = result["info"]
    out = [
        f"# runmailer_pg and scheduled mail: {result['messages']:,} messages due over {args.minutes:g} min",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; run took {elapsed / 60:.1f} min",
        f"- Machine: {os.cpu_count()} CPUs, {platform.platform()}; {info['database']}",
        f"- django-mailer {info['mailer_version']} ({info['mailer_dir']}), Python {info['python']}, "
        f"Django {info['django']}",
        f"- Queued in {result['filled_seconds']:.1f} s; runmailer_pg CPU time "
        f"{result['sender_cpu_seconds'] or 0:.1f} s",
        "",
        f"Lateness (arrival at the sink - send_at) of the {result['arrived']:,} that arrived: "
        f"median {s(result['median_s'])}, p95 {s(result['p95_s'])}, p99 {s(result['p99_s'])}, "
        f"max {s(result['max_s'])}; earliest {s(result['earliest_s'])}; {result['over_1s']} later than 1 s.",
    ]
    for kind, f in result["per_kind"].items():
        out.append(f"- {kind}: {f['n']:,} messages, median {s(f['median'])}, p99 {s(f['p99'])}")
    out.append("")
    width = max(len(name) for name, _, _ in checks)
    for name, value, ok in checks:
        out.append(f"{name.ljust(width)}  {str(value):>12}  {'yes' if ok else 'NO'}")
    out.append(
        f"Message-IDs: {result['distinct_message_ids']:,} distinct arrived; "
        f"{result['arrived_not_logged_sent']} arrived but not logged as sent; "
        f"{result['logged_sent_not_arrived']} logged as sent but not arrived"
    )
    out.append(
        "Latest: " + ", ".join(f"{w['id']} ({w['kind']}, {w['priority']}) {s(w['late_s'])}" for w in result["worst"])
    )
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="send_at spread over this many minutes (10)")
    parser.add_argument("--count", type=int, default=10_000, help="messages (10,000)")
    parser.add_argument(
        "--lead", type=float, default=None, help="seconds from the start to the first send_at (default: room to queue)"
    )
    parser.add_argument("--burst-fraction", type=float, default=0.1, help="share due in bursts (0.1)")
    parser.add_argument("--expire-fraction", type=float, default=0.02, help="share of each expiring kind (0.02)")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds to wait after the last send_at (60)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--python", help="interpreter for the children (default: this one)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (children's stderr)")
    args = parser.parse_args(argv)
    if args.lead is None:
        args.lead = 10 + args.count / 500  # queueing takes about 1 s per 1,000 messages on a quiet machine
    if args.minutes <= 0 or args.count < 1:
        parser.error("--minutes and --count must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result = Run(args).run()
    print(render(result, args, time.monotonic() - started))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **result}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
