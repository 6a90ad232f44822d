"""Identity and access: agents, their tokens and grants, the audit of refusals (schema v6).

A database is **open** (anyone names itself, as before) until the first agent is created; then
it is **enforced**: every caller presents a token ``dbc_<agent id>_<secret>`` and acts as that
agent. Only HMAC-SHA256(token) under a per-database secret is stored (``dbcode_access``, which
agents' roles cannot read); tokens are compared with ``hmac.compare_digest``.

PostgreSQL enforces the grants: each agent has a NOLOGIN role (``<prefix><id>``, the prefix
unique to the database since roles are cluster-wide), member of the database's agents role
(``<prefix>agents``, which holds the table privileges) and granted to the database owner.
Row-level security on every product table (schema v6) limits what SQL run as that role can
read or change. The server and the CLI run an agent's work (``run_as``) as the database's batch
role with ``dbcode.actor`` naming the agent's role (store.py ``_connection``: the policies then
apply that agent's grants, and the connection's role does not flip between agents, which would
make PostgreSQL plan every statement again). Python checks the same grants first
(:meth:`Agent.level`) to answer 403 with the workspace and path.

Verified tokens are cached in-process by their hash, together with the access generation
(``dbcode_access.gen``, bumped by every change of agents or grants): a request costs one
one-row read of the generation, and a rotation, revocation or removal takes effect at a live
session's next request.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql

from . import validate
from .errors import InvalidInput, NotFound, StoreError

if TYPE_CHECKING:
    from .store import Store

Level = Literal["read", "write", "admin"]
LEVELS: dict[str, int] = {"read": 1, "write": 2, "admin": 3}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

# Token: "dbc_<id>_<secret>", secret = secrets.token_urlsafe(TOKEN_SECRET_BYTES) (256 bits).
TOKEN_SECRET_BYTES = 32
# Longer tokens are refused unread (a 1 MB token costs no hashing).
TOKEN_CHARS_MAX = 200
AGENT_NAME_CHARS_MAX = 64
AUDIT_LIMIT_DEFAULT = 100
AUDIT_LIMIT_MAX = 10_000
AUDIT_FIELD_CHARS_MAX = 300
# Verified tokens kept in-process (by hash); beyond this the cache is cleared.
TOKEN_CACHE_ENTRIES_MAX = 10_000

_TOKEN_RE = re.compile(r"dbc_([0-9]{1,18})_([A-Za-z0-9_-]{20,100})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")

# current_role of a batch of several agents' changesets (each names its own in dbcode.actor).
ACTOR_BATCH = "\0batch"

# The agent's role whose SQL this task runs as (None: the owner). Set for the duration of a
# request by ``run_as``; read by the Store when it takes a connection.
current_role: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dbcode_role", default=None
)


class Unauthenticated(StoreError):
    """No token, or one that is not (or no longer) valid. JSON-RPC 401, CLI exit 1."""

    def __init__(self, why: str = "no token given") -> None:
        super().__init__(
            f"authentication required: {why} (set DBCODE_TOKEN, --token, or "
            "initializationOptions.token)"
        )


class Forbidden(StoreError):
    """The agent may not do this. JSON-RPC 403 naming workspace and path, CLI exit 1."""

    def __init__(self, agent: str, verb: str, workspace: str, path: str = "") -> None:
        self.agent, self.verb, self.workspace, self.path = agent, verb, workspace, path
        where = f"{workspace}/{path}" if path else workspace
        super().__init__(f"forbidden: agent {agent} may not {verb} {where}")


@dataclass(frozen=True, slots=True)
class Grant:
    workspace: str  # "*": every workspace
    prefix: str  # "": every path
    level: Level

    def covers(self, workspace: str, path: str | None) -> bool:
        if self.workspace not in ("*", workspace):
            return False
        p = self.prefix
        if path is None or p == "" or p == path:
            return True
        return p.endswith("/") and path.startswith(p)

    def spec(self) -> str:
        where = self.workspace + ("/" + self.prefix if self.prefix else "")
        return f"{where}={self.level}"


@dataclass(frozen=True, slots=True)
class Agent:
    """An authenticated agent (or the owner: ``open``, when the database is open)."""

    id: int
    name: str
    role: str
    grants: tuple[Grant, ...] = ()
    created_at: datetime | None = None
    rotated_at: datetime | None = None

    def level(self, workspace: str, path: str | None = None) -> int:
        """0 none, 1 read, 2 write, 3 admin, on ``path`` (None: anywhere in the workspace)."""
        best = 0
        for g in self.grants:
            if g.covers(workspace, path):
                best = max(best, LEVELS[g.level])
        return best

    def whole_level(self, workspace: str) -> int:
        """The level over the whole workspace (grants without a prefix)."""
        return max(
            (LEVELS[g.level] for g in self.grants if g.prefix == "" and g.covers(workspace, None)),
            default=0,
        )

    def can_read(self, workspace: str, path: str | None = None) -> bool:
        return self.level(workspace, path) >= 1

    def can_write(self, workspace: str, path: str | None = None) -> bool:
        return self.level(workspace, path) >= 2

    @property
    def superadmin(self) -> bool:
        return any(
            g.workspace == "*" and g.prefix == "" and g.level == "admin" for g in self.grants
        )

    def require(self, level: int, workspace: str, path: str = "", *, whole: bool = False) -> None:
        """Raise Forbidden unless the agent has ``level`` on ``path`` (""/None: somewhere in
        the workspace; ``whole``: over all of it)."""
        have = self.whole_level(workspace) if whole else self.level(workspace, path or None)
        if have < level:
            verb = {1: "read", 2: "write", 3: "administer"}[level]
            raise Forbidden(self.name, verb, workspace, path)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "grants": [g.spec() for g in self.grants],
            "created": self.created_at.isoformat() if self.created_at else None,
            "rotated": self.rotated_at.isoformat() if self.rotated_at else None,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    agent: str | None
    action: str
    workspace: str | None
    path: str | None
    transport: str
    peer: str
    reason: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": self.agent,
            "action": self.action,
            "workspace": self.workspace,
            "path": self.path,
            "transport": self.transport,
            "peer": self.peer,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


def parse_grant(spec: str) -> Grant:
    """``WS[/PREFIX]=read|write|admin`` (WS ``*``: every workspace). A prefix naming a folder
    should end in ``/``; one without is taken as a folder too unless it names a file (has a
    dot in its last part)."""
    where, sep, level = spec.rpartition("=")
    if not sep or level not in LEVELS:
        raise InvalidInput(f"invalid grant {spec!r}: use WS[/PREFIX]=read|write|admin")
    ws, _, prefix = where.partition("/")
    if ws != "*":
        validate.check_workspace(ws)
    if prefix:
        validate.check_path(prefix.rstrip("/") or "x")
        last = prefix.rstrip("/").rsplit("/", 1)[-1]
        if not prefix.endswith("/") and "." not in last:
            prefix += "/"
    return Grant(ws, prefix, level)  # type: ignore[arg-type]


def check_name(name: str) -> str:
    if not (0 < len(name) <= AGENT_NAME_CHARS_MAX) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid agent name {name[:80]!r}: 1-{AGENT_NAME_CHARS_MAX} characters of "
            "letters, digits and . _ @ -"
        )
    return name


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:AUDIT_FIELD_CHARS_MAX]


@dataclass
class _Cached:
    agent: Agent
    gen: int


@dataclass
class Access:
    """The access API of one Store (``store.access``). Runs as the owner."""

    store: Store
    _gen: int = -1
    _enforced: bool = False
    _secret: bytes | None = None
    _prefix: str = ""
    _cache: dict[bytes, _Cached] = field(default_factory=dict)
    # hub.access_changes when the database was last seen open while the hub listened: until
    # it grows (an agent was added: NOTIFY dbcode_access), an open database needs no query.
    _open_at: int | None = None

    # -- state -----------------------------------------------------------------------------

    async def _state(self) -> int:
        """Read the generation; on a change, reload what depends on it."""
        hub = self.store.hub
        before = hub.access_changes
        rows = await self.store._fetchall(
            "SELECT gen, EXISTS (SELECT 1 FROM dbcode_agent), secret, role_prefix"
            " FROM dbcode_access"
        )
        gen, enforced, secret, prefix = rows[0]
        # Open, and no change heard since before the read: open until the hub hears one.
        still = not enforced and hub.connected and hub.access_changes == before
        self._open_at = before if still else None
        if gen != self._gen:
            self._gen, self._enforced = int(gen), bool(enforced)
            self._secret = bytes(secret) if secret is not None else None
            self._prefix = str(prefix)
        return self._gen

    @property
    def batch_role(self) -> str:
        """The role a batch of several agents' changesets runs as (each changeset with its
        agent in dbcode.actor): only the owner can become it."""
        assert self._prefix
        return self._prefix + "batch"

    async def enforced(self) -> bool:
        """True once an agent exists (re-read on every call: one one-row query)."""
        with as_owner():
            await self._state()
        return self._enforced

    def _hash(self, token: str) -> bytes:
        assert self._secret is not None
        return hmac.new(self._secret, token.encode(), hashlib.sha256).digest()

    async def authenticate(self, token: str | None) -> Agent | None:
        """The token's agent; None when the database is open (and no token was checked).
        Raises Unauthenticated."""
        hub = self.store.hub
        if self._open_at is not None and self._open_at == hub.access_changes and hub.connected:
            return None  # still open (the hub listens for the first agent's NOTIFY)
        with as_owner():
            gen = await self._state()
            if not self._enforced:
                return None
            if not token:
                raise Unauthenticated()
            if not isinstance(token, str) or len(token) > TOKEN_CHARS_MAX:
                raise Unauthenticated("the token is not valid")
            m = _TOKEN_RE.fullmatch(token)
            if m is None or self._secret is None:
                raise Unauthenticated("the token is not valid")
            digest = self._hash(token)
            hit = self._cache.get(digest)
            if hit is not None and hit.gen == gen:
                return hit.agent
            agent = await self._load(int(m.group(1)), digest)
            if agent is None:
                raise Unauthenticated("the token is not valid (revoked, rotated or wrong)")
            if len(self._cache) >= TOKEN_CACHE_ENTRIES_MAX:
                self._cache.clear()
            self._cache[digest] = _Cached(agent, gen)
            return agent

    async def _load(self, agent_id: int, digest: bytes | None) -> Agent | None:
        rows = await self.store._fetchall(
            "SELECT a.id, a.name, a.role, a.token_hash, a.created_at, a.rotated_at,"
            " coalesce((SELECT json_agg(json_build_array(g.workspace, g.prefix, g.level)"
            "  ORDER BY g.workspace, g.prefix) FROM dbcode_grant g WHERE g.agent_id = a.id),"
            "  '[]') FROM dbcode_agent a WHERE a.id = %s",
            (agent_id,),
        )
        if not rows:
            return None
        aid, name, role, stored, created, rotated, grants = rows[0]
        if digest is not None and not hmac.compare_digest(bytes(stored), digest):
            return None
        return Agent(
            int(aid),
            name,
            role,
            tuple(Grant(*g) for g in grants),
            created,
            rotated,
        )

    # -- management (admins; anyone for the first agent) -------------------------------------

    async def _manager(self, by: Agent | None) -> None:
        await self._state()
        if self._enforced and (by is None or not by.superadmin):
            raise Forbidden(by.name if by else "unknown", "manage agents in", "*")

    async def add_agent(
        self, name: str, grants: Sequence[Grant], *, admin: bool = False, by: Agent | None = None
    ) -> tuple[Agent, str]:
        """Create an agent; returns it and its token (shown once, never stored)."""
        check_name(name)
        with as_owner():
            await self._manager(by)
            grants = list(grants)
            if admin:
                grants.append(Grant("*", "", "admin"))
            if not self._enforced and not any(
                g.workspace == "*" and g.prefix == "" and g.level == "admin" for g in grants
            ):
                raise InvalidInput("the first agent must be an admin (of everything): add --admin")
            try:
                async with self.store._connection() as conn, conn.transaction():
                    await conn.execute("SELECT 1 FROM dbcode_access FOR UPDATE")
                    await _setup_roles(conn)
                    cur = await conn.execute("SELECT secret, role_prefix FROM dbcode_access")
                    row = await cur.fetchone()
                    assert row is not None
                    secret, prefix = row
                    if secret is None:
                        secret = secrets.token_bytes(32)
                        await conn.execute("UPDATE dbcode_access SET secret = %s", (secret,))
                    cur = await conn.execute(
                        "INSERT INTO dbcode_agent (name, role, token_hash)"
                        " VALUES (%s, %s || 'pending' || md5(random()::text), '')"
                        " ON CONFLICT (name) DO NOTHING RETURNING id",
                        (name, prefix),
                    )
                    got = await cur.fetchone()
                    if got is None:
                        raise InvalidInput(f"agent {name!r} exists already")
                    aid = int(got[0])
                    role = f"{prefix}{aid}"
                    token = f"dbc_{aid}_{secrets.token_urlsafe(TOKEN_SECRET_BYTES)}"
                    digest = hmac.new(bytes(secret), token.encode(), hashlib.sha256).digest()
                    await conn.execute(
                        "UPDATE dbcode_agent SET role = %s, token_hash = %s WHERE id = %s",
                        (role, digest, aid),
                    )
                    await conn.execute(
                        sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(
                            sql.Identifier(role), sql.Identifier(prefix + "agents")
                        )
                    )
                    await conn.execute(
                        sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role))
                    )
                    await _put_grants(conn, aid, grants)
                    await conn.execute(_BUMP)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StoreError(
                    "cannot create the agent's PostgreSQL role: the database owner needs "
                    f"CREATEROLE ({exc.diag.message_primary})"
                ) from None
            agent = await self._load(aid, None)
            assert agent is not None
            return agent, token

    async def _agent_id(self, conn: psycopg.AsyncConnection[Any], name: str) -> tuple[int, str]:
        cur = await conn.execute(
            "SELECT id, role FROM dbcode_agent WHERE name = %s FOR UPDATE", (name,)
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no agent {name!r}")
        return int(row[0]), str(row[1])

    async def grant(self, name: str, grants: Sequence[Grant], *, by: Agent | None) -> Agent:
        with as_owner():
            await self._manager(by)
            async with self.store._connection() as conn, conn.transaction():
                aid, _ = await self._agent_id(conn, name)
                await _put_grants(conn, aid, grants)
                await conn.execute(_BUMP)
            agent = await self._load(aid, None)
            assert agent is not None
            return agent

    async def revoke(self, name: str, grants: Sequence[str], *, by: Agent | None) -> Agent:
        """Remove grants, each ``WS[/PREFIX]`` (all levels of it)."""
        with as_owner():
            await self._manager(by)
            async with self.store._connection() as conn, conn.transaction():
                aid, _ = await self._agent_id(conn, name)
                for spec in grants:
                    g = parse_grant(spec.partition("=")[0] + "=read")
                    cur = await conn.execute(
                        "DELETE FROM dbcode_grant WHERE agent_id = %s AND workspace = %s"
                        " AND prefix = %s",
                        (aid, g.workspace, g.prefix),
                    )
                    if cur.rowcount == 0:
                        raise NotFound(f"agent {name!r} has no grant on {spec}")
                await _check_admin_left(conn)
                await conn.execute(_BUMP)
            agent = await self._load(aid, None)
            assert agent is not None
            return agent

    async def remove(self, name: str, *, by: Agent | None) -> None:
        with as_owner():
            await self._manager(by)
            async with self.store._connection() as conn, conn.transaction():
                aid, role = await self._agent_id(conn, name)
                await conn.execute("DELETE FROM dbcode_agent WHERE id = %s", (aid,))
                await _check_admin_left(conn)
                await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
                await conn.execute(_BUMP)

    async def rotate(self, name: str, *, by: Agent | None) -> str:
        """A new token for the agent; the old one stops working. Returns the new token."""
        with as_owner():
            await self._manager(by)
            async with self.store._connection() as conn, conn.transaction():
                aid, _ = await self._agent_id(conn, name)
                cur = await conn.execute("SELECT secret FROM dbcode_access")
                row = await cur.fetchone()
                assert row is not None and row[0] is not None
                token = f"dbc_{aid}_{secrets.token_urlsafe(TOKEN_SECRET_BYTES)}"
                digest = hmac.new(bytes(row[0]), token.encode(), hashlib.sha256).digest()
                await conn.execute(
                    "UPDATE dbcode_agent SET token_hash = %s, rotated_at = now() WHERE id = %s",
                    (digest, aid),
                )
                await conn.execute(_BUMP)
            return token

    async def agents(self, *, by: Agent | None) -> list[Agent]:
        with as_owner():
            await self._manager(by)
            rows = await self.store._fetchall("SELECT id FROM dbcode_agent ORDER BY name")
            found = [await self._load(int(r[0]), None) for r in rows]
            return [a for a in found if a is not None]

    # -- audit -----------------------------------------------------------------------------

    async def record(
        self,
        *,
        agent: str | None,
        action: str,
        workspace: str | None = None,
        path: str | None = None,
        transport: str | None = None,
        peer: str | None = None,
        reason: str = "",
    ) -> None:
        """Record a refused attempt (never the token)."""
        with as_owner():
            await self.store._execute(
                "INSERT INTO dbcode_audit (agent, action, workspace, path, transport, peer,"
                " reason) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    _clip(agent),
                    _clip(action) or "?",
                    _clip(workspace),
                    _clip(path),
                    _clip(transport) or "?",
                    _clip(peer) or "?",
                    _clip(reason) or "",
                ),
            )

    async def audit(
        self, workspace: str, *, by: Agent | None, limit: int = AUDIT_LIMIT_DEFAULT
    ) -> list[AuditEntry]:
        """Refusals in ``workspace`` and those with no workspace (failed authentications),
        newest first. Admins of the workspace only (anyone while the database is open)."""
        validate.check_workspace(workspace)
        limit = max(1, min(limit, AUDIT_LIMIT_MAX))
        with as_owner():
            await self._state()
            if self._enforced and (by is None or by.level(workspace) < 3):
                raise Forbidden(by.name if by else "unknown", "administer", workspace)
            rows = await self.store._fetchall(
                "SELECT id, agent, action, workspace, path, transport, peer, reason, at"
                " FROM dbcode_audit WHERE workspace = %s OR workspace IS NULL"
                " ORDER BY id DESC LIMIT %s",
                (workspace, limit),
            )
        return [AuditEntry(*r) for r in rows]


class as_owner:
    """Within: SQL runs as the owner (the access tables are not the agents' to read)."""

    def __enter__(self) -> None:
        self._reset = current_role.set(None)

    def __exit__(self, *exc: object) -> None:
        current_role.reset(self._reset)


class run_as:
    """Within: the task's SQL runs as ``agent``'s role (None: as the owner)."""

    def __init__(self, agent: Agent | None) -> None:
        self.role = agent.role if agent is not None else None

    def __enter__(self) -> None:
        self._reset = current_role.set(self.role)

    def __exit__(self, *exc: object) -> None:
        current_role.reset(self._reset)


async def _put_grants(
    conn: psycopg.AsyncConnection[Any], agent_id: int, grants: Sequence[Grant]
) -> None:
    for g in grants:
        await conn.execute(
            "INSERT INTO dbcode_grant (agent_id, workspace, prefix, level)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (agent_id, workspace, prefix)"
            " DO UPDATE SET level = excluded.level",
            (agent_id, g.workspace, g.prefix, g.level),
        )


async def _check_admin_left(conn: psycopg.AsyncConnection[Any]) -> None:
    """An enforced database keeps at least one admin of everything (else nobody could ever
    manage it again)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM dbcode_agent) AND NOT EXISTS (SELECT 1 FROM dbcode_grant"
        " WHERE workspace = '*' AND prefix = '' AND level = 'admin')"
    )
    row = await cur.fetchone()
    if row and row[0]:
        raise InvalidInput("that would leave no admin: grant *=admin to another agent first")


# Every change of agents or grants: the generation grows (sessions re-check their tokens at
# their next request) and the hubs of open servers hear of it.
_BUMP = "UPDATE dbcode_access SET gen = gen + 1 RETURNING pg_notify('dbcode_access', gen::text)"

# Tables agents never touch directly: the access tables and the schema version.
_PRIVATE_TABLES = ("dbcode_access", "dbcode_agent", "dbcode_grant", "dbcode_schema_version")


async def _setup_roles(conn: psycopg.AsyncConnection[Any]) -> None:
    """The agents' group role and its privileges on the product tables (idempotent: run at
    every ``agent add``, so tables of later migrations are covered too)."""
    cur = await conn.execute("SELECT role_prefix FROM dbcode_access")
    row = await cur.fetchone()
    assert row is not None
    group = sql.Identifier(str(row[0]) + "agents")
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (str(row[0]) + "agents",))
    if await cur.fetchone() is None:
        await conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
        batch = sql.Identifier(str(row[0]) + "batch")
        await conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(batch, group))
        await conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(batch))
    cur = await conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace"
        " AND c.relname LIKE 'dbcode\\_%%' AND c.relkind IN ('r', 'S')"
    )
    for name, kind in await cur.fetchall():
        if name in _PRIVATE_TABLES:
            continue
        if kind == "S":
            await conn.execute(
                sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(
                    sql.Identifier(name), group
                )
            )
        elif name == "dbcode_audit":
            await conn.execute(
                sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(sql.Identifier(name), group)
            )
        else:
            await conn.execute(
                sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {} TO {}").format(
                    sql.Identifier(name), group
                )
            )
    await conn.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(await _schema(conn)), group)
    )


async def _schema(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute("SELECT current_schema()")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])
