"""The LSP side of review threads, claims and presence (SPEC.md, Review and Coordination).

Additive on purpose (the server is being re-cut): ``register(server, session, lean)`` adds the
``dbcode/comment``, ``reply``, ``resolve``, ``comments``, ``claim``, ``release``, ``claims`` and
``presence`` requests; ``notify_comments`` feeds ``dbcode/didComment`` to a subscriber;
``Coordination`` is a session's row in ``dbcode_session`` (claims made by the session hang on
it and end with it, also when the process is killed: store/coordination.py). Ranges come and
go in the session's position encoding; the store works in code points.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ..store import Claim, InvalidInput, ReviewEvent, StoreError, Thread, validate
from ..store.coordination import CLAIM_TTL_S_DEFAULT
from ..text.positions import Encoding, LineIndex, PositionError
from ..uris import make_uri, parse_uri

log = logging.getLogger(__name__)

CODE_CLAIMED = 423

Lean = Callable[[str], Callable[[Callable[..., Awaitable[Any]]], Any]]


def claim_lsp(c: Claim, index: LineIndex | None = None, encoding: Encoding = Encoding.UTF16) -> Any:
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
        out["range"] = _range(index, c.start, c.end, encoding)
    return out


def _range(index: LineIndex, start: int, end: int, encoding: Encoding) -> dict[str, Any]:
    n = len(index.text)
    (sl, sc), (el, ec) = (
        index.position(min(start, n), encoding),
        index.position(min(end, n), encoding),
    )
    return {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}}


def _span(index: LineIndex, rng: Any, encoding: Encoding) -> tuple[int, int]:
    """Offsets of an LSP range (strict: a range beyond the end of the text is refused)."""
    try:
        start = index.offset(int(rng["start"]["line"]), int(rng["start"]["character"]), encoding)
        end = index.offset(int(rng["end"]["line"]), int(rng["end"]["character"]), encoding)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PositionError):
            raise InvalidInput(f"range {rng} is not within the file: {exc}") from None
        raise InvalidInput(f"invalid range {rng!r}: use {{start, end}} positions") from None
    if end < start:
        raise InvalidInput(f"invalid range {rng!r}: it ends before it starts")
    return start, end


def thread_lsp(t: Thread, index: LineIndex | None, encoding: Encoding) -> dict[str, Any]:
    return {
        "thread": t.id,
        "uri": make_uri(t.workspace, t.path),
        "path": t.path,
        "range": _range(index, t.start, t.end, encoding) if index is not None else None,
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


def event_lsp(e: ReviewEvent) -> dict[str, Any]:
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


class Coordination:
    """A session's row in dbcode_session, made on first use, ended with the session."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.id: int | None = None
        self.generation = 0  # the store's holder generation the row belongs to
        # One session row however many requests race for it; presence changes in their order.
        self.lock = asyncio.Lock()

    async def session_id(self) -> int:
        store = self.session.store
        await store.holder()  # replaced if its connection was lost: then a new row
        if self.id is None or self.generation != store.holder_generation:
            self.id = await store.open_session(self.session.agent, self.session.mode)
            self.generation = store.holder_generation
        return self.id

    async def close(self) -> None:
        if self.id is not None:
            sid, self.id = self.id, None
            await self.session.store.close_session(sid)


_coordination: weakref.WeakKeyDictionary[Any, Coordination] = weakref.WeakKeyDictionary()


async def _locked_session_id(session: Any) -> int:
    coord = coordination(session)
    async with coord.lock:
        return await coord.session_id()


def coordination(session: Any) -> Coordination:
    found = _coordination.get(session)
    if found is None:
        found = _coordination[session] = Coordination(session)
    return found


async def end_session(session: Any) -> None:
    """The session ends: its claims and presence go (others are told)."""
    found = _coordination.pop(session, None)
    if found is not None:
        await found.close()


# -- diagnostics: open threads (source review) and others' claims (source claim) ----------

# After a changeset, the diagnostics are refreshed this much later: the push of the change to
# the buffers lands meanwhile (a burst is shown once). Comments and claims show at once.
REVIEW_AFTER_CHANGESET_S = 0.1
# Refreshes retried while a document is still loading, at most.
REVIEW_LOAD_RETRIES_MAX = 50
_SEVERITY = {"note": 3, "suggestion": 4, "blocking": 2}  # Information, Hint, Warning


