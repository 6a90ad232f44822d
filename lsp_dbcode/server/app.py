"""State shared by every session of one server process: the store (one pool, one LISTEN
connection), caches, and the analysis engines."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..store import DatabaseUnavailable, Store
from ..text.diff import diff_edits
from ..text.edits import Edit
from .analysis import Analyzer

if TYPE_CHECKING:
    from .documents import OpenDoc
    from .session import Session

log = logging.getLogger(__name__)
T = TypeVar("T")

REVISION_CACHE_MAX = 512
DIFF_CACHE_MAX = 256
ANTICIPATED_MAX = 64
REVISION_CACHE_BYTES_MAX = 64 * 1024 * 1024


DB_RETRY_DELAY_S = 0.5


async def retrying(make: Callable[[], Awaitable[T]]) -> T:
    """``await make()`` until the database answers (a restart, a lost connection)."""
    while True:
        try:
            return await make()
        except DatabaseUnavailable as exc:
            log.warning("database unavailable (%s); retrying", exc)
            await asyncio.sleep(DB_RETRY_DELAY_S)


class App:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.analyzer = Analyzer(store)
        self.sessions: set[Session] = set()
        self._revisions: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._revisions_bytes = 0
        self._inflight: dict[tuple[str, str, int], asyncio.Future[str]] = {}
        self._diffs: dict[tuple[str, str, int, int], list[Edit]] = {}
        self._edits_json: dict[tuple[str, str, int, int, str], str] = {}
        # Pushes prepared while a commit of this process is in the database (anticipate()):
        # (workspace, path, base revision) -> (new text, edits, {encoding: edits JSON}).
        self._anticipated: OrderedDict[
            tuple[str, str, int], tuple[str, list[Edit], dict[str, str]]
        ] = OrderedDict()
        # Open documents of every session: workspace -> path -> id(doc) -> (session, doc).
        # One watcher per workspace feeds them all (one subscription per process).
        self._open: dict[str, dict[str, dict[int, tuple[Session, OpenDoc]]]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._watch_start: dict[str, asyncio.Future[int]] = {}

    # -- open documents and the watcher that feeds them --------------------------------------

    def track(self, session: Session, doc: OpenDoc) -> None:
        """``doc`` is open in ``session``: deliver the changesets that touch its path."""
        ws = doc.workspace
        paths = self._open.setdefault(ws, {})
        paths.setdefault(doc.path, {})[id(doc)] = (session, doc)
        if ws not in self._watchers:
            self._watch_start[ws] = asyncio.get_running_loop().create_future()
            self._watchers[ws] = asyncio.get_running_loop().create_task(self._watch(ws))

    def untrack(self, session: Session, doc: OpenDoc) -> None:
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
                targets = list(paths.get(fc.path, {}).values())
                if fc.old_path is not None:
                    targets += paths.get(fc.old_path, {}).values()
                for session, doc in targets:
                    try:
                        await session.deliver(doc, cs, fc)
                    except Exception:  # one session's failure must not stop everyone's feed
                        log.exception("%s: delivering seq %d failed", doc.uri, cs.seq)

    def edits_json(
        self, key: tuple[str, str, int, int, str], new: str, make: Callable[[], list[Any]]
    ) -> str:
        """The JSON of a push's TextEdits, shared by every clean buffer of the same revision
        and position encoding (``new``: the text they move to)."""
        found = self._edits_json.get(key)
        if found is None:
            ready = self._ready(key[:3], new)
            found = ready[2].get(key[4]) if ready is not None else None
            if found is None:
                found = json.dumps(make(), separators=(",", ":"))
            self._edits_json[key] = found
            if len(self._edits_json) > DIFF_CACHE_MAX:
                self._edits_json.pop(next(iter(self._edits_json)))
        return found

    def diff(self, key: tuple[str, str, int, int], old: str, new: str) -> list[Edit]:
        """diff_edits(old, new), shared by every session whose buffer is ``old`` (a clean
        buffer of revision key[2] moving to key[3]): 100 editors, one diff."""
        found = self._diffs.get(key)
        if found is None:
            ready = self._ready(key[:3], new)
            found = ready[1] if ready is not None else diff_edits(old, new)
            self._diffs[key] = found
            if len(self._diffs) > DIFF_CACHE_MAX:
                self._diffs.pop(next(iter(self._diffs)))
        return found

    def _ready(
        self, key: tuple[str, str, int], new: str
    ) -> tuple[str, list[Edit], dict[str, str]] | None:
        """What :meth:`anticipate` prepared for clean buffers of revision key[2] moving to
        ``new``: only for the very text object committed, which the own changeset carries
        (identity, not equality: the revision number is not known before the commit returns)."""
        ready = self._anticipated.get(key)
        return ready if ready is not None and ready[0] is new else None

    def anticipate(self, workspace: str, path: str, text: str) -> None:
        """A commit of ``text`` to ``path`` is about to be sent: prepare, while the database
        works (a callback run when the committing task waits), the edits that will move the
        clean buffers open on ``path`` to it. Used only if that very text object is what the
        commit's changeset carries (App.diff); costs nothing when no buffer has the path open."""
        docs = self._open.get(workspace, {}).get(path)
        if docs:
            asyncio.get_running_loop().call_soon(self._anticipate, workspace, path, text)

    def _anticipate(self, workspace: str, path: str, text: str) -> None:
        for session, doc in list(self._open.get(workspace, {}).get(path, {}).values()):
            if doc.pending is not None or doc.broken or doc.base_rev <= 0 or not doc.base_exact:
                continue
            if doc.text is not doc.base_text and doc.text != doc.base_text:
                continue
            key = (workspace, path, doc.base_rev)
            ready = self._anticipated.get(key)
            if ready is None or ready[0] is not text:
                ready = (text, diff_edits(doc.base_text, text), {})
                self._anticipated[key] = ready
                if len(self._anticipated) > ANTICIPATED_MAX:
                    self._anticipated.popitem(last=False)
            enc = session.encoding.value
            if enc not in ready[2]:
                ready[2][enc] = json.dumps(
                    doc.lsp_edits(ready[1], session.encoding), separators=(",", ":")
                )

    async def close(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        await self.analyzer.close()

    async def revision_text(self, workspace: str, path: str, revision: int) -> str:
        """Text of one revision; shared by all sessions (100 editors, one read)."""
        key = (workspace, path, revision)
        text = self._revisions.get(key)
        if text is not None:
            self._revisions.move_to_end(key)
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
        key = (workspace, path, revision)
        if key in self._revisions:
            return
        self._revisions[key] = text
        self._revisions_bytes += len(text)
        while self._revisions and (
            len(self._revisions) > REVISION_CACHE_MAX
            or self._revisions_bytes > REVISION_CACHE_BYTES_MAX
        ):
            _, old = self._revisions.popitem(last=False)
            self._revisions_bytes -= len(old)
