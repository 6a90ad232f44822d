"""Blame of a document for the history requests (issue 16): which revision a URI means, which
line of that revision a buffer line is, and what a hover says about it. The store does the
work (``Store.blame``, ``Store.read_at``); the handlers are ``handlers.dbcode.blame`` and
``handlers.language.hover``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..store import InvalidInput
from ..store.history import line_hunks
from ..store.model import BlameRun
from ..text.diff import diff_edits
from ..uris import parse_doc_uri

if TYPE_CHECKING:
    from ..store import Store
    from .documents import OpenDoc

# Longest meta shown in a hover (characters of its JSON); the rest is cut with an ellipsis.
HOVER_META_CHARS_MAX = 300


@dataclass(frozen=True, slots=True)
class BlameTarget:
    """The revision of a file that a blame of a URI means."""

    workspace: str
    path: str
    revision: int


async def target_of(
    store: Store, docs: dict[str, OpenDoc], uri: str, revision: int | None
) -> BlameTarget:
    """``revision``, else the seq of a ``dbcode://WS@SEQ/PATH`` URI, else the base of the
    buffer open on ``uri`` in this session, else the current revision."""
    doc_uri = parse_doc_uri(uri)
    ws, path = doc_uri.workspace, doc_uri.path
    if doc_uri.seq is not None:
        at = await store.read_at(ws, path, doc_uri.seq)
        if revision is not None and revision != at.revision:
            raise InvalidInput(
                f"{uri} is revision {at.revision} of {path}; drop 'revision' or the @seq"
            )
        return BlameTarget(ws, path, at.revision)
    if revision is not None:
        return BlameTarget(ws, path, revision)
    doc = docs.get(uri)
    if doc is not None and doc.base_rev > 0:
        return BlameTarget(ws, path, doc.base_rev)
    return BlameTarget(ws, path, (await store.read(ws, path)).revision)


def base_line(doc: OpenDoc | None, line: int) -> int | None:
    """The line of the buffer's base revision that buffer line ``line`` is; None when the line
    is an edit of the buffer's own (not committed yet)."""
    if doc is None or doc.base_rev <= 0 or doc.text == doc.base_text:
        return line
    shift = 0
    edits = [(e.start, e.end, e.text) for e in diff_edits(doc.text, doc.base_text)]
    for first, end, count in line_hunks(doc.text, edits):
        if first <= line < end:
            return None
        if end <= line:
            shift += count - (end - first)
    return line + shift


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


NOT_COMMITTED_MARKDOWN = "Not committed yet: an edit in this buffer."
