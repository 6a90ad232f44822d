"""Test fixtures: a real PostgreSQL, never a mock.

By default the embedded server (pgserver) under $DBCODE_TEST_HOME (default
~/.cache/lsp-dbcode-tests); with DBCODE_TEST_DATABASE_URL set, that server. Either way each
test run gets a fresh database, dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from lsp_dbcode.server.relay import kill_servers
from lsp_dbcode.store import Store
from lsp_dbcode.store.dsn import embedded_dsn


def _server_url() -> str:
    url = os.environ.get("DBCODE_TEST_DATABASE_URL")
    if url:
        return url
    home = Path(os.environ.get("DBCODE_TEST_HOME", Path.home() / ".cache" / "lsp-dbcode-tests"))
    return embedded_dsn(home)


def _with_dbname(url: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """DSN of a fresh database for this test run."""
    server = _server_url()
    name = f"dbcode_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def _runtime_base() -> Iterator[Path]:
    # Short: unix socket paths are limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="dbx-", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def shared_servers(_runtime_base: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The socket directory of this test's shared `dbcode serve` servers (server/relay.py).

    Every test gets an XDG_RUNTIME_DIR of its own, inherited by the processes it starts: its
    stdio relays never attach to another test's (or worker's, or the developer's) server, and
    the servers they started are ended when the test ends (no idle wait).
    """
    runtime = Path(tempfile.mkdtemp(prefix="t", dir=_runtime_base))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime / "dbcode"
    if (runtime / "dbcode").is_dir():
        kill_servers(runtime / "dbcode")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store(database_url, max_size=20) as s:
        yield s


@pytest.fixture
def workspace() -> str:
    """A workspace name of its own for each test."""
    return f"ws-{uuid.uuid4().hex[:10]}"


class Cli:
    """Runs the real `dbcode` command in a subprocess."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.env = {
            **os.environ,
            "DBCODE_DATABASE_URL": database_url,
            "DBCODE_AGENT": "test-agent",
            "DBCODE_HOME": str(home),
        }

    def __call__(
        self,
        *args: str,
        input: bytes | str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [sys.executable, "-m", "lsp_dbcode", *args],
            input=data,
            capture_output=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        )


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli(database_url, tmp_path / "home")


@pytest.fixture
def fresh_database_url() -> Iterator[str]:
    """A database of its own for one test (access control enforces a whole database: the
    run's shared database must stay open for the other tests)."""
    server = _server_url()
    name = f"dbcode_acl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(server, name)
    finally:
        drop_database_and_roles(server, name)


def drop_database_and_roles(server: str, name: str) -> None:
    """Drop a test database and the agents' roles it made (roles are cluster-wide)."""
    url = _with_dbname(server, name)
    roles: list[str] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT role_prefix FROM dbcode_access WHERE to_regclass('dbcode_access')"
                " IS NOT NULL"
            ).fetchone()
            if row:
                roles = [
                    r[0]
                    for r in conn.execute(
                        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)"
                        " ORDER BY rolname = %s",
                        (row[0], row[0] + "agents"),
                    )
                ]
    except psycopg.Error:
        pass
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        for role in roles:
            try:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            except psycopg.Error:
                pass
