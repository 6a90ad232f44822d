"""didOpen, didChange, didClose, didSave: the buffers of a session.

didOpen, didChange and didClose run inline, in arrival order, straight from the decoded JSON
(no cattrs, no task): a didChange is applied before the next message is read. Text documents are
kept here (OpenDoc, LineIndex.replace per change), not by pygls' workspace, whose didChange
handling grows quadratically. Each returns False for params it cannot read (then ignored, and
logged)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ...store import NotFound, StoreError
from ...store.access import Forbidden
from ...text.edits import content_hash
from ...text.positions import LineIndex
from ...uris import parse_doc_uri, parse_uri
from .. import auth
from ..client import ERROR, WARNING
from ..documents import OpenDoc

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger(__name__)

CHANGES_PER_NOTIFICATION_MAX = 5000

Span = tuple[int, int, int, int]  # LSP range: start line, character, end line, character


def _acquire_now(lock: asyncio.Lock) -> None:
    """Take a free asyncio lock without awaiting (acquiring a free lock never suspends)."""
    coro = lock.acquire()
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("the lock was not free")


# -- didOpen ---------------------------------------------------------------------------------


def did_open(session: Session, params: Any) -> bool:
    try:
        item = params["textDocument"]
        uri, language_id, version, text = (
            item["uri"],
            item["languageId"],
            item["version"],
            item["text"],
        )
    except (TypeError, KeyError):
        return False
    if not (
        isinstance(uri, str)
        and isinstance(language_id, str)
        and type(version) is int
        and isinstance(text, str)
    ):
        return False
    open_document(session, uri, language_id, version, text)
    return True


def open_document(session: Session, uri: str, language_id: str, version: int, text: str) -> None:
    """The document is registered at once (a didChange right behind the didOpen finds it);
    reading the database happens in a task that holds the document's lock. A time-travel
    document (``dbcode://WS@SEQ/PATH``) is read-only: nothing to keep in step or commit, so it
    is not tracked (and opens without a warning)."""
    try:
        at = parse_doc_uri(uri)
        if session.account is not None and not session.account.can_read(at.workspace, at.path):
            raise Forbidden(session.account.name, "read", at.workspace, at.path)
        if at.seq is not None:
            return
        workspace, path = parse_uri(uri)
    except Forbidden as exc:
        session.client.show(ERROR, f"dbcode: cannot open {uri}: {exc}")
        session.tasks.run(auth.refused(session, "textDocument/didOpen", exc))
        return
    except StoreError as exc:
        session.client.show(WARNING, f"dbcode: cannot open {uri}: {exc}")
        return
    doc = OpenDoc(
        uri=uri,
        workspace=workspace,
        path=path,
        language_id=language_id,
        index=LineIndex(text),
        version=version,
    )
    old = session.docs.get(uri)
    if old is not None:
        session.forget(old)
    session.docs[uri] = doc
    session.shared.track(session.sync, doc)
    _acquire_now(doc.lock)  # released by _load
    session.tasks.run(_load(session, doc, text))
    if old is None:  # who has the file open; its review threads and others' claims shown
        session.coordination.presence(workspace, path, present=True)
        session.review.ensure(workspace)


async def _load(session: Session, doc: OpenDoc, opened_text: str) -> None:
    try:
        await _load_locked(session, doc, opened_text)
    finally:
        doc.lock.release()
    session.lint.on_change(doc, None)


async def _load_locked(session: Session, doc: OpenDoc, item_text: str) -> None:
    """What the buffer is based on: the revision it equals, the one dbcode/readFile served
    (the newer one is then pushed now), or else the current one (the buffer: local edits)."""
    workspace, path = doc.workspace, doc.path
    shared = session.shared
    await shared.watching(workspace)
    try:
        current = await shared.store.read(workspace, path)
        rev, text = current.revision, current.text
    except NotFound:
        rev, text = 0, ""
    except StoreError as exc:
        doc.broken = f"cannot read {path}: {exc}"
        session.client.show(ERROR, f"dbcode: {doc.broken}")
        return
    doc.seen_rev = doc.target_rev = rev
    doc.target_text = text
    served = session.read_revisions.get(doc.uri)
    if item_text == text:
        doc.base_rev, doc.base_text = rev, text
    elif (
        served is not None
        and served.text_hash == content_hash(item_text)
        and served.revision <= rev
    ):
        # The client opened what dbcode/readFile served earlier: that revision is the
        # base, and the buffer gets the newer one pushed now.
        base_rev = served.revision
        doc.base_rev = base_rev
        if rev > base_rev:  # changed between the client's read and its didOpen
            doc.target_agent = await session.commits.last_author(doc)
            if doc.target_agent and doc.target_agent != session.identity.agent:
                session.client.log(
                    f"{path}: revision {rev} by {doc.target_agent} (changed while opening)"
                )
        doc.base_text = (
            item_text if base_rev == 0 else await shared.revision_text(workspace, path, base_rev)
        )
        await session.sync.reconcile(doc)
    else:
        # Unknown origin: treat the buffer as local edits on the current revision.
        doc.base_rev, doc.base_text = rev, text
    session.sync.refresh_conflicts(doc)


# -- didChange -------------------------------------------------------------------------------


def did_change(session: Session, params: Any) -> bool:
    """The hottest message: read straight from the decoded JSON."""
    try:
        td = params["textDocument"]
        uri, version, raw = td["uri"], td["version"], params["contentChanges"]
    except (TypeError, KeyError):
        return False
    if not isinstance(uri, str) or type(version) is not int or not isinstance(raw, list):
        return False
    changes: list[tuple[Span | None, str]] = []
    for ch in raw:
        if not isinstance(ch, dict) or not isinstance(text := ch.get("text"), str):
            return False
        r = ch.get("range")
        if r is None:
            changes.append((None, text))
            continue
        try:
            start, end = r["start"], r["end"]
            span = (start["line"], start["character"], end["line"], end["character"])
        except (TypeError, KeyError):
            return False
        if not all(type(v) is int for v in span):
            return False
        changes.append((span, text))
    apply_changes(session, uri, version, changes)
    return True


def apply_changes(
    session: Session, uri: str, version: int, changes: list[tuple[Span | None, str]]
) -> None:
    """Apply one didChange to the buffer, synchronously (changes apply in arrival order)."""
    doc = session.docs.get(uri)
    if doc is None:
        log.warning("didChange for a document that is not open: %s", uri)
        return
    if doc.broken:
        return
    if len(changes) > CHANGES_PER_NOTIFICATION_MAX:
        _break(
            session,
            doc,
            f"one didChange carried {len(changes)} changes (limit {CHANGES_PER_NOTIFICATION_MAX})",
        )
        return
    session.lint.before_change(doc, changes)  # ruff's child gets it first (issue 4)
    encoding = session.client.encoding
    index = doc.index
    edits: list[tuple[int, int, str]] = []
    pending = doc.pending
    if (
        pending is not None
        and (plan := pending.plan) is not None
        and doc.version == pending.sent_version
        and changes == plan.changes
    ):
        # Exactly the pushed edit, on the buffer it was computed on (1,000 editors sending
        # back one commit's push): the revision's shared LineIndex, not one rebuilt each.
        edits, index = list(plan.offsets), plan.index
        changes = []
    try:
        for span, text in changes:
            if span is not None:
                start = index.offset(span[0], span[1], encoding)
                end = index.offset(span[2], span[3], encoding)
                if end < start:
                    raise ValueError(f"range end before start: {span}")
                edits.append((start, end, text))
                index = index.replace(start, end, text)
            else:
                edits.append((0, len(index.text), text))
                index = LineIndex(text)
    except ValueError as exc:  # PositionError included
        _break(session, doc, f"a change did not fit the buffer ({exc})")
        return
    doc.index = index
    doc.version = version
    session.sync.after_change(doc)
    if doc.conflicts or "<<<<<<<" in doc.text:  # a marker may be completed by one char
        session.sync.refresh_conflicts(doc)
    session.commits.buffer_changed(doc)
    session.lint.on_change(doc, edits)


def _break(session: Session, doc: OpenDoc, why: str) -> None:
    doc.broken = why
    log.error("%s: %s", doc.uri, why)
    session.client.show(
        ERROR,
        f"dbcode: {doc.path} is out of step with the server: {why}. Close and reopen it; "
        "nothing was written.",
    )


# -- didClose, didSave -----------------------------------------------------------------------


def did_close(session: Session, params: Any) -> bool:
    try:
        uri = params["textDocument"]["uri"]
    except (TypeError, KeyError):
        return False
    if not isinstance(uri, str):
        return False
    doc = session.docs.pop(uri, None)
    if doc is not None:
        session.forget(doc)
        session.coordination.presence(doc.workspace, doc.path, present=False)
        session.client.clear_diagnostics(uri)
    return True


async def did_save(session: Session, params: Any) -> None:
    try:
        uri = params["textDocument"]["uri"]
    except (TypeError, KeyError):
        log.warning("didSave without a textDocument.uri: ignored")
        return
    doc = session.docs.get(uri)
    if doc is None:
        return
    text = params.get("text")
    if isinstance(text, str) and text != doc.text:
        log.warning("didSave text differs from the tracked buffer of %s", uri)
    await session.commits.save(doc)
