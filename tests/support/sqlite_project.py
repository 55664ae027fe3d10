"""``tests.project`` on a SQLite file, driven from child processes (see the ``sqlite_project`` fixture).

The fixture's value is the env for ``tests.support.procs.manage`` plus ``"db"``, the file's path, which
``query()`` reads directly; ``child_env()`` is that env without it.
"""

import sqlite3

from tests.support.procs import manage

QUEUE_ONE = "import mailer; mailer.send_mail('{subject}', 'body of {subject}', 'from@example.com', ['to@example.com'])"


def child_env(project: dict) -> dict:
    """The env for a child process of the project (everything but the ``"db"`` path)."""
    return {key: value for key, value in project.items() if key != "db"}


def queue_in(project: dict, subject: str) -> None:
    """Queue one message in a child process, through ``mailer.send_mail()``."""
    done = manage("shell", "-c", QUEUE_ONE.format(subject=subject), env=child_env(project))
    assert done.returncode == 0, done.stderr


def query(project: dict, sql: str) -> list[tuple]:
    """Run ``sql`` on the project's SQLite file from this process."""
    with sqlite3.connect(project["db"]) as conn:
        return conn.execute(sql).fetchall()
