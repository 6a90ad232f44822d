"""Review threads, claims and presence (SPEC: Review and Coordination): ``dbcode/comment``,
``reply``, ``resolve``, ``comments``, ``claim``, ``release``, ``claims``, ``presence``; the
``dbcode.resolveThread`` command of the Resolve code action; the code actions on review
diagnostics. Params arrive as plain JSON, checked here (dbcode.py's checkers); ranges come and
go in the session's position encoding, the store works in code points. The session's row,
presence and the review diagnostics are server/coordination.py's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lsprotocol import types

from ...store import InvalidInput, validate
from ...store.coordination import CLAIM_TTL_S_DEFAULT
from ...text.positions import LineIndex, PositionError
from ...uris import make_uri, parse_uri
from ..auth import may
from ..client import workspace_edit
from ..coordination import claim_json, thread_json
from .dbcode import _int, _obj, _str, _workspace

if TYPE_CHECKING:
    from ...text.positions import Encoding
    from ..documents import OpenDoc
    from ..session import Session

RESOLVE_COMMAND = "dbcode.resolveThread"


def _lines(p: dict[str, Any]) -> tuple[int, int] | None:
    """``lines``: [FIRST, LAST], 1-based and inclusive, as the CLI gives them (the store words
    a line beyond the end exactly as for the CLI's direct path)."""
    got = p.get("lines")
    if got is None:
        return None
    if (
        not isinstance(got, list)
        or len(got) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in got)
        or not 1 <= got[0] <= got[1]
    ):
        raise InvalidInput(f"invalid lines {got!r}: use [FIRST, LAST], 1-based and FIRST <= LAST")
    return got[0], got[1]


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


# -- review threads --------------------------------------------------------------------------


async def comment(session: Session, params: Any) -> Any:
    """Open a thread on a range of a file (or on ``lines``, 1-based, as the CLI gives them);
    the range refers to ``revision``, by default the revision of the session's buffer of the
    file (else the current one). The store locates it on the text it reads, in the transaction
    that opens the thread (two round trips)."""
    p = _obj(params, "dbcode/comment")
    uri = _str(p, "uri")
    workspace, path = parse_uri(uri)
    may(session, 1, workspace, path)
    revision = _int(p, "revision", optional=True)
    if revision is None:
        doc = session.docs.get(uri)
        if doc is not None and doc.base_rev > 0:
            revision = doc.base_rev
    rng = p.get("range")
    lines = _lines(p)
    if lines is not None and rng is not None:
        raise InvalidInput("give 'range' or 'lines', not both")
    encoding = session.client.encoding
    made = await session.shared.store.comment(
        workspace,
        path,
        _str(p, "text"),
        agent=session.identity.agent,
        lines=lines,
        locate=None if lines is not None else lambda text: _span(LineIndex(text), rng, encoding),
        revision=revision,
        kind=_str(p, "kind", optional=True) or "note",
        replacement=_str(p, "replacement", optional=True),
    )
    return {"thread": made.thread, "id": made.id}


