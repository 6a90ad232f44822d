"""History over LSP on a real server process: dbcode/blame, hover blame, meta on writeFile and
commit, dbcode://WS@SEQ/PATH documents (read-only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from lsp_dbcode.store import Change, Store
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor


@pytest.fixture
async def editor(database_url: str) -> AsyncIterator[Editor]:
    ed = await Editor.start(database_url, "eve")
    yield ed
    await ed.stop()


async def test_blame_meta_and_time_travel_over_lsp(
    editor: Editor, store: Store, workspace: str
) -> None:
    body = "".join(f"line {i}\n" for i in range(5))
    s1 = (await store.write(workspace, "a.py", body, agent="ann", message="start")).seq
    s2 = (
        await store.write(
            workspace,
            "a.py",
            body.replace("line 1\n", "line one\n"),
            agent="bob",
            message="one",
            meta={"task": "t-1"},
        )
    ).seq
    await store.commit(workspace, [Change.rename("a.py", "b.py")], agent="cy")
    uri = make_uri(workspace, "b.py")
    # meta on writeFile (through the server, by this session's agent)
    w = await editor.request(
        "dbcode/writeFile",
        {
            "uri": uri,
            "text": body.replace("line 1\n", "line one\n") + "tail\n",
            "baseRevision": 1,
            "meta": {"conversation": "c-9"},
        },
    )
    runs = await editor.request("dbcode/blame", {"uri": uri})
    assert [(r["startLine"], r["endLine"], r["seq"], r["agent"]) for r in runs] == [
        (0, 0, s1, "ann"),
        (1, 1, s2, "bob"),
        (2, 4, s1, "ann"),
        (5, 5, w["seq"], "eve"),
    ]
    assert runs[1]["meta"] == {"task": "t-1"} and runs[1]["path"] == "a.py"
    assert runs[3]["meta"] == {"conversation": "c-9"}
    log = await editor.request("dbcode/log", {"workspace": workspace, "limit": 1})
    assert log[0]["meta"] == {"conversation": "c-9"}
    c = await editor.request(
        "dbcode/commit",
        {
            "workspace": workspace,
            "meta": {"prompt": "p"},
            "changes": [{"uri": make_uri(workspace, "c.py"), "text": "c\n", "baseRevision": 0}],
        },
    )
    log = await editor.request("dbcode/log", {"workspace": workspace, "limit": 1})
    assert log[0]["seq"] == c["seq"] and log[0]["meta"] == {"prompt": "p"}

    # A time-travel document: readable (readFile, textDocumentContent, blame), never written.
    old = make_uri(workspace, "a.py", seq=s2)
    assert await editor.request("dbcode/readFile", {"uri": old}) == {
        "text": body.replace("line 1\n", "line one\n"),
        "revision": 2,
        "readOnly": True,
    }
    content = await editor.client.workspace_text_document_content_async(
        types.TextDocumentContentParams(uri=make_uri(workspace, "a.py", seq=s1))
    )
    assert content.text == body
    old_runs = await editor.request("dbcode/blame", {"uri": make_uri(workspace, "a.py", seq=s1)})
    assert [(r["startLine"], r["endLine"], r["seq"]) for r in old_runs] == [(0, 4, s1)]
    head = await store.head(workspace)
    for method, params in (
        ("dbcode/writeFile", {"uri": old, "text": "x\n"}),
        ("dbcode/writeFile", {"uri": old, "text": "x\n", "baseRevision": 2}),
        ("dbcode/commit", {"workspace": workspace, "changes": [{"uri": old, "text": "x\n"}]}),
        ("dbcode/writeFile", {"uri": uri, "text": "x\n", "meta": ["not", "an", "object"]}),
        ("dbcode/writeFile", {"uri": uri, "text": "x\n", "meta": {"p": "x" * 5000}}),
        ("dbcode/readFile", {"uri": make_uri(workspace, "a.py", seq=head + 1)}),
        ("dbcode/readFile", {"uri": make_uri(workspace, "b.py", seq=s1)}),
        ("dbcode/blame", {"uri": uri, "revision": 99}),
        ("dbcode/blame", {"uri": uri, "revision": -1}),
        ("dbcode/blame", {"uri": make_uri(workspace, "gone.py")}),
    ):
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(editor.request(method, params), 10)
        assert info.value.message, (method, params)
    assert await store.head(workspace) == head
    # The read-only refusal names the way out.
    with pytest.raises(JsonRpcException, match="read-only"):
        await editor.request("dbcode/writeFile", {"uri": old, "text": "x\n"})

    # Hover on a line of an open document: who, which changeset, message, meta, how long ago.
    buf = await editor.open(uri)
    hover = await editor.client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(1, 2))
    )
    assert hover is not None
    value = hover.contents.value  # type: ignore[union-attr]
    assert "**bob**" in value and f"seq {s2}" in value and "one" in value
    assert ('"task": "t-1"' in value and "ago" in value) or "just now" in value
    # An unsaved edit above shifts the lines; the edited line itself is not committed yet.
    editor.edit(uri, (0, 0), (0, 0), "new first line\n")
    assert buf.text.startswith("new first line\n")

    async def hover_at(line: int) -> str:
        h = await editor.client.text_document_hover_async(
            types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(line, 1))
        )
        assert h is not None
        return h.contents.value  # type: ignore[union-attr]

    assert "Not committed yet" in await hover_at(0)
    assert "**bob**" in await hover_at(2)
    # A time-travel document opens read-only, without a warning; typing in it and saving it
    # change nothing (it is not tracked: nothing to commit).
    head = await store.head(workspace)
    await editor.open(old)
    editor.edit(old, (0, 0), (0, 0), "typed into the past\n")
    editor.save(old)
    assert (await editor.request("dbcode/readFile", {"uri": uri}))["revision"] == 2
    assert not [m.message for m in editor.client.messages if "cannot open" in m.message]
    assert await store.head(workspace) == head
    assert (await editor.request("dbcode/readFile", {"uri": old}))["text"] == body.replace(
        "line 1\n", "line one\n"
    )
