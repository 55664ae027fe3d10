#!/usr/bin/env python3
"""Run the test suite once per database: ``python runtests.py [--db sqlite|postgres|mysql|all] [pytest args]``.

The databases default to ``MAILER_TEST_DATABASES`` (a comma list) or sqlite. A database whose server or
driver is missing is skipped, unless ``MAILER_TEST_REQUIRE_SERVICES=1``, where it counts as a failure.
The last line printed is the total: ``N passed, N failed, N skipped``; with ``MAILER_TEST_SUMMARY`` set to
a file name, the per-database counts are also appended to that file (``.ci/run`` collects the tox matrix so).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.support.dbconfig import VENDORS
from tests.support.services import mysql_problem, postgres_problem, services_required

ROOT = Path(__file__).resolve().parent

PROBLEMS = {"postgres": postgres_problem, "mysql": mysql_problem}


def parse_databases(value: str) -> list[str]:
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if "all" in names:
        return list(VENDORS)
    unknown = sorted(set(names) - set(VENDORS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown database {', '.join(unknown)}; choose from {', '.join(VENDORS)}, all"
        )
    return names


def run_pytest(db: str, pytest_args: list[str]) -> tuple[int, int, int]:
    """Run pytest against one database; return (passed, failed, skipped)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "junit.xml")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "-o",
            "junit_family=xunit1",
            *pytest_args,
        ]
        env = {**os.environ, "MAILER_TEST_DB": db}
        print(f"=== {db}: {' '.join(cmd[1:])}", flush=True)
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        if not report.exists():
            print(f"pytest wrote no report for {db} (exit code {code})", flush=True)
            return 0, 1, 0
        tests = failed = skipped = 0
        for suite in ET.parse(report).getroot().iter("testsuite"):
            tests += int(suite.get("tests", 0))
            failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
    if code not in (0, 5) and not failed:  # interrupted, internal or usage error
        failed = 1
    return tests - failed - skipped, failed, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument(
        "--db",
        type=parse_databases,
        default=os.environ.get("MAILER_TEST_DATABASES", "sqlite"),
        help="comma list of sqlite, postgres, mysql, or all",
    )
    args, pytest_args = parser.parse_known_args()

    results = {}
    for db in args.db:
        problem = PROBLEMS[db]() if db in PROBLEMS else None
        if problem and services_required():
            print(f"FAILED {db}: {problem} (MAILER_TEST_REQUIRE_SERVICES=1)", flush=True)
            results[db] = (0, 1, 0)
        elif problem:
            print(f"SKIPPED {db}: {problem}", flush=True)
        else:
            results[db] = run_pytest(db, pytest_args)

    print()
    lines = [
        f"{label()}{db}: {passed} passed, {failed} failed, {skipped} skipped"
        for db, (passed, failed, skipped) in results.items()
    ]
    print("\n".join(lines))
    if summary := os.environ.get("MAILER_TEST_SUMMARY"):
        with open(summary, "a") as file:
            file.writelines(line + "\n" for line in lines)
    passed, failed, skipped = (sum(counts[i] for counts in results.values()) for i in range(3))
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed or not passed else 0


def label() -> str:
    """``"Django 6.1.3, Python 3.13.0, "``: where the counts come from, for the matrix summary."""
    import platform

    import django

    return f"Django {django.get_version()}, Python {platform.python_version()}, "


if __name__ == "__main__":
    sys.exit(main())
