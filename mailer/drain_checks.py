"""System checks of continuous draining (:mod:`mailer.drain`): ``MAILER_DRAIN_TASKS``, ``MAILER_DRAIN_SLICE`` and
``MAILER_TASKS_BACKEND``. Apart from :mod:`mailer.checks` (near its size limit); registered by the app config."""

from __future__ import annotations

import importlib
from typing import Any

import django
from django.conf import settings
from django.core import checks

from mailer.conf import mailer_settings

TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"


@checks.register()
def check_drain_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The drain settings are usable: a number of chains, a framework to run them on, a ``TASKS`` alias."""
    tasks = mailer_settings.DRAIN_TASKS
    if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 0:
        return [
            checks.Error(
                f"MAILER_DRAIN_TASKS is {tasks!r}; it must be a whole number of drain tasks per alias, 0 or more.",
                hint="0 (the default) leaves draining off; 1 to 4 suits most sites.",
                id="mailer.E020",
            )
        ]
    errors = []
    seconds = mailer_settings.DRAIN_SLICE
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
        errors.append(
            checks.Error(
                f"MAILER_DRAIN_SLICE is {seconds!r}; it must be a number of seconds greater than 0.",
                hint="The default, 10, lets each drain task hand over to its next run every 10 seconds.",
                id="mailer.E023",
            )
        )
    if not tasks:
        return errors
    try:
        importlib.import_module(TASKS_MODULE)
    except ImportError as exc:
        errors.append(
            checks.Error(
                f"MAILER_DRAIN_TASKS is {tasks}, but Django's tasks framework cannot be imported ({exc}).",
                hint="Use Django 6.0 or later, or pip install django-tasks; or set MAILER_DRAIN_TASKS to 0.",
                id="mailer.E021",
            )
        )
        return errors
    backend = mailer_settings.TASKS_BACKEND
    backends = getattr(settings, "TASKS", {"default": None})
    if backend not in backends:
        errors.append(
            checks.Error(
                f"MAILER_TASKS_BACKEND is {backend!r}, which is not an alias of the TASKS setting "
                f"({', '.join(map(repr, backends)) or 'none'}).",
                hint="Name the TASKS alias the mailer's tasks are to be enqueued on.",
                id="mailer.E022",
            )
        )
    return errors
