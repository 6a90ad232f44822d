"""End to end: real `dbcode serve` processes, real pytest-lsp clients, real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor, wait_until


@pytest.fixture
async def pair(database_url: str) -> AsyncIterator[tuple[Editor, Editor]]:
    a, b = await asyncio.gather(
        Editor.start(database_url, "alice"), Editor.start(database_url, "bob")
    )
    yield a, b
    await asyncio.gather(a.stop(), b.stop())


async def db_text(database_url: str, workspace: str, path: str) -> str:
    async with Store(database_url, max_size=1) as s:
        return (await s.read(workspace, path)).text


async def db_eventually(
    database_url: str, workspace: str, path: str, want: str, timeout: float = 10.0
) -> None:
    """The database reaches ``want`` (saves are notifications: no reply to wait for)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await db_text(database_url, workspace, path)
        if got == want:
            return
        if asyncio.get_running_loop().time() > deadline:
            assert got == want
        await asyncio.sleep(0.05)


async def test_save_pushes_to_other_editor(
    pair: tuple[Editor, Editor], store: Store, workspace: str, database_url: str
) -> None:
    a, b = pair
    await store.write(workspace, "app.py", "def f():\n    return 1\n", agent="seed")
    uri = make_uri(workspace, "app.py")
    await a.open(uri)
    bbuf = await b.open(uri)
    a.edit(uri, (1, 11), (1, 12), "42")
    a.save(uri)
    await wait_until(lambda: bbuf.applied, what="applyEdit at B")
    assert bbuf.text == "def f():\n    return 42\n"
    assert bbuf.text == await db_text(database_url, workspace, "app.py")
    # Minimal edits, not a whole-document replace.
    (change,) = bbuf.applied[0].edit.document_changes
    assert [e.new_text for e in change.edits] == ["42"] or len(change.edits[0].new_text) <= 2
    assert any("alice" in m.message for m in b.client.log_messages)


async def test_unsaved_edits_rebased_same_line(
    pair: tuple[Editor, Editor], store: Store, workspace: str, database_url: str
) -> None:
    a, b = pair
    await store.write(workspace, "m.py", "x = 1; y = 2\nz = 3\n", agent="seed")
    uri = make_uri(workspace, "m.py")
    await a.open(uri)
    bbuf = await b.open(uri)
    b.edit(uri, (0, 11), (0, 12), "20")  # B: y = 20 (unsaved)
    b.edit(uri, (1, 4), (1, 5), "30")  # B: z = 30 (unsaved)
    a.edit(uri, (0, 4), (0, 5), "10")  # A: x = 10, same line, no overlap
    a.save(uri)
    await wait_until(lambda: bbuf.applied, what="applyEdit at B")
    assert bbuf.text == "x = 10; y = 20\nz = 30\n"
    assert await db_text(database_url, workspace, "m.py") == "x = 10; y = 2\nz = 3\n"
    b.save(uri)
    await db_eventually(database_url, workspace, "m.py", "x = 10; y = 20\nz = 30\n")


async def test_overlapping_edits_conflict_and_resolution(
    pair: tuple[Editor, Editor], store: Store, workspace: str, database_url: str
) -> None:
    from lsprotocol import types

    a, b = pair
    for choice, expected_line in (
        ("Keep mine", "value = 'bob'\n"),
        ("Take theirs", "value = 'alice'\n"),
        ("Keep both", "value = 'bob'\nvalue = 'alice'\n"),
    ):
        path = f"c_{choice.split()[0].lower()}.py"
        uri = make_uri(workspace, path)
        await store.write(workspace, path, "head = 0\nvalue = 'x'\ntail = 1\n", agent="seed")
        await a.open(uri)
        bbuf = await b.open(uri)
        b.edit(uri, (1, 9), (1, 10), "bob")  # unsaved in B
        a.edit(uri, (1, 9), (1, 10), "alice")
        a.save(uri)
        diags = await wait_until(lambda u=uri: b.diagnostics(u, "dbcode"), what="conflict diag")
        assert diags[0].severity == types.DiagnosticSeverity.Error
        # Nothing lost before resolution: both sides are in B's buffer.
        assert "bob" in bbuf.text and "alice" in bbuf.text
        assert "head = 0" in bbuf.text and "tail = 1" in bbuf.text
        actions = await b.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri),
                range=diags[0].range,
                context=types.CodeActionContext(diagnostics=diags),
            )
        )
        titles = [x.title for x in actions]
        assert titles == ["dbcode: Keep mine", "dbcode: Take theirs", "dbcode: Keep both"]
        action = next(x for x in actions if x.title.endswith(choice))
        b._apply_edit(types.ApplyWorkspaceEditParams(edit=action.edit))
        assert bbuf.text == f"head = 0\n{expected_line}tail = 1\n"
        await wait_until(lambda u=uri: not b.diagnostics(u, "dbcode"), what="conflict cleared")
        b.save(uri)
        await db_eventually(database_url, workspace, path, bbuf.text)
        a.close(uri)
        b.close(uri)