async def reply(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/reply")
    cid = await session.shared.store.reply(
        _workspace(p), _int(p, "thread"), _str(p, "text"), agent=session.identity.agent
    )
    return {"id": cid}


async def resolve(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/resolve")
    workspace = _workspace(p)
    resolved = p.get("resolved", True)
    if not isinstance(resolved, bool):
        raise InvalidInput("parameter 'resolved' must be true or false")
    changed = await session.shared.store.resolve(
        workspace, _int(p, "thread"), agent=session.identity.agent, resolved=resolved
    )
    return {"changed": changed}  # false: it was already resolved (or open)


async def comments(session: Session, params: Any) -> Any:
    """Threads where they are now (each revision's text read once, for its ranges)."""
    p = _obj(params, "dbcode/comments")
    workspace = _workspace(p)
    state = _str(p, "state", optional=True) or "open"
    store = session.shared.store
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
        out.append(thread_json(t, indexes[key], session.client.encoding) | _lines_json(t.lines))
    return out


def _lines_json(lines: tuple[int, int] | None) -> dict[str, Any]:
    """Where a thread or claim is now as the CLI counts it: 1-based lines (None: whole file,
    or a deleted one), so that a client need not count lines from LSP positions."""
    return {"startLine": lines[0] if lines else None, "endLine": lines[1] if lines else None}


async def resolve_thread(session: Session, args: Any) -> None:
    """The ``dbcode.resolveThread`` command (workspace/executeCommand, from the Resolve code
    action): arguments [workspace, thread]."""
    if not isinstance(args, (list, tuple)) or len(args) != 2:
        raise InvalidInput(f"{RESOLVE_COMMAND} takes [workspace, thread]")
    workspace, thread = args
    if not isinstance(thread, int) or isinstance(thread, bool):
        raise InvalidInput(f"invalid thread id {thread!r}")
    await session.shared.store.resolve(
        validate.check_workspace(workspace), thread, agent=session.identity.agent
    )


def code_actions(session: Session, doc: OpenDoc, params: types.CodeActionParams) -> list[Any]:
    """Resolve on every review diagnostic in the request's context; Apply suggestion on a
    suggestion's (an edit of the buffer: the thread's range becomes its replacement)."""
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
                    edit=workspace_edit(session.client, doc.uri, doc.version, [edit]),
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


# -- claims and presence ---------------------------------------------------------------------


async def claim(session: Session, params: Any) -> Any:
    """Claim a file (or a range of its current revision, or ``lines`` of it, 1-based) for the
    session: the claim ends with the session (Session.close), or its process. ``detached``:
    it does not (a CLI call's claim, which outlives its short session: until released or
    expired, as the direct path's)."""
    p = _obj(params, "dbcode/claim")
    workspace, path = parse_uri(_str(p, "uri"))
    may(session, 2, workspace, path)
    store = session.shared.store
    span = None
    lines = _lines(p)
    detached = p.get("detached", False)
    if not isinstance(detached, bool):
        raise InvalidInput("parameter 'detached' must be true or false")
    if lines is not None and p.get("range") is not None:
        raise InvalidInput("give 'range' or 'lines', not both")
    if p.get("range") is not None:
        f = await store.read(workspace, path)
        span = _span(LineIndex(f.text), p["range"], session.client.encoding)
    ttl = p.get("ttlSeconds", CLAIM_TTL_S_DEFAULT)
    exclusive = p.get("exclusive", False)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise InvalidInput("parameter 'ttlSeconds' must be a number")
    if not isinstance(exclusive, bool):
        raise InvalidInput("parameter 'exclusive' must be true or false")
    made = await store.claim(
        workspace,
        path,
        agent=session.identity.agent,
        lines=lines,
        span=span,
        note=_str(p, "note", optional=True) or "",
        exclusive=exclusive,
        ttl_s=float(ttl),
        claim_id=_int(p, "id", optional=True),
        session=None if detached else await session.coordination.session_id(),
    )
    out = claim_json(made) | {"whole": made.whole}
    if not made.whole:  # where, as the CLI words it: lines (1-based) or code points
        out["lines"] = list(made.lines) if made.lines is not None else None
        out["span"] = [made.start, made.end]
    return out


async def release(session: Session, params: Any) -> Any:
    """Release a claim of this agent; ``workspace`` (optional) is checked against the claim's,
    as the CLI does."""
    p = _obj(params, "dbcode/release")
    claim_id = _int(p, "id")
    store = session.shared.store
    if p.get("workspace") is not None:
        workspace = _workspace(p)
    else:
        found = await store.claim_workspace(claim_id)
        if found is None:
            raise InvalidInput(f"no claim {claim_id} (released or expired?)")
        workspace = found
    await store.release(workspace, claim_id, agent=session.identity.agent)
    return None


async def claims(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/claims")
    workspace = _workspace(p)
    store = session.shared.store
    out = []
    indexes: dict[tuple[str, int], LineIndex] = {}
    for c in await store.claims(workspace, _str(p, "path", optional=True)):
        index = None
        if not c.whole:
            key = (c.path, c.revision)
            if key not in indexes:
                indexes[key] = LineIndex(await store.revision_text(workspace, *key))
            index = indexes[key]
        out.append(
            claim_json(c, index, session.client.encoding)
            | {"path": c.path}
            | _lines_json(None if c.whole else c.lines)
        )
    return out


async def presence(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/presence")
    workspace = _workspace(p)
    return [
        {
            "agent": r.agent,
            "path": r.path,
            "uri": make_uri(workspace, r.path),
            "mode": r.mode,
            "since": r.since.isoformat(),
        }
        for r in await session.shared.store.presence(workspace, _str(p, "path", optional=True))
    ]
