"""Review threads: anchored comments that follow the code (SPEC.md, Review).

Where anchors move (see docs/architecture.md, "Review threads"): not in the commit. A thread
keeps the revision its range refers to (``anchor_rev``); whoever reads threads of a file moves
the ones that are behind through the diff of every later revision (text/anchors.py), one
revision at a time, each diff computed once for all threads of the file, and stores the result
under compare-and-swap (``dbcode_threads_move``): the mapping is a pure function of the
history, so concurrent readers compute the same thing and exactly one of them records it and
the ``outdated`` events it causes. Commits thus cost the same with 1,000 threads on the file as
with none (benchmarks/review_anchors.py); the committing CLI and the servers' watchers move the
threads of what they commit right after, so ``outdated`` events follow their changeset.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ..text.anchors import line_span, line_starts, map_range, span_lines
from ..text.diff import diff_edits
from ..text.edits import Edit
from . import validate
from .dsn import redact
from .errors import DatabaseUnavailable, InvalidInput, NotFound, StoreError
from .model import Comment, CommentResult, ReviewEvent, Thread

# Limits (SPEC.md: text size limits apply to comments as to files).
COMMENT_BYTES_MAX = 64 * 1024
COMMENTS_PER_THREAD_MAX = 1000
# Open threads one file may carry (creation is refused beyond).
THREADS_PER_FILE_OPEN_MAX = 5000
# Open threads of one file an editor is shown (the server's diagnostics; the first ones by id).
THREADS_PER_FILE_SHOWN_MAX = 500
# Revisions one read moves a thread through before it answers with what it has (the next read
# continues from there).
ANCHOR_STEPS_MAX = 1000
REVIEW_FEED_BATCH_MAX = 500

KINDS = ("note", "suggestion", "blocking")
STATES = ("open", "resolved", "all")

_THREAD_COLUMNS = """
    t.id, t.path, t.kind, t.state, t.outdated, t.anchor_rev, t.start_off, t.end_off, t.agent,
    t.created_at, t.replacement,
    (SELECT coalesce(json_agg(json_build_array(c.id, c.agent, c.body, c.created_at)
                              ORDER BY c.id), '[]')
       FROM dbcode_comment c WHERE c.thread_id = t.id)
"""


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def check_comment_text(text: str, what: str = "comment") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{what}: empty text; say something")
    validate.text_bytes(text, what, COMMENT_BYTES_MAX)
    return text


@dataclass(slots=True)
class _Anchor:
    """A thread's anchor while it is being moved."""

    id: int
    path: str
    rev: int
    start: int
    end: int
    outdated: bool
    from_rev: int
    from_path: str
    was_outdated: bool
    agent: str | None = None  # who made the change that outdated it


