"""What every session of one server process shares: the store (one pool, one LISTEN
connection), the one watcher per workspace that feeds every open document, the caches that let
1,000 clean buffers of one file share one read, one diff and one edits' JSON, and the Analyzer
(the ruff engine and the workspaces' configs)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..store import Changeset, DatabaseUnavailable, FileChange, Store
from ..text.diff import diff_edits
from ..text.edits import Edit
from ..text.positions import Encoding, LineIndex
from .auth import FailureLimiter
from .cache import BoundedCache
from .client import INFO
from .coordination import ReviewFeed
from .lint import Analyzer
from .protocol import json_bytes
from .tasks import Deadlines

if TYPE_CHECKING:
    from .documents import DocumentSync, OpenDoc, PushKey

log = logging.getLogger(__name__)
T = TypeVar("T")

REVISION_CACHE_MAX = 512
REVISION_CACHE_BYTES_MAX = 64 * 1024 * 1024
DIFF_CACHE_MAX = 256
PREPARED_PUSHES_MAX = 64
AUTHOR_LINES_MAX = 64
DB_RETRY_DELAY_S = 0.5


async def retrying(make: Callable[[], Awaitable[T]]) -> T:
    """``await make()`` until the database answers (a restart, a lost connection)."""
    while True:
        try:
            return await make()
        except DatabaseUnavailable as exc:
            log.warning("database unavailable (%s); retrying", exc)
            await asyncio.sleep(DB_RETRY_DELAY_S)


@dataclass(frozen=True, slots=True)
class RevisionKey:
    workspace: str
    path: str
    revision: int


@dataclass(slots=True)
class PreparedPush:
    """What :meth:`Shared.anticipate` made for clean buffers of one revision while a commit of
    ``text`` was in the database: their edits, and those edits' JSON per position encoding."""

    text: str
    edits: list[Edit]
    edits_json: dict[Encoding, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """A push to clean buffers of one revision, as their editors send it back: ``changes``,
    the didChange's (range, text) pairs when it applies the edits from the last one (as LSP
    clients do), ``offsets`` the same as offsets, and ``index`` the text it makes. A didChange
    that carries exactly ``changes`` on the buffer the push was computed on takes ``index``
    (one LineIndex shared by every such buffer) instead of rebuilding one."""

    changes: list[tuple[tuple[int, int, int, int], str]]
    offsets: list[tuple[int, int, str]]
    index: LineIndex


@dataclass(frozen=True, slots=True)
class Reader:
    """One open document of one session, fed by the workspace's watcher."""

    sync: DocumentSync
    doc: OpenDoc


class Shared:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.analyzer = Analyzer(store)
        self.reviews = ReviewFeed(store, self.revision_text)  # review and claim diagnostics
        self.deadlines = Deadlines()  # of every session's pushes (documents.py)
        self.auth_limiter = FailureLimiter()  # failed authentications per peer (auth.py)
        self.sessions: set[Any] = set()
        self._revisions: BoundedCache[RevisionKey, str] = BoundedCache(
            REVISION_CACHE_MAX, size_max=REVISION_CACHE_BYTES_MAX, size=len
        )
        self._inflight: dict[RevisionKey, asyncio.Future[str]] = {}
        self._diffs: BoundedCache[PushKey, list[Edit]] = BoundedCache(DIFF_CACHE_MAX)
        self._edits_json: BoundedCache[tuple[PushKey, Encoding], str] = BoundedCache(DIFF_CACHE_MAX)
        self._plans: BoundedCache[tuple[PushKey, Encoding], SettlePlan] = BoundedCache(
            DIFF_CACHE_MAX
        )
        # Pushes prepared while a commit of this process is in the database (anticipate()),
        # by the revision the clean buffers are at.
        self._prepared: BoundedCache[RevisionKey, PreparedPush] = BoundedCache(PREPARED_PUSHES_MAX)
        self._author_lines: BoundedCache[tuple[str, int, str], bytes] = BoundedCache(
            AUTHOR_LINES_MAX
        )
        # Open documents of every session: workspace -> path -> id(doc) -> Reader.
        # One watcher per workspace feeds them all (one subscription per process).
        self._open: dict[str, dict[str, dict[int, Reader]]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._watch_start: dict[str, asyncio.Future[int]] = {}

    # -- open documents and the watcher that feeds them --------------------------------------

    def track(self, sync: DocumentSync, doc: OpenDoc) -> None:
        """``doc`` is open: ``sync.deliver`` gets the changesets that touch its path."""
        ws = doc.workspace
        paths = self._open.setdefault(ws, {})
        paths.setdefault(doc.path, {})[id(doc)] = Reader(sync, doc)
        if ws not in self._watchers:
            loop = asyncio.get_running_loop()
            self._watch_start[ws] = loop.create_future()
            self._watchers[ws] = loop.create_task(self._watch(ws), context=contextvars.Context())

    def untrack(self, doc: OpenDoc) -> None:
        ws = doc.workspace
        paths = self._open.get(ws, {})
        docs = paths.get(doc.path)
        if docs is None or docs.pop(id(doc), None) is None:
            return
        if not docs:
            del paths[doc.path]
        if not paths:  # the workspace's last open document: stop its watcher
            del self._open[ws]
            task = self._watchers.pop(ws, None)
            if task is not None:
                task.cancel()
            start = self._watch_start.pop(ws, None)
            if start is not None and not start.done():
                start.cancel()

    async def watching(self, workspace: str) -> None:
        """Until the workspace's watcher knows where it starts: a document read after this
        cannot miss a changeset (it is in the read, or the watcher delivers it)."""
        start = self._watch_start.get(workspace)
        if start is not None:
            await asyncio.shield(start)

    async def _watch(self, workspace: str) -> None:
        since = await retrying(lambda: self.store.head(workspace))
        start = self._watch_start.get(workspace)
        if start is not None and not start.done():
            start.set_result(since)
        async for cs in self.store.subscribe(workspace, since):
            for fc in cs.files:
                if fc.text is not None:
                    self.remember(workspace, fc.path, fc.revision, fc.text)
                paths = self._open.get(workspace, {})
                readers = list(paths.get(fc.path, {}).values())
                if fc.old_path is not None:
                    readers += paths.get(fc.old_path, {}).values()
                for reader in readers:
                    try:
                        await reader.sync.deliver(reader.doc, cs, fc)
                    except Exception:  # one session's failure must not stop everyone's feed
                        log.exception("%s: delivering seq %d failed", reader.doc.uri, cs.seq)

    # -- pushes shared by clean buffers ------------------------------------------------------

    def edits_json(
        self, key: PushKey, encoding: Encoding, new: str, make: Callable[[], list[Any]]
    ) -> str:
        """The JSON of a push's TextEdits, shared by every clean buffer of the same revision
        and position encoding (``new``: the text they move to)."""
        found = self._edits_json.get((key, encoding))
        if found is None:
            prepared = self._prepared_for(key, new)
            found = prepared.edits_json.get(encoding) if prepared is not None else None
            if found is None:
                found = json.dumps(make(), separators=(",", ":"))
            self._edits_json.put((key, encoding), found)
        return found

    def settle_plan(
        self,
        key: PushKey,
        encoding: Encoding,
        new: str,
        edits: list[Edit],
        make: Callable[[], list[Any]],
    ) -> SettlePlan:
        """The :class:`SettlePlan` of a push of ``edits`` (``make``: their TextEdit JSON) moving
        clean buffers to ``new``: one per revision and position encoding."""
        found = self._plans.get((key, encoding))
        if found is None or found.index.text is not new:
            changes = []
            for e in reversed(make()):
                r = e["range"]
                s, t = r["start"], r["end"]
                changes.append(
                    ((s["line"], s["character"], t["line"], t["character"]), e["newText"])
                )
            offsets = [(e.start, e.end, e.text) for e in reversed(edits)]
            found = SettlePlan(changes, offsets, LineIndex(new))
            self._plans.put((key, encoding), found)
        return found

    def diff(self, key: PushKey, old: str, new: str) -> list[Edit]:
        """diff_edits(old, new), shared by every session whose buffer is ``old`` (a clean
        buffer of revision key.base_rev moving to key.target_rev): 1,000 editors, one diff."""
        found = self._diffs.get(key)
        if found is None:
            prepared = self._prepared_for(key, new)
            found = prepared.edits if prepared is not None else diff_edits(old, new)
            self._diffs.put(key, found)
        return found

    def _prepared_for(self, key: PushKey, new: str) -> PreparedPush | None:
        """What :meth:`anticipate` prepared for clean buffers of revision key.base_rev moving
        to ``new``: only for the very text object committed, which the own changeset carries
        (identity, not equality: the revision number is not known before the commit returns)."""
        prepared = self._prepared.get(RevisionKey(key.workspace, key.path, key.base_rev))
        return prepared if prepared is not None and prepared.text is new else None

    def anticipate(self, workspace: str, path: str, text: str) -> None:
        """A commit of ``text`` to ``path`` is about to be sent: prepare, while the database
        works (a callback run when the committing task waits), the edits that will move the
        clean buffers open on ``path`` to it. Used only if that very text object is what the
        commit's changeset carries (:meth:`diff`); costs nothing when no buffer has the path
        open."""
        if self._open.get(workspace, {}).get(path):
            asyncio.get_running_loop().call_soon(self._anticipate, workspace, path, text)

    def _anticipate(self, workspace: str, path: str, text: str) -> None:
        seen: dict[int, PreparedPush] = {}  # by base revision: 1,000 buffers, one or two
        for reader in list(self._open.get(workspace, {}).get(path, {}).values()):
            doc = reader.doc
            if doc.pending is not None or doc.broken or doc.base_rev <= 0 or not doc.base_exact:
                continue
            if doc.text is not doc.base_text and doc.text != doc.base_text:
                continue
            prepared = seen.get(doc.base_rev)
            if prepared is None:
                key = RevisionKey(workspace, path, doc.base_rev)
                prepared = self._prepared.get(key)
                if prepared is None or prepared.text is not text:
                    prepared = PreparedPush(text, diff_edits(doc.base_text, text))
                    self._prepared.put(key, prepared)
                seen[doc.base_rev] = prepared
            enc = reader.sync.client.encoding
            if enc not in prepared.edits_json:
                prepared.edits_json[enc] = json.dumps(
                    doc.lsp_edits(prepared.edits, enc), separators=(",", ":")
                )

    def author_line(self, workspace: str, cs: Changeset, fc: FileChange) -> bytes:
        """The ``window/logMessage`` that names who changed a file, sent after its push: the
        same for every session, so encoded once per changeset and file."""
        key = (workspace, cs.seq, fc.path)
        body = self._author_lines.get(key)
        if body is None:
            text = f"{fc.path}: revision {fc.revision} by {cs.agent} (seq {cs.seq})" + (
                f": {cs.message}" if cs.message else ""
            )
            params = {"type": INFO, "message": text}
            body = json_bytes({"jsonrpc": "2.0", "method": "window/logMessage", "params": params})
            self._author_lines.put(key, body)
        return body

    # -- revision texts ----------------------------------------------------------------------

    async def revision_text(self, workspace: str, path: str, revision: int) -> str:
        """Text of one revision; shared by all sessions (1,000 editors, one read)."""
        key = RevisionKey(workspace, path, revision)
        text = self._revisions.get(key)
        if text is not None:
            return text
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            text = await self.store.revision_text(workspace, path, revision)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(text)
        self.remember(workspace, path, revision, text)
        return text

    def remember(self, workspace: str, path: str, revision: int, text: str) -> None:
        key = RevisionKey(workspace, path, revision)
        if key not in self._revisions:
            self._revisions.put(key, text)

    async def close(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        await self.reviews.close()
        self.deadlines.close()
        await self.analyzer.close()