class ReviewWatch:
    """Keeps the review and claim diagnostics of a session's open documents: one task per
    workspace with open documents wakes on its changesets, review events and claim changes
    (the hub's feeds, no extra connection), and republishes them, mapped onto each buffer."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.wake: dict[str, asyncio.Event] = {}

    def ensure(self, workspace: str) -> None:
        wake = self.wake.get(workspace)
        if wake is None:
            wake = self.wake[workspace] = asyncio.Event()
            self.tasks[workspace] = self.session.run_task(self._run(workspace, wake))
        wake.set()

    async def _run(self, workspace: str, wake: asyncio.Event) -> None:
        session, store = self.session, self.session.store

        loop = asyncio.get_running_loop()

        async def follow(items: Any, delay: float) -> None:
            async for _ in items:
                if delay:
                    loop.call_later(delay, wake.set)
                else:
                    wake.set()

        async def coord() -> None:
            async for _ in store.hub.coordination_changes(workspace):
                wake.set()

        helpers = [
            session.run_task(
                follow(
                    store.subscribe(workspace, await store.head(workspace)),
                    REVIEW_AFTER_CHANGESET_S,
                )
            ),
            session.run_task(
                follow(store.subscribe_review(workspace, await store.review_head(workspace)), 0)
            ),
            session.run_task(coord()),
        ]
        retries = 0
        try:
            while not session.closed:
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
                if not any(d.workspace == workspace for d in session.docs.values()):
                    return
        finally:
            for task in helpers:
                task.cancel()
            self.wake.pop(workspace, None)
            self.tasks.pop(workspace, None)

    async def refresh(self, workspace: str) -> bool:
        """Publish the diagnostics of the workspace's open documents; True if one of them is
        still loading (no revision yet)."""
        session, store = self.session, self.session.store
        from ..store.review import THREADS_PER_FILE_SHOWN_MAX

        docs = [d for d in session.docs.values() if d.workspace == workspace]
        loading = False
        texts: dict[tuple[str, int], str] = {}
        for path in sorted({d.path for d in docs}):
            try:
                threads = (await store.threads(workspace, path))[:THREADS_PER_FILE_SHOWN_MAX]
                claims = [
                    c for c in await store.claims(workspace, path) if c.agent != session.agent
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
        doc: Any,
        rev: int,
        start: int,
        end: int,
        texts: dict[tuple[str, int], str],
        edits_of: dict[int, Any],
    ) -> dict[str, Any] | None:
        """The LSP range in ``doc``'s buffer of ``[start, end)`` of revision ``rev``."""
        from ..text.anchors import map_range
        from ..text.diff import diff_edits

        buffer = doc.index.text
        if rev not in edits_of:
            key = (doc.path, rev)
            if key not in texts:
                texts[key] = await self.session.store.revision_text(doc.workspace, doc.path, rev)
            edits_of[rev] = diff_edits(texts[key], buffer, cleanup=False)
        m = map_range(edits_of[rev], start, end)
        if m.end > len(buffer):
            return None
        return _range(doc.index, m.start, m.end, self.session.encoding)

    async def _publish(
        self,
        doc: Any,
        threads: list[Thread],
        claims: list[Claim],
        texts: dict[tuple[str, int], str],
    ) -> None:
        session = self.session
        edits_of: dict[int, Any] = {}
        review = []
        for t in threads:
            where = await self._place(doc, t.revision, t.start, t.end, texts, edits_of)
            if where is None:
                continue
            first = t.comments[0] if t.comments else None
            head = f"{first.agent}: {first.text}" if first else t.kind
            more = f" (+{len(t.comments) - 1} replies)" if len(t.comments) > 1 else ""
            stale = " [outdated]" if t.outdated else ""
            review.append(
                {
                    "range": where,
                    "severity": _SEVERITY.get(t.kind, 3),
                    "source": "review",
                    "message": f"{head}{more}{stale}",
                    "data": {
                        "thread": t.id,
                        "kind": t.kind,
                        **({"replacement": t.replacement} if t.replacement is not None else {}),
                    },
                }
            )
        claimed = []
        for c in claims:
            if c.whole:
                where = _range(doc.index, 0, 0, session.encoding)
            else:
                found = await self._place(doc, c.revision, c.start, c.end, texts, edits_of)
                if found is None:
                    continue
                where = found
            kind = "exclusively " if c.exclusive else ""
            note = f": {c.note}" if c.note else ""
            claimed.append(
                {
                    "range": where,
                    "severity": 3,
                    "source": "claim",
                    "message": f"claimed {kind}by {c.agent}{note}"
                    f" (until {c.expires_at:%H:%M:%S %Z})",
                    "data": {"claim": c.id},
                }
            )
        # Publish only what changed: a document without threads or claims never gets a publish
        # from here (it would interleave with the linters' publishes of a newer version).
        for source, items in (("review", review), ("claim", claimed)):
            shown = doc.extra.setdefault("coordination_shown", {})
            if shown.get(source, []) != items:
                shown[source] = items
                session.set_diagnostics(doc, source, None, as_json=items)


