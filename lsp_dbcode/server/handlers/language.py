"""Language features on open documents: hover (blame), code actions, formatting, symbols,
folding, pulled diagnostics, and ``workspace/textDocumentContent``. Params and results are
lsprotocol objects (pygls structures and serialises them); each handler gets the document and
calls one function of the session's helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lsprotocol import types

from ...check import check_workspace
from ...store import InvalidInput, NotFound
from ...text.merge import resolve
from ...uris import make_uri
from ..blame import NOT_COMMITTED_MARKDOWN, base_line, hover_markdown, target_of
from ..client import workspace_edit
from ..findings import PULLED_SOURCES, as_objects, diagnostic_json, offsets_range_json, overlaps
from .dbcode import read
from .review import code_actions as review_actions

if TYPE_CHECKING:
    from ..documents import OpenDoc
    from ..session import Session


def _open_doc(session: Session, uri: str) -> OpenDoc:
    doc = session.docs.get(uri)
    if doc is None:
        raise InvalidInput(f"{uri} is not open in this session (send didOpen first)")
    return doc


def _range_json(rng: types.Range) -> dict[str, dict[str, int]]:
    return {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }


async def text_document_content(
    session: Session, params: types.TextDocumentContentParams
) -> types.TextDocumentContentResult:
    res = await read(session, params.uri, None)
    return types.TextDocumentContentResult(text=res["text"])


async def hover(session: Session, params: types.HoverParams) -> types.Hover | None:
    """Blame of the line: who last changed it, in which changeset, its message and meta, how
    long ago (SPEC: History). A line of an open buffer is mapped onto the buffer's base
    revision; a line the buffer itself changed is "not committed yet"."""
    uri = params.text_document.uri
    store = session.shared.store
    try:
        target = await target_of(store, session.docs, uri, None)
    except (InvalidInput, NotFound):
        return None  # not a dbcode document, or no such file (yet): nothing to say
    line = base_line(session.docs.get(uri), params.position.line)
    if line is None:
        value = NOT_COMMITTED_MARKDOWN
    else:
        runs = await store.blame(target.workspace, target.path, target.revision)
        run = next((r for r in runs if r.start_line <= line <= r.end_line), None)
        if run is None:
            return None
        value = hover_markdown(run, target.path, datetime.now(UTC))
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=value))


async def code_action(
    session: Session, params: types.CodeActionParams
) -> list[types.CodeAction] | None:
    doc = session.docs.get(params.text_document.uri)
    if doc is None:
        return None
    actions: list[types.CodeAction] = []
    client = session.client
    enc = client.encoding
    want = _range_json(params.range)
    for conflict in doc.conflicts:
        if not overlaps(offsets_range_json(doc.index, conflict.start, conflict.end, enc), want):
            continue
        for choice, title in (
            ("mine", "Keep mine"),
            ("theirs", "Take theirs"),
            ("both", "Keep both"),
        ):
            edit = resolve(doc.text, conflict, choice)  # type: ignore[arg-type]
            actions.append(
                types.CodeAction(
                    title=f"dbcode: {title}",
                    kind=types.CodeActionKind.QuickFix,
                    edit=workspace_edit(client, doc.uri, doc.version, doc.text_edits([edit], enc)),
                    is_preferred=choice == "mine",
                )
            )
    actions.extend(await session.lint.code_actions(doc, params))
    actions.extend(review_actions(session, doc, params))
    return actions or None


async def formatting(
    session: Session, params: types.DocumentFormattingParams
) -> list[types.TextEdit] | None:
    return await session.lint.format(_open_doc(session, params.text_document.uri), None)


async def range_formatting(
    session: Session, params: types.DocumentRangeFormattingParams
) -> list[types.TextEdit] | None:
    doc = _open_doc(session, params.text_document.uri)
    for pos in (params.range.start, params.range.end):  # a clear error for a range outside
        doc.index.offset(pos.line, pos.character, session.client.encoding)
    return await session.lint.format(doc, params.range)


async def will_save_wait_until(
    session: Session, params: types.WillSaveTextDocumentParams
) -> list[types.TextEdit] | None:
    doc = session.docs.get(params.text_document.uri)
    if doc is None or not session.format_on_save:
        return None
    return await session.lint.format(doc, None)


async def document_symbol(
    session: Session, params: types.DocumentSymbolParams
) -> list[types.DocumentSymbol] | None:
    return session.lint.symbols(_open_doc(session, params.text_document.uri))


async def folding_range(
    session: Session, params: types.FoldingRangeParams
) -> list[types.FoldingRange] | None:
    return session.lint.folds(_open_doc(session, params.text_document.uri))


async def document_diagnostic(
    session: Session, params: types.DocumentDiagnosticParams
) -> types.RelatedFullDocumentDiagnosticReport:
    doc = _open_doc(session, params.text_document.uri)
    await session.lint.ready(doc)
    items = [d for src in PULLED_SOURCES for d in doc.diagnostics.get(src, ())]
    return types.RelatedFullDocumentDiagnosticReport(items=as_objects(items))


async def workspace_diagnostic(
    session: Session, params: types.WorkspaceDiagnosticParams
) -> types.WorkspaceDiagnosticReport:
    shared = session.shared
    enc = session.client.encoding
    items: list[types.WorkspaceFullDocumentDiagnosticReport] = []
    for workspace in session.workspaces():
        report = await check_workspace(shared.store, shared.analyzer.ruff, workspace)
        for path, found in sorted(report.items()):
            uri = make_uri(workspace, path)
            doc = session.docs.get(uri)
            index = doc.index if doc else None
            if index is None or index.text != report.texts.get(path):
                index = report.index(path)
            found_json = [diagnostic_json(index, d, enc) for d in found]
            items.append(
                types.WorkspaceFullDocumentDiagnosticReport(
                    uri=uri, version=None, items=as_objects(found_json)
                )
            )
    return types.WorkspaceDiagnosticReport(items=items)  # type: ignore[arg-type]
