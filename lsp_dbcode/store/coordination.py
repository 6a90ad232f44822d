"""Claims, sessions and presence (SPEC.md, Coordination), all in PostgreSQL.

- A **claim** is a row of ``dbcode_claim``; ``dbcode_claim_make`` (schema v5) makes or renews
  it under the file's row lock, the lock every commit of the file takes too: two overlapping
  exclusive claims made at once, or a claim and a commit, are settled by the database in some
  order, never both. The commit side is the trigger ``dbcode_claims_on_commit``.
- A claim lives until released, until ``expires_at`` (the database's clock), or until its
  session's process dies. A **holder** is one connection per Store (process) holding the
  advisory lock (HOLDER_LOCK_CLASS, holder id) for its whole life; sessions (LSP sessions)
  belong to it. PostgreSQL drops the lock when the connection ends, also when the process is
  killed with SIGKILL (the kernel closes its socket), and from then on every reader sees its
  sessions' claims and presence as gone (``dbcode_holder_alive``), without waiting for anyone
  to clean up. Claims made by the CLI have no session: they live until released or expired.
- **Presence**: one row per (session, workspace, path) the session has open.
- Changes NOTIFY ``dbcode_coord`` with the workspace name (hub.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..text.anchors import line_span, span_lines
from . import validate
from .dsn import redact
from .errors import Claimed, DatabaseUnavailable, InvalidInput, NotFound, StoreError
from .model import Claim, FileText, Presence

log = logging.getLogger(__name__)

# 'dbcs': the advisory lock class of holders (the key is the holder id).
HOLDER_LOCK_CLASS = 1684234099
CLAIM_TTL_S_DEFAULT = 300.0
CLAIM_TTL_S_MAX = 24 * 3600.0
CLAIM_NOTE_BYTES_MAX = 1024
CLAIMS_PER_AGENT_MAX = 100
# A ranged claim is computed on the current text; if a commit lands in between, try again.
CLAIM_RETRIES_MAX = 5
CONNECT_TIMEOUT_S = 5
MODE_MAX_CHARS = 32
# Garbage of dead processes and old claims, removed a batch at a time whenever a session opens:
# sessions of holders that are gone, and claims that expired this long ago.
GC_BATCH_MAX = 100
CLAIM_GC_AFTER_S = 3600
# Session ends sent at once by one process: each ends in a NOTIFY, and PostgreSQL commits
# notifying transactions one at a time, so a burst of ends (a relay's 60 editors quitting) would
# otherwise hold that many pool connections waiting, and grow the pool to its maximum.
SESSION_CLOSES_MAX = 2


def claim_from_json(workspace: str, c: dict[str, Any]) -> Claim:
    return Claim(
        id=int(c["id"]),
        workspace=workspace,
        path=c["path"],
        agent=c["agent"],
        note=c.get("note") or "",
        exclusive=bool(c["exclusive"]),
        whole=bool(c["whole"]),
        start=int(c["start"]),
        end=int(c["end"]),
        revision=int(c["revision"]),
        since=datetime.fromisoformat(c["since"]),
        expires_at=datetime.fromisoformat(c["expiresAt"]),
    )


def claimed_error(workspace: str, detail_text: str | None) -> Claimed:
    detail = json.loads(detail_text or "{}")
    return Claimed(workspace, detail.get("path", ""), claim_from_json(workspace, detail["claim"]))


def claim_json(c: Claim) -> dict[str, Any]:
    """A claim as the CLI's --json prints it (lines 1-based)."""
    return {
        "id": c.id,
        "agent": c.agent,
        "path": c.path,
        "startLine": None if c.whole or c.lines is None else c.lines[0],
        "endLine": None if c.whole or c.lines is None else c.lines[1],
        "note": c.note,
        "exclusive": c.exclusive,
        "since": c.since.isoformat(),
        "expiresAt": c.expires_at.isoformat(),
    }


