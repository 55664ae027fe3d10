"""Throughput of drain chains on real task workers: one worker against four, with a slow relay.

    python benchmarks/workers.py [--engine db|rq|celery] [--messages 2000] [--relay-ms 20] [--rounds 3]
                                 [--workers 1,4] [--interval 0.1] [--setting NAME=VALUE ...]

Each measurement: a fresh PostgreSQL database (``tests.project.tasks_settings``), the engine's broker, ``N``
workers started and ready, ``--messages`` messages queued without starting anything, then one
``start_draining(tasks=N)`` (``MAILER_DRAIN_TASKS = N``: one chain per worker). The relay (``benchmarks/sink.py``)
waits ``--relay-ms`` before accepting each message. The figure is messages per second from the moment the chains
were enqueued to the last message's arrival; the rounds alternate the order of the worker counts. Run it from the
repository root with the dev venv (Celery: Python 3.12+ with Django 6.0+), with PostgreSQL (and Redis or RabbitMQ
for rq or Celery) where the test suite finds them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: tests.support
sys.path.insert(0, str(HERE))

from run import parse_settings  # noqa: E402  (NAME=VALUE options, read as run.py reads them)
from sink import SMTPSink  # noqa: E402

from tests.support.project_db import migrated_project, run_in_project  # noqa: E402
from tests.support.workers import descendants, engine_broker, engine_problem, running_workers  # noqa: E402

QUEUE = """
from django.core.mail import EmailMessage
from mailer.backend import DbBackend
emails = [
    EmailMessage(f"bench {{n}}", "body", "from@example.com", ["to@example.com"], headers={{"X-Bench-Id": str(n)}})
    for n in range({count})
]
print("queued", DbBackend().send_messages(emails))
"""

START = """
import time
from mailer.tasks import start_draining
print("started", start_draining(tasks={tasks}), repr(time.time()))
"""


def measure(args: argparse.Namespace, workers: int, sink: SMTPSink, tmp: Path) -> dict:
    settings = {"MAILER_DRAIN_TASKS": workers, **args.settings}
    sink.reset()
    with (
        engine_broker(args.engine) as broker,
        migrated_project(
            tmp,
            f"bench_workers_{workers}",
            MAILER_TEST_SMTP_PORT=str(sink.port),
            MAILER_TEST_USE_FILE_LOCK="0",
            MAILER_TEST_LOG_LEVEL="WARNING",  # per-message INFO lines would measure the log files
            MAILER_TEST_SETTINGS=json.dumps(settings),
            **broker,
        ) as env,
        running_workers(args.engine, env, tmp, workers, interval=args.interval, report=False) as processes,
    ):
        quiet = {**env, "MAILER_TEST_SETTINGS": json.dumps({**settings, "MAILER_DRAIN_TASKS": 0})}
        assert f"queued {args.messages}" in run_in_project(quiet, QUEUE.format(count=args.messages))
        cpu_before, machine_before = _worker_cpu(processes), _machine_cpu()
        out = run_in_project(env, START.format(tasks=workers)).split()
        started = float(out[out.index("started") + 2])
        if not sink.wait_for(lambda s: s.count >= args.messages, timeout=args.timeout):
            raise RuntimeError(f"{workers} worker(s): {sink.snapshot()} after {args.timeout}s")
        cpu, machine = _worker_cpu(processes) - cpu_before, _machine_cpu()
        busy, total = machine[0] - machine_before[0], machine[1] - machine_before[1]
        arrivals = sorted(sink.first_arrival.values())
        snapshot = sink.snapshot()
    return {
        "workers": workers,
        "per_second": args.messages / (arrivals[-1] - started),
        "steady_per_second": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
        "first_after": arrivals[0] - started,
        "duplicates": snapshot["duplicates"],
        # CPU seconds of the worker processes (with their work horses) per message, and how busy the
        # machine's CPUs were meanwhile (every process: the workers, PostgreSQL, this process, the rest).
        "worker_cpu_ms": 1000 * cpu / args.messages,
        "machine_busy": busy / total if total else float("nan"),
        "connections": snapshot["connections"],
    }


def _worker_cpu(processes) -> float:
    """CPU seconds used so far by the workers, their live children (a Celery pool process) and their reaped
    ones (rq's work horses), from ``/proc/PID/stat``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for worker in processes:
        for pid in [worker.proc.pid, *descendants(worker.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["db", "rq", "celery"], default="db")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--relay-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,4", help="comma list of worker counts")
    parser.add_argument("--interval", type=float, default=0.1, help="db_worker --interval: idle poll, seconds")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--setting", action="append", default=[], help="NAME=VALUE (JSON if it parses)")
    parser.add_argument("--json", help="also write the rounds as JSON to this file")
    args = parser.parse_args(argv)
    args.counts = [int(n) for n in args.workers.split(",")]
    args.settings = parse_settings(parser, "--setting", args.setting)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if problem := engine_problem(args.engine):
        print(problem, file=sys.stderr)
        return 2
    rounds: list[dict] = []
    with SMTPSink(delay=args.relay_ms / 1000) as sink, tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            order = args.counts if number % 2 == 0 else list(reversed(args.counts))
            for workers in order:
                result = measure(args, workers, sink, Path(tmp))
                rounds.append({"round": number, **result})
                print(
                    f"[{time.strftime('%H:%M:%S')}] round {number}: {workers} worker(s) {result['per_second']:.1f}/s "
                    f"(steady {result['steady_per_second']:.1f}/s, first after {result['first_after']:.2f}s, "
                    f"{result['duplicates']} duplicates, worker CPU {result['worker_cpu_ms']:.1f} ms/message, "
                    f"machine CPUs {100 * result['machine_busy']:.0f}% busy)",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"\n{args.engine}: {args.messages} messages, relay {args.relay_ms:g} ms, {args.rounds} rounds, {args.settings}"
    )
    medians = {}
    for workers in args.counts:
        values = [r["per_second"] for r in rounds if r["workers"] == workers]
        medians[workers] = statistics.median(values)
        cpu = statistics.median(r["worker_cpu_ms"] for r in rounds if r["workers"] == workers)
        busy = statistics.median(r["machine_busy"] for r in rounds if r["workers"] == workers)
        print(
            f"  {workers} worker(s): median {medians[workers]:.1f} msg/s, spread {min(values):.1f}-{max(values):.1f}; "
            f"worker CPU {cpu:.1f} ms/message, machine CPUs {100 * busy:.0f}% busy"
        )
    base = args.counts[0]
    for workers in args.counts[1:]:
        ratios = []
        for number in range(args.rounds):
            by = {r["workers"]: r["per_second"] for r in rounds if r["round"] == number}
            ratios.append(by[workers] / by[base])
        print(
            f"  {workers} vs {base}: {medians[workers] / medians[base]:.2f}x (per round "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            + ")"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
