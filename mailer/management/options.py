"""Command-line pieces shared by the management commands."""

from __future__ import annotations

import argparse
import warnings

from django.core.management.base import CommandParser


def add_deprecated_cron_option(parser: CommandParser) -> None:
    """``-c/--cron``: accepted for old crontabs, does nothing but warn."""
    parser.add_argument("-c", "--cron", type=int, default=0, help=argparse.SUPPRESS)


def warn_if_cron(command: str, options: dict) -> None:
    if options.get("cron"):
        warnings.warn(
            f"{command}'s -c/--cron option is no longer needed and will be removed; "
            "the project's LOGGING setting decides what is printed.",
            DeprecationWarning,
            stacklevel=2,
        )


def non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative")
    return number
