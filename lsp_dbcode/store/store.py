"""The store API: read, list, compare-and-swap commit, bulk import, history, subscriptions.

Every SQL statement of lsp-dbcode lives in this package. Atomicity and ordering are settled by
PostgreSQL: one changeset is one call of the ``dbcode_commit`` function (schema.py), whose
workspace row lock gives the gap-free, commit-ordered ``seq``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import validate
from .access import ACTOR_BATCH, Access, current_role
from .coordination import CoordinationStore, claim_from_json, claimed_error
from .dsn import redact
from .errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound, StoreError
from .history import (
    COMPACT_BATCH_ROWS_MAX,
    COMPACT_TEXT_BYTES_MIN,
    SNAPSHOT_EVERY_REVISIONS,
    Blame,
    apply_delta,
    apply_parsed,
    encode_delta,
    pack,
    rebuild,
    unpack,
)
from .hub import Hub
from .model import (
    BlameRun,
    Change,
    Changeset,
    Claim,
    CommitResult,
    CompactResult,
    FileChange,
    FileInfo,
    FileText,
    ImportResult,
    LogPage,
    RevisionInfo,
    WorkspaceInfo,
)
from .review import ReviewStore
from .schema import migrate

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
# A pool connection unused for this long is closed (one per period, down to min_size): a burst
# of 1,000 sessions opening grows the pool up to its max_size, and its end gives them back.
POOL_IDLE_S = 1.0
FEED_BATCH_MAX = 500
# dbcode log / dbcode/log: changesets in one listing (page on with before_seq).
LOG_LIMIT_DEFAULT = 50
LOG_LIMIT_MAX = 10_000
# Group commit: at most this many changesets (and about this much text) per database call.
# Each changeset of a batch is a subtransaction; PostgreSQL caches 64 per backend.
COMMIT_BATCH_MAX = 32
# Batches of one workspace in flight at once. One: the workspace row lock is held through each
# batch's WAL flush anyway, and the changesets that arrive meanwhile make the next batch bigger
# (two in flight measured no better: smaller batches, as many flushes).
COMMIT_FLIGHTS_MAX = 1
COMMIT_BATCH_BYTES = 4 * 2**20
# History compaction (store/history.py): the revisions a commit superseded become deltas this
# long after it, in one background task per Store (a typing burst compacts together).
COMPACT_DELAY_S = 0.5
# Paths waiting for that at most; more are left for the next commit of the path or for
# `dbcode compact` (nothing is lost: a full text is only bigger than a delta).
COMPACT_PENDING_PATHS_MAX = 10_000
# Texts of its own commits the store keeps for the next compaction (which then reads neither
# the superseded text nor its successor back from the database), at most this many bytes.
COMPACT_KNOWN_TEXT_BYTES_MAX = 32 * 2**20
# At close, compacting what the last commits superseded may take this long at most (a CLI
# write's previous revision; a dead database must not hold up an exit).
COMPACT_AT_CLOSE_S_MAX = 5.0
# Blame reads a lineage this many revisions per query (it stops when every line is placed).
BLAME_PAGE_ROWS = 256

# The text of one revision: the first full text at or after it, and the reverse deltas down to
# it (at most SNAPSHOT_EVERY_REVISIONS - 1 of them), in one statement (one snapshot).
_TEXT_AT = """
SELECT revision, content, packed, delta FROM dbcode_revision
 WHERE workspace_id = %(ws)s AND path = %(path)s AND revision >= %(rev)s
   AND revision <= (SELECT min(revision) FROM dbcode_revision
                     WHERE workspace_id = %(ws)s AND path = %(path)s AND revision >= %(rev)s
                       AND delta IS NULL)
 ORDER BY revision DESC
"""

# A changeset row: seq, agent, message, time, and its files as JSON (path, revision, kind,
# old path{extra}), one query for many changesets.
_COLUMNS = """
    c.seq, c.agent, c.message, c.created_at, c.meta,
    (SELECT coalesce(json_agg(json_build_array(r.path, r.revision, r.kind, r.old_path{extra})
                              ORDER BY r.path), '[]')
       FROM dbcode_revision r
      WHERE r.workspace_id = c.workspace_id AND r.seq = c.seq AND r.kind <> 'moved')
"""
_CHANGESET_COLUMNS = _COLUMNS.format(extra="")
# The feed's fetch also carries the texts of small files: a process that has the file open
# needs it at once, and one fetch serves all its sessions (saves a read per changeset).
FEED_TEXT_BYTES_MAX = 128 * 1024
_FEED_COLUMNS = _COLUMNS.format(
    extra=f", CASE WHEN r.size <= {FEED_TEXT_BYTES_MAX:d} THEN r.content END"
)


def _changeset(workspace: str, row: Sequence[Any]) -> Changeset:
    seq, agent, message, created_at, meta, files = row
    return Changeset(
        workspace=workspace,
        seq=int(seq),
        agent=agent,
        message=message,
        time=created_at,
        files=tuple(FileChange(f[0], int(f[1]), f[2], f[3], *f[4:]) for f in files),
        meta=meta,
    )


def _own_changeset(workspace: str, pending: _Pending, result: dict[str, Any]) -> Changeset:
    """The changeset just committed, as the feed would fetch it (texts from the request)."""
    texts = {i["path"]: i.get("text") for i in pending.items if i["op"] == "write"}
    return Changeset(
        workspace=workspace,
        seq=int(result["seq"]),
        agent=pending.agent,
        message=pending.message,
        time=datetime.fromisoformat(result["time"]),
        files=tuple(
            FileChange(p, int(r), k, o, texts.get(p)) for p, r, k, o in result["files"] or ()
        ),
        meta=pending.meta,
    )


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching paths that start with ``prefix`` (validated)."""
    prefix = validate.check_prefix(prefix)
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(eq=False, slots=True)
class _Pending:
    agent: str
    message: str | None
    items: list[dict[str, Any]]
    future: asyncio.Future[CommitResult]
    meta: dict[str, Any] | None = None
    size: int = 0
    role: str | None = None  # the agent role it runs as (access.py; None: the owner)

    def __post_init__(self) -> None:
        self.size = sum(len(i.get("text") or "") for i in self.items) + 100


@dataclass(eq=False, slots=True)
class _CommitQueue:
    items: collections.deque[_Pending] = field(default_factory=collections.deque)
    flights: int = 0  # commit calls in flight for the workspace (COMMIT_FLIGHTS_MAX at most)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _settle(
    future: asyncio.Future[CommitResult],
    *,
    value: CommitResult | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert value is not None
        future.set_result(value)


