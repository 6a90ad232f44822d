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
from collections.abc import AsyncIterator
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


class ReviewWatch:
    """Keeps the review and claim diagnostics of a session's open documents: one task per
    workspace with open documents wakes on its changesets, review events and claim changes
    (the hub's feeds, no extra connection), and republishes them, mapped onto each buffer."""

    def __init__(
        self,
        store: Store,
        client: Client,
        identity: Identity,
        tasks: Tasks,
        docs: dict[str, OpenDoc],
    ) -> None:
        self.store = store
        self.client = client
        self.identity = identity
        self.tasks = tasks
        self.docs = docs  # the session's open documents (read only)
        self.wake: dict[str, asyncio.Event] = {}

    def ensure(self, workspace: str) -> None:
        """A document of ``workspace`` was opened: watch the workspace (once), refresh now."""
        wake = self.wake.get(workspace)
        if wake is None:
            wake = self.wake[workspace] = asyncio.Event()
            self.tasks.run(self._run(workspace, wake))
        wake.set()

    async def _run(self, workspace: str, wake: asyncio.Event) -> None:
        store, loop = self.store, asyncio.get_running_loop()

        async def follow(items: AsyncIterator[Any], delay: float) -> None:
            async for _ in items:
                if delay:
                    loop.call_later(delay, wake.set)
                else:
                    wake.set()

        helpers = [
            self.tasks.run(
                follow(
                    store.subscribe(workspace, await store.head(workspace)),
                    REVIEW_AFTER_CHANGESET_S,
                )
            ),
            self.tasks.run(
                follow(store.subscribe_review(workspace, await store.review_head(workspace)), 0)
            ),
            self.tasks.run(follow(store.hub.coordination_changes(workspace), 0)),
        ]
        retries = 0
        try:
            while not self.client.closed:
                await wake.wait()
                wake.clear()
                try:
                    loading = await self.refresh(workspace)
                except StoreError as exc:
                    log.warning("review diagnostics of %s: %s", workspace, exc)
                    loading = False
                if loading and retries < REVIEW_LOAD_RETRIES_MAX:
                    retries += 1
                    loop.call_later(REVIEW_AFTER_CHANGESET_S, wake.set)
                elif not loading:
                    retries = 0
                if not any(d.workspace == workspace for d in self.docs.values()):
                    return
        finally:
            for task in helpers:
                task.cancel()
            self.wake.pop(workspace, None)

    async def refresh(self, workspace: str) -> bool:
        """Publish the diagnostics of the workspace's open documents; True if one of them is
        still loading (no revision yet)."""
        store = self.store
        docs = [d for d in self.docs.values() if d.workspace == workspace]
        loading = False
        texts: dict[tuple[str, int], str] = {}
        for path in sorted({d.path for d in docs}):
            try:
                threads = (await store.threads(workspace, path))[:THREADS_PER_FILE_SHOWN_MAX]
                claims = [
                    c for c in await store.claims(workspace, path) if c.agent != self.identity.agent
                ]
            except StoreError:
                threads, claims = [], []
            for doc in [d for d in docs if d.path == path]:
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
                texts[key] = await self.store.revision_text(doc.workspace, doc.path, rev)
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