_watches: weakref.WeakKeyDictionary[Any, ReviewWatch] = weakref.WeakKeyDictionary()


def watch(session: Any) -> ReviewWatch:
    found = _watches.get(session)
    if found is None:
        found = _watches[session] = ReviewWatch(session)
    return found


def presence_changed(session: Any, workspace: str, path: str, *, present: bool) -> None:
    """didOpen / didClose: record who has the file open (a task: the document is not held up)."""

    async def record() -> None:
        coord = coordination(session)
        try:
            async with coord.lock:
                sid = await coord.session_id()
                await session.store.set_presence(sid, workspace, path, present=present)
        except StoreError as exc:  # an unknown workspace (a new file's first buffer)
            log.info("presence of %s/%s not recorded: %s", workspace, path, exc)

    session.run_task(record())
    if present:
        watch(session).ensure(workspace)


async def notify_presence(session: Any, workspace: str) -> None:
    """``dbcode/didChangePresence`` whenever claims or presence of the workspace change."""
    async for _ in session.store.hub.coordination_changes(workspace):
        if session.closed:
            return
        session.notify_raw("dbcode/didChangePresence", {"workspace": workspace})


async def notify_comments(session: Any, workspace: str, since: int) -> None:
    """``dbcode/didComment`` for every review event after ``since``, in order, once."""
    async for e in session.store.subscribe_review(workspace, since):
        if session.closed:
            return
        session.notify_raw("dbcode/didComment", event_lsp(e))


RESOLVE_COMMAND = "dbcode.resolveThread"


def code_actions(session: Any, doc: Any, params: Any) -> list[Any]:
    """Resolve on every review diagnostic in the request's context; Apply suggestion on a
    suggestion's (an edit of the buffer: the thread's range becomes its replacement)."""
    from lsprotocol import types

    from .features import _workspace_edit

    actions: list[Any] = []
    for d in params.context.diagnostics or ():
        data = d.data if isinstance(d.data, dict) else None
        if d.source != "review" or data is None or not isinstance(data.get("thread"), int):
            continue
        thread = data["thread"]
        replacement = data.get("replacement")
        if data.get("kind") == "suggestion" and isinstance(replacement, str):
            edit = types.TextEdit(range=d.range, new_text=replacement)
            actions.append(
                types.CodeAction(
                    title=f"dbcode: Apply suggestion (thread {thread})",
                    kind=types.CodeActionKind.QuickFix,
                    diagnostics=[d],
                    edit=_workspace_edit(session, doc.uri, doc.version, [edit]),
                    is_preferred=True,
                )
            )
        actions.append(
            types.CodeAction(
                title=f"dbcode: Resolve (thread {thread})",
                kind=types.CodeActionKind.QuickFix,
                diagnostics=[d],
                command=types.Command(
                    title="Resolve", command=RESOLVE_COMMAND, arguments=[doc.workspace, thread]
                ),
            )
        )
    return actions