def _warnings(workspace: str, raw: str | None, seq: int) -> tuple[Claim, ...]:
    """The non-exclusive claims a changeset touched (dbcode.claim_warnings, by seq)."""
    if not raw:
        return ()
    return tuple(claim_from_json(workspace, c) for c in json.loads(raw).get(str(seq), ()))


class Store(ReviewStore, CoordinationStore):
    """Async access to the code store. Use ``async with Store(dsn) as store:``."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        content_bytes_max: int | None = None,
        snapshot_every_revisions: int = SNAPSHOT_EVERY_REVISIONS,
        compact_history: bool | None = None,
        compact_text_bytes_min: int = COMPACT_TEXT_BYTES_MIN,
        application_name: str = "dbcode",
    ) -> None:
        self.dsn = dsn
        # What pg_stat_activity shows for every connection of this process ("dbcode serve
        # 1234"): an operator (or a test) can tell which process holds which connections.
        self.application_name = f"{application_name} {os.getpid()}"
        # Compact what commits supersede (default; DBCODE_HISTORY_COMPACT=0 turns it off, e.g.
        # for a bulk load: the history then stays whole until `dbcode compact`).
        if compact_history is None:
            compact_history = os.environ.get("DBCODE_HISTORY_COMPACT", "1") != "0"
        self.compact_history = compact_history
        self.compact_text_bytes_min = compact_text_bytes_min
        # history.py: a full text every this many revisions (reads apply fewer deltas).
        self.snapshot_every_revisions = max(1, snapshot_every_revisions)
        self.content_bytes_max = content_bytes_max or validate.content_bytes_max()
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            max_idle=POOL_IDLE_S,
            open=False,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "application_name": self.application_name,
            },
        )
        self.hub = Hub(
            dsn,
            self._changesets_since,
            self.head,
            self.application_name,
            review_fetch=self._review_events_since,
            review_head=self.review_head,
        )
        # workspace -> queue. A batch may hold changesets of several agents: each runs as its
        # own role inside dbcode_commit_many (schema v6).
        self._commit_queues: dict[str, _CommitQueue] = {}
        # workspace -> path -> the oldest revision a commit of this process superseded since
        # the last compaction (the compaction looks from there on: an index range, not the
        # path's whole history).
        self._dirty: dict[str, dict[str, int]] = {}
        self._dirty_count = 0
        # workspace -> (path, revision) -> text committed by this process, for the compaction.
        self._known: dict[str, dict[tuple[str, int], str]] = {}
        self._known_bytes = 0
        self._compactor: asyncio.Task[None] | None = None
        # The compaction's own connection: it never holds one that a commit or read of the
        # pool needs (a pool of one connection halved commits/s when they shared it).
        self._compact_conn: psycopg.AsyncConnection[Any] | None = None
        self.access = Access(self)
        self.batches = 0  # commit calls sent (for benchmarks and tests)
        self.batched = 0  # changesets they carried

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate the schema if needed, open the pool."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=self.application_name,
            )
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redact(self.dsn)}: {reason}"
            ) from None
        async with conn:
            await migrate(conn)
        await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)

    async def close(self) -> None:
        task, self._compactor = self._compactor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # What the last commits superseded is compacted now (a CLI write's previous revision).
        try:
            await asyncio.wait_for(self._compact_dirty(), COMPACT_AT_CLOSE_S_MAX)
        except (StoreError, TimeoutError) as exc:
            log.warning("history compaction at close not done (dbcode compact does it): %r", exc)
        if self._compact_conn is not None:
            await self._compact_conn.close()
            self._compact_conn = None
        await self.hub.close()
        await self.close_holder()
        await self._pool.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pool connection running as the task's agent role (access.current_role; None:
        the owner). The role is set on the connection only when it differs from the one it
        last ran as: a server serving one agent pays nothing per statement."""
        role = current_role.get()
        async with self._pool.connection() as conn:
            if role is None:
                if getattr(conn, "_dbcode_role", None) is not None:
                    await conn.execute("RESET ROLE")
                    conn._dbcode_role = None  # type: ignore[attr-defined]
            else:
                # An agent's SQL runs as the database's batch role with dbcode.actor naming the
                # agent's role (schema v6): row-level security applies that agent's grants, and
                # the connection's role stays the same whoever it serves (a role switch makes
                # PostgreSQL plan every statement again). ACTOR_BATCH: a batch of several.
                batch = self.access.batch_role
                actor = "" if role == ACTOR_BATCH else role
                steps = []
                if getattr(conn, "_dbcode_role", None) != batch:
                    steps.append(sql.SQL("SET ROLE {}").format(sql.Identifier(batch)))
                if getattr(conn, "_dbcode_actor", None) != actor:
                    steps.append(sql.SQL("SET dbcode.actor = {}").format(sql.Literal(actor)))
                if steps:
                    conn._dbcode_role = conn._dbcode_actor = None  # type: ignore[attr-defined]
                    await conn.execute(sql.SQL("; ").join(steps))
                    conn._dbcode_role, conn._dbcode_actor = batch, actor  # type: ignore[attr-defined]
            yield conn

    async def _fetchall(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a read-only query. A connection broken since its last use (a restarted server)
        is discarded by the pool; the read is then tried once more on a fresh connection, so
        the pool need not ping before every use."""
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    cur = conn.cursor(row_factory=tuple_row)
                    await cur.execute(query, params)
                    return await cur.fetchall()
            except psycopg.OperationalError as exc:
                if attempt == 2 or isinstance(exc, PoolTimeout):
                    raise DatabaseUnavailable(
                        f"database error at {redact(self.dsn)}: {exc}"
                    ) from None
        raise AssertionError("unreachable")

    async def _execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction (a write); its rows, if it returns any.
        Errors other than a lost connection are the caller's to translate."""
        try:
            async with self._connection() as conn:
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(query, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}") from None

    async def _workspace_id(self, workspace: str) -> int:
        validate.check_workspace(workspace)
        rows = await self._fetchall("SELECT id FROM dbcode_workspace WHERE name = %s", (workspace,))
        if not rows:
            raise NotFound(f"unknown workspace {workspace!r}")
        return int(rows[0][0])

    # -- reads -----------------------------------------------------------------------------

    async def workspaces(self) -> list[WorkspaceInfo]:
        rows = await self._fetchall(
            "SELECT w.name, w.head_seq, w.created_at,"
            " (SELECT count(*) FROM dbcode_file f WHERE f.workspace_id = w.id AND NOT f.deleted)"
            " FROM dbcode_workspace w WHERE w.head_seq > 0 ORDER BY w.name"
        )
        return [WorkspaceInfo(n, int(h), int(c), t) for n, h, t, c in rows]

    async def head(self, workspace: str) -> int:
        """The workspace's latest seq (0 for a workspace without changesets)."""
        validate.check_workspace(workspace)
        rows = await self._fetchall(
            "SELECT head_seq FROM dbcode_workspace WHERE name = %s", (workspace,)
        )
        return int(rows[0][0]) if rows else 0

    async def read(self, workspace: str, path: str, revision: int | None = None) -> FileText:
        """The file's current text, or the text at ``revision``."""
        validate.check_path(path)
        ws = await self._workspace_id(workspace)
        if revision is None:
            rows = await self._fetchall(
                "SELECT f.revision, r.content FROM dbcode_file f"
                " JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
                "  AND r.path = f.path AND r.revision = f.revision"
                " WHERE f.workspace_id = %s AND f.path = %s AND NOT f.deleted",
                (ws, path),
            )
            if not rows:
                raise NotFound(f"no such file {path!r} in workspace {workspace!r}")
        else:
            if revision < 1:
                raise InvalidInput(f"invalid revision {revision}: revisions start at 1")
            text = await self._text_at(ws, path, revision)
            if text is None:
                raise NotFound(f"revision {revision} of {workspace}/{path} is a deletion")
            return FileText(workspace, path, revision, text)
        rev, text = rows[0]
        return FileText(workspace, path, int(rev), text)

    async def _text_at(self, ws: int, path: str, revision: int) -> str | None:
        """The text of a revision (None: a deletion or the old name of a rename), rebuilt
        from the nearest full text at or after it. NotFound if there is no such revision."""
        rows = await self._fetchall(_TEXT_AT, {"ws": ws, "path": path, "rev": revision})
        if not rows or int(rows[-1][0]) != revision:
            raise NotFound(f"{path} has no revision {revision}")
        text = rows[0][1] if rows[0][1] is not None else rows[0][2]
        if text is None:
            if len(rows) > 1:  # a delta whose newer neighbour has no text: our bug
                raise StoreError(f"history of {path} is broken at revision {rows[1][0]}")
            return None
        return rebuild(unpack(text), [row[3] for row in rows[1:]])

    async def revision_text(self, workspace: str, path: str, revision: int) -> str:
        """Text of one revision (NotFound if missing or a deletion)."""
        validate.check_workspace(workspace)
        rows = await self._fetchall(
            "SELECT r.content, r.kind FROM dbcode_revision r JOIN dbcode_workspace w"
            " ON w.id = r.workspace_id WHERE w.name = %s AND r.path = %s AND r.revision = %s",
            (workspace, path, revision),
        )
        if rows and rows[0][0] is not None:
            return str(rows[0][0])  # a plain full text: one round trip
        if rows and rows[0][1] not in ("delete", "moved"):
            text = await self._text_at(await self._workspace_id(workspace), path, revision)
            if text is not None:
                return text
        raise NotFound(f"{workspace}/{path} has no text at revision {revision}")

    async def read_at(self, workspace: str, path: str, seq: int) -> FileText:
        """The file as it was right after changeset ``seq`` (SPEC: History, time travel)."""
        validate.check_path(path)
        validate.check_workspace(workspace)
        rows = await self._fetchall(
            "SELECT id, head_seq FROM dbcode_workspace WHERE name = %s", (workspace,)
        )
        if not rows:
            raise NotFound(f"unknown workspace {workspace!r}")
        ws, head = int(rows[0][0]), int(rows[0][1])
        if seq < 0:
            raise InvalidInput(f"invalid seq {seq}: seqs start at 1")
        if seq > head:
            raise InvalidInput(f"seq {seq} is beyond the head of {workspace} (seq {head})")
        rows = await self._fetchall(
            "SELECT revision, kind FROM dbcode_revision"
            " WHERE workspace_id = %s AND path = %s AND seq <= %s"
            " ORDER BY revision DESC LIMIT 1",
            (ws, path, seq),
        )
        if not rows:
            raise NotFound(f"{workspace}/{path} did not exist at seq {seq}")
        revision, kind = int(rows[0][0]), rows[0][1]
        if kind in ("delete", "moved"):
            gone = "deleted" if kind == "delete" else "renamed away"
            raise NotFound(f"{workspace}/{path} was {gone} at seq {seq} (revision {revision})")
        text = await self._text_at(ws, path, revision)
        assert text is not None
        return FileText(workspace, path, revision, text)

    async def list_files(self, workspace: str, prefix: str = "") -> list[FileInfo]:
        ws = await self._workspace_id(workspace)
        like = _like_prefix(prefix)
        rows = await self._fetchall(
            "SELECT f.path, f.revision, r.size, c.agent, c.created_at, c.seq"
            " FROM dbcode_file f"
            " JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
            "  AND r.path = f.path AND r.revision = f.revision"
            " JOIN dbcode_changeset c ON c.workspace_id = r.workspace_id AND c.seq = r.seq"
            " WHERE f.workspace_id = %s AND NOT f.deleted AND f.path LIKE %s"
            " ORDER BY f.path",
            (ws, like),
        )
        return [FileInfo(p, int(rv), int(sz), a, t, int(s)) for p, rv, sz, a, t, s in rows]

    async def snapshot(self, workspace: str, prefix: str = "") -> tuple[int, list[FileText]]:
        """All current files and the seq they reflect, read in one consistent snapshot."""
        validate.check_workspace(workspace)
        like = _like_prefix(prefix)
        try:
            async with self._connection() as conn:
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    cur = await conn.execute(
                        "SELECT id, head_seq FROM dbcode_workspace WHERE name = %s", (workspace,)
                    )
                    row = await cur.fetchone()
                    if row is None:
                        raise NotFound(f"unknown workspace {workspace!r}")
                    ws, head = int(row[0]), int(row[1])
                    cur = await conn.execute(
                        "SELECT f.path, f.revision, r.content FROM dbcode_file f"
                        " JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
                        "  AND r.path = f.path AND r.revision = f.revision"
                        " WHERE f.workspace_id = %s AND NOT f.deleted AND f.path LIKE %s"
                        " ORDER BY f.path",
                        (ws, like),
                    )
                    rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}") from None
        return head, [FileText(workspace, p, int(rv), t) for p, rv, t in rows]

    async def config_files(
        self, workspace: str, names: Sequence[str] = ("pyproject.toml", "ruff.toml", ".ruff.toml")
    ) -> dict[str, str]:
        """Current text of every file whose name is one of ``names``, at any depth."""
        ws = await self._workspace_id(workspace)
        rows = await self._fetchall(
            "SELECT f.path, r.content FROM dbcode_file f"
            " JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
            "  AND r.path = f.path AND r.revision = f.revision"
            " WHERE f.workspace_id = %s AND NOT f.deleted"
            " AND regexp_replace(f.path, '^.*/', '') = ANY(%s)",
            (ws, list(names)),
        )
        return {p: t for p, t in rows}

    async def log(
        self,
        workspace: str,
        path: str | None = None,
        limit: int = LOG_LIMIT_DEFAULT,
        before_seq: int | None = None,
    ) -> list[Changeset]:
        """Changesets, newest first; with ``path``, those that touched it."""
        return (await self.log_page(workspace, path, limit, before_seq)).changesets

    async def log_page(
        self,
        workspace: str,
        path: str | None = None,
        limit: int = LOG_LIMIT_DEFAULT,
        before_seq: int | None = None,
    ) -> LogPage:
        """One page of the log: at most ``limit`` changesets with seq < ``before_seq`` (all
        when None), newest first, and whether older ones remain (the next page starts before
        the last one's seq)."""
        ws = await self._workspace_id(workspace)
        if limit < 1 or limit > LOG_LIMIT_MAX:
            raise InvalidInput(f"invalid limit {limit}: use 1..{LOG_LIMIT_MAX}")
        if before_seq is not None and before_seq < 1:
            raise InvalidInput(f"invalid before seq {before_seq}: must be >= 1")
        params: list[Any] = [ws, before_seq if before_seq is not None else 2**62]
        where = ""
        if path is not None:
            validate.check_path(path)
            where = (
                " AND c.seq IN (SELECT seq FROM dbcode_revision"
                " WHERE workspace_id = %s AND (path = %s OR old_path = %s))"
            )
            params += [ws, path, path]
        params.append(limit + 1)  # one more: tells whether the page was cut
        rows = await self._fetchall(
            f"SELECT {_CHANGESET_COLUMNS} FROM dbcode_changeset c"  # noqa: S608 - constant text
            f" WHERE c.workspace_id = %s AND c.seq < %s{where} ORDER BY c.seq DESC LIMIT %s",
            params,
        )
        return LogPage(
            changesets=[_changeset(workspace, r) for r in rows[:limit]], more=len(rows) > limit
        )

    async def _changesets_since(self, workspace: str, since: int, limit: int) -> list[Changeset]:
        rows = await self._fetchall(
            f"SELECT {_FEED_COLUMNS} FROM dbcode_changeset c"  # noqa: S608 - constant text
            " JOIN dbcode_workspace w ON w.id = c.workspace_id"
            " WHERE w.name = %s AND c.seq > %s ORDER BY c.seq LIMIT %s",
            (workspace, since, limit),
        )
        return [_changeset(workspace, r) for r in rows]

    async def history(self, workspace: str, path: str) -> list[RevisionInfo]:
        """Every revision of a file, newest first."""
        ws = await self._workspace_id(workspace)
        validate.check_path(path)
        rows = await self._fetchall(
            "SELECT r.path, r.revision, r.seq, r.kind, c.agent, c.message, c.created_at,"
            " r.size, r.old_path FROM dbcode_revision r"
            " JOIN dbcode_changeset c ON c.workspace_id = r.workspace_id AND c.seq = r.seq"
            " WHERE r.workspace_id = %s AND r.path = %s ORDER BY r.revision DESC",
            (ws, path),
        )
        if not rows:
            raise NotFound(f"no such file {path!r} in workspace {workspace!r}")
        return [
            RevisionInfo(p, int(rv), int(s), k, a, m, t, int(sz), o)
            for p, rv, s, k, a, m, t, sz, o in rows
        ]

    # -- blame -----------------------------------------------------------------------------

    async def blame(self, workspace: str, path: str, revision: int | None = None) -> list[BlameRun]:
        """Who last changed each line of the file (at ``revision``, default current), as runs
        of consecutive lines with the same changeset. Renames are followed.

        The lineage is read newest first, BLAME_PAGE_ROWS revisions per query, each older
        text rebuilt from the newer one by its reverse delta (history.py); the walk stops when
        every line is attributed.
        """
        ws = await self._workspace_id(workspace)
        validate.check_path(path)
        if revision is None:
            rows = await self._fetchall(
                "SELECT revision FROM dbcode_file WHERE workspace_id = %s AND path = %s"
                " AND NOT deleted",
                (ws, path),
            )
            if not rows:
                raise NotFound(f"no such file {path!r} in workspace {workspace!r}")
            revision = int(rows[0][0])
        elif revision < 1:
            raise InvalidInput(f"invalid revision {revision}: revisions start at 1")
        try:
            text = await self._text_at(ws, path, revision)
        except NotFound:
            raise NotFound(f"{workspace}/{path} has no revision {revision}") from None
        if text is None:
            raise NotFound(f"revision {revision} of {workspace}/{path} is a deletion")
        infos: dict[tuple[int, str, int], tuple[str, datetime, str | None, Any]] = {}
        blame: Blame[tuple[int, str, int]] | None = None
        cur_path, upper = path, revision
        done = False
        while not done:
            rows = await self._fetchall(
                "SELECT r.revision, r.seq, r.kind, r.old_path, r.content, r.packed, r.delta,"
                " c.agent, c.created_at, c.message, c.meta FROM dbcode_revision r"
                " JOIN dbcode_changeset c ON c.workspace_id = r.workspace_id AND c.seq = r.seq"
                " WHERE r.workspace_id = %s AND r.path = %s AND r.revision <= %s"
                " AND r.revision > %s ORDER BY r.revision DESC",
                (ws, cur_path, upper, upper - BLAME_PAGE_ROWS),
            )
            if not rows:
                break
            next_path: str | None = None
            for rev, seq, kind, old_path, content, packed, delta, agent, at, message, meta in rows:
                key = (int(seq), cur_path, int(rev))
                infos[key] = (agent, at, message, meta)
                if kind in ("delete", "moved"):  # not reached in a lineage: history ends
                    done = True
                    break
                if blame is None:
                    blame = Blame(text, key)
                else:
                    edits = None
                    if content is not None:
                        text = content
                    elif packed is not None:
                        text = unpack(packed)
                    elif delta is not None:
                        # The stored reverse delta is also the diff the blame step needs.
                        edits = json.loads(delta)
                        text = apply_parsed(text, edits)
                    else:
                        raise StoreError(f"history of {cur_path} is broken at revision {rev}")
                    if blame.step(text, key, edits):
                        done = True
                        break
                if kind == "create":
                    done = True
                    break
                if kind == "rename" and old_path:
                    moved = await self._fetchall(
                        "SELECT revision FROM dbcode_revision WHERE workspace_id = %s"
                        " AND path = %s AND seq = %s AND kind = 'moved'",
                        (ws, old_path, seq),
                    )
                    if not moved:
                        done = True
                        break
                    next_path, upper = old_path, int(moved[0][0]) - 1
                    break
            else:
                upper -= BLAME_PAGE_ROWS
            if next_path is not None:
                cur_path = next_path
            elif upper < 1:
                break
        if blame is None:
            return []
        keys = blame.finish()
        runs: list[BlameRun] = []
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                seq, at_path, rev = keys[start]
                agent, at, message, meta = infos[keys[start]]
                runs.append(BlameRun(start, i - 1, seq, at_path, rev, agent, at, message, meta))
                start = i
        return runs

    # -- history compaction ----------------------------------------------------------------

    def _remember_for_compaction(
        self, workspace: str, pending: _Pending, result: dict[str, Any]
    ) -> None:
        """After a commit: the revisions it superseded are to compact; the texts it wrote
        are kept for that (both sides of the next delta), within COMPACT_KNOWN_TEXT_BYTES_MAX."""
        texts = {i["path"]: i["text"] for i in pending.items if i["op"] == "write"}
        for path, rev, kind, _old in result["files"] or ():
            text = texts.get(path)
            if text is not None and len(text) >= self.compact_text_bytes_min:
                if self._known_bytes + len(text) <= COMPACT_KNOWN_TEXT_BYTES_MAX:
                    self._known.setdefault(workspace, {})[(path, int(rev))] = text
                    self._known_bytes += len(text)
            if kind == "update":
                self._note_superseded(workspace, path, int(rev) - 1)

    def _note_superseded(self, workspace: str, path: str, revision: int) -> None:
        """A commit made ``revision`` of ``path`` an old one: compact it soon."""
        paths = self._dirty.setdefault(workspace, {})
        if path not in paths:
            if self._dirty_count >= COMPACT_PENDING_PATHS_MAX:
                return
            paths[path] = revision
            self._dirty_count += 1
        elif revision < paths[path]:
            paths[path] = revision
        if self._compactor is None:
            self._compactor = asyncio.create_task(
                self._compact_later(), context=contextvars.Context()
            )
            self._compactor.add_done_callback(self._compactor_done)

    def _compactor_done(self, task: asyncio.Task[None]) -> None:
        if self._compactor is task:
            self._compactor = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("history compaction failed", exc_info=exc)

    async def _compact_later(self) -> None:
        while self._dirty:
            await asyncio.sleep(COMPACT_DELAY_S)
            try:
                await self._compact_dirty()
            except StoreError as exc:
                log.warning("history compaction failed (retried after the next commit): %s", exc)
                return

    async def _compact_dirty(self) -> None:
        dirty, self._dirty, self._dirty_count = self._dirty, {}, 0
        known_all, self._known, self._known_bytes = self._known, {}, 0
        for workspace, paths in dirty.items():
            known = known_all.get(workspace, {})
            rows, _ = await self._compact_sql(
                "SELECT id FROM dbcode_workspace WHERE name = %s", (workspace,)
            )
            if not rows:
                continue
            ws = int(rows[0][0])
            for path, revision in sorted(paths.items()):
                await self._compact_path(ws, path, revision, known)

    async def _compact_sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run one statement on the compaction's connection: (rows, rowcount). A broken
        connection is replaced once."""
        for attempt in (1, 2):
            try:
                if self._compact_conn is None or self._compact_conn.closed:
                    self._compact_conn = await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                    )
                cur = self._compact_conn.cursor(row_factory=tuple_row)
                await cur.execute(query, params)
                rows = await cur.fetchall() if cur.description is not None else []
                return rows, cur.rowcount
            except psycopg.OperationalError as exc:
                if self._compact_conn is not None:
                    await self._compact_conn.close()
                    self._compact_conn = None
                if attempt == 2:
                    raise DatabaseUnavailable(
                        f"database error at {redact(self.dsn)}: {exc}"
                    ) from None
        raise AssertionError("unreachable")

    async def _compact_path(
        self,
        ws: int,
        path: str,
        first: int = 1,
        known: Mapping[tuple[str, int], str] | None = None,
    ) -> tuple[int, int, int]:
        """Turn every old full revision of a path into a reverse delta, but each K-th
        (``snapshot_every_revisions``), which is packed (zlib) instead.

        Touches only revisions that have a newer revision with text (an update): never the
        current one, never a row a commit reads or writes, so it takes no workspace or file
        lock; each batch is one statement, and a second compactor of the same rows finds them
        done (``content IS NOT NULL`` in the UPDATE). Returns (revisions, text bytes, bytes
        stored instead).
        """
        k = self.snapshot_every_revisions
        after, done, text_bytes, stored_bytes = first - 1, 0, 0, 0
        while True:
            rows, _ = await self._compact_sql(
                "SELECT r.revision FROM dbcode_revision r JOIN dbcode_revision n"
                " ON n.workspace_id = r.workspace_id AND n.path = r.path"
                " AND n.revision = r.revision + 1 AND n.kind = 'update'"
                " WHERE r.workspace_id = %s AND r.path = %s AND r.revision > %s"
                " AND r.content IS NOT NULL AND r.size >= %s ORDER BY r.revision LIMIT %s",
                (ws, path, after, self.compact_text_bytes_min, COMPACT_BATCH_ROWS_MAX),
            )
            revs = [int(r[0]) for r in rows]
            if not revs:
                return done, text_bytes, stored_bytes
            wanted = sorted(set(revs) | {r + 1 for r in revs})
            # Texts this process committed need no read (``known``: the caller's own writes;
            # contents never change, so they are what the rows hold).
            texts: dict[int, str | None] = {}
            for r in wanted:
                if known and (path, r) in known:
                    texts[r] = known[(path, r)]
            missing = [r for r in wanted if r not in texts]
            if missing:
                rows, _ = await self._compact_sql(
                    "SELECT revision, content, packed FROM dbcode_revision"
                    " WHERE workspace_id = %s AND path = %s AND revision = ANY(%s)",
                    (ws, path, missing),
                )
                for r, c, pk in rows:
                    texts[int(r)] = c if c is not None else (unpack(pk) if pk is not None else None)
            done_revs: list[int] = []
            deltas: list[str | None] = []
            packs: list[bytes | None] = []
            for rev in reversed(revs):
                older = texts.get(rev)
                if older is None:
                    continue  # compacted meanwhile by another process
                text_bytes += len(older.encode("utf-8"))
                if rev % k == 0:
                    packed = pack(older)
                    done_revs.append(rev)
                    deltas.append(None)
                    packs.append(packed)
                    stored_bytes += len(packed)
                    continue
                newer = texts.get(rev + 1)
                if newer is None:
                    newer = await self._text_at(ws, path, rev + 1)
                    if newer is None:
                        continue
                delta = encode_delta(newer, older)
                if apply_delta(newer, delta) != older:  # our bug: keep the full text
                    log.error("delta of %s revision %d does not rebuild it; kept", path, rev)
                    continue
                done_revs.append(rev)
                deltas.append(delta)
                packs.append(None)
                stored_bytes += len(delta.encode("utf-8"))
            if done_revs:
                _, count = await self._compact_sql(
                    "UPDATE dbcode_revision r"
                    " SET delta = t.delta, packed = t.packed, content = NULL"
                    " FROM unnest(%s::integer[], %s::text[], %s::bytea[])"
                    " AS t (rev, delta, packed)"
                    " WHERE r.workspace_id = %s AND r.path = %s"
                    " AND r.revision = t.rev AND r.content IS NOT NULL",
                    (done_revs, deltas, packs, ws, path),
                )
                done += count
            after = revs[-1]

    async def compact(
        self,
        workspace: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CompactResult:
        """Turn the old full texts of a workspace's history (or every workspace's) into
        deltas: the conversion of a history written before schema v4, and a catch-up for
        anything the background compaction missed. Path by path, in short statements: commits
        go on meanwhile. ``progress(done, total)`` after each path."""
        if workspace is not None:
            ws_ids = [await self._workspace_id(workspace)]
        else:
            ws_ids = [int(r[0]) for r in await self._fetchall("SELECT id FROM dbcode_workspace")]
        todo: list[tuple[int, str]] = []
        for ws in ws_ids:
            rows = await self._fetchall(
                "SELECT DISTINCT r.path FROM dbcode_revision r JOIN dbcode_revision n"
                " ON n.workspace_id = r.workspace_id AND n.path = r.path"
                " AND n.revision = r.revision + 1 AND n.kind = 'update'"
                " WHERE r.workspace_id = %s AND r.content IS NOT NULL AND r.size >= %s"
                " ORDER BY r.path",
                (ws, self.compact_text_bytes_min),
            )
            todo += [(ws, str(r[0])) for r in rows]
        revisions = text_bytes = stored_bytes = 0
        for i, (ws, path) in enumerate(todo):
            n, tb, sb = await self._compact_path(ws, path)
            revisions, text_bytes, stored_bytes = revisions + n, text_bytes + tb, stored_bytes + sb
            if progress is not None:
                progress(i + 1, len(todo))
        return CompactResult(len(todo), revisions, text_bytes, stored_bytes)

    # -- writes ----------------------------------------------------------------------------

    def _check_change(self, change: Change) -> dict[str, Any]:
        validate.check_path(change.path)
        if change.base is not None and change.base < 0:
            raise InvalidInput(f"invalid base revision {change.base} for {change.path}")
        item: dict[str, Any] = {"op": change.op, "path": change.path, "base": change.base}
        if change.op == "write":
            if change.text is None:
                raise InvalidInput(f"write of {change.path} without text")
            validate.check_text(change.text, change.path, self.content_bytes_max)
            item["text"] = change.text
        elif change.op == "rename":
            if change.new_path is None:
                raise InvalidInput(f"rename of {change.path} without a new path")
            validate.check_path(change.new_path)
            item["new_path"] = change.new_path
        elif change.op != "delete":
            raise InvalidInput(f"unknown change op {change.op!r}")
        return item

    async def commit(
        self,
        workspace: str,
        changes: Sequence[Change],
        *,
        agent: str,
        message: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> CommitResult:
        """Commit all changes atomically, or none (Conflict / NotFound / InvalidInput).

        ``meta``: a small JSON object kept with the changeset (validate.META_BYTES_MAX).

        Group commit: while a commit of this process is in flight for the workspace, the
        changesets that arrive queue up and then go to the database together, one call of
        ``dbcode_commit_many`` (each changeset still atomic on its own, with its own seq and
        its own outcome): one workspace row lock, one WAL flush, one NOTIFY for the batch.
        """
        validate.check_workspace(workspace)
        if not changes:
            raise InvalidInput("a changeset needs at least one change")
        if not agent or len(agent) > 200:
            raise InvalidInput("invalid agent name: 1-200 characters")
        meta = validate.check_meta(meta)
        items = [self._check_change(c) for c in changes]
        pending = _Pending(agent, message, items, asyncio.get_running_loop().create_future(), meta)
        pending.role = current_role.get()
        key = workspace
        queue = self._commit_queues.get(key)
        if queue is None:
            queue = self._commit_queues[key] = _CommitQueue()
        if queue.flights < COMMIT_FLIGHTS_MAX and not queue.items:
            # Room in flight: go now, from this task (no hop).
            queue.flights += 1
            try:
                await self._commit_batch(workspace, [pending])
            finally:
                queue.flights -= 1
                self._next_batch(key, queue)
            return pending.future.result()
        queue.items.append(pending)
        # Cancelled while queued: the changeset is dropped. Cancelled while in flight: it may
        # commit (as with any statement cancelled mid-way).
        return await pending.future

    def _next_batch(self, key: str, queue: _CommitQueue) -> None:
        """Send what is queued, as batches, while there is room in flight."""
        while queue.items and queue.flights < COMMIT_FLIGHTS_MAX:
            batch: list[_Pending] = []
            size = 0
            while queue.items and len(batch) < COMMIT_BATCH_MAX and size < COMMIT_BATCH_BYTES:
                item = queue.items.popleft()
                if item.future.cancelled():
                    continue
                batch.append(item)
                size += item.size
            if not batch:
                continue
            queue.flights += 1
            task = asyncio.create_task(self._fly(key, queue, batch))
            queue.tasks.add(task)
            task.add_done_callback(queue.tasks.discard)
        if not queue.items and queue.flights == 0 and self._commit_queues.get(key) is queue:
            del self._commit_queues[key]

    async def _fly(self, key: str, queue: _CommitQueue, batch: list[_Pending]) -> None:
        try:
            await self._commit_batch(key, batch)
        finally:
            queue.flights -= 1
            self._next_batch(key, queue)

    async def _commit_batch(self, workspace: str, batch: list[_Pending]) -> None:
        self.hub.committing(workspace)
        try:
            await self._commit_batch_call(workspace, batch)
        finally:
            self.hub.committed(workspace)

    async def _commit_batch_call(self, workspace: str, batch: list[_Pending]) -> None:
        self.batches += 1
        self.batched += len(batch)
        roles = {p.role for p in batch}
        one_role = len(roles) == 1
        if not one_role and None in roles:  # the owner's and agents' changesets: not together
            for p in batch:
                await self._commit_batch_call(workspace, [p])
            return
        # One agent's changesets run as its role; several agents' as the batch role, each
        # changeset with its agent named in dbcode.actor (schema v6, dbcode_commit_many).
        reset = current_role.set(batch[0].role if one_role else ACTOR_BATCH)
        try:
            async with self._connection() as conn:
                if len(batch) == 1 and batch[0].meta is None:
                    one = batch[0]
                    if len(one.items) == 1 and (item := one.items[0])["op"] == "write":
                        cur = await conn.execute(
                            "SELECT r, current_setting('dbcode.claim_warnings', true)"
                            " FROM dbcode_write(%s, %s, %s, %s, %s, %s) r",
                            (
                                workspace,
                                one.agent,
                                one.message,
                                item["path"],
                                item["base"],
                                item["text"],
                            ),
                        )
                    else:
                        cur = await conn.execute(
                            "SELECT r, current_setting('dbcode.claim_warnings', true)"
                            " FROM dbcode_commit(%s, %s, %s, %s) r",
                            (workspace, one.agent, one.message, Jsonb(one.items)),
                        )
                    row = await cur.fetchone()
                    assert row is not None
                    results = [row[0]]
                    warnings = row[1]
                else:
                    payload = [
                        {"agent": p.agent, "message": p.message, "changes": p.items, "meta": p.meta}
                        | ({"role": p.role} if p.role is not None and not one_role else {})
                        for p in batch
                    ]
                    cur = await conn.execute(
                        "SELECT r, current_setting('dbcode.claim_warnings', true)"
                        " FROM dbcode_commit_many(%s, %s) r",
                        (workspace, Jsonb(payload)),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    results = row[0]
                    warnings = row[1]
        except psycopg.Error as exc:
            if len(batch) > 1 and not isinstance(exc, psycopg.OperationalError):
                # Not the connection: something in one changeset that the database refused as
                # a whole (e.g. text it cannot store). Send them one by one: each gets its own
                # outcome.
                log.warning(
                    "group commit of %d changesets failed (%s); one by one", len(batch), exc
                )
                for p in batch:
                    await self._commit_batch_call(workspace, [p])
                return
            for p in batch:
                _settle(p.future, error=self._commit_error(workspace, p.items, exc))
            return
        except BaseException as exc:  # cancelled while in flight: the outcome is unknown
            for p in batch:
                _settle(p.future, error=DatabaseUnavailable(f"commit interrupted: {exc!r}"))
            raise
        finally:
            current_role.reset(reset)
        for p, result in zip(batch, results, strict=True):
            if "error" in result:
                error = self._error_for(
                    workspace,
                    p.items,
                    str(result["error"]),
                    result.get("message") or "",
                    result.get("detail"),
                )
                _settle(p.future, error=error)
            else:
                # This process's subscribers get it now, not after NOTIFY + a fetch; and first:
                # the other editors wait for the push, the writer's answer can follow.
                self.hub.offer(_own_changeset(workspace, p, result))
                revisions = {k: int(v) for k, v in result["revisions"].items()}
                seq = int(result["seq"])
                _settle(
                    p.future,
                    value=CommitResult(seq, revisions, _warnings(workspace, warnings, seq)),
                )
                if self.compact_history:
                    self._remember_for_compaction(workspace, p, result)

    def _commit_error(
        self, workspace: str, items: list[dict[str, Any]], exc: psycopg.Error
    ) -> StoreError:
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            return DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}")
        return self._error_for(
            workspace,
            items,
            exc.sqlstate or "",
            exc.diag.message_primary or str(exc),
            exc.diag.message_detail,
            operational=isinstance(exc, psycopg.OperationalError),
        )

    def _error_for(
        self,
        workspace: str,
        items: list[dict[str, Any]],
        state: str,
        message: str,
        detail_text: str | None,
        *,
        operational: bool = False,
    ) -> StoreError:
        detail = json.loads(detail_text or "{}") if state in ("DB409", "DB404") else {}
        if state == "DB409":
            path = detail.get("path", "")
            base = next((i["base"] for i in items if i["path"] == path), None)
            if base is None:  # rename target exists
                return InvalidInput(f"{workspace}/{path} already exists")
            return Conflict(workspace, path, int(base), int(detail.get("current", 0)))
        if state == "DB404":
            return NotFound(f"no such file {detail.get('path')!r} in workspace {workspace!r}")
        if state == "DB423":
            return claimed_error(workspace, detail_text)
        if state == "DB400":
            return InvalidInput(message)
        if state == "42501":  # row-level security refused it (the Python checks did not)
            return StoreError(f"forbidden: {message}")
        if operational or state.startswith(("08", "57")):
            return DatabaseUnavailable(f"database error at {redact(self.dsn)}: {message}")
        if state.startswith("22"):  # data exception
            return InvalidInput(f"invalid content: {message}")
        return StoreError(f"commit failed: {message}")

    async def write(
        self,
        workspace: str,
        path: str,
        text: str,
        *,
        agent: str,
        base: int | None = None,
        message: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> CommitResult:
        return await self.commit(
            workspace, [Change.write(path, text, base)], agent=agent, message=message, meta=meta
        )

    async def import_files(
        self,
        workspace: str,
        files: Iterable[tuple[str, str] | tuple[str, str, bytes]],
        *,
        agent: str,
        message: str | None = None,
    ) -> ImportResult:
        """Load many files as one changeset (bulk COPY). Unchanged files are not touched.

        ``files``: (path, text), or (path, text, the text's UTF-8 bytes) from a caller that
        decoded it from them (saves encoding it again). Files of the workspace that are not in
        ``files`` are kept.
        """
        validate.check_workspace(workspace)
        seen: set[str] = set()
        limit = self.content_bytes_max
        superseded: list[tuple[str, int]] = []

        def staged_row(
            path: str, text: str, data: bytes | None = None
        ) -> tuple[str, str, int, str]:
            validate.check_path(path)
            data = validate.text_bytes(text, path, limit, data)
            if path in seen:
                raise InvalidInput(f"path {path!r} appears twice")
            seen.add(path)
            return (path, text, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest())

        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO dbcode_workspace (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                    (workspace,),
                )
                cur = await conn.execute(
                    "SELECT id FROM dbcode_workspace WHERE name = %s", (workspace,)
                )
                row = await cur.fetchone()
                assert row is not None
                ws = int(row[0])
                await conn.execute(
                    "CREATE TEMP TABLE dbcode_stage (path text PRIMARY KEY, content text,"
                    " size integer, sha text) ON COMMIT DROP;"
                    " CREATE TEMP TABLE dbcode_new (path text PRIMARY KEY) ON COMMIT DROP"
                )
                # Rows go out as ``files`` yields them (a caller reading files from disk
                # lazily overlaps its reading with PostgreSQL's parsing of the COPY stream).
                async with conn.cursor().copy(
                    "COPY dbcode_stage (path, content, size, sha) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "int4", "text"])
                    for item in files:
                        await copy.write_row(staged_row(*item))
                if not seen:
                    raise InvalidInput("nothing to import")
                staged = len(seen)
                # New paths get their final row at once (revision 1); the rows are ours
                # until COMMIT. A path that exists (or that another transaction creates
                # meanwhile: ON CONFLICT waits for it) is handled below, locked.
                cur = await conn.execute(
                    "WITH ins AS (INSERT INTO dbcode_file (workspace_id, path, revision, deleted)"
                    "  SELECT %s, path, 1, false FROM dbcode_stage ORDER BY path"
                    "  ON CONFLICT DO NOTHING RETURNING path)"
                    " INSERT INTO dbcode_new SELECT path FROM ins",
                    (ws,),
                )
                all_new = cur.rowcount == staged  # a first import: nothing more to compare
                if all_new:
                    created, updated = staged, 0
                else:
                    await conn.execute(
                        "SELECT 1 FROM dbcode_file WHERE workspace_id = %s AND path IN"
                        " (SELECT path FROM dbcode_stage EXCEPT SELECT path FROM dbcode_new)"
                        " ORDER BY path FOR UPDATE",
                        (ws,),
                    )
                    await conn.execute(
                        "CREATE TEMP TABLE dbcode_plan ON COMMIT DROP AS"
                        " SELECT s.path, f.revision + 1 AS rev,"
                        "  CASE WHEN f.deleted THEN 'create' ELSE 'update' END AS kind"
                        " FROM dbcode_stage s JOIN dbcode_file f"
                        "  ON f.workspace_id = %s AND f.path = s.path"
                        " LEFT JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
                        "  AND r.path = f.path AND r.revision = f.revision"
                        " WHERE NOT EXISTS (SELECT 1 FROM dbcode_new n WHERE n.path = s.path)"
                        "  AND (f.deleted OR r.sha IS DISTINCT FROM s.sha)",
                        (ws,),
                    )
                    cur = await conn.execute(
                        "SELECT (SELECT count(*) FROM dbcode_new),"
                        " count(*) FILTER (WHERE kind = 'create'),"
                        " count(*) FILTER (WHERE kind = 'update') FROM dbcode_plan"
                    )
                    counts = await cur.fetchone()
                    assert counts is not None
                    created, updated = int(counts[0]) + int(counts[1]), int(counts[2])
                unchanged = staged - created - updated
                if created + updated == 0:
                    return ImportResult(None, 0, 0, unchanged)
                cur = await conn.execute(
                    "UPDATE dbcode_workspace SET head_seq = head_seq + 1 WHERE id = %s"
                    " RETURNING head_seq",
                    (ws,),
                )
                row = await cur.fetchone()
                assert row is not None
                seq = int(row[0])
                await conn.execute(
                    "INSERT INTO dbcode_changeset (workspace_id, seq, agent, message)"
                    " VALUES (%s, %s, %s, %s)",
                    (ws, seq, agent, message),
                )
                if all_new:
                    await conn.execute(
                        "INSERT INTO dbcode_revision"
                        " (workspace_id, path, revision, seq, kind, content, size, sha)"
                        " SELECT %s, path, 1, %s, 'create', content, size, sha FROM dbcode_stage",
                        (ws, seq),
                    )
                else:
                    await conn.execute(
                        "INSERT INTO dbcode_revision"
                        " (workspace_id, path, revision, seq, kind, content, size, sha)"
                        " SELECT %s, s.path, 1, %s, 'create', s.content, s.size, s.sha"
                        " FROM dbcode_stage s JOIN dbcode_new n ON n.path = s.path"
                        " UNION ALL"
                        " SELECT %s, s.path, p.rev, %s, p.kind, s.content, s.size, s.sha"
                        " FROM dbcode_stage s JOIN dbcode_plan p ON p.path = s.path",
                        (ws, seq, ws, seq),
                    )
                    await conn.execute(
                        "UPDATE dbcode_file f SET revision = p.rev, deleted = false"
                        " FROM dbcode_plan p WHERE f.workspace_id = %s AND f.path = p.path",
                        (ws,),
                    )
                    if updated and self.compact_history:
                        cur = await conn.execute(
                            "SELECT p.path, p.rev FROM dbcode_plan p JOIN dbcode_stage s"
                            " ON s.path = p.path WHERE p.kind = 'update' AND s.size >= %s",
                            (self.compact_text_bytes_min,),
                        )
                        superseded = [(str(p), int(r) - 1) for p, r in await cur.fetchall()]
                cur = await conn.execute(
                    "SELECT current_setting('dbcode.claim_warnings', true),"
                    " pg_notify('dbcode', %s)",
                    (f"{workspace} {seq}",),
                )
                row = await cur.fetchone()
                warnings = _warnings(workspace, row[0] if row else None, seq)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}") from None
        except psycopg.Error as exc:
            if exc.sqlstate == "DB423":
                raise claimed_error(workspace, exc.diag.message_detail) from None
            raise
        # The revisions the import superseded are compacted like a commit's.
        for path, revision in superseded:
            self._note_superseded(workspace, path, revision)
        return ImportResult(seq, created, updated, unchanged, warnings)

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, workspace: str, since_seq: int = 0) -> AsyncIterator[Changeset]:
        """Every changeset with seq > since_seq, exactly once, in order; then live ones."""
        validate.check_workspace(workspace)
        return self.hub.subscribe(workspace, since_seq)


__all__ = ["Store", "datetime"]
