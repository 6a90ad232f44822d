"""Choosing the database: DBCODE_DATABASE_URL, else the embedded PostgreSQL (pgserver)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import psycopg.conninfo
from psycopg import sql

from .errors import DatabaseUnavailable

log = logging.getLogger(__name__)

EMBEDDED_DBNAME = "dbcode"


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


def dbcode_home() -> Path:
    """DBCODE_HOME, else the platform's user data dir."""
    env = os.environ.get("DBCODE_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("dbcode"))


def embedded_dsn(home: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL under DBCODE_HOME; return its DSN.

    The server keeps running after this process exits, so every process of the user shares it.
    """
    home = home or dbcode_home()
    pgdata = home / "pgdata"
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(pgdata, cleanup_mode=None)
        uri = server.get_uri()
        _ensure_database(uri, EMBEDDED_DBNAME)
        return str(server.get_uri(EMBEDDED_DBNAME))
    except DatabaseUnavailable:
        raise
    except Exception as exc:  # pgserver raises many kinds; the user needs one sentence
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {pgdata}: {exc}; "
            f"see {pgdata / 'log'} or set DBCODE_DATABASE_URL"
        ) from exc


def _ensure_database(uri: str, name: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass


def resolve_dsn(explicit: str | None = None) -> str:
    """--database-url, else DBCODE_DATABASE_URL, else the embedded server."""
    dsn = explicit or os.environ.get("DBCODE_DATABASE_URL")
    if dsn:
        return dsn
    return embedded_dsn()
