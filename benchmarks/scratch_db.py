"""Scratch databases for the benchmarks: created fresh on the server of an admin DSN, dropped
at the end."""

from __future__ import annotations

import psycopg
from psycopg import sql


def recreate(admin_dsn: str, name: str) -> str:
    """Drop and create database ``name``; returns its DSN."""
    drop(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def drop(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
