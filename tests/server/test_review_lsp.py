"""Review threads and claims over LSP: real server processes, real PostgreSQL."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from pygls.exceptions import JsonRpcException

from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor, wait_until
from tests.server.test_serve import _start_network_server

CODE = "".join(f"x{i} = {i}\n" for i in range(10))

STANDALONE = {"DBCODE_SERVE_STANDALONE": "1"}  # its own server process


def rng(l1: int, c1: int, l2: int, c2: int) -> dict[str, Any]:
    return {"start": {"line": l1, "character": c1}, "end": {"line": l2, "character": c2}}


async def test_comment_reaches_another_process_and_follows_the_code(
    database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="seed")
    uri = make_uri(workspace, "m.py")
    a = await Editor.start(database_url, "ann", env=STANDALONE)
    b = await Editor.start(database_url, "bob", env=STANDALONE)
    got: list[Any] = []
    b.client.feature("dbcode/didComment")(lambda ls, params: got.append(params))
    try:
        sub = await b.request("dbcode/subscribe", {"workspace": workspace})
        assert sub["commentSeq"] == 0
        made = await a.request(
            "dbcode/comment", {"uri": uri, "range": rng(4, 0, 5, 0), "text": "why 4?"}
        )
        await wait_until(lambda: len(got) == 1, what="didComment")
        ev = got[0]
        assert (ev["thread"], ev["event"], ev["agent"]) == (made["thread"], "created", "ann")
        assert ev["comment"]["text"] == "why 4?"
        # Another agent inserts lines above: the thread moves with its text.
        await store.write(workspace, "m.py", "import os\nimport sys\n" + CODE, agent="carl")
        (t,) = await b.request("dbcode/comments", {"workspace": workspace})
        assert t["range"] == rng(6, 0, 7, 0) and t["uri"] == uri and not t["outdated"]
        await b.request(
            "dbcode/reply", {"workspace": workspace, "thread": t["thread"], "text": "ok"}
        )
        await b.request("dbcode/resolve", {"workspace": workspace, "thread": t["thread"]})
        await wait_until(lambda: len(got) == 3, what="replied, resolved")
        assert [e["event"] for e in got] == ["created", "replied", "resolved"]
        assert await b.request("dbcode/comments", {"workspace": workspace}) == []
        # Bad input: a JSON-RPC error, nothing written, the session goes on.
        for params in (
            {"uri": uri, "range": rng(40, 0, 41, 0), "text": "x"},
            {"uri": make_uri(workspace, "nope.py"), "range": rng(0, 0, 0, 1), "text": "x"},
            {"uri": uri, "range": rng(0, 0, 0, 1), "text": ""},
        ):
            with pytest.raises(JsonRpcException):
                await a.request("dbcode/comment", params)
        with pytest.raises(JsonRpcException, match="no thread 999999"):
            await a.request("dbcode/reply", {"workspace": workspace, "thread": 999999, "text": "x"})
        assert (
            len(await a.request("dbcode/comments", {"workspace": workspace, "state": "all"})) == 1
        )
    finally:
        await a.stop()
        await b.stop()


async def test_exclusive_claim_423_warnings_and_session_end(
    database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="seed")
    uri = make_uri(workspace, "m.py")
    a = await Editor.start(database_url, "ann", env=STANDALONE)
    b = await Editor.start(database_url, "bob", env=STANDALONE)
    try:
        made = await a.request(
            "dbcode/claim",
            {"uri": uri, "range": rng(2, 0, 4, 0), "exclusive": True, "note": "mine"},
        )
        (c,) = await b.request("dbcode/claims", {"workspace": workspace})
        assert (c["id"], c["agent"], c["note"], c["range"]) == (
            made["id"],
            "ann",
            "mine",
            rng(2, 0, 4, 0),
        )
        with pytest.raises(JsonRpcException) as info:
            await b.request(
                "dbcode/writeFile", {"uri": uri, "text": CODE.replace("x3 = 3", "x3 = 33")}
            )
        assert info.value.code == 423
        assert info.value.data["uri"] == uri and info.value.data["claim"]["agent"] == "ann"
        assert info.value.data["claim"]["note"] == "mine"
        await b.request("dbcode/writeFile", {"uri": uri, "text": CODE.replace("x8 = 8", "x8 = 88")})
        # A non-exclusive claim warns in the result.
        await store.write(workspace, "n.py", "y = 1\n", agent="seed")
        await a.request("dbcode/claim", {"uri": make_uri(workspace, "n.py"), "note": "reading"})
        res = await b.request(
            "dbcode/commit",
            {
                "workspace": workspace,
                "changes": [{"uri": make_uri(workspace, "n.py"), "text": "y = 2\n"}],
            },
        )
        assert [w["note"] for w in res["warnings"]] == ["reading"]
        # A's session ends: its claims end with it.
        await a.stop()
        assert await store.claims(workspace) == []
    finally:
        await b.stop()


async def test_claim_vanishes_when_its_server_is_killed(
    database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="seed")
    a = await Editor.start(database_url, "ann", env=STANDALONE)
    await a.request(
        "dbcode/claim",
        {"uri": make_uri(workspace, "m.py"), "exclusive": True, "ttlSeconds": 600},
    )
    assert len(await store.claims(workspace)) == 1
    server = a.client._server
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    await asyncio.wait_for(server.wait(), 10)
    for _ in range(100):
        if not await store.claims(workspace):
            break
        await asyncio.sleep(0.1)
    assert await store.claims(workspace) == []
    await store.write(workspace, "m.py", "free\n", agent="bob")


async def test_presence_across_two_server_processes(
    database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="seed")
    uri = make_uri(workspace, "m.py")
    a = await Editor.start(database_url, "ann", env=STANDALONE, mode="live")
    b = await Editor.start(database_url, "bob", env=STANDALONE)
    changes: list[Any] = []
    b.client.feature("dbcode/didChangePresence")(lambda ls, params: changes.append(params))
    try:
        await b.request("dbcode/subscribe", {"workspace": workspace})
        await a.open(uri)

        async def who() -> list[Any]:
            return list(await b.request("dbcode/presence", {"workspace": workspace}))

        for _ in range(100):
            if await who():
                break
            await asyncio.sleep(0.05)
        (p,) = await who()
        assert (p["agent"], p["path"], p["uri"], p["mode"]) == ("ann", "m.py", uri, "live")
        await wait_until(lambda: changes, what="didChangePresence")
        assert changes[0]["workspace"] == workspace
        # dbcode/configure: the presence shows the new agent and mode, and subscribers hear it.
        told = len(changes)
        await a.request("dbcode/configure", {"agent": "ann-2", "mode": "save"})
        (p,) = await who()
        assert (p["agent"], p["mode"]) == ("ann-2", "save")
        await wait_until(lambda: len(changes) > told, what="didChangePresence after configure")
        a.close(uri)
        for _ in range(100):
            if not await who():
                break
            await asyncio.sleep(0.05)
        assert await who() == []
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize("pull", [False, True], ids=["push-client", "pull-client"])
async def test_review_and_claim_diagnostics_live(
    database_url: str, store: Store, workspace: str, pull: bool
) -> None:
    """A comment by A shows in B's open document; another agent inserts lines above and it
    moves; it is resolved and disappears. A's claim shows too, and goes when released. Also
    for an editor that pulls its diagnostics (VS Code, Neovim 0.12): review threads and claims
    change without an edit, so they are pushed to it too (it pulls only ruff and syntax)."""
    await store.write(workspace, "m.py", CODE, agent="seed")
    uri = make_uri(workspace, "m.py")
    a = await Editor.start(database_url, "ann", env=STANDALONE)
    b = await Editor.start(database_url, "bob", env=STANDALONE, pull=pull)
    try:
        buf = await b.open(uri)
        made = await a.request(
            "dbcode/comment",
            {"uri": uri, "range": rng(4, 0, 5, 0), "text": "stop", "kind": "blocking"},
        )

        def review() -> list[Any]:
            return b.diagnostics(uri, "review")

        await wait_until(lambda: len(review()) == 1, what="review diagnostic")
        (d,) = review()
        assert d.message.startswith("ann: stop") and d.severity == 2
        assert (d.range.start.line, d.range.end.line) == (4, 5)
        await store.write(workspace, "m.py", "# one\n# two\n" + CODE, agent="carl")
        await wait_until(lambda: buf.text.startswith("# one"), what="push")
        await wait_until(
            lambda: [x.range.start.line for x in review()] == [6], what="diagnostic moved"
        )
        claim = await a.request("dbcode/claim", {"uri": uri, "note": "tidying"})
        await wait_until(lambda: b.diagnostics(uri, "claim"), what="claim diagnostic")
        assert "claimed by ann: tidying" in b.diagnostics(uri, "claim")[0].message
        await a.request("dbcode/resolve", {"workspace": workspace, "thread": made["thread"]})
        await wait_until(lambda: review() == [], what="resolved: gone")
        await a.request("dbcode/release", {"id": claim["id"]})
        await wait_until(lambda: b.diagnostics(uri, "claim") == [], what="released: gone")
    finally:
        await a.stop()
        await b.stop()


async def test_code_actions_apply_suggestion_and_resolve(
    database_url: str, store: Store, workspace: str
) -> None:
    from lsprotocol import types

    await store.write(workspace, "m.py", CODE, agent="seed")
    uri = make_uri(workspace, "m.py")
    a = await Editor.start(database_url, "ann", env=STANDALONE)
    b = await Editor.start(database_url, "bob", env=STANDALONE)
    try:
        buf = await b.open(uri)
        made = await a.request(
            "dbcode/comment",
            {
                "uri": uri,
                "range": rng(2, 0, 3, 0),
                "text": "name it",
                "kind": "suggestion",
                "replacement": "two = 2\n",
            },
        )
        await wait_until(lambda: b.diagnostics(uri, "review"), what="suggestion shown")
        (d,) = b.diagnostics(uri, "review")
        assert d.severity == types.DiagnosticSeverity.Hint
        actions = await b.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=d.range,
                context=types.CodeActionContext(diagnostics=[d]),
            )
        )
        titles = [x.title for x in actions or []]
        apply = next(x for x in actions or [] if "Apply suggestion" in x.title)
        resolve = next(x for x in actions or [] if "Resolve" in x.title)
        assert len([t for t in titles if f"thread {made['thread']}" in t]) == 2
        (change,) = apply.edit.document_changes
        (edit,) = change.edits
        assert edit.new_text == "two = 2\n" and edit.range == d.range
        b.edit(uri, (2, 0), (3, 0), edit.new_text)
        b.save(uri)
        await wait_until(lambda: buf.text == CODE.replace("x2 = 2\n", "two = 2\n"), what="applied")
        # pygls' client structures a CodeAction that carries only a command as a Command whose
        # `command` is the nested command's repr (the union's first fit): read it back.
        nested = resolve.command
        if isinstance(resolve, types.Command):
            nested = types.Command(**ast.literal_eval(resolve.command))
        assert isinstance(nested, types.Command) and nested.command == "dbcode.resolveThread"
        assert nested.arguments == [workspace, made["thread"]]
        await b.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=nested.command, arguments=nested.arguments)
        )
        await wait_until(lambda: b.diagnostics(uri, "review") == [], what="resolved")
        (t,) = await store.threads(workspace, state="resolved")
        assert t.id == made["thread"]
        for _ in range(100):
            if (await store.read(workspace, "m.py")).text != CODE:
                break
            await asyncio.sleep(0.05)
        assert (await store.read(workspace, "m.py")).text == CODE.replace("x2 = 2\n", "two = 2\n")
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
def one_server(database_url: str) -> Iterator[int]:
    """A ``dbcode serve --tcp`` process: its port."""
    proc, port = _start_network_server(database_url, "--tcp")
    yield port
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


async def test_review_and_claims_shown_per_session_of_one_server_process(
    one_server: int, database_url: str, store: Store, workspace: str
) -> None:
    """Three editors on one server process, where one ReviewFeed reads the threads and claims
    for every session: each sees the others' claims but not its own, everyone sees a comment,
    and the feed goes on for the rest when one quits."""
    await store.write(workspace, "m.py", CODE, agent="seed")
    uri = make_uri(workspace, "m.py")
    tcp = ("127.0.0.1", one_server)
    eds = [await Editor.start(database_url, name, tcp=tcp) for name in ("ann", "bob", "cat")]
    ann, bob, cat = eds
    try:
        for e in eds:
            await e.open(uri)
        claim = await ann.request("dbcode/claim", {"uri": uri, "note": "tidying"})
        for e in (bob, cat):
            await wait_until(lambda e=e: e.diagnostics(uri, "claim"), what="claim diagnostic")
            assert "claimed by ann: tidying" in e.diagnostics(uri, "claim")[0].message
        made = await cat.request(
            "dbcode/comment", {"uri": uri, "range": rng(2, 0, 3, 0), "text": "why?"}
        )
        for e in eds:
            await wait_until(lambda e=e: e.diagnostics(uri, "review"), what="review diagnostic")
        assert ann.diagnostics(uri, "claim") == []  # her own claim is no warning to her
        await bob.stop()
        eds.remove(bob)
        await cat.request("dbcode/resolve", {"workspace": workspace, "thread": made["thread"]})
        await ann.request("dbcode/release", {"id": claim["id"]})
        await wait_until(lambda: ann.diagnostics(uri, "review") == [], what="resolved: gone")
        await wait_until(lambda: cat.diagnostics(uri, "claim") == [], what="released: gone")
    finally:
        for e in eds:
            await e.stop()
