"""A private, throw-away PostgreSQL cluster, for tests that stop or restart the server.

The rest of the suite shares one server (``PGHOST``/``PGPORT``); a test that restarts PostgreSQL must not
touch it. :func:`private_cluster` runs ``initdb`` into a new directory, starts a postmaster on a free port
of 127.0.0.1 (trust authentication, superuser ``postgres``), creates one database and yields a
:class:`Cluster`; on the way out the server is stopped (``pg_ctl stop -m immediate``) and the directory
removed, whatever happened in between.

The binaries are looked up in ``$MAILER_TEST_PG_BINDIR``, then ``pg_config --bindir``, then
``/usr/lib/postgresql/<newest>/bin``, then ``PATH``. PostgreSQL refuses to run as root: as root the
server runs as the ``postgres`` user through ``runuser`` (or ``su``). When any of that is missing the
test is skipped, or failed with ``MAILER_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port
from tests.support.services import pg_connect, unavailable

SERVER_USER = "postgres"
DATABASE = "mailer_private"
PG_CTL_TIMEOUT = 60


class ClusterUnavailable(Exception):
    """PostgreSQL's server binaries, or a way to run them, are missing."""


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path))


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates = []
    if custom := os.environ.get("MAILER_TEST_PG_BINDIR"):
        candidates.append(custom)
    if pg_config := shutil.which("pg_config"):
        try:
            result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        else:
            if result.returncode == 0:
                candidates.append(result.stdout.strip())
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True))
    if initdb := shutil.which("initdb"):
        candidates.append(os.path.dirname(initdb))
    for directory in candidates:
        if all(os.access(os.path.join(directory, name), os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; set MAILER_TEST_PG_BINDIR (looked in: "
        + (", ".join(candidates) or "nothing found")
        + ")"
    )


def _as_server_user() -> tuple[str | None, int | None, int | None]:
    """How to run a program as the server's user (None: as we are; "runuser" or "su"), and its uid and gid."""
    if os.geteuid() != 0:
        return None, None, None
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ClusterUnavailable(f"running as root, and there is no {SERVER_USER!r} user to run PostgreSQL") from None
    for runner in ("runuser", "su"):
        if shutil.which(runner):
            return runner, user.pw_uid, user.pw_gid
    raise ClusterUnavailable("running as root, and neither runuser nor su is available to run PostgreSQL")


@dataclass
class Cluster:
    """A running private server: ``host``, ``port``, ``user``, ``dbname``, and ways to stop and start it."""

    bindir: Path
    base: Path  # owned by the server's user: data/, the socket and the server log
    runner: str | None  # see _as_server_user()
    host: str = "127.0.0.1"
    port: int = 0
    user: str = SERVER_USER
    dbname: str = DATABASE
    log: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def server_log(self) -> Path:
        return self.base / "server.log"

    def env(self) -> dict[str, str]:
        """What a child process of ``tests.project`` needs to use this cluster (see ``tests/support/dbconfig.py``)."""
        return {
            "MAILER_TEST_DB": "postgres",
            "MAILER_TEST_DB_NAME": self.dbname,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": "",
        }

    def _command(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        if self.runner == "runuser":
            return ["runuser", "-u", SERVER_USER, "--", *argv]
        if self.runner == "su":
            return ["su", SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]
        return argv

    def run(self, program: str, *args: str, check: bool = True, timeout: float = PG_CTL_TIMEOUT + 30):
        # Our PG* variables name the shared server; keep them away from the private one's tools.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        command = self._command(program, *args)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.base)
        self.log.append(f"$ {shlex.join(command)} -> {result.returncode}\n{result.stdout}{result.stderr}")
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n--- server log ---\n{self.read_server_log()}"
            )
        return result

    def read_server_log(self, last: int = 30) -> str:
        try:
            return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-last:])
        except OSError:
            return "(no server log)"

    def initdb(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C", "-N")

    def start(self) -> None:
        options = shlex.join(
            [
                "-p", str(self.port), "-k", str(self.base), "-c", f"listen_addresses={self.host}",
                "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
            ]
        )  # fmt: skip
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.server_log), "-o", options, "-w", "-t",
            str(PG_CTL_TIMEOUT), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(PG_CTL_TIMEOUT), "stop")

    def restart(self, down_for: float = 2.0) -> None:
        """Stop the server (``-m fast``: every connection is cut), wait ``down_for`` seconds, start it again."""
        self.stop("fast")
        time.sleep(down_for)
        self.start()

    def running(self) -> bool:
        return self.run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def connect(self, dbname: str | None = None):
        """An autocommit connection (psycopg 3, else psycopg2) to ``dbname`` (default: the test database)."""
        return pg_connect(dbname or self.dbname, {"host": self.host, "port": self.port, "user": self.user})

    def kill_postmaster(self) -> None:
        """Last resort when ``pg_ctl stop`` failed: SIGKILL the postmaster this cluster started, by its pid."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _make_base(uid: int | None, gid: int | None) -> Path:
    # Not under pytest's tmp_path: that is private to root, and the server's user must reach the socket.
    base = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
    if uid is not None:
        os.chown(base, uid, gid)
    os.chmod(base, 0o755)
    return base


@contextmanager
def private_cluster(dbname: str = DATABASE, attempts: int = 3):
    """Yield a running private :class:`Cluster` with an empty database ``dbname``; stop and delete it afterwards.

    Skips the test when PostgreSQL cannot be run here (fails it with ``MAILER_TEST_REQUIRE_SERVICES=1``).
    """
    try:
        bindir = find_bindir()
        runner, uid, gid = _as_server_user()
    except ClusterUnavailable as exc:
        unavailable(str(exc))
    base = _make_base(uid, gid)
    cluster = Cluster(bindir=bindir, base=base, runner=runner, dbname=dbname)
    started = False
    try:
        try:
            cluster.initdb()
        except (RuntimeError, OSError) as exc:
            unavailable(f"cannot create a private PostgreSQL cluster: {exc}")
        for attempt in range(attempts):
            cluster.port = free_port()
            try:
                cluster.start()
            except RuntimeError:
                # Someone may have taken the port between free_port() and the server's bind(): try another.
                if attempt == attempts - 1:
                    raise
                continue
            started = True
            break
        with closing(cluster.connect("postgres")) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(f'CREATE DATABASE "{dbname}"')
        yield cluster
    finally:
        try:
            if started or (cluster.data / "postmaster.pid").exists():
                try:
                    cluster.stop("immediate")
                except Exception:
                    cluster.kill_postmaster()
        finally:
            shutil.rmtree(base, ignore_errors=True)
