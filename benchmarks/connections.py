"""One sender with 1, 4 and 16 connections to a slow relay, against what the relay itself can carry.

    python benchmarks/connections.py                       # SQLite and PostgreSQL, 3 rounds, 20 ms relay
    python benchmarks/connections.py --db postgres --rounds 5 --connections 1,4,8,16 --json conns.json
    python benchmarks/connections.py --profile /tmp/prof   # cProfile the senders (skews the timings)

The relay is the benchmarks' SMTP sink (``benchmarks/sink.py``, aiosmtpd in a thread of this process) with
a delay of ``--relay-ms`` per message (an ``asyncio.sleep`` in its DATA handler, so other sessions are served
meanwhile). For each connection count N, a fresh database gets ``messages(N)`` messages queued, then one
``send_mail`` process (``benchmarks/child.py``) with ``MAILER_SENDER_CONNECTIONS = N`` sends them through
Django's SMTP backend; the rate is timed inside the child. The *limit* is the same relay fed by a bare
``smtplib`` client in another process (this file with ``--bare``), N threads with a connection each sending
pre-built messages of the same size: what the relay, loopback and the machine's CPUs allow, with no queue
and no Django. Rounds are interleaved (every database and connection count once per round, the limit
too), and each figure is the median over the rounds, with the lowest and highest round beside it.

The message count is scaled with N (``--messages`` is the count for the largest N, at least ``--min-messages``
for any), so that every measurement lasts a few seconds. See ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from run import parse_settings  # noqa: E402  (NAME=VALUE options, read as run.py reads them)

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bare_client(port: int, connections: int, count: int) -> dict:
    """Send ``count`` messages of about 1 KB over ``connections`` smtplib sessions, one thread each."""
    body = ("x" * 76 + "\r\n") * 14
    todo = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                message = (
                    f"From: bench@example.com\r\nTo: rcpt{i}@example.com\r\nSubject: Benchmark message {i}\r\n"
                    f"X-Bench-Id: {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n{body}"
                )
                smtp.sendmail("bench@example.com", [f"rcpt{i}@example.com"], message)

    threads = [threading.Thread(target=work) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"seconds": time.perf_counter() - started}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from databases import VENDORS
        from sides import REPO_ROOT, Side
        from sink import SMTPSink

        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mailer-conns-"))
        self.side = Side.create(
            "ours",
            "ours",
            args.python or sys.executable,
            self.tmp / "ours",
            [str(REPO_ROOT)],
            str(REPO_ROOT / "mailer"),
        )
        self.sides = {"ours": self.side}
        if args.baseline:  # another checkout (git worktree add /tmp/base <commit>), measured in the same rounds
            base = Path(args.baseline).resolve()
            self.sides["baseline"] = Side.create(
                "baseline", "baseline", self.side.python, self.tmp / "baseline", [str(base)], str(base / "mailer")
            )
        self.vendors = {}
        for name in args.db:
            (self.tmp / name).mkdir()
            self.vendors[name] = VENDORS[name](self.tmp / name, self.migrate)
        self.sink = SMTPSink(delay=args.relay_ms / 1000).start()
        self.locks = 0
        self.profiles = 0
        self.results: dict[str, dict[int, list]] = {}

    def config(self, database: dict, **extra) -> dict:
        self.locks += 1
        lock_dir = self.tmp / "locks" / str(self.locks)
        lock_dir.mkdir(parents=True)
        return {"database": database, "lock_path": str(lock_dir / "send_mail"), **extra}

    def migrate(self, side, database: dict) -> None:
        side.run("migrate", {}, self.config(database), timeout=600)

    def messages(self, connections: int) -> int:
        largest = max(self.args.connections)
        return max(self.args.min_messages, self.args.messages * connections // largest)

    def measure(self, vendor, connections: int, side) -> dict:
        from sides import BenchError

        n = self.messages(connections)
        settings = {"MAILER_SENDER_CONNECTIONS": connections, **self.args.settings}
        self.sink.reset()
        profile = None
        if self.args.profile:
            Path(self.args.profile).mkdir(parents=True, exist_ok=True)
            self.profiles += 1
            name = f"conns{connections}-{vendor.name}-{side.key}-{self.profiles:03d}.prof"
            profile = str(Path(self.args.profile) / name)
        with vendor.fresh(side) as db:
            cfg = self.config(db, backend=SMTP_BACKEND, smtp_port=self.sink.port, extra_settings=settings)
            side.run("fill", {"n": n}, cfg)
            result = side.run("command", {"name": "send_mail"}, cfg, profile=profile)
            stats = side.run("stats", {}, cfg)
        got = self.sink.snapshot()
        if stats["queued"] or got["distinct"] != n:
            raise BenchError(f"{stats['queued']} left queued, {got['distinct']} of {n} received")
        return {
            "msgs_s": n / result["seconds"],
            "n": n,
            "duplicates": got["duplicates"],
            "relay_connections": got["connections"],
            "cpu_ms": 1000 * result["cpu"] / n,
        }

    def measure_bare(self, connections: int) -> dict:
        n = self.messages(connections)
        self.sink.reset()
        out = subprocess.run(
            [sys.executable, __file__, "--bare", str(self.sink.port), str(connections), str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        got = self.sink.snapshot()
        return {"msgs_s": n / seconds, "n": n, "received": got["distinct"]}

    def record(self, where: str, connections: int, values: dict) -> None:
        self.results.setdefault(where, {}).setdefault(connections, []).append(values)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        log(f"{where:17} N={connections:<3} {shown}")

    def run(self) -> None:
        try:
            for index in range(self.args.rounds):
                log(f"round {index + 1}/{self.args.rounds}")
                order = self.args.connections if index % 2 == 0 else list(reversed(self.args.connections))
                for connections in order:
                    if not self.args.no_limit:
                        self.record("limit", connections, self.measure_bare(connections))
                    for vendor in self.vendors.values():
                        sides = list(self.sides.values())
                        for side in sides if index % 2 == 0 else reversed(sides):
                            try:
                                values = self.measure(vendor, connections, side)
                            except Exception as exc:
                                values = {"error": str(exc).splitlines()[0] if str(exc) else repr(exc)}
                            where = vendor.name if side is self.side else f"{vendor.name}/{side.key}"
                            self.record(where, connections, values)
        finally:
            self.sink.stop()
            for vendor in self.vendors.values():
                vendor.close()
            if self.args.keep:
                log(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def table(self) -> str:
        ideal = 1000 / self.args.relay_ms
        lines = [
            f"# One sender, N connections, relay {self.args.relay_ms:g} ms per message "
            f"({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {self.args.rounds} rounds)",
            "",
            "| N  | where             | msgs/s median | lowest-highest | % of N x ideal | target 70% | messages |",
            "|----|-------------------|---------------|----------------|----------------|------------|----------|",
        ]
        for connections in self.args.connections:
            for where, per_n in self.results.items():
                rounds = [r["msgs_s"] for r in per_n.get(connections, []) if "msgs_s" in r]
                if not rounds:
                    lines.append(f"| {connections:<2} | {where:17} | error         |                |                |")
                    continue
                median = statistics.median(rounds)
                share = median / (connections * ideal)
                met = "" if where == "limit" else ("yes" if share >= 0.7 else "NO")
                lines.append(
                    f"| {connections:<2} | {where:17} | {median:13,.0f} | {min(rounds):6,.0f}-{max(rounds):<7,.0f} "
                    f"| {100 * share:13.0f}% | {met:10} | {self.messages(connections):8} |"
                )
        return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, mysql (comma-separated)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,4,16", help="connection counts (comma-separated)")
    parser.add_argument("--messages", type=int, default=2000, help="messages for the largest connection count")
    parser.add_argument("--min-messages", type=int, default=300, help="messages at least, for any count")
    parser.add_argument("--relay-ms", type=float, default=20.0, help="the relay's delay per message")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE", help="extra setting (JSON)")
    parser.add_argument("--no-limit", action="store_true", help="skip the bare smtplib client")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the senders into DIR (skews timings)")
    parser.add_argument("--python", help="interpreter of the senders (default: this one)")
    parser.add_argument("--baseline", metavar="DIR", help="also measure this checkout of the package, same rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (the senders' stderr)")
    parser.add_argument("--json", metavar="PATH", help="also write every round's figures as JSON")
    args = parser.parse_args(argv)
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    args.connections = [int(c) for c in args.connections.split(",")]
    args.settings = parse_settings(parser, "--setting", args.setting)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare"]:
        port, connections, count = (int(a) for a in argv[1:4])
        print(json.dumps(bare_client(port, connections, count)))
        return 0
    args = parse_args(argv)
    bench = Bench(args)
    bench.run()
    print(bench.table())
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": bench.results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
