"""Measure this package against django-mailer 2.3.2, side by side in one run.

    python benchmarks/run.py [--quick] [--rounds N] [--db sqlite,postgres] [--only scenario,...] [--json PATH]

Run it with an interpreter that has Django, psycopg and aiosmtpd (the dev venv: ``pip install -e .[test]``);
that interpreter also runs our side. See ``benchmarks/README.rst`` for what each scenario measures.
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
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from databases import VENDORS, Vendor  # noqa: E402
from sides import REPO_ROOT, BenchError, Side, legacy_python  # noqa: E402
from sink import SMTPSink  # noqa: E402

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
NULL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
LATENCY_INTERVAL = 0.03

SCENARIOS = ("enqueue", "drain_null", "drain_smtp", "scaleout", "memory", "latency")
SERVER_ONLY = {"scaleout"}  # several senders: not on SQLite
POSTGRES_ONLY = {"latency"}

SIZES = {
    "full": {
        "enqueue_single": 2000,
        "enqueue_batch": 2000,
        "drain_null": 5000,
        "drain_smtp": 2000,
        "scaleout": 400,
        "memory_small": 5000,
        "memory_large": 50000,
        "latency": 200,
    },
    "quick": {
        "enqueue_single": 300,
        "enqueue_batch": 300,
        "drain_null": 1000,
        "drain_smtp": 300,
        "scaleout": 100,
        "memory_small": 1000,
        "memory_large": 10000,
        "latency": 40,
    },
}

# (key, sender processes, with our per-sender connections setting = 4, file lock on). Without the file lock
# (MAILER_USE_FILE_LOCK = False) senders share the queue; with it (the default), they are kept apart.
SCALEOUT_VARIANTS = (
    ("s1", 1, False, False),
    ("s2", 2, False, False),
    ("s4", 4, False, False),
    ("c4", 1, True, False),
    ("s4lock", 4, False, True),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = dict(SIZES["quick" if args.quick else "full"])
        self.tmp = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
        self.locks = 0
        self.profiles = 0
        self.sinks: dict[float, SMTPSink] = {}
        ours_python = args.ours_python or sys.executable
        self.ours = Side.create(
            "ours", "ours", ours_python, self.tmp / "ours", [str(REPO_ROOT)], str(REPO_ROOT / "mailer")
        )
        if args.baseline:
            # Another checkout of this package (an earlier commit) in place of 2.3.2: "did this change cost speed?"
            base = Path(args.baseline).resolve()
            self.legacy = Side.create(
                "legacy", "baseline", ours_python, self.tmp / "legacy", [str(base)], str(base / "mailer")
            )
        else:
            legacy = Path(args.legacy_python) if args.legacy_python else legacy_python(ours_python, args.db)
            self.legacy = Side.create("legacy", "2.3.2", legacy, self.tmp / "legacy", [], str(legacy.parent.parent))
        self.sides = (self.ours, self.legacy)
        self.vendors: dict[str, Vendor] = {}
        for name in args.db:
            (self.tmp / name).mkdir()
            self.vendors[name] = VENDORS[name](self.tmp / name, self.migrate)
        self.connections_setting = args.connections_setting
        self.results: dict = {}
        self.errors: list[str] = []

    # -- plumbing ---------------------------------------------------------------------------------------------

    def config(self, database: dict, side: Side, extra_settings: dict | None = None, **extra) -> dict:
        self.locks += 1
        lock_dir = self.tmp / "locks" / f"{side.key}-{self.locks}"
        lock_dir.mkdir(parents=True)
        own = self.args.ours_settings if side is self.ours else {}
        settings = {**self.args.settings, **own, **(extra_settings or {})}
        return {"database": database, "lock_path": str(lock_dir / "send_mail"), "extra_settings": settings, **extra}

    def migrate(self, side: Side, database: dict) -> None:
        side.run("migrate", {}, self.config(database, side), timeout=600)

    def sink(self, delay: float = 0.0) -> SMTPSink:
        if delay not in self.sinks:
            self.sinks[delay] = SMTPSink(delay=delay).start()
        sink = self.sinks[delay]
        sink.reset()
        return sink

    def profile(self, side: Side, what: str, vendor: Vendor) -> str | None:
        if not self.args.profile or self.args.profile_side not in ("both", side.label):
            return None
        directory = Path(self.args.profile)
        directory.mkdir(parents=True, exist_ok=True)
        self.profiles += 1
        path = directory / f"{what}-{vendor.name}-{side.key}-{self.profiles:03d}.prof"
        return str(path)

    def drain_once(self, side: Side, database: dict, n: int, what: str, vendor: Vendor, **config) -> dict:
        """Queue ``n`` messages, run ``send_mail`` once in its own process, check that the queue was emptied."""
        cfg = self.config(database, side, **config)
        side.run("fill", {"n": n}, cfg)
        result = side.run("command", {"name": "send_mail"}, cfg, profile=self.profile(side, what, vendor))
        stats = side.run("stats", {}, cfg)
        if stats["queued"] != 0 or stats["logged"] != n:
            raise BenchError(f"after send_mail: {stats['queued']} still queued, {stats['logged']} logged (of {n})")
        return result

    # -- scenarios: one measurement of one side -------------------------------------------------------------

    def measure_enqueue(self, side: Side, vendor: Vendor) -> dict:
        single, batch = self.sizes["enqueue_single"], self.sizes["enqueue_batch"]
        with vendor.fresh(side) as db:
            cfg = self.config(db, side)
            r1 = side.run("enqueue_single", {"n": single}, cfg, profile=self.profile(side, "enqueue_single", vendor))
        with vendor.fresh(side) as db:
            cfg = self.config(db, side)
            r2 = side.run("enqueue_batch", {"n": batch}, cfg, profile=self.profile(side, "enqueue_batch", vendor))
        return {"single": single / r1["seconds"], "batch": batch / r2["seconds"]}

    def measure_drain_null(self, side: Side, vendor: Vendor) -> dict:
        n = self.sizes["drain_null"]
        with vendor.fresh(side) as db:
            r = self.drain_once(side, db, n, "drain_null", vendor, backend=NULL_BACKEND)
        cpu = r.get("cpu_seconds")
        return {"msgs_s": n / r["seconds"], "wall_s": r["wall"], "cpu_us": None if cpu is None else 1e6 * cpu / n}

    def measure_drain_smtp(self, side: Side, vendor: Vendor) -> dict:
        n = self.sizes["drain_smtp"]
        sink = self.sink()
        with vendor.fresh(side) as db:
            r = self.drain_once(side, db, n, "drain_smtp", vendor, backend=SMTP_BACKEND, smtp_port=sink.port)
        got = sink.snapshot()
        if got["distinct"] != n:
            raise BenchError(f"the SMTP sink received {got['distinct']} distinct messages of {n}")
        return {"msgs_s": n / r["seconds"], "wall_s": r["wall"], "connections": got["connections"]}

    def measure_scaleout(self, side: Side, vendor: Vendor) -> dict:
        n = self.sizes["scaleout"]
        out: dict = {}
        for key, senders, with_connections, file_lock in SCALEOUT_VARIANTS:
            extra = {}
            if with_connections:
                if (side is self.legacy and not self.args.baseline) or not self.has_connections_setting():
                    continue  # shown as n/a
                extra = {self.connections_setting: 4}
            sink = self.sink(self.args.slow_relay_ms / 1000)
            with vendor.fresh(side) as db:
                cfg = self.config(
                    db, side, backend=SMTP_BACKEND, smtp_port=sink.port, file_lock=file_lock, extra_settings=extra
                )
                side.run("fill", {"n": n}, cfg)
                children = [
                    side.start(
                        "command",
                        {"name": "send_mail", "wait_go": True},
                        cfg,
                        profile=self.profile(side, f"scaleout-{key}", vendor),
                    )
                    for _ in range(senders)
                ]
                try:
                    for child in children:
                        child.expect("READY")
                    for child in children:
                        child.go()
                    results = [child.finish(timeout=1800) for child in children]
                finally:
                    for child in children:
                        child.kill()
                stats = side.run("stats", {}, cfg)
            got = sink.snapshot()
            seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
            out[key] = n / seconds
            out[f"{key}_duplicates"] = got["duplicates"]
            out[f"{key}_missing"] = n - got["distinct"]
            out[f"{key}_left"] = stats["queued"]
            out[f"{key}_connections"] = got["connections"]
            out[f"{key}_cpu_ms"] = 1000 * sum(r["cpu"] for r in results) / n
        out["scaling4"] = out["s4"] / out["s1"]
        return out

    def measure_memory(self, side: Side, vendor: Vendor) -> dict:
        out = {}
        for key in ("memory_small", "memory_large"):
            n = self.sizes[key]
            with vendor.fresh(side) as db:
                r = self.drain_once(side, db, n, key, vendor, backend=NULL_BACKEND)
            out[f"{key}_mib"] = r["maxrss_kib"] / 1024
            out[f"{key}_growth_mib"] = (r["hwm_kib"] - r["rss_before_kib"]) / 1024
            out[f"{key}_msgs_s"] = n / r["seconds"]
        out["growth"] = out["memory_large_mib"] / out["memory_small_mib"]
        return out

    def measure_latency(self, side: Side, vendor: Vendor) -> dict:
        n, warmup = self.sizes["latency"], 3
        sink = self.sink()
        with vendor.fresh(side) as db:
            cfg = self.config(db, side, backend=SMTP_BACKEND, smtp_port=sink.port)
            mailer = side.start("command", {"name": "runmailer_pg"}, cfg)
            producer = side.start("produce", {"n": n, "interval": LATENCY_INTERVAL, "warmup": warmup}, cfg)
            try:
                producer.expect("READY")
                producer.go()
                producer.expect("WARM")
                if not sink.wait_for(lambda s: len(s.first_arrival) >= warmup, timeout=60):
                    raise BenchError(
                        f"runmailer_pg delivered {len(sink.first_arrival)} of {warmup} warm-up messages in 60s:\n"
                        + mailer.stderr_tail()
                    )
                sink.reset()
                producer.go()
                committed = producer.finish(timeout=600)["committed"]
                sink.wait_for(lambda s: len(s.first_arrival) >= n, timeout=60)
            finally:
                producer.kill()
                mailer.interrupt()
            arrivals = dict(sink.first_arrival)
        latencies = [(arrivals[i] - t) * 1000 for i, t in committed.items() if i in arrivals]
        if not latencies:
            raise BenchError("no message arrived")
        return {
            "median_ms": statistics.median(latencies),
            "p95_ms": percentile(latencies, 0.95),
            "missing": n - len(latencies),
        }

    def has_connections_setting(self) -> bool:
        prefix = "MAILER_"
        name = self.connections_setting
        key = name[len(prefix) :] if name.startswith(prefix) else name
        return any(key in side_info.get("mailer_settings", ()) for side_info in self.ours.info.values())

    # -- driving -----------------------------------------------------------------------------------------------

    def collect_info(self) -> None:
        for vendor in self.vendors.values():
            for side in self.sides:
                with vendor.fresh(side) as db:
                    side.info[vendor.name] = side.run("info", {}, self.config(db, side))

    def run(self) -> None:
        started = time.monotonic()
        try:
            log(f"temporary directory {self.tmp}")
            self.collect_info()
            for name in self.args.only:
                for vendor in self.vendors.values():
                    if name in SERVER_ONLY and vendor.name == "sqlite":
                        continue
                    if name in POSTGRES_ONLY and vendor.name != "postgres":
                        continue
                    self.run_scenario(name, vendor)
        finally:
            for sink in self.sinks.values():
                sink.stop()
            for vendor in self.vendors.values():
                try:
                    vendor.close()
                except Exception as exc:
                    log(f"could not clean up {vendor.label}: {exc}")
            if not self.args.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.elapsed = time.monotonic() - started

    def run_scenario(self, name: str, vendor: Vendor) -> None:
        measure = getattr(self, f"measure_{name}")
        rounds = self.args.memory_rounds if name == "memory" and self.args.memory_rounds else self.args.rounds
        per_side: dict[str, list] = {side.key: [] for side in self.sides}
        for index in range(rounds):
            # Alternate which side goes first, so that a drift of the machine's speed favours neither.
            order = self.sides if index % 2 == 0 else tuple(reversed(self.sides))
            for side in order:
                began = time.monotonic()
                try:
                    values = measure(side, vendor)
                except BenchError as exc:
                    message = f"{name} / {vendor.label} / {side.label}, round {index + 1}: {exc}"
                    self.errors.append(message)
                    log("ERROR " + message)
                    values = {"error": str(exc).splitlines()[0] if str(exc) else repr(exc)}
                except Exception:
                    message = f"{name} / {vendor.label} / {side.label}, round {index + 1}:\n{traceback.format_exc()}"
                    self.errors.append(message)
                    log("ERROR " + message)
                    values = {"error": "unexpected exception"}
                per_side[side.key].append(values)
                shown = ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items()
                    if v or not k.endswith(("_duplicates", "_missing", "_left"))
                )
                log(
                    f"{name:10} {vendor.label:10} round {index + 1}/{rounds} {side.label:5} "
                    f"({time.monotonic() - began:.1f}s): {shown}"
                )
        self.results.setdefault(name, {})[vendor.name] = per_side


# -- the table --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    label: str
    metric: str
    unit: str
    higher_is_better: bool = True
    ratio: bool = True  # show "gain": ours / 2.3.2 (or 2.3.2 / ours when lower is better)
    target: tuple | None = None  # ("gain" | "ours", ">=" | "<=" | "<", value)
    target_vendors: tuple = ("sqlite", "postgres", "mysql")
    legacy_metric: str | None = None  # another key on the 2.3.2 side (or "" for none)


def rows(sizes: dict, connections_setting: str, relay_ms: float) -> list[Row]:
    def k(n: int) -> str:
        return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)

    rate = "msgs/s"
    return [
        Row(
            "enqueue",
            f"enqueue: {k(sizes['enqueue_single'])} x send_mail()",
            "single",
            rate,
            target=("gain", ">=", 1.0),
        ),
        Row(
            "enqueue",
            f"enqueue: send_messages() of {k(sizes['enqueue_batch'])}",
            "batch",
            rate,
            target=("gain", ">=", 1.0),
        ),
        Row(
            "drain_null",
            f"drain {k(sizes['drain_null'])} to dummy backend",
            "msgs_s",
            rate,
            target=("gain", ">=", 10.0),
            target_vendors=("postgres",),
        ),
        Row("drain_null", "  same, process wall time", "wall_s", "s", higher_is_better=False),
        Row("drain_null", "  same, sender CPU per message", "cpu_us", "us", higher_is_better=False),
        Row("drain_smtp", f"drain {k(sizes['drain_smtp'])} to SMTP sink", "msgs_s", rate, target=("gain", ">=", 3.0)),
        Row("drain_smtp", "  SMTP connections opened", "connections", "", higher_is_better=False),
        Row("scaleout", f"slow relay ({relay_ms:g} ms), 1 sender", "s1", rate),
        Row("scaleout", "slow relay, 2 senders", "s2", rate),
        Row("scaleout", "slow relay, 4 senders", "s4", rate),
        Row("scaleout", f"slow relay, 1 sender, {connections_setting}=4", "c4", rate, legacy_metric="s1"),
        Row("scaleout", "  4 senders / 1 sender", "scaling4", "x", ratio=False, target=("ours", ">=", 3.5)),
        Row("scaleout", "slow relay, 4 senders, file lock on", "s4lock", rate),
        Row("scaleout", "  duplicates, 2 senders", "s2_duplicates", "", higher_is_better=False, ratio=False),
        Row("scaleout", "  duplicates, 4 senders", "s4_duplicates", "", higher_is_better=False, ratio=False),
        Row("scaleout", "  left on the queue, 4 senders", "s4_left", "", higher_is_better=False, ratio=False),
        Row(
            "memory",
            f"peak RSS, send_mail of {k(sizes['memory_small'])}",
            "memory_small_mib",
            "MiB",
            higher_is_better=False,
        ),
        Row(
            "memory",
            f"peak RSS, send_mail of {k(sizes['memory_large'])}",
            "memory_large_mib",
            "MiB",
            higher_is_better=False,
        ),
        Row(
            "memory",
            f"  peak {k(sizes['memory_large'])} / peak {k(sizes['memory_small'])}",
            "growth",
            "x",
            higher_is_better=False,
            ratio=False,
            target=("ours", "<=", 1.2),
        ),
        Row("memory", f"  drain {k(sizes['memory_large'])} to dummy backend", "memory_large_msgs_s", rate),
        Row(
            "latency",
            f"runmailer_pg commit-to-SMTP, median of {sizes['latency']}",
            "median_ms",
            "ms",
            higher_is_better=False,
            target=("ours", "<", 50.0),
        ),
        Row("latency", "  p95", "p95_ms", "ms", higher_is_better=False),
    ]


def _values(rounds: list[dict], metric: str) -> list[float | None]:
    return [r.get(metric) if "error" not in r else None for r in rounds]


def summarize(bench: Bench) -> list[dict]:
    summary = []
    for row in rows(bench.sizes, bench.connections_setting, bench.args.slow_relay_ms):
        for vendor_name, per_side in bench.results.get(row.scenario, {}).items():
            ours = _values(per_side["ours"], row.metric)
            legacy = _values(per_side["legacy"], row.legacy_metric or row.metric)
            ours_ok = [v for v in ours if v is not None]
            legacy_ok = [v for v in legacy if v is not None]
            entry = {
                "scenario": row.scenario,
                "label": row.label,
                "metric": row.metric,
                "unit": row.unit,
                "db": vendor_name,
                "ours": statistics.median(ours_ok) if ours_ok else None,
                "legacy": statistics.median(legacy_ok) if legacy_ok else None,
                "ours_rounds": ours,
                "legacy_rounds": legacy,
                "gain": None,
                "target": None,
                "met": None,
            }
            if row.metric == "c4" and not ours_ok:
                entry["ours"] = "n/a"
            if row.ratio:
                # Ratio of the two sides within each round (they ran back to back), then the median.
                paired = [
                    (o / g if row.higher_is_better else g / o)
                    for o, g in zip(ours, legacy, strict=False)
                    if o is not None and g is not None and o > 0 and g > 0
                ]
                entry["gain"] = statistics.median(paired) if paired else None
            if (
                row.target and vendor_name in row.target_vendors and not bench.args.baseline
            ):  # targets are against 2.3.2
                what, op, value = row.target
                entry["target"] = f"{'gain' if what == 'gain' else 'ours'} {op} {value:g}"
                actual = entry["gain"] if what == "gain" else entry["ours"]
                if isinstance(actual, float | int):
                    entry["met"] = {">=": actual >= value, "<=": actual <= value, "<": actual < value}[op]
            summary.append(entry)
    return summary


def _fmt(value, unit: str) -> str:
    if value is None:
        return "error"
    if isinstance(value, str):
        return value
    if unit == "msgs/s":
        return f"{value:,.0f}"
    if unit in ("MiB", "ms", "s", "us"):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g}"


def metadata(bench: Bench) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs{f' ({cpu})' if cpu else ''}, {platform.platform()}",
        "rounds": bench.args.rounds,
        "memory_rounds": bench.args.memory_rounds or bench.args.rounds,
        "sizes": bench.sizes,
        "mode": "quick" if bench.args.quick else "full",
        "extra_settings": bench.args.settings,
        "ours_settings": bench.args.ours_settings,
        "other_side": bench.legacy.label,
        "sides": {},
        "databases": {},
    }
    for side in bench.sides:
        info = next(iter(side.info.values()), {})
        meta["sides"][side.label] = {
            "mailer": info.get("mailer_version"),
            "mailer_dir": info.get("mailer_dir"),
            "python": info.get("python"),
            "django": info.get("django"),
            "executable": info.get("executable"),
        }
        for vendor, vinfo in side.info.items():
            meta["databases"][vendor] = vinfo.get("database")
    return meta


def render(meta: dict, summary: list[dict], elapsed: float, errors: list[str]) -> str:
    out = [f"# django-mailer: this package vs {meta.get('other_side', '2.3.2')}", ""]
    out.append(f"- Date: {meta['date']}; run took {elapsed / 60:.1f} min ({meta['mode']} sizes)")
    out.append(f"- Machine: {meta['machine']}")
    for label, side in meta["sides"].items():
        out.append(
            f"- {label}: django-mailer {side['mailer']} ({side['mailer_dir']}), "
            f"Python {side['python']}, Django {side['django']}"
        )
    for vendor, version in meta["databases"].items():
        out.append(f"- {vendor}: {version}")
    if meta["extra_settings"]:
        out.append(f"- Extra settings, both sides: {meta['extra_settings']}")
    if meta.get("ours_settings"):
        out.append(f"- Extra settings, ours only: {meta['ours_settings']}")
    out.append(
        f"- Each figure is the median of {meta['rounds']} rounds (memory: {meta['memory_rounds']}); "
        f"gain = ours/{meta.get('other_side', '2.3.2')} for rates, the inverse where lower is better, taken within "
        "each round, median."
    )
    out.append("")
    header = ("Scenario", "DB", "ours", meta.get("other_side", "2.3.2"), "gain", "target", "met")
    lines = []
    for e in summary:
        unit = f" ({e['unit']})" if e["unit"] and e["unit"] != "x" else ""
        met = "" if e["met"] is None else ("yes" if e["met"] else "NO")
        if e["target"] and e["met"] is None:
            met = "?"
        legacy = _fmt(e["legacy"], e["unit"])
        if e["metric"] in ("c4",):
            legacy = f"{legacy} (1 conn)"
        lines.append(
            (
                e["label"] + unit,
                e["db"],
                _fmt(e["ours"], e["unit"]),
                legacy,
                "" if e["gain"] is None else f"{e['gain']:.2f}x",
                e["target"] or "",
                met,
            )
        )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=False)]

    def fmt_line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"

    out.append(fmt_line(header))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(fmt_line(line) for line in lines)
    if errors:
        out.append("")
        out.append(f"{len(errors)} measurement(s) failed (shown as 'error'):")
        out.extend("- " + e.splitlines()[0] for e in errors)
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small message counts, to try things out")
    parser.add_argument("--full", action="store_true", help="the full sizes (the default)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    parser.add_argument(
        "--memory-rounds", type=int, default=0, help="rounds of the memory scenario (default: --rounds)"
    )
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, mysql (comma-separated)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--ours-python", help="interpreter for our side (default: this one)")
    parser.add_argument("--legacy-python", help="interpreter of a venv with django-mailer 2.3.2 (default: cached)")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="compare with this checkout of the package (e.g. a git worktree of an earlier commit) instead of 2.3.2",
    )
    parser.add_argument(
        "--connections-setting",
        default="MAILER_SENDER_CONNECTIONS",
        help="our per-sender concurrency setting; its row shows n/a while mailer.conf.DEFAULTS lacks it",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra Django setting for both sides, VALUE as JSON if it parses (repeatable)",
    )
    parser.add_argument(
        "--ours-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="like --setting, for our side only: with --baseline at the same checkout, the cost of a setting",
    )
    parser.add_argument("--slow-relay-ms", type=float, default=20.0, help="the slow relay's delay per message")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the children into DIR (skews timings)")
    parser.add_argument(
        "--profile-side", choices=("ours", "2.3.2", "both"), default="ours", help="whose children --profile profiles"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (children's stderr)")
    args = parser.parse_args(argv)
    if args.quick and args.full:
        parser.error("--quick and --full exclude each other")
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    for d in args.db:
        if d not in VENDORS:
            parser.error(f"unknown database {d!r}; choose from {', '.join(VENDORS)}")
    aliases = {str(i + 1): name for i, name in enumerate(SCENARIOS)}
    args.only = [aliases.get(s.strip(), s.strip()) for s in args.only.split(",") if s.strip()]
    for s in args.only:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    args.settings = parse_settings(parser, "--setting", args.setting)
    args.ours_settings = parse_settings(parser, "--ours-setting", args.ours_setting)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def parse_settings(parser: argparse.ArgumentParser, option: str, items: list[str]) -> dict:
    """``NAME=VALUE`` items as a dict of settings, each VALUE as JSON if it parses."""
    settings = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"{option} takes NAME=VALUE, not {item!r}")
        try:
            settings[name] = json.loads(value)
        except ValueError:
            settings[name] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    bench.run()
    meta = metadata(bench)
    summary = summarize(bench)
    print(render(meta, summary, bench.elapsed, bench.errors))
    if args.json:
        payload = {
            "meta": meta,
            "elapsed_seconds": bench.elapsed,
            "summary": summary,
            "raw": bench.results,
            "errors": bench.errors,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
