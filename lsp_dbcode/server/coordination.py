"""A session's part in review and coordination (SPEC.md, Review and Coordination): its row in
``dbcode_session`` (claims made by the session hang on it and end with it, also when the
process is killed: store/coordination.py), its presence, the review and claim diagnostics of
its open documents, and the feeds behind ``dbcode/didComment`` and ``dbcode/didChangePresence``.

Like the session's other helpers (documents.py, lint.py, commits.py), :class:`Coordination` and
:class:`ReviewWatch` are given what they need (the store, the Client port, the Identity, the
session's tasks and open documents) and keep no pointer back to the session. The handlers of
``dbcode/comment`` & co. are server/handlers/review.py; the LSP JSON of a claim, thread or
review event is here (errors.py and commits.py use :func:`claim_json` too); review and claim
diagnostics are built and published by findings.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..store import Claim, ReviewEvent, StoreError, Thread
from ..store.review import THREADS_PER_FILE_SHOWN_MAX
from ..text.anchors import map_range
from ..text.diff import diff_edits
from ..text.positions import Encoding, LineIndex
from ..uris import make_uri
from .findings import (
    RangeJson,
    claim_diagnostic_json,
    offsets_range_json,
    review_diagnostic_json,
    set_diagnostics,
)

if TYPE_CHECKING:
    from ..store import Store
    from ..text.edits import Edit
    from .client import Client
    from .documents import OpenDoc
    from .identity import Identity
    from .tasks import Tasks

log = logging.getLogger(__name__)

RevisionText = Callable[[str, str, int], Awaitable[str]]  # workspace, path, revision -> text

# After a changeset, the diagnostics are refreshed this much later: the push of the change to
# the buffers lands meanwhile (a burst is shown once). Comments and claims show at once.
REVIEW_AFTER_CHANGESET_S = 0.1
# Refreshes retried while a document is still loading, at most.
REVIEW_LOAD_RETRIES_MAX = 50


# -- LSP JSON ----------------------------------------------------------------------------------


def clamped_range(index: LineIndex, start: int, end: int, encoding: Encoding) -> RangeJson:
    """``[start, end)`` as an LSP range of ``index.text``, clamped to its end."""
    n = len(index.text)
    return offsets_range_json(index, min(start, n), min(end, n), encoding)


def claim_json(
    c: Claim, index: LineIndex | None = None, encoding: Encoding = Encoding.UTF16
) -> dict[str, Any]:
    """A claim as LSP clients see it: ``range`` only for a ranged claim whose text we have."""
    out: dict[str, Any] = {
        "id": c.id,
        "agent": c.agent,
        "uri": make_uri(c.workspace, c.path),
        "note": c.note,
        "exclusive": c.exclusive,
        "since": c.since.isoformat(),
        "expiresAt": c.expires_at.isoformat(),
    }
    if not c.whole and index is not None:
        out["range"] = clamped_range(index, c.start, c.end, encoding)
    return out


def warnings_json(warnings: tuple[Claim, ...]) -> dict[str, Any]:
    """A commit result's ``warnings`` (other agents' non-exclusive claims it touched), to be
    merged into the result: nothing when there are none."""
    return {"warnings": [claim_json(c) for c in warnings]} if warnings else {}


def thread_json(t: Thread, index: LineIndex | None, encoding: Encoding) -> dict[str, Any]:
    return {
        "thread": t.id,
        "uri": make_uri(t.workspace, t.path),
        "path": t.path,
        "range": clamped_range(index, t.start, t.end, encoding) if index is not None else None,
        "revision": t.revision,
        "kind": t.kind,
        "state": t.state,
        "outdated": t.outdated,
        "replacement": t.replacement,
        "comments": [
            {"id": c.id, "agent": c.agent, "text": c.text, "time": c.time.isoformat()}
            for c in t.comments
        ],
    }


def event_json(e: ReviewEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workspace": e.workspace,
        "thread": e.thread,
        "event": e.event,
        "agent": e.agent,
        "seq": e.seq,
        "atSeq": e.at_seq,
        "time": e.time.isoformat(),
    }
    if e.comment is not None:
        out["comment"] = {
            "id": e.comment.id,
            "agent": e.comment.agent,
            "text": e.comment.text,
            "time": e.comment.time.isoformat(),
        }
    return out


# -- the session's row and presence ------------------------------------------------------------


class Coordination:
    """A session's row in dbcode_session, made on first use (a claim, an open document), ended
    by :meth:`close` when the session ends (Session.close): its claims and presence go, and
    other processes' subscribers are told. If the process dies instead, the end of its holder
    connection ends them (store/coordination.py)."""

    def __init__(self, store: Store, identity: Identity, tasks: Tasks) -> None:
        self.store = store
        self.identity = identity
        self.tasks = tasks
        self.id: int | None = None
        self.generation = 0  # the store's holder generation the row belongs to
        # One session row however many requests race for it; presence changes in their order.
        self.lock = asyncio.Lock()

    async def session_id(self) -> int:
        """The session's row (made now if it has none, or if its holder was replaced)."""
        async with self.lock:
            return await self._session_id()

    async def _session_id(self) -> int:
        store = self.store
        await store.holder()  # replaced if its connection was lost: then a new row
        if self.id is None or self.generation != store.holder_generation:
            self.id = await store.open_session(self.identity.agent, self.identity.mode)
            self.generation = store.holder_generation
        return self.id

    def presence(self, workspace: str, path: str, *, present: bool) -> None:
        """didOpen / didClose: record who has the file open (in a task: the document is not
        held up; in order: the lock is taken in the order of the calls)."""

        async def record() -> None:
            try:
                async with self.lock:
                    sid = await self._session_id()
                    await self.store.set_presence(sid, workspace, path, present=present)
            except StoreError as exc:  # an unknown workspace (a new file's first buffer)
                log.info("presence of %s/%s not recorded: %s", workspace, path, exc)

        self.tasks.run(record())

    async def identity_changed(self) -> None:
        """dbcode/configure changed the agent or mode: the session's row follows (a row of a
        replaced holder is not revived: the next open makes a new one with the new identity)."""
        async with self.lock:
            if self.id is not None and self.generation == self.store.holder_generation:
                await self.store.update_session(self.id, self.identity.agent, self.identity.mode)

    async def close(self) -> None:
        if self.id is not None:
            sid, self.id = self.id, None
            await self.store.close_session(sid)


