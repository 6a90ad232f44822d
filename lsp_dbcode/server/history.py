"""History requests of a session (issue 16): ``dbcode/blame`` and blame on ``textDocument/hover``.

Registered by ``features.create_server`` through ``register``; only new handlers here, the
store does the work (``Store.blame``, ``Store.read_at``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from lsprotocol import types

from ..store import InvalidInput, NotFound
from ..store.history import line_hunks
from ..store.model import BlameRun
from ..text.diff import diff_edits
from ..uris import blame_json, parse_doc_uri
from .session import Session

# Longest meta shown in a hover (characters of its JSON); the rest is cut with an ellipsis.
HOVER_META_CHARS_MAX = 300

Lean = Callable[[str], Callable[[Callable[..., Awaitable[Any]]], Any]]


async def _revision_of(session: Session, uri: str, revision: int | None) -> tuple[str, str, int]:
    """(workspace, path, revision) that a blame of ``uri`` means: ``revision``, else the seq of
    a ``dbcode://WS@SEQ/PATH`` URI, else the open buffer's base, else the current one."""
    doc_uri = parse_doc_uri(uri)
    ws, path = doc_uri.workspace, doc_uri.path
    if doc_uri.seq is not None:
        at = await session.store.read_at(ws, path, doc_uri.seq)
        if revision is not None and revision != at.revision:
            raise InvalidInput(
                f"{uri} is revision {at.revision} of {path}; drop 'revision' or the @seq"
            )
        return ws, path, at.revision
    if revision is not None:
        return ws, path, revision
    doc = session.docs.get(uri)
    if doc is not None and doc.base_rev > 0:
        return ws, path, doc.base_rev
    f = await session.store.read(ws, path)
    return ws, path, f.revision


def _ago(when: datetime, now: datetime) -> str:
    s = max(0, int((now - when).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = s // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def hover_markdown(run: BlameRun, path: str, now: datetime) -> str:
    """Who last changed the line, in which changeset, its message and meta, how long ago."""
    where = f" (then `{run.path}`)" if run.path != path else ""
    text = (
        f"**{run.agent}** · seq {run.seq} · revision {run.revision}{where} · {_ago(run.time, now)}"
    )
    if run.message:
        text += f"\n\n{run.message}"
    if run.meta:
        meta = json.dumps(run.meta, ensure_ascii=False)
        if len(meta) > HOVER_META_CHARS_MAX:
            meta = meta[: HOVER_META_CHARS_MAX - 1] + "…"
        text += f"\n\n`{meta}`"
    return text


def register(server: Any, session: Session, lean: Lean, request: Callable[..., Any]) -> None:
    @lean("dbcode/blame")
    async def blame(ls: Any, params: Any) -> Any:
        """{uri, revision?} -> [{startLine, endLine, seq, revision, path, agent, time, message,
        meta}], lines 0-based inclusive (SPEC: History)."""
        if not isinstance(params, dict) or not isinstance(params.get("uri"), str):
            raise InvalidInput("dbcode/blame takes {uri, revision?}")
        rev = params.get("revision")
        if rev is not None and (not isinstance(rev, int) or isinstance(rev, bool) or rev < 1):
            raise InvalidInput("parameter 'revision' must be an integer >= 1")
        ws, path, revision = await _revision_of(session, params["uri"], rev)
        runs = await session.store.blame(ws, path, revision)
        return [blame_json(r, line_base=0) for r in runs]

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @request
    async def hover(ls: Any, params: types.HoverParams) -> types.Hover | None:
        uri, line = params.text_document.uri, params.position.line
        try:
            ws, path, revision = await _revision_of(session, uri, None)
        except (InvalidInput, NotFound):
            return None
        doc = session.docs.get(uri)
        if doc is not None and doc.base_rev > 0 and doc.text != doc.base_text:
            # The buffer has edits of its own: map its line onto the base revision's.
            shift = 0
            edits = [(e.start, e.end, e.text) for e in diff_edits(doc.text, doc.base_text)]
            for first, end, count in line_hunks(doc.text, edits):
                if first <= line < end:
                    return types.Hover(
                        contents=types.MarkupContent(
                            kind=types.MarkupKind.Markdown,
                            value="Not committed yet: an edit in this buffer.",
                        )
                    )
                if end <= line:
                    shift += count - (end - first)
            line += shift
        runs = await session.store.blame(ws, path, revision)
        run = next((r for r in runs if r.start_line <= line <= r.end_line), None)
        if run is None:
            return None
        return types.Hover(
            contents=types.MarkupContent(
                kind=types.MarkupKind.Markdown,
                value=hover_markdown(run, path, datetime.now(UTC)),
            )
        )
