"""django-mailer 2.x's module-level copies of settings, which test suites patch.

2.x read ``MAILER_EMPTY_QUEUE_SLEEP``, ``MAILER_LOCK_WAIT_TIMEOUT`` and ``MAILER_LOCK_PATH`` once, at
import, into ``mailer.engine.EMPTY_QUEUE_SLEEP``, ``LOCK_WAIT_TIMEOUT`` and ``LOCK_PATH``, and test
suites change its behaviour by patching those names. This package reads settings when it needs them
(so that ``override_settings`` works); the engine module serves these names from the settings
(:func:`engine_attribute`, its module ``__getattr__``), and :func:`setting` prefers a value patched onto
the engine module over the setting. A value that was only put back after a patch (pytest's
``monkeypatch`` restores by assignment) is not taken for a patch: the setting stays live.
"""

from __future__ import annotations

import sys
from typing import Any

from mailer.conf import mailer_settings

NAMES = ("EMPTY_QUEUE_SLEEP", "LOCK_WAIT_TIMEOUT", "LOCK_PATH")

_MISSING = object()
_handed_out: dict[str, Any] = {}


def engine_attribute(name: str) -> Any:
    """The value of ``mailer.engine.<name>`` when nothing patched it: the setting, read now."""
    if name not in NAMES:
        raise AttributeError(f"module 'mailer.engine' has no attribute {name!r}")
    value = getattr(mailer_settings, name)
    _handed_out[name] = value
    return value


def setting(name: str) -> Any:
    """``mailer.engine.<name>`` if a test suite patched it, else ``MAILER_<name>``, read now."""
    engine = sys.modules.get("mailer.engine")
    patched = vars(engine).get(name, _MISSING) if engine is not None else _MISSING
    if patched is _MISSING or patched is _handed_out.get(name, _MISSING):
        return getattr(mailer_settings, name)
    return patched
