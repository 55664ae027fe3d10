"""Task workers of three engines running ``mailer.tasks``, as child processes of ``tests.project.tasks_settings``.

* ``db``: django-tasks-db's ``db_worker`` command; the tasks are rows in the project database.
* ``rq``: django-rq's ``rqworker`` command with django-tasks-rq's job class, on Redis (a database number of its
  own for the test, taken with a key in it and emptied before and after).
* ``celery``: a ``celery worker`` of ``tests.project.celery_app`` with django-tasks-celery (Django 6.0+, so
  Python 3.12+), on RabbitMQ (a queue of its own for the test, deleted after).

:func:`engine_broker` prepares an engine's broker and gives the env its children need; :func:`running_workers`
starts ``count`` workers, waits until each says it is ready (a line in its log, not a fixed sleep), and stops
them at the end of the block, printing their logs. Each worker runs in a session of its own: rq forks a "work horse"
per job and Celery a pool process, and a crash test kills the worker with everything it started.

Which engines run where (``engine_skip``): the tests are heavy (thousands of messages through real workers) and
need a database several processes share with row locks, so they run on PostgreSQL only; on a CI matrix cell,
django-tasks-db runs on every Django, django-tasks-rq before Django 6.0 and Celery from 6.0 (it cannot run
before). ``MAILER_TEST_TASK_ENGINES`` (a comma list, or ``all``) picks the engines to run instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import django

from tests.support import dbconfig
from tests.support.senders import SenderProcess
from tests.support.services import unavailable

ENGINES = ("db", "rq", "celery")
SETTINGS_MODULE = "tests.project.tasks_settings"
REDIS_HOST = os.environ.get("MAILER_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("MAILER_TEST_REDIS_PORT", "6379"))
AMQP_URL = os.environ.get("MAILER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_OWNER_KEY = "django-mailer-tests:owner"

# What each engine's worker logs once it waits for tasks.
READY = {"db": "Starting worker worker_id=", "rq": "*** Listening on", "celery": " ready."}
# The summary line the engine logs after each sending pass (in every engine's log format).
SENT = re.compile(r"Sent: sent (\d+), deferred (\d+), skipped (\d+), failed (\d+)")


def _default_engines() -> set[str]:
    """The engines of this CI cell: django-tasks-db everywhere, rq before Django 6.0, Celery from 6.0."""
    return {"db", "rq"} if django.VERSION < (6, 0) else {"db", "celery"}


def engine_skip(engine: str) -> None:
    """Skip (with the reason) an engine test that is not for this run; fail it under
    ``MAILER_TEST_REQUIRE_SERVICES=1`` when the engine should run here but its package or broker is missing."""
    import pytest

    if dbconfig.vendor() != "postgres":
        pytest.skip(
            "task workers run on PostgreSQL only: SQLite cannot be shared by four worker processes with row "
            "locks, and the engines' behaviour does not depend on the database"
        )
    chosen = os.environ.get("MAILER_TEST_TASK_ENGINES", "").strip()
    engines = set(ENGINES) if chosen == "all" else {e.strip() for e in chosen.split(",") if e.strip()}
    if engine == "celery" and (sys.version_info < (3, 12) or django.VERSION < (6, 0)):
        pytest.skip("django-tasks-celery needs Django 6.0+ (django.tasks) and Python 3.12+")
    if engines and engine not in engines:
        pytest.skip(f"the {engine} engine is not in MAILER_TEST_TASK_ENGINES={chosen}")
    if not engines and engine not in _default_engines():
        pytest.skip(
            f"the {engine} engine runs on another Django version of the CI matrix, to save CI time "
            "(MAILER_TEST_TASK_ENGINES=all runs every engine)"
        )
    if problem := engine_problem(engine):
        unavailable(problem)


def engine_problem(engine: str) -> str | None:
    """Why ``engine`` cannot run here (a package or its broker missing), or None."""
    modules = {
        "db": ["django_tasks_db"],
        "rq": ["django_tasks_rq", "django_rq", "redis"],
        "celery": ["django_tasks_celery", "celery", "kombu"],
    }[engine]
    if django.VERSION < (6, 0):
        modules.append("django_tasks")
    for module in modules:  # found, not imported: django-rq reads the settings when it is imported
        if module not in sys.modules and importlib.util.find_spec(module) is None:
            return f"the {engine} task engine needs {module}; pip install -e '.[test]'"
    try:
        if engine == "rq":
            import redis

            redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=3).ping()
        elif engine == "celery":
            import kombu

            with kombu.Connection(AMQP_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"the broker of the {engine} task engine is not reachable: {exc}"
    return None


@contextmanager
def engine_broker(engine: str) -> Iterator[dict]:
    """The env for ``engine``'s children (settings module, broker address), with the broker ready and emptied
    after the block."""
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "MAILER_TEST_TASKS_ENGINE": engine}
    if engine == "rq":
        with _redis_database() as url:
            yield {**env, "MAILER_TEST_REDIS_URL": url}
    elif engine == "celery":
        with _rabbitmq_queue() as name:
            yield {**env, "MAILER_TEST_BROKER_URL": AMQP_URL, "MAILER_TEST_CELERY_QUEUE": name}
    else:
        yield env


@contextmanager
def _redis_database() -> Iterator[str]:
    """A Redis database number no other test run uses (a key in it says whose it is), empty; emptied after."""
    import redis

    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
    for number in range(15, 0, -1):
        client = redis.Redis(REDIS_HOST, REDIS_PORT, db=number)
        if not client.set(REDIS_OWNER_KEY, owner, nx=True, ex=3600):
            client.close()
            continue
        with client.pipeline(transaction=True) as pipe:  # anything a crashed run left, gone at once
            pipe.flushdb().set(REDIS_OWNER_KEY, owner, ex=3600).execute()
        try:
            yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
        finally:
            client.flushdb()
            client.close()
        return
    unavailable("every Redis database from 1 to 15 is taken by another test run")


@contextmanager
def _rabbitmq_queue() -> Iterator[str]:
    """A RabbitMQ queue name of this test's own; the queue (and Celery's exchange of that name) deleted after."""
    import kombu

    name = f"mailer-tests-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with kombu.Connection(AMQP_URL, connect_timeout=5) as conn:
            channel = conn.channel()
            channel.queue_delete(name)
            channel.exchange_delete(name)


class WorkerProcess(SenderProcess):
    """One task worker of ``engine`` in a session of its own (its process group: the pool processes)."""

    def __init__(self, engine: str, env: dict, log_path: Path, name: str, interval: float = 0.1, **kwargs):
        self.engine = engine
        argv = {
            # --interval: how long an idle worker waits before it looks for a task again (default 1 s).
            "db": ["-m", "django", "db_worker", "--no-startup-delay", "--interval", str(interval), "--no-reload"],
            # --with-scheduler: tasks with run_after are "scheduled" jobs, which need rq's scheduler.
            "rq": ["-m", "django", "rqworker", "--job-class", "django_tasks_rq.Job", "--with-scheduler", "--name",
                   name, "default"],
            # One pool process; no mingle, gossip or heartbeats between the nodes of the test.
            "celery": ["-m", "celery", "worker", "--loglevel", "INFO", "--concurrency", "1", "--hostname",
                       f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat"],
        }[engine]  # fmt: skip
        env = {**env, "CELERY_APP": "tests.project.celery_app"} if engine == "celery" else env
        super().__init__(
            engine, env, log_path, banner=False, argv=argv, stdout_to_log=True, start_new_session=True, **kwargs
        )

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def crash(self) -> None:
        """SIGKILL for the worker and every process it started: a Celery pool process is in its process group,
        but rq's work horse starts a session of its own (``setsid``), so it is found by its parent."""
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def kill(self) -> None:
        if self.alive():
            self.crash()
        self.signal_group(signal.SIGKILL)  # what the worker's own exit left behind
        super().kill()

    def sent(self) -> int:
        """Messages sent by the passes this worker finished (the engine's summary lines in its log)."""
        return sum(int(match.group(1)) for match in SENT.finditer(self.log()))

    def task_runs(self, task: str) -> int:
        """How many runs of ``task`` (a dotted path) this worker finished successfully, by the tasks log."""
        return self.log().count(f"path={task} state=SUCCESSFUL")


def descendants(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, and theirs (from ``/proc``; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def running_workers(
    engine: str,
    env: dict,
    log_dir: Path,
    count: int,
    settings: dict | None = None,
    interval: float = 0.1,
    report: bool = True,
) -> Iterator[list[WorkerProcess]]:
    """``count`` workers of ``engine`` for the block, each ready when it is given; stopped (SIGTERM, then
    SIGKILL) at its end, whatever happened. With ``report``, the end of each log is printed, for a failing
    test's report. ``interval``: ``db_worker``'s idle poll."""
    workers: list[WorkerProcess] = []
    try:
        for n in range(count):
            log = log_dir / f"{engine}-worker-{n}.log"
            workers.append(WorkerProcess(engine, env, log, f"w{n}", interval=interval, settings=settings))
        for worker in workers:
            worker.wait_for_log(READY[engine], timeout=60)
        yield workers
    finally:
        for worker in workers:  # the main process only: it stops its work horse or pool process itself
            if worker.alive():
                worker.proc.send_signal(signal.SIGTERM)
        for n, worker in enumerate(workers):
            try:
                worker.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            worker.kill()
            if report:
                print(f"--- {engine} worker {n} (exit status {worker.proc.returncode}) ---\n{worker.log()[-6000:]}")
