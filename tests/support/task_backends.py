"""Task backends for the tests of :mod:`mailer.tasks`: Django's own (``django.tasks`` from 6.0, ``django_tasks``
before), by dotted path, and one whose broker is down."""

import django

TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
IMMEDIATE = f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"
DUMMY = f"{TASKS_MODULE}.backends.dummy.DummyBackend"
REFUSING = "tests.support.task_backends.RefusingBackend"

try:
    from importlib import import_module

    _DummyBackend = import_module(f"{TASKS_MODULE}.backends.dummy").DummyBackend
except ImportError:  # the tests that need it are skipped (or fail under CI's settings)
    _DummyBackend = object


class RefusingBackend(_DummyBackend):
    """Every enqueue fails, as with a broker that is down."""

    def enqueue(self, task, args, kwargs):
        raise ConnectionRefusedError("the broker is down")