# -- subscriptions: dbcode/didComment, dbcode/didChangePresence ----------------------------------


async def notify_comments(
    store: Store, client: Client, workspace: str, since: int, *, filtered: bool = False
) -> None:
    """``dbcode/didComment`` for every review event after ``since``, in order, once.
    ``filtered`` (an agent on an enforced database): only events of threads the agent can
    read — the hub reads as owner; each thread is looked up once, as the agent (this task's
    role), and row-level security says whether it is visible."""
    visible: dict[int, bool] = {}
    async for e in store.subscribe_review(workspace, since):
        if client.closed:
            return
        if filtered:
            if e.thread not in visible:
                visible[e.thread] = await store.thread_visible(e.thread)
            if not visible[e.thread]:
                continue
        client.notify("dbcode/didComment", event_json(e))


async def notify_presence(store: Store, client: Client, workspace: str) -> None:
    """``dbcode/didChangePresence`` whenever claims or presence of the workspace change."""
    async for _ in store.hub.coordination_changes(workspace):
        if client.closed:
            return
        client.notify("dbcode/didChangePresence", {"workspace": workspace})


# -- diagnostics: open threads (source review) and others' claims (source claim) --------------


class ReviewFeed:
    """The review and claim diagnostics of every session of the process: one task per workspace
    with open documents wakes on its changesets, review events and claim changes (the hub's
    feeds, no extra connection), reads the threads and claims of each open path once, and hands
    them to every session's :class:`ReviewWatch`, which maps them onto its buffers.

    Before, each session had that task (three feed tasks and two head queries per session) and
    read the threads and claims itself: a changeset cost 1,000 sessions 2,000 queries, and each
    session open (its presence is a claim change) woke every other session's reads."""

    def __init__(self, store: Store, revision_text: RevisionText) -> None:
        self.store = store
        self.revision_text = revision_text
        self._watches: dict[str, dict[ReviewWatch, None]] = {}  # workspace -> its sessions
        self._asked: dict[str, dict[ReviewWatch, None]] = {}  # to refresh at the next wake
        self._everyone: set[str] = set()  # workspaces whose every session is to refresh
        # Sessions that have published review or claim diagnostics in a workspace.
        self._showing: dict[str, dict[ReviewWatch, None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dropped: set[str] = set()  # workspaces whose task drop() stopped

    def ensure(self, watch: ReviewWatch, workspace: str) -> None:
        """A document of ``workspace`` was opened in ``watch``'s session: refresh it soon."""
        self._watches.setdefault(workspace, {})[watch] = None
        self._asked.setdefault(workspace, {})[watch] = None
        wake = self._wake.get(workspace)
        if wake is None:
            wake = self._wake[workspace] = asyncio.Event()
            self._tasks[workspace] = asyncio.get_running_loop().create_task(self._run(workspace))
        wake.set()

    def drop(self, watch: ReviewWatch) -> None:
        """``watch``'s session ended. A workspace left without sessions stops being watched
        now (its feeds of the hub end), not at its next wake."""
        for workspace in list(self._watches):
            watches = self._watches[workspace]
            watches.pop(watch, None)
            self._asked.get(workspace, {}).pop(watch, None)
            self._showing.get(workspace, {}).pop(watch, None)
            if not watches and (task := self._tasks.get(workspace)) is not None:
                self._dropped.add(workspace)
                task.cancel()

    def shown(self, watch: ReviewWatch, workspace: str) -> None:
        """``watch`` published review or claim diagnostics in ``workspace``."""
        self._showing.setdefault(workspace, {})[watch] = None

    def _everyone_soon(self, workspace: str, delay: float) -> None:
        self._everyone.add(workspace)
        wake = self._wake.get(workspace)
        if wake is None:
            return
        if delay:
            asyncio.get_running_loop().call_later(delay, wake.set)
        else:
            wake.set()

    async def _run(self, workspace: str) -> None:
        store = self.store
        wake = self._wake[workspace]

        async def follow(items: AsyncIterator[Any], delay: float) -> None:
            async for _ in items:
                self._everyone_soon(workspace, delay)

        helpers: list[asyncio.Task[None]] = []
        retries = 0
        try:
            loop = asyncio.get_running_loop()
            since = await store.head(workspace)
            review_since = await store.review_head(workspace)
            helpers = [
                loop.create_task(
                    follow(store.subscribe(workspace, since), REVIEW_AFTER_CHANGESET_S)
                ),
                loop.create_task(follow(store.subscribe_review(workspace, review_since), 0)),
                loop.create_task(follow(store.hub.coordination_changes(workspace), 0)),
            ]
            while True:
                await wake.wait()
                wake.clear()
                watches = self._watches.get(workspace, {})
                if workspace in self._everyone:
                    self._everyone.discard(workspace)
                    self._asked.pop(workspace, None)
                    targets = list(watches)
                else:
                    targets = [w for w in self._asked.pop(workspace, {}) if w in watches]
                try:
                    loading = await self._refresh(workspace, targets)
                except StoreError as exc:
                    log.warning("review diagnostics of %s: %s", workspace, exc)
                    loading = []
                if loading and retries < REVIEW_LOAD_RETRIES_MAX:
                    retries += 1
                    asked = self._asked.setdefault(workspace, {})
                    asked.update(dict.fromkeys(loading))
                    loop.call_later(REVIEW_AFTER_CHANGESET_S, wake.set)
                elif not loading:
                    retries = 0
                for w in [w for w in watches if not w.watches(workspace)]:
                    del watches[w]
                if not watches:
                    return
        except Exception:
            log.exception("review diagnostics of %s stopped", workspace)
        finally:
            for task in helpers:
                task.cancel()
            del self._wake[workspace], self._tasks[workspace]
            left = self._watches.pop(workspace, {})
            self._asked.pop(workspace, None)
            self._showing.pop(workspace, None)
            self._everyone.discard(workspace)
            if workspace in self._dropped:  # stopped by drop(): a session may have come since
                self._dropped.discard(workspace)
                for w in left:
                    if w.watches(workspace):
                        self.ensure(w, workspace)

    async def _refresh(self, workspace: str, targets: list[ReviewWatch]) -> list[ReviewWatch]:
        """Publish the diagnostics of ``targets``' open documents of ``workspace``: the threads
        and claims of each path read once for all. Returns the sessions with a document still
        loading (no revision yet)."""
        store = self.store
        paths = sorted({p for w in targets for p in w.paths(workspace)})
        chosen = set(targets)
        loading: dict[ReviewWatch, None] = {}
        texts: dict[tuple[str, int], str] = {}
        for path in paths:
            try:
                threads = (await store.threads(workspace, path))[:THREADS_PER_FILE_SHOWN_MAX]
                claims = await store.claims(workspace, path)
            except StoreError:
                threads, claims = [], []
            # Nothing to show on the path (the common case): only the sessions that show
            # something have work (to clear it), not all 1,000.
            showing = self._showing.get(workspace, {})
            for w in targets if threads or claims else [w for w in showing if w in chosen]:
                try:
                    if await w.publish(workspace, path, threads, claims, texts):
                        loading[w] = None
                except Exception:  # one session's failure must not stop the others'
                    log.exception("review diagnostics of %s/%s failed", workspace, path)
        return list(loading)

    async def close(self) -> None:
        self._dropped.clear()
        for task in list(self._tasks.values()):
            task.cancel()


class ReviewWatch:
    """Keeps the review and claim diagnostics of one session's open documents, from what the
    process' :class:`ReviewFeed` reads for all sessions."""

    def __init__(
        self, feed: ReviewFeed, client: Client, identity: Identity, docs: dict[str, OpenDoc]
    ) -> None:
        self.feed = feed
        self.client = client
        self.identity = identity
        self.docs = docs  # the session's open documents (read only)

    def ensure(self, workspace: str) -> None:
        """A document of ``workspace`` was opened: watch the workspace (once), refresh now."""
        self.feed.ensure(self, workspace)

    def close(self) -> None:
        self.feed.drop(self)

    def watches(self, workspace: str) -> bool:
        """The session goes on and has a document of ``workspace`` open."""
        return not self.client.closed and any(d.workspace == workspace for d in self.docs.values())

    def paths(self, workspace: str) -> set[str]:
        if self.client.closed:
            return set()
        return {d.path for d in self.docs.values() if d.workspace == workspace}

    async def publish(
        self,
        workspace: str,
        path: str,
        threads: list[Thread],
        claims: list[Claim],
        texts: dict[tuple[str, int], str],
    ) -> bool:
        """Publish the diagnostics of this session's documents of ``path`` (of ``threads`` and
        of the claims of other agents than the session's); True if one is still loading."""
        if self.client.closed:
            return False
        loading = False
        agent = self.identity.agent
        claims = [c for c in claims if c.agent != agent]
        for doc in [d for d in self.docs.values() if d.workspace == workspace and d.path == path]:
            shown = doc.diagnostics
            if not threads and not claims and not shown.get("review") and not shown.get("claim"):
                continue  # nothing shown, nothing to show: the common case, no work
            if doc.base_rev == 0 and (threads or claims):
                loading = True
                continue
            await self._publish(doc, threads, claims, texts)
        return loading

    async def _place(
        self,
        doc: OpenDoc,
        rev: int,
        start: int,
        end: int,
        texts: dict[tuple[str, int], str],
        edits_of: dict[int, list[Edit]],
    ) -> RangeJson | None:
        """The LSP range in ``doc``'s buffer of ``[start, end)`` of revision ``rev`` (None: it
        is beyond the buffer's end)."""
        buffer = doc.text
        if rev not in edits_of:
            key = (doc.path, rev)
            if key not in texts:
                texts[key] = await self.feed.revision_text(doc.workspace, doc.path, rev)
            edits_of[rev] = diff_edits(texts[key], buffer, cleanup=False)
        m = map_range(edits_of[rev], start, end)
        if m.end > len(buffer):
            return None
        return clamped_range(doc.index, m.start, m.end, self.client.encoding)

    async def _publish(
        self,
        doc: OpenDoc,
        threads: list[Thread],
        claims: list[Claim],
        texts: dict[tuple[str, int], str],
    ) -> None:
        edits_of: dict[int, list[Edit]] = {}
        review = []
        for t in threads:
            where = await self._place(doc, t.revision, t.start, t.end, texts, edits_of)
            if where is not None:
                review.append(review_diagnostic_json(t, where))
        claimed = []
        for c in claims:
            if c.whole:
                where = clamped_range(doc.index, 0, 0, self.client.encoding)
            else:
                where = await self._place(doc, c.revision, c.start, c.end, texts, edits_of)
                if where is None:
                    continue
            claimed.append(claim_diagnostic_json(c, where))
        # Publish only what changed: a document without threads or claims never gets a publish
        # from here (it would interleave with the linters' publishes of a newer version).
        for source, items in (("review", review), ("claim", claimed)):
            if doc.diagnostics.get(source, []) != items:
                set_diagnostics(self.client, doc, source, items)
        if review or claimed:
            self.feed.shown(self, doc.workspace)