class ReviewStore:
    """Review threads and the review feed (mixed into ``Store``)."""

    _pool: AsyncConnectionPool

    def _connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        raise NotImplementedError

    dsn: str
    content_bytes_max: int

    async def _fetchall(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _workspace_id(self, workspace: str) -> int:
        raise NotImplementedError

    async def _text_at(self, ws: int, path: str, revision: int) -> str | None:
        raise NotImplementedError

    async def _execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    # -- threads ---------------------------------------------------------------------------

    async def comment(
        self,
        workspace: str,
        path: str,
        text: str,
        *,
        agent: str,
        lines: tuple[int, int] | None = None,
        span: tuple[int, int] | None = None,
        locate: Callable[[str], tuple[int, int]] | None = None,
        revision: int | None = None,
        kind: str = "note",
        replacement: str | None = None,
    ) -> CommentResult:
        """Open a thread on ``lines`` (1-based, inclusive), ``span`` (code points) or what
        ``locate(text)`` finds (the LSP side: positions in its encoding) of the file at
        ``revision`` (default: current). Two round trips; nothing is written on bad input."""
        validate.check_workspace(workspace)
        validate.check_path(path)
        check_comment_text(text)
        if kind not in KINDS:
            raise InvalidInput(f"invalid kind {kind!r}: use one of {', '.join(KINDS)}")
        if kind == "suggestion":
            if replacement is None:
                raise InvalidInput("a suggestion needs its replacement text")
            validate.check_text(replacement, "suggestion", self.content_bytes_max)
        elif replacement is not None:
            raise InvalidInput(f"only a suggestion carries a replacement, not a {kind}")
        if sum(x is not None for x in (lines, span, locate)) != 1:
            raise InvalidInput("give the lines or the range the comment is about")
        rows = await self._fetchall(
            "SELECT w.id, f.deleted, r.revision, r.content, r.kind FROM dbcode_workspace w"
            " LEFT JOIN dbcode_file f ON f.workspace_id = w.id AND f.path = %s"
            " LEFT JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
            "  AND r.path = f.path AND r.revision = coalesce(%s, f.revision)"
            " WHERE w.name = %s",
            (path, revision, workspace),
        )
        if not rows:
            raise NotFound(f"unknown workspace {workspace!r}")
        ws, deleted, rev_found, content, rev_kind = rows[0]
        if deleted is None or (deleted and revision is None):
            raise NotFound(f"no such file {path!r} in workspace {workspace!r}")
        if rev_found is not None and content is None and rev_kind not in ("delete", "moved"):
            # An older revision stored as a delta (store/history.py): rebuilt.
            content = await self._text_at(ws, path, int(rev_found))
        if rev_found is None or content is None:
            raise NotFound(f"{workspace}/{path} has no text at revision {revision}")
        rev = int(rev_found)
        if lines is not None:
            try:
                start, end = line_span(content, *lines)
            except ValueError as exc:
                raise InvalidInput(f"{workspace}/{path}: {exc}") from None
        elif locate is not None:
            start, end = locate(content)
        else:
            assert span is not None
            start, end = span
        if not 0 <= start <= end <= len(content):
            raise InvalidInput(
                f"{workspace}/{path}: range [{start}, {end}) is not within revision {rev}"
                f" ({len(content)} characters)"
            )
        try:
            made = await self._execute(
                "SELECT dbcode_thread_open(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (ws, path, kind, replacement, rev, start, end, agent, text,
                 THREADS_PER_FILE_OPEN_MAX),
            )  # fmt: skip
        except psycopg.Error as exc:
            if exc.sqlstate == "DB400":
                raise InvalidInput(f"{workspace}/{exc.diag.message_primary}") from None
            raise StoreError(f"comment failed: {exc.diag.message_primary or exc}") from None
        return CommentResult(int(made[0][0]["thread"]), int(made[0][0]["comment"]))

    async def _thread_ws(self, workspace: str, thread: int) -> int:
        ws = await self._workspace_id(workspace)
        if not isinstance(thread, int) or thread < 1:
            raise InvalidInput(f"invalid thread id {thread!r}")
        rows = await self._fetchall(
            "SELECT 1 FROM dbcode_thread WHERE id = %s AND workspace_id = %s", (thread, ws)
        )
        if not rows:
            raise NotFound(f"no thread {thread} in workspace {workspace!r}")
        return ws

    async def thread_visible(self, thread: int) -> bool:
        """Can the task's role (access.current_role) see this thread? (Row-level security.)"""
        rows = await self._fetchall("SELECT 1 FROM dbcode_thread WHERE id = %s", (thread,))
        return bool(rows)

    async def reply(self, workspace: str, thread: int, text: str, *, agent: str) -> int:
        """Add a comment to a thread; its id."""
        check_comment_text(text, "reply")
        ws = await self._thread_ws(workspace, thread)
        try:
            async with self._connection() as conn, conn.transaction():
                # The thread row lock serialises replies (the count limit holds under races).
                await conn.execute(
                    "SELECT 1 FROM dbcode_thread WHERE id = %s FOR UPDATE", (thread,)
                )
                cur = await conn.execute(
                    "SELECT count(*) FROM dbcode_comment WHERE thread_id = %s", (thread,)
                )
                n = await cur.fetchone()
                if n and int(n[0]) >= COMMENTS_PER_THREAD_MAX:
                    raise InvalidInput(
                        f"thread {thread} has {COMMENTS_PER_THREAD_MAX} comments, the most a"
                        " thread may have; open a new thread"
                    )
                cur = await conn.execute(
                    "INSERT INTO dbcode_comment (thread_id, agent, body) VALUES (%s, %s, %s)"
                    " RETURNING id",
                    (thread, agent, text),
                )
                row = await cur.fetchone()
                assert row is not None
                await conn.execute(
                    "SELECT dbcode_review_event_add(%s, %s, 'replied', %s, %s)",
                    (ws, thread, int(row[0]), agent),
                )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}") from None
        return int(row[0])

    async def resolve(
        self, workspace: str, thread: int, *, agent: str, resolved: bool = True
    ) -> bool:
        """Resolve (or reopen) a thread. False when it already was in that state."""
        ws = await self._thread_ws(workspace, thread)
        state, event = ("resolved", "resolved") if resolved else ("open", "reopened")
        try:
            async with self._connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE dbcode_thread SET state = %s WHERE id = %s AND state <> %s",
                    (state, thread, state),
                )
                if cur.rowcount == 0:
                    return False
                await conn.execute(
                    "SELECT dbcode_review_event_add(%s, %s, %s, NULL, %s)",
                    (ws, thread, event, agent),
                )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database error at {redact(self.dsn)}: {exc}") from None
        return True

    async def threads(
        self, workspace: str, path: str | None = None, state: str = "open"
    ) -> list[Thread]:
        """Threads of the workspace (or of one file), their ranges moved onto the current
        revision of their file (see the module docstring)."""
        if state not in STATES:
            raise InvalidInput(f"invalid state {state!r}: use open, resolved or all")
        ws = await self._workspace_id(workspace)
        if path is not None:
            validate.check_path(path)
        rows = await self._fetchall(
            f"SELECT {_THREAD_COLUMNS} FROM dbcode_thread t"  # noqa: S608 - constant text
            " WHERE t.workspace_id = %s AND (%s::text IS NULL OR t.path = %s)"
            " AND (%s = 'all' OR t.state = %s) ORDER BY t.path, t.id",
            (ws, path, path, state, state),
        )
        anchors = [
            _Anchor(
                int(r[0]),
                r[1],
                int(r[5]),
                int(r[6]),
                int(r[7]),
                bool(r[4]),
                int(r[5]),
                r[1],
                bool(r[4]),
            )
            for r in rows
        ]
        texts = await self._move(ws, anchors)
        starts: dict[tuple[str, int], list[int]] = {}
        out: list[Thread] = []
        for r, a in zip(rows, anchors, strict=True):
            text = texts.get((a.path, a.rev))
            lines = None
            if text is not None:
                at = starts.get((a.path, a.rev))
                if at is None:
                    at = starts[(a.path, a.rev)] = line_starts(text)
                lines = span_lines(text, a.start, a.end, at)
            out.append(
                Thread(
                    id=a.id,
                    workspace=workspace,
                    path=a.path,
                    kind=r[2],
                    state=r[3],
                    outdated=a.outdated,
                    revision=a.rev,
                    start=a.start,
                    end=a.end,
                    agent=r[8],
                    created_at=r[9],
                    replacement=r[10],
                    comments=tuple(Comment(int(c[0]), c[1], c[2], _time(c[3])) for c in r[11]),
                    lines=lines,
                )
            )
        return out

    async def thread(self, workspace: str, thread: int) -> Thread:
        await self._thread_ws(workspace, thread)
        for t in await self.threads(workspace, state="all"):
            if t.id == thread:
                return t
        raise NotFound(f"no thread {thread} in workspace {workspace!r}")

    async def move_threads(self, workspace: str, paths: Sequence[str]) -> None:
        """Move the open threads of ``paths`` onto their files' current revisions now (a
        committer calls it after its commit: their ``outdated`` events follow the changeset)."""
        if not paths:
            return
        ws = await self._workspace_id(workspace)
        rows = await self._fetchall(
            "SELECT t.id, t.path, t.anchor_rev, t.start_off, t.end_off, t.outdated"
            " FROM dbcode_thread t JOIN dbcode_file f"
            "  ON f.workspace_id = t.workspace_id AND f.path = t.path"
            " WHERE t.workspace_id = %s AND t.path = ANY(%s) AND t.state = 'open'"
            "  AND t.anchor_rev < f.revision",
            (ws, list(paths)),
        )
        anchors = [
            _Anchor(
                int(r[0]),
                r[1],
                int(r[2]),
                int(r[3]),
                int(r[4]),
                bool(r[5]),
                int(r[2]),
                r[1],
                bool(r[5]),
            )
            for r in rows
        ]
        await self._move(ws, anchors)

    async def _move(self, ws: int, anchors: list[_Anchor]) -> dict[tuple[str, int], str]:
        """Move ``anchors`` (in place) onto the current revisions of their files, store the
        moves, and return the texts read, by (path, revision)."""
        texts: dict[tuple[str, int], str] = {}
        if not anchors:
            return texts
        moved: list[_Anchor] = []
        todo = list(anchors)
        for _ in range(8):  # renames followed per read (a thread renamed more often waits)
            if not todo:
                break
            paths = sorted({a.path for a in todo})
            heads = {
                p: (int(rev), bool(deleted), content)
                for p, rev, deleted, content in await self._fetchall(
                    "SELECT f.path, f.revision, f.deleted, r.content FROM dbcode_file f"
                    " JOIN dbcode_revision r ON r.workspace_id = f.workspace_id"
                    "  AND r.path = f.path AND r.revision = f.revision"
                    " WHERE f.workspace_id = %s AND f.path = ANY(%s)",
                    (ws, paths),
                )
            }
            for p, (rev, _deleted, content) in heads.items():
                if content is not None:
                    texts[(p, rev)] = content
            behind: dict[str, list[_Anchor]] = {}
            for a in todo:
                head = heads.get(a.path)
                if head is not None and a.rev < head[0]:
                    behind.setdefault(a.path, []).append(a)
            todo = []
            for p, group in behind.items():
                renamed = await self._move_file(ws, p, group, texts)
                moved.extend(group)
                todo.extend(renamed)
        if moved:
            await self._execute(
                "SELECT dbcode_threads_move(%s, %s)",
                (
                    ws,
                    Jsonb(
                        [
                            {
                                "id": a.id,
                                "from_rev": a.from_rev,
                                "from_path": a.from_path,
                                "rev": a.rev,
                                "path": a.path,
                                "start": a.start,
                                "end": a.end,
                                "outdated": a.outdated,
                                "was_outdated": a.was_outdated,
                                "agent": a.agent or "",
                            }
                            for a in moved
                        ]
                    ),
                ),
            )
        return texts

    async def _move_file(
        self, ws: int, path: str, group: list[_Anchor], texts: dict[tuple[str, int], str]
    ) -> list[_Anchor]:
        """Move the anchors of one file through its later revisions; the ones whose file was
        renamed are returned, on the new path, to be moved further there."""
        low = min(a.rev for a in group)
        rows = await self._fetchall(
            "SELECT r.revision, r.kind, r.old_path, r.content, r.seq, c.agent"
            " FROM dbcode_revision r JOIN dbcode_changeset c"
            "  ON c.workspace_id = r.workspace_id AND c.seq = r.seq"
            " WHERE r.workspace_id = %s AND r.path = %s AND r.revision >= %s"
            " ORDER BY r.revision LIMIT %s",
            (ws, path, low, ANCHOR_STEPS_MAX + 1),
        )
        revs = {int(r[0]): r for r in rows}
        for r in rows:
            content = r[3]
            if content is None and r[1] not in ("delete", "moved"):
                # An older revision stored as a delta (store/history.py): rebuilt.
                content = await self._text_at(ws, path, int(r[0]))
                revs[int(r[0])] = (r[0], r[1], r[2], content, r[4], r[5])
            if content is not None:
                texts[(path, int(r[0]))] = content
        diffs: dict[tuple[int, int], list[Edit]] = {}
        renamed: list[_Anchor] = []
        for a in sorted(group, key=lambda a: a.rev):
            text_rev = a.rev if (path, a.rev) in texts else None
            for rev in sorted(k for k in revs if k > a.rev):
                _, kind, old_path, content, seq, who = revs[rev]
                if kind == "moved":
                    new_rev = await self._fetchall(
                        "SELECT revision FROM dbcode_revision WHERE workspace_id = %s"
                        " AND path = %s AND seq = %s",
                        (ws, old_path, seq),
                    )
                    if new_rev:
                        a.path, a.rev = old_path, int(new_rev[0][0])
                        renamed.append(a)
                    break
                if content is None:  # deleted: the thread stays where it was, outdated
                    if not a.outdated:
                        a.outdated, a.agent = True, who
                    a.rev = rev
                    continue
                if text_rev is None:  # re-created after a deletion: keep the place
                    a.start = a.end = min(a.start, len(content))
                else:
                    key = (text_rev, rev)
                    edits = diffs.get(key)
                    if edits is None:
                        edits = diffs[key] = diff_edits(
                            texts[(path, text_rev)], content, cleanup=False
                        )
                    m = map_range(edits, a.start, a.end, texts[(path, text_rev)])
                    a.start, a.end = m.start, m.end
                    if m.outdated and not a.outdated:
                        a.outdated, a.agent = True, who
                text_rev = rev
                a.rev = rev
        return renamed

    # -- the review feed -------------------------------------------------------------------

    async def review_head(self, workspace: str) -> int:
        """The workspace's latest review event (0: none yet)."""
        validate.check_workspace(workspace)
        rows = await self._fetchall(
            "SELECT h.head FROM dbcode_review_head h JOIN dbcode_workspace w"
            " ON w.id = h.workspace_id WHERE w.name = %s",
            (workspace,),
        )
        return int(rows[0][0]) if rows else 0

    async def _review_events_since(
        self, workspace: str, since: int, limit: int
    ) -> list[ReviewEvent]:
        rows = await self._fetchall(
            "SELECT e.rseq, e.thread_id, e.event, e.agent, e.at_seq, e.created_at,"
            " c.id, c.agent, c.body, c.created_at"
            " FROM dbcode_review_event e JOIN dbcode_workspace w ON w.id = e.workspace_id"
            " LEFT JOIN dbcode_comment c ON c.id = e.comment_id"
            " WHERE w.name = %s AND e.rseq > %s ORDER BY e.rseq LIMIT %s",
            (workspace, since, min(limit, REVIEW_FEED_BATCH_MAX)),
        )
        return [
            ReviewEvent(
                workspace=workspace,
                seq=int(r[0]),
                thread=int(r[1]),
                event=r[2],
                agent=r[3],
                at_seq=int(r[4]),
                time=r[5],
                comment=Comment(int(r[6]), r[7], r[8], r[9]) if r[6] is not None else None,
            )
            for r in rows
        ]

    def subscribe_review(self, workspace: str, since: int = 0) -> AsyncIterator[ReviewEvent]:
        """Every review event with seq > since, exactly once, in order; then live ones."""
        validate.check_workspace(workspace)
        hub = cast(Any, self).hub
        return cast(AsyncIterator[ReviewEvent], hub.subscribe_review(workspace, since))


def thread_json(t: Thread) -> dict[str, Any]:
    """A thread as the CLI's --json prints it (lines 1-based)."""
    return {
        "thread": t.id,
        "path": t.path,
        "kind": t.kind,
        "state": t.state,
        "outdated": t.outdated,
        "revision": t.revision,
        "startLine": t.lines[0] if t.lines else None,
        "endLine": t.lines[1] if t.lines else None,
        "replacement": t.replacement,
        "comments": [
            {"id": c.id, "agent": c.agent, "text": c.text, "time": c.time.isoformat()}
            for c in t.comments
        ],
    }


__all__ = [
    "COMMENTS_PER_THREAD_MAX",
    "COMMENT_BYTES_MAX",
    "THREADS_PER_FILE_OPEN_MAX",
    "THREADS_PER_FILE_SHOWN_MAX",
    "ReviewStore",
    "check_comment_text",
    "thread_json",
]
