"""What the tests (``tests/servers.py``) and the benchmarks (``bench/servers.py``) both start processes with.

Free ports, whether something listens on one, the ``redis-server`` command line
and a one-line Redis client, a database every process of a run shares (a temp
SQLite file, or a fresh PostgreSQL database dropped afterwards), and the
environment of a Django process on them. It lives here, at the top of the
repository and outside the ``notifications`` package, because the benchmarks
must not import the tests, and because none of it is for drf-live's users: it
starts this repository's example project.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
#: The interpreter of ``make install``'s virtualenv, or this one.
PYTHON = str(_VENV_PYTHON) if _VENV_PYTHON.exists() else sys.executable
MANAGE = str(ROOT / "manage.py")
#: The password ``manage.py load_demo`` gives its users.
DEMO_PASSWORD = "demo-password"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# Redis ---------------------------------------------------------------------------


def redis_argv(
    executable: str, port: int, directory: Path, *, appendonly: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """``redis-server`` on 127.0.0.1:``port``, no RDB snapshots, files in ``directory``.

    Without persistence a restart comes back empty; with ``appendonly`` every
    write is synced to an append-only file before it is acknowledged
    (``--appendfsync always``), so a restart comes back with all of them.
    """
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    return [
        executable,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *persistence,
        "--dir",
        str(directory),
        *extra,
    ]


def redis_command(port: int, *words: str, timeout: float = 5.0) -> str:
    """One command in Redis' inline protocol; the raw reply, or "" if Redis does not answer.

    Enough for PING, FLUSHALL and INFO: no client library, so that it works
    before anything is installed.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall((" ".join(words) + "\r\n").encode())
            data = sock.recv(65536)
            if data.startswith(b"$"):
                size = int(data[1 : data.index(b"\r\n")])
                while len(data) < size + len(str(size)) + 5:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return data.decode(errors="replace")
    except (OSError, ValueError):
        return ""


def redis_ping(port: int) -> bool:
    return redis_command(port, "PING", timeout=0.5).startswith("+PONG")


# A database every process of a run shares ------------------------------------------


class Database:
    """A temp SQLite file, or, when ``base_url`` names a PostgreSQL server, a fresh database on it.

    The PostgreSQL database is created here (``<prefix>_<random>``, never
    pytest-django's ``test_*`` one) and dropped by ``drop()``.
    """

    def __init__(self, base_url: str = "", *, prefix: str = "drf_live") -> None:
        self._tmp: Path | None = None
        self._admin_url: str | None = None
        self.name: str | None = None
        if base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            parts = urlsplit(base_url)
            self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
            self._admin_url = urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))
            self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", parts.query, ""))
            self._execute(f'CREATE DATABASE "{self.name}"')
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"{prefix.replace('_', '-')}-db-"))
            self.url = f"sqlite:///{self._tmp / 'db.sqlite3'}"

    @property
    def kind(self) -> str:
        return "PostgreSQL" if self._admin_url else "SQLite (WAL)"

    def _execute(self, sql: str) -> None:
        import psycopg

        assert self._admin_url is not None
        with psycopg.connect(self._admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def drop(self) -> None:
        if self.name is not None:
            self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.name = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


#: Variables of the example project's settings that a process gets from ``django_env`` only,
#: never from whatever the shell exported.
_SETTINGS_VARIABLES = {
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "REDIS_URL",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DEBUG",
}


def django_env(
    database_url: str,
    redis_url: str | None = None,
    *,
    settings: str = "project.settings",
    debug: bool = True,
    **extra: str,
) -> dict[str, str]:
    """The environment of a server, a writer or a management command: these settings, this database, this Redis.

    ``debug=False`` for long runs: with ``DEBUG`` on, Django keeps every query in memory.
    """
    env = {key: value for key, value in os.environ.items() if key not in _SETTINGS_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        DATABASE_URL=database_url,
        DEBUG="1" if debug else "0",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env