def register(server: Any, session: Any, lean: Lean) -> None:
    from .features import _int, _obj, _str  # features imports this module

    store = session.store

    @server.command(RESOLVE_COMMAND)
    async def resolve_command(ls: Any, *args: Any) -> None:
        """workspace/executeCommand from the Resolve code action: [workspace, thread]."""
        from .features import rpc_error

        try:
            if not isinstance(args, (list, tuple)) or len(args) != 2:
                raise InvalidInput(f"{RESOLVE_COMMAND} takes [workspace, thread]")
            workspace, thread = args
            if not isinstance(thread, int):
                raise InvalidInput(f"invalid thread id {thread!r}")
            await store.resolve(validate.check_workspace(workspace), thread, agent=session.agent)
        except Exception as exc:
            raise rpc_error(exc) from None

    async def index_of(workspace: str, path: str, revision: int | None = None) -> Any:
        f = await store.read(workspace, path, revision)
        return f, LineIndex(f.text)

    @lean("dbcode/comment")
    async def comment(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/comment")
        uri = _str(p, "uri")
        workspace, path = parse_uri(uri)
        revision = _int(p, "revision", optional=True)
        if revision is None:
            doc = session.docs.get(uri)
            if doc is not None and doc.base_rev > 0:
                revision = doc.base_rev
        rng = p.get("range")
        made = await store.comment(
            workspace,
            path,
            _str(p, "text"),
            agent=session.agent,
            locate=lambda text: _span(LineIndex(text), rng, session.encoding),
            revision=revision,
            kind=_str(p, "kind", optional=True) or "note",
            replacement=_str(p, "replacement", optional=True),
        )
        return {"thread": made.thread, "id": made.id}

    @lean("dbcode/reply")
    async def reply(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/reply")
        workspace = validate.check_workspace(_str(p, "workspace"))
        cid = await store.reply(workspace, _int(p, "thread"), _str(p, "text"), agent=session.agent)
        return {"id": cid}

    @lean("dbcode/resolve")
    async def resolve(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/resolve")
        workspace = validate.check_workspace(_str(p, "workspace"))
        resolved = p.get("resolved", True)
        if not isinstance(resolved, bool):
            raise InvalidInput("parameter 'resolved' must be true or false")
        await store.resolve(workspace, _int(p, "thread"), agent=session.agent, resolved=resolved)
        return None

    @lean("dbcode/comments")
    async def comments(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/comments")
        workspace = validate.check_workspace(_str(p, "workspace"))
        state = _str(p, "state", optional=True) or "open"
        threads = await store.threads(workspace, _str(p, "path", optional=True), state)
        indexes: dict[tuple[str, int], LineIndex | None] = {}
        out = []
        for t in threads:
            key = (t.path, t.revision)
            if key not in indexes:
                try:
                    indexes[key] = LineIndex(await store.revision_text(workspace, *key))
                except Exception:  # a deleted file: no text, no range
                    indexes[key] = None
            out.append(thread_lsp(t, indexes[key], session.encoding))
        return out

    @lean("dbcode/claim")
    async def claim(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/claim")
        workspace, path = parse_uri(_str(p, "uri"))
        span = None
        if p.get("range") is not None:
            _, index = await index_of(workspace, path)
            span = _span(index, p["range"], session.encoding)
        ttl = p.get("ttlSeconds", CLAIM_TTL_S_DEFAULT)
        exclusive = p.get("exclusive", False)
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
            raise InvalidInput("parameter 'ttlSeconds' must be a number")
        if not isinstance(exclusive, bool):
            raise InvalidInput("parameter 'exclusive' must be true or false")
        made = await store.claim(
            workspace,
            path,
            agent=session.agent,
            span=span,
            note=_str(p, "note", optional=True) or "",
            exclusive=exclusive,
            ttl_s=float(ttl),
            claim_id=_int(p, "id", optional=True),
            session=await _locked_session_id(session),
        )
        return {"id": made.id, "expiresAt": made.expires_at.isoformat()}

    @lean("dbcode/release")
    async def release(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/release")
        claim_id = _int(p, "id")
        workspace = await store.claim_workspace(claim_id)
        if workspace is None:
            raise InvalidInput(f"no claim {claim_id} (released or expired?)")
        await store.release(workspace, claim_id, agent=session.agent)
        return None

    @lean("dbcode/claims")
    async def claims(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/claims")
        workspace = validate.check_workspace(_str(p, "workspace"))
        out = []
        indexes: dict[tuple[str, int], LineIndex] = {}
        for c in await store.claims(workspace, _str(p, "path", optional=True)):
            index = None
            if not c.whole:
                key = (c.path, c.revision)
                if key not in indexes:
                    indexes[key] = LineIndex(await store.revision_text(workspace, *key))
                index = indexes[key]
            out.append(claim_lsp(c, index, session.encoding))
        return out

    @lean("dbcode/presence")
    async def presence(ls: Any, params: Any) -> Any:
        p = _obj(params, "dbcode/presence")
        workspace = validate.check_workspace(_str(p, "workspace"))
        return [
            {
                "agent": r.agent,
                "path": r.path,
                "uri": make_uri(workspace, r.path),
                "mode": r.mode,
                "since": r.since.isoformat(),
            }
            for r in await store.presence(workspace, _str(p, "path", optional=True))
        ]
