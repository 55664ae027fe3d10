"""Measure this package against django-mailer 2.3.2 and django-post-office 3.12, side by side in one run.

    python benchmarks/postoffice.py [--rounds 3] [--db sqlite,postgres] [--only smtp,relay] [--json PATH]

Two scenarios, each draining a queue to the SMTP sink of ``sink.py`` and timed from the start of the sending
command (inside its process) to its return, which both packages reach once the queue is empty:

* ``smtp``: 2,000 messages, the sink answering at once;
* ``relay``: 1,000 messages, the sink waiting 20 ms before accepting each one (a slow relay).

Every variant of a scenario is measured once per round, in an order that turns by one each round, on a
fresh database of its own. The sink must receive every message exactly once (by ``X-Bench-Id`` and by
``Message-ID``), and the queue must be empty afterwards. See ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from databases import VENDORS, Vendor  # noqa: E402
from run import parse_settings  # noqa: E402  (NAME=VALUE options, read as run.py reads them)
from sides import REPO_ROOT, BenchError, Side, legacy_python, package_python  # noqa: E402
from sink import SMTPSink  # noqa: E402

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
POST_OFFICE_SERIES = "3.12"
POST_OFFICE_CHECK = (
    "import importlib.metadata\n"
    f"assert importlib.metadata.version('django-post-office').startswith({POST_OFFICE_SERIES + '.'!r})\n"
)


@dataclass
class Variant:
    key: str
    label: str
    side: str  # "ours", "legacy" or "postoffice"
    settings: dict = field(default_factory=dict)  # extra Django settings (ours, 2.3.2)
    args: list[str] = field(default_factory=list)  # arguments of send_queued_mail (post-office)


def variants(connections: int) -> dict[str, list[Variant]]:
    return {
        "smtp": [
            Variant(
                f"ours_c{connections}",
                f"ours, MAILER_SENDER_CONNECTIONS={connections}",
                "ours",
                {"MAILER_SENDER_CONNECTIONS": connections},
            ),
            Variant("ours_c1", "ours, 1 connection (default)", "ours"),
            Variant("legacy", "2.3.2 (a connection per message)", "legacy"),
            Variant("po_p1", "post-office, 1 process x 5 threads (default)", "postoffice"),
        ],
        "relay": [
            Variant("ours_c16", "ours, MAILER_SENDER_CONNECTIONS=16", "ours", {"MAILER_SENDER_CONNECTIONS": 16}),
            Variant("ours_c4", "ours, MAILER_SENDER_CONNECTIONS=4", "ours", {"MAILER_SENDER_CONNECTIONS": 4}),
            Variant("po_p4", "post-office, --processes 4 (x 5 threads)", "postoffice", args=["--processes", "4"]),
            Variant("po_p1", "post-office, 1 process x 5 threads (default)", "postoffice"),
            Variant("legacy", "2.3.2 (1 sender)", "legacy"),
        ],
    }


# (scenario, ours, theirs, target): ours / theirs per round, and the least ratio that meets the target.
def comparisons(connections: int) -> list[tuple[str, str, str, float]]:
    return [
        ("smtp", f"ours_c{connections}", "po_p1", 1.5),
        ("smtp", f"ours_c{connections}", "legacy", 0.0),
        ("relay", "ours_c16", "po_p4", 1.0),
        ("relay", "ours_c4", "po_p4", 1.0),
        ("relay", "ours_c16", "po_p1", 1.0),
        ("relay", "ours_c4", "po_p1", 1.0),
    ]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mailer-bench-po-"))
        self.counter = 0
        ours_python = args.ours_python or sys.executable
        legacy = legacy_python(ours_python, args.db)
        postoffice = package_python(
            ours_python,
            args.db,
            name=f"venv-post-office-{POST_OFFICE_SERIES}",
            requirement=f"django-post-office=={POST_OFFICE_SERIES}.*",
            check=POST_OFFICE_CHECK,
        )
        self.sides = {
            "ours": Side.create(
                "ours", "ours", ours_python, self.tmp / "ours", [str(REPO_ROOT)], str(REPO_ROOT / "mailer")
            ),
            "legacy": Side.create("legacy", "2.3.2", legacy, self.tmp / "legacy", [], str(legacy.parent.parent)),
            "postoffice": Side.create(
                "postoffice",
                "post-office",
                postoffice,
                self.tmp / "postoffice",
                [],
                str(postoffice.parent.parent),
                sources=("po_child.py", "po_settings.py"),
            ),
        }
        self.vendors: dict[str, Vendor] = {}
        for name in args.db:
            (self.tmp / name).mkdir()
            self.vendors[name] = VENDORS[name](self.tmp / name, self.migrate)
        self.sinks = {"smtp": SMTPSink().start(), "relay": SMTPSink(delay=args.relay_ms / 1000).start()}
        self.variants = {
            scenario: [v for v in runs if not args.variants or v.key in args.variants]
            for scenario, runs in variants(args.connections).items()
        }
        self.results: dict = {}  # scenario -> vendor -> variant key -> [measurement, ...]
        self.errors: list[str] = []

    def config(self, database: dict, side: Side, **extra) -> dict:
        self.counter += 1
        lock_dir = self.tmp / "locks" / f"{side.key}-{self.counter}"
        lock_dir.mkdir(parents=True)
        return {"database": database, "lock_path": str(lock_dir / "send_mail"), **extra}

    def migrate(self, side: Side, database: dict) -> None:
        side.run("migrate", {}, self.config(database, side), timeout=600)

    def measure(self, scenario: str, variant: Variant, vendor: Vendor) -> dict:
        """Queue the messages, run the side's sending command once, check the sink and the queue."""
        n = self.args.messages[scenario]
        side = self.sides[variant.side]
        sink = self.sinks[scenario]
        with vendor.fresh(side) as db:
            settings = {**(self.args.ours_settings if variant.side == "ours" else {}), **variant.settings}
            cfg = self.config(db, side, backend=SMTP_BACKEND, smtp_port=sink.port, extra_settings=settings)
            side.run("fill", {"n": n}, cfg)
            sink.reset()
            if variant.side == "postoffice":
                command = {"name": "send_queued_mail", "args": [*variant.args, "--lockfile", cfg["lock_path"]]}
            else:
                command = {"name": "send_mail"}
            result = side.run("command", command, cfg, timeout=1800)
            stats = side.run("stats", {}, cfg)
        got = sink.snapshot()
        problems = []
        if stats["queued"]:
            problems.append(f"{stats['queued']} left on the queue")
        if got["distinct"] != n or got["received"] != n or got["distinct_message_ids"] != n:
            problems.append(
                f"the sink received {got['received']} messages, {got['distinct']} distinct X-Bench-Ids and "
                f"{got['distinct_message_ids']} distinct Message-IDs (of {n})"
            )
        if problems:
            raise BenchError("; ".join(problems))
        return {
            "msgs_s": n / result["seconds"],
            "seconds": result["seconds"],
            "process_wall_s": result["wall"],
            "cpu_s": result["cpu"],
            "connections": got["connections"],
            "load": os.getloadavg()[0],  # the machine's 1-minute load average just after: how busy it was
        }

    def run(self) -> None:
        for scenario in self.args.only:
            for name, vendor in self.vendors.items():
                runs = self.variants[scenario]
                for round_no in range(self.args.rounds):
                    shift = round_no % len(runs)
                    for variant in runs[shift:] + runs[:shift]:
                        try:
                            figures = self.measure(scenario, variant, vendor)
                        except Exception as exc:  # noqa: BLE001 - listed under the table, the run goes on
                            figures = None
                            self.errors.append(f"{scenario} {name} {variant.key} round {round_no + 1}: {exc}")
                            traceback.print_exc()
                        self.results.setdefault(scenario, {}).setdefault(name, {}).setdefault(variant.key, []).append(
                            figures
                        )
                        shown = "error" if figures is None else f"{figures['msgs_s']:.0f} msgs/s"
                        log(f"{scenario} {name} round {round_no + 1}: {variant.label}: {shown}")

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.stop()
        for vendor in self.vendors.values():
            vendor.close()
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def info(self) -> dict:
        out = {}
        for key, side in self.sides.items():
            vendor = next(iter(self.vendors.values()))
            with vendor.fresh(side) as db:
                out[key] = side.run("info", {}, self.config(db, side))
        return out

    # -- report ------------------------------------------------------------------------------------------------

    def table(self) -> str:
        rows = [("scenario", "DB", "side and settings", "msgs/s median", "range", "s median", "SMTP conns")]
        for scenario in self.args.only:
            for name in self.vendors:
                for variant in self.variants[scenario]:
                    runs = [r for r in self.results.get(scenario, {}).get(name, {}).get(variant.key, []) if r]
                    if not runs:
                        rows.append((scenario, name, variant.label, "error", "", "", ""))
                        continue
                    rates = [r["msgs_s"] for r in runs]
                    rows.append(
                        (
                            scenario,
                            name,
                            variant.label,
                            f"{statistics.median(rates):,.0f}",
                            f"{min(rates):,.0f} to {max(rates):,.0f}",
                            f"{statistics.median(r['seconds'] for r in runs):.2f}",
                            f"{statistics.median(r['connections'] for r in runs):,.0f}",
                        )
                    )
        rows.append(())
        rows.append(("scenario", "DB", "ratio (per round)", "median", "range", "target", "met"))
        for scenario, ours, theirs, target in comparisons(self.args.connections):
            keys = {v.key for v in self.variants.get(scenario, [])}
            if scenario not in self.args.only or not {ours, theirs} <= keys:
                continue
            for name in self.vendors:
                got = self.results.get(scenario, {}).get(name, {})
                pairs = zip(got.get(ours, []), got.get(theirs, []), strict=False)
                ratios = [a["msgs_s"] / b["msgs_s"] for a, b in pairs if a and b]
                label = f"{ours} / {theirs}"
                if not ratios:
                    rows.append((scenario, name, label, "n/a", "", "", ""))
                    continue
                median = statistics.median(ratios)
                rows.append(
                    (
                        scenario,
                        name,
                        label,
                        f"{median:.2f}x",
                        f"{min(ratios):.2f} to {max(ratios):.2f}",
                        f">= {target}" if target > 1 else ("> 1" if target else ""),
                        ("yes" if median >= target and (target > 1 or median > 1) else "NO") if target else "",
                    )
                )
        widths = [max(len(r[i]) for r in rows if r) for i in range(7)]
        lines = []
        for row in rows:
            if not row:
                lines.append("")
                continue
            lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
            if row[0] == "scenario":
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite,postgres,mysql")
    parser.add_argument("--only", default="smtp,relay", help="smtp,relay")
    parser.add_argument(
        "--variants",
        default="",
        help="only these variants (keys as in the ratio rows: ours_c4,ours_c1,ours_c16,legacy,po_p1,po_p4)",
    )
    parser.add_argument("--smtp-messages", type=int, default=2000)
    parser.add_argument("--relay-messages", type=int, default=1000)
    parser.add_argument("--relay-ms", type=float, default=20.0, help="the slow relay's wait per message")
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="MAILER_SENDER_CONNECTIONS of our main variant in the smtp scenario (the docs' example: 4)",
    )
    parser.add_argument("--ours-python", help="interpreter of our side (default: this one)")
    parser.add_argument(
        "--ours-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra Django setting for all our variants (VALUE read as JSON if it parses); repeatable",
    )
    parser.add_argument("--json", help="also write every round's figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (children's stderr)")
    args = parser.parse_args(argv)
    args.db = [d for d in args.db.split(",") if d]
    args.only = [s for s in args.only.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [d for d in args.db if d not in VENDORS] + [s for s in args.only if s not in ("smtp", "relay")]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    args.messages = {"smtp": args.smtp_messages, "relay": args.relay_messages}
    args.ours_settings = parse_settings(parser, "--ours-setting", args.ours_setting)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        info = bench.info()
        started = datetime.datetime.now(datetime.UTC)
        bench.run()
        print(
            f"\n{started:%Y-%m-%d %H:%M} UTC, {args.rounds} rounds, {platform.node()}, Python "
            f"{platform.python_version()}; smtp: {args.messages['smtp']} messages, relay: "
            f"{args.messages['relay']} messages at {args.relay_ms:g} ms each"
        )
        if args.ours_settings:
            print(f"  extra settings, ours only: {args.ours_settings}")
        for key, side in info.items():
            print(f"  {key}: {side['mailer_version']} ({side['mailer_dir']}), Django {side['django']}")
        loads = [
            r["load"] for s in bench.results.values() for v in s.values() for runs in v.values() for r in runs if r
        ]
        if loads:
            print(f"  load average (1 min) after each measurement: {min(loads):.1f} to {max(loads):.1f}")
        print()
        print(bench.table())
        for error in bench.errors:
            print(f"error: {error}")
        if args.json:
            everything = {"info": info, "args": vars(args), "results": bench.results, "errors": bench.errors}
            Path(args.json).write_text(json.dumps(everything, indent=1))
    finally:
        bench.close()


if __name__ == "__main__":
    main()