class CoordinationStore:
    """Claims, sessions and presence (mixed into ``Store``)."""

    _pool: AsyncConnectionPool
    dsn: str

    async def _fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _workspace_id(self, workspace: str) -> int:
        raise NotImplementedError

    async def _execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def read(self, workspace: str, path: str, revision: int | None = None) -> FileText:
        raise NotImplementedError

    _holder_conn: psycopg.AsyncConnection[Any] | None = None
    _holder_id: int | None = None
    _holder_lock: asyncio.Lock | None = None
    _closing: asyncio.Semaphore | None = None  # SESSION_CLOSES_MAX
    # Grows whenever the holder is replaced (its connection was lost): sessions made before
    # are gone, their owners make new ones (server/coordination.py Coordination).
    holder_generation = 0

    # -- holder and sessions ---------------------------------------------------------------

    async def holder(self) -> int:
        """This process's holder id; its connection holds the advisory lock that keeps its
        sessions alive (opened on first use, closed by ``close_holder``)."""
        if self._holder_lock is None:
            self._holder_lock = asyncio.Lock()
        async with self._holder_lock:
            old = self._holder_id
            if old is not None and self._holder_conn is not None:
                if not self._holder_conn.closed and not _still_connected(self._holder_conn):
                    await self._holder_conn.close()
                if not self._holder_conn.closed:
                    return old
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
                cur = await conn.execute("SELECT nextval('dbcode_holder_seq')")
                row = await cur.fetchone()
                assert row is not None
                holder = int(row[0])
                await conn.execute(
                    "SELECT pg_advisory_lock(%s, (%s %% 2147483647)::integer)",
                    (HOLDER_LOCK_CLASS, holder),
                )
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}") from None
            self._holder_conn, self._holder_id = conn, holder
            if old is not None:
                # Our lock went with the old connection: its sessions' claims and presence
                # ended (others may have claimed meanwhile). Never revive them.
                self.holder_generation += 1
                log.warning("lost the holder connection; its sessions' claims have ended")
                try:
                    await conn.execute("DELETE FROM dbcode_session WHERE holder = %s", (old,))
                except psycopg.Error as exc:
                    log.warning("removing the old holder's sessions failed: %s", exc)
            return holder

    async def close_holder(self) -> None:
        """End this process's holder: its sessions, claims and presence end with it."""
        conn, self._holder_conn = self._holder_conn, None
        holder, self._holder_id = self._holder_id, None
        if conn is None:
            return
        try:
            if holder is not None and not conn.closed:
                cur = await conn.execute(
                    "WITH gone AS (DELETE FROM dbcode_session WHERE holder = %s RETURNING id)"
                    " SELECT count(*) FROM gone",
                    (holder,),
                )
                await cur.fetchone()
        except psycopg.Error as exc:
            log.warning("ending the holder's sessions failed: %s", exc)
        finally:
            await conn.close()

    async def open_session(self, agent: str, mode: str | None = None) -> int:
        """A session of this process (an LSP session): claims and presence can hang on it."""
        if not agent or len(agent) > 200:
            raise InvalidInput("invalid agent name: 1-200 characters")
        if mode is not None and len(mode) > MODE_MAX_CHARS:
            raise InvalidInput(f"invalid mode {mode!r}")
        holder = await self.holder()
        rows = await self._execute(
            "INSERT INTO dbcode_session (holder, agent, mode) VALUES (%s, %s, %s) RETURNING id",
            (holder, agent, mode),
        )
        await self._collect_garbage()
        return int(rows[0][0])

    async def update_session(self, session: int, agent: str, mode: str | None) -> None:
        """The session's agent or mode changed (dbcode/configure): its presence shows the new
        ones at once, to every process (others are told, as at an open)."""
        if not agent or len(agent) > 200:
            raise InvalidInput("invalid agent name: 1-200 characters")
        if mode is not None and len(mode) > MODE_MAX_CHARS:
            raise InvalidInput(f"invalid mode {mode!r}")
        await self._execute(
            "WITH upd AS (UPDATE dbcode_session SET agent = %s, mode = %s WHERE id = %s"
            "  AND (agent, mode) IS DISTINCT FROM (%s, %s) RETURNING id),"
            " ws AS (SELECT DISTINCT w.name FROM dbcode_workspace w WHERE w.id IN ("
            "  SELECT workspace_id FROM dbcode_presence WHERE session_id IN (SELECT id FROM upd)))"
            " SELECT pg_notify('dbcode_coord', name) FROM ws",
            (agent, mode, session, agent, mode),
        )

    async def _collect_garbage(self) -> None:
        """Remove what dead processes and old claims left (their rows are ignored already:
        this only keeps the tables small)."""
        await self._execute(
            "WITH dead AS (SELECT id FROM dbcode_session s WHERE NOT dbcode_holder_alive(s.holder)"
            "  LIMIT %s)"
            " DELETE FROM dbcode_session WHERE id IN (SELECT id FROM dead)",
            (GC_BATCH_MAX,),
        )
        await self._execute(
            "DELETE FROM dbcode_claim WHERE id IN (SELECT id FROM dbcode_claim"
            " WHERE expires_at < now() - make_interval(secs => %s) LIMIT %s)",
            (CLAIM_GC_AFTER_S, GC_BATCH_MAX),
        )

    async def close_session(self, session: int) -> None:
        """End a session: its claims and presence go with it (and others are told)."""
        if self._closing is None:
            self._closing = asyncio.Semaphore(SESSION_CLOSES_MAX)
        async with self._closing:
            await self._close_session(session)

    async def _close_session(self, session: int) -> None:
        await self._execute(
            "WITH gone AS (DELETE FROM dbcode_session WHERE id = %s RETURNING id),"
            " ws AS (SELECT DISTINCT w.name FROM dbcode_workspace w WHERE w.id IN ("
            "  SELECT workspace_id FROM dbcode_claim WHERE session_id = %s"
            "  UNION SELECT workspace_id FROM dbcode_presence WHERE session_id = %s))"
            " SELECT pg_notify('dbcode_coord', name) FROM ws",
            (session, session, session),
        )

    # -- presence --------------------------------------------------------------------------

    async def set_presence(self, session: int, workspace: str, path: str, *, present: bool) -> None:
        """Record that ``session`` has ``path`` open (or no longer has)."""
        validate.check_path(path)
        ws = await self._workspace_id(workspace)
        if present:
            query = (
                "WITH ins AS (INSERT INTO dbcode_presence (session_id, workspace_id, path)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1)"
                " SELECT pg_notify('dbcode_coord', %s) FROM ins"
            )
        else:
            query = (
                "WITH del AS (DELETE FROM dbcode_presence WHERE session_id = %s"
                " AND workspace_id = %s AND path = %s RETURNING 1)"
                " SELECT pg_notify('dbcode_coord', %s) FROM del"
            )
        await self._execute(query, (session, ws, path, workspace))

    async def presence(self, workspace: str, path: str | None = None) -> list[Presence]:
        """Who has which file open, across every process (sessions of dead processes never)."""
        ws = await self._workspace_id(workspace)
        if path is not None:
            validate.check_path(path)
        rows = await self._fetchall(
            "SELECT s.agent, p.path, s.mode, p.since, s.id FROM dbcode_presence p"
            " JOIN dbcode_session s ON s.id = p.session_id"
            " WHERE p.workspace_id = %s AND (%s::text IS NULL OR p.path = %s)"
            " AND dbcode_holder_alive(s.holder) ORDER BY p.path, p.since, s.agent",
            (ws, path, path),
        )
        return [Presence(a, workspace, p, m, t, int(s)) for a, p, m, t, s in rows]

    # -- claims ----------------------------------------------------------------------------

    async def claim(
        self,
        workspace: str,
        path: str,
        *,
        agent: str,
        lines: tuple[int, int] | None = None,
        span: tuple[int, int] | None = None,
        note: str = "",
        exclusive: bool = False,
        ttl_s: float = CLAIM_TTL_S_DEFAULT,
        claim_id: int | None = None,
        session: int | None = None,
    ) -> Claim:
        """Make (or renew, with ``claim_id``) a claim on the file or on ``lines`` / ``span`` of
        its current revision. Raises Claimed when another agent's exclusive claim overlaps."""
        validate.check_workspace(workspace)
        validate.check_path(path)
        if not agent or len(agent) > 200:
            raise InvalidInput("invalid agent name: 1-200 characters")
        validate.text_bytes(note, "claim note", CLAIM_NOTE_BYTES_MAX)
        if not 0 < ttl_s <= CLAIM_TTL_S_MAX:
            raise InvalidInput(
                f"invalid time to live {ttl_s:g} s: use more than 0 and at most"
                f" {CLAIM_TTL_S_MAX:g} s"
            )
        if lines is not None and span is not None:
            raise InvalidInput("give the lines or the range of a claim, not both")
        for _ in range(CLAIM_RETRIES_MAX):
            rev: int | None = None
            start = end = None
            if lines is not None or span is not None:
                current = await self.read(workspace, path)
                rev, text = current.revision, current.text
                if lines is not None:
                    try:
                        start, end = line_span(text, *lines)
                    except ValueError as exc:
                        raise InvalidInput(f"{workspace}/{path}: {exc}") from None
                else:
                    assert span is not None
                    start, end = span
                    if not 0 <= start <= end <= len(text):
                        raise InvalidInput(
                            f"{workspace}/{path}: range [{start}, {end}) is not within the file"
                            f" ({len(text)} characters)"
                        )
            try:
                rows = await self._execute(
                    "SELECT dbcode_claim_make(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        workspace,
                        path,
                        rev,
                        start,
                        end,
                        note,
                        exclusive,
                        ttl_s,
                        agent,
                        session,
                        claim_id,
                        CLAIMS_PER_AGENT_MAX,
                    ),
                )
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                if state == "DB409":
                    continue  # the file moved on between our read and the claim: again
                raise self._claim_error(workspace, exc) from None
            made = claim_from_json(workspace, rows[0][0])
            if lines is not None:
                made = _with_lines(made, lines)
            return made
        raise StoreError(f"{workspace}/{path} kept changing while the claim was made; try again")

    def _claim_error(self, workspace: str, exc: psycopg.Error) -> Exception:
        state = exc.sqlstate or ""
        message = exc.diag.message_primary or str(exc)
        if state == "DB423":
            return claimed_error(workspace, exc.diag.message_detail)
        if state == "DB404":
            return NotFound(message)
        if state == "DB400":
            return InvalidInput(message)
        return DatabaseUnavailable(f"database error at {redact(self.dsn)}: {message}")

    async def release(self, workspace: str, claim_id: int, *, agent: str) -> None:
        """Release one of ``agent``'s claims."""
        ws = await self._workspace_id(workspace)
        rows = await self._execute(
            "WITH del AS (DELETE FROM dbcode_claim WHERE id = %s AND workspace_id = %s"
            " AND agent = %s RETURNING 1)"
            " SELECT pg_notify('dbcode_coord', %s) FROM del",
            (claim_id, ws, agent, workspace),
        )
        if rows:
            return
        held = await self._fetchall(
            "SELECT agent FROM dbcode_claim WHERE id = %s AND workspace_id = %s", (claim_id, ws)
        )
        if held:
            raise InvalidInput(
                f"claim {claim_id} is held by {held[0][0]}, not by {agent}; only its holder"
                " releases it"
            )
        raise NotFound(f"no claim {claim_id} in workspace {workspace!r} (released or expired?)")

    async def claim_workspace(self, claim_id: int) -> str | None:
        """The workspace a claim is in (None: no such claim)."""
        rows = await self._fetchall(
            "SELECT w.name FROM dbcode_claim c JOIN dbcode_workspace w ON w.id = c.workspace_id"
            " WHERE c.id = %s",
            (claim_id,),
        )
        return str(rows[0][0]) if rows else None

    async def claims(self, workspace: str, path: str | None = None) -> list[Claim]:
        """The live claims of the workspace (or of one file), with their lines."""
        ws = await self._workspace_id(workspace)
        if path is not None:
            validate.check_path(path)
        rows = await self._fetchall(
            "SELECT dbcode_claim_json(c), CASE WHEN NOT c.whole THEN r.content END"
            " FROM dbcode_claim c"
            " LEFT JOIN dbcode_revision r ON r.workspace_id = c.workspace_id"
            "  AND r.path = c.path AND r.revision = c.revision"
            " WHERE c.workspace_id = %s AND (%s::text IS NULL OR c.path = %s)"
            " AND dbcode_claim_live(c) ORDER BY c.path, c.start_off, c.id",
            (ws, path, path),
        )
        out = []
        for data, text in rows:
            c = claim_from_json(workspace, data)
            if text is not None:
                c = _with_lines(c, span_lines(text, c.start, c.end))
            out.append(c)
        return out


def _still_connected(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Has the server ended this idle connection? Reads what has arrived without waiting (an
    idle connection learns of a terminated backend only by reading)."""
    pg = conn.pgconn
    try:
        for _ in range(2):  # a terminated backend's FATAL message first, then the EOF
            pg.consume_input()
    except psycopg.OperationalError:
        return False
    return bool(pg.status == psycopg.pq.ConnStatus.OK)


def _with_lines(c: Claim, lines: tuple[int, int]) -> Claim:
    from dataclasses import replace

    return replace(c, lines=lines)


__all__ = [
    "CLAIMS_PER_AGENT_MAX",
    "CLAIM_TTL_S_DEFAULT",
    "Claimed",
    "CoordinationStore",
    "claim_from_json",
    "claim_json",
    "claimed_error",
]
