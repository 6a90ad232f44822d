"""Access control of LSP sessions: real server processes (tcp, and stdio through the shared
server), a database of the test's own, real tokens."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pygls.exceptions import JsonRpcException

from lsp_dbcode.store import Change, Store
from lsp_dbcode.store.access import parse_grant
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor, wait_until
from tests.server.test_serve import _start_network_server

WS = "proj"
SRC = make_uri(WS, "src/a.py")
DOCS = make_uri(WS, "docs/d.md")


@dataclass
class World:
    url: str
    store: Store
    port: int
    root: str
    dev: str  # WS/src=write
    ro: str  # WS=read


@pytest.fixture
async def world(fresh_database_url: str) -> AsyncIterator[World]:
    async with Store(fresh_database_url) as store:
        await store.commit(
            WS,
            [Change.write("src/a.py", "a = 1\n"), Change.write("docs/d.md", "# d\n")],
            agent="seed",
        )
        await store.comment(WS, "docs/d.md", "secret docs note", agent="seed", lines=(1, 1))
        await store.comment(WS, "src/a.py", "src note", agent="seed", lines=(1, 1))
        root, root_token = await store.access.add_agent("root", [], admin=True)
        _, dev = await store.access.add_agent("dev", [parse_grant(f"{WS}/src=write")], by=root)
        _, ro = await store.access.add_agent("ro", [parse_grant(f"{WS}=read")], by=root)
        proc, port = _start_network_server(fresh_database_url, "--tcp")
        try:
            yield World(fresh_database_url, store, port, root_token, dev, ro)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


async def _tcp(w: World, name: str, token: str | None) -> Editor:
    return await Editor.start(w.url, name, tcp=("127.0.0.1", w.port), token=token)


async def _refused_at_initialize(w: World, token: str | None, *, stdio: bool = False) -> str:
    with pytest.raises(JsonRpcException) as info:
        if stdio:
            await Editor.start(w.url, "x", token=token)
        else:
            await _tcp(w, "x", token)
    assert info.value.code == 401 or "401" in str(info.value), info.value
    assert "authentication required" in str(info.value)
    return str(info.value)


def _wrong(token: str) -> str:
    """The token with its last character changed (to another one: never the token)."""
    return token[:-1] + ("Q" if token[-1] != "Q" else "R")


async def test_no_or_bad_token_is_refused(world: World) -> None:
    for token in (None, "", "dbc_2_" + "x" * 43, _wrong(world.dev)):
        msg = await _refused_at_initialize(world, token)
        assert world.dev not in msg
    await _refused_at_initialize(world, None, stdio=True)
    await _refused_at_initialize(world, "wrong", stdio=True)
    ok = await Editor.start(world.url, "x", token=world.dev)  # stdio, through the shared server
    assert [f["path"] for f in await ok.request("dbcode/listFiles", {"workspace": WS})] == [
        "src/a.py"
    ]
    await ok.stop()


async def test_scoped_agent_sees_and_writes_only_its_grants(world: World) -> None:
    store = world.store
    ed = await _tcp(world, "mallory", world.dev)  # names itself mallory: the token says dev
    ed_root = await _tcp(world, "root", world.root)
    try:
        assert [f["path"] for f in await ed.request("dbcode/listFiles", {"workspace": WS})] == [
            "src/a.py"
        ]
        assert {
            f["path"] for f in await ed_root.request("dbcode/listFiles", {"workspace": WS})
        } == {
            "src/a.py",
            "docs/d.md",
        }
        for method, params in (
            ("dbcode/readFile", {"uri": DOCS}),
            ("dbcode/blame", {"uri": DOCS}),
            ("dbcode/log", {"workspace": WS, "path": "docs/d.md"}),
            ("dbcode/writeFile", {"uri": DOCS, "text": "x"}),
        ):
            with pytest.raises(JsonRpcException) as info:
                await ed.request(method, params)
            assert "forbidden: agent dev may" in str(info.value), method
            assert f"{WS}/docs/d.md" in str(info.value)
        head = await store.head(WS)
        with pytest.raises(JsonRpcException, match="forbidden: agent dev may not write"):
            await ed.request(
                "dbcode/commit",
                {
                    "workspace": WS,
                    "changes": [
                        {"uri": SRC, "text": "a = 2\n"},
                        {"uri": DOCS, "text": "# hacked\n"},
                    ],
                },
            )
        assert await store.head(WS) == head  # the changeset across the boundary: nothing
        assert (await store.read(WS, "src/a.py")).text == "a = 1\n"
        with pytest.raises(JsonRpcException, match="it cannot be changed"):
            await ed.request("dbcode/configure", {"agent": "root"})

        await ed.request("dbcode/subscribe", {"workspace": WS})
        got = await ed.request("dbcode/writeFile", {"uri": SRC, "text": "a = 3\n"})
        assert got["revision"] == 2
        log = await ed.request("dbcode/log", {"workspace": WS})
        assert log[0]["agent"] == "dev"  # the token's agent, not "mallory"
        assert all(f["path"].startswith("src/") for cs in log for f in cs["files"])
        root_log = await ed_root.request("dbcode/log", {"workspace": WS})
        assert any(f["path"] == "docs/d.md" for cs in root_log for f in cs["files"])

        # Root commits docs/ then src/: dev hears only of src/.
        await ed_root.request("dbcode/writeFile", {"uri": DOCS, "text": "# d2\n"})
        await ed_root.request("dbcode/writeFile", {"uri": SRC, "text": "a = 4\n"})
        await wait_until(lambda: any(c["agent"] == "root" for c in ed.commits), what="src push")
        paths = [f["path"] for c in ed.commits for f in c["files"]]
        assert "docs/d.md" not in paths and "src/a.py" in paths

        comments = await ed.request("dbcode/comments", {"workspace": WS})
        text = json.dumps(comments)
        assert "src note" in text and "secret docs note" not in text
        assert "secret docs note" in json.dumps(
            await ed_root.request("dbcode/comments", {"workspace": WS})
        )
        with pytest.raises(JsonRpcException, match="forbidden: agent dev may not"):
            await ed.request(
                "dbcode/comment",
                {
                    "uri": DOCS,
                    "text": "x",
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 0, "character": 1},
                    },
                },
            )

        # Read-only: cannot write.
        ro = await _tcp(world, "ro", world.ro)
        assert (await ro.request("dbcode/readFile", {"uri": DOCS}))["text"] == "# d2\n"
        with pytest.raises(JsonRpcException, match="forbidden: agent ro may not write"):
            await ro.request("dbcode/writeFile", {"uri": SRC, "text": "z\n"})
        await ro.stop()

        audit = await store.access.audit(WS, by=await store.access.authenticate(world.root))
        refused = {(e.agent, e.action, e.path) for e in audit}
        assert ("dev", "dbcode/writeFile", "docs/d.md") in refused
        assert ("dev", "dbcode/commit", "docs/d.md") in refused
        assert ("ro", "dbcode/writeFile", "src/a.py") in refused
    finally:
        await ed.stop()
        await ed_root.stop()


async def test_rotation_revocation_removal_on_live_sessions(world: World) -> None:
    store = world.store
    root = await store.access.authenticate(world.root)
    ed = await _tcp(world, "dev", world.dev)
    ro = await _tcp(world, "ro", world.ro)
    await ed.request("dbcode/listFiles", {"workspace": WS})
    new = await store.access.rotate("dev", by=root)
    with pytest.raises(JsonRpcException, match="authentication required"):
        await ed.request("dbcode/listFiles", {"workspace": WS})
    ed2 = await _tcp(world, "dev", new)
    await ed2.request("dbcode/writeFile", {"uri": SRC, "text": "b = 1\n"})
    await store.access.revoke("dev", [f"{WS}/src"], by=root)
    with pytest.raises(JsonRpcException, match="forbidden: agent dev may not write"):
        await ed2.request("dbcode/writeFile", {"uri": SRC, "text": "b = 2\n"})
    assert (await ro.request("dbcode/readFile", {"uri": SRC}))["text"] == "b = 1\n"
    await store.access.remove("ro", by=root)
    with pytest.raises(JsonRpcException, match="authentication required"):
        await ro.request("dbcode/readFile", {"uri": SRC})
    for e in (ed, ed2, ro):
        await e.stop()


async def _raw_session(
    port: int, token: str | None, source: str = "127.0.0.1", then: str | None = None
) -> list[dict[str, object]]:
    """initialize (and then one request) over a raw TCP connection from ``source``: the
    answers."""
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"capabilities": {}, "initializationOptions": {"token": token}},
        }
    ]
    if then:
        messages.append({"jsonrpc": "2.0", "id": 2, "method": then, "params": {}})
    for m in messages:
        body = json.dumps(m).encode()
        w.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await w.drain()
    answers = []
    while len(answers) < len(messages):
        head = await r.readuntil(b"\r\n\r\n")
        length = int(head.split(b":")[1].split(b"\r\n")[0])
        msg = json.loads(await r.readexactly(length))
        if "id" in msg and "method" not in msg:
            answers.append(msg)
    w.close()
    return answers


async def test_huge_token_and_a_flood_leave_the_server_answering(world: World) -> None:
    keep = await _tcp(world, "root", world.root)  # a session open before the flood
    big = await _raw_session(world.port, "dbc_1_" + "A" * 1_000_000)
    assert big[0]["error"]["code"] == 401  # type: ignore[index]
    floods = await asyncio.gather(
        *(_raw_session(world.port, f"dbc_{i}_" + "b" * 43) for i in range(60))
    )
    assert all(a[0]["error"]["code"] == 401 for a in floods)  # type: ignore[index]
    # The flooding address is now refused without a look at the database, even with a good
    # token; the open session and other addresses are answered as before.
    limited = await _raw_session(world.port, world.root)
    assert "too many failed attempts" in limited[0]["error"]["message"]  # type: ignore[index]
    assert len(await keep.request("dbcode/workspaces", {})) == 1
    other = await _raw_session(world.port, world.root, "127.0.0.2", then="dbcode/workspaces")
    assert "result" in other[0] and other[1]["result"][0]["name"] == WS  # type: ignore[index]
    await keep.stop()
    audit = await world.store.access.audit(WS, by=await world.store.access.authenticate(world.root))
    assert sum(e.action == "authenticate" and e.peer.startswith("127.0.0.1") for e in audit) >= 20
    assert all(world.root not in e.reason for e in audit)


async def test_open_database_needs_no_token(database_url: str) -> None:
    """Open mode as today (the run's shared database has no agents)."""
    ed = await Editor.start(database_url, "anyone")
    assert isinstance(await ed.request("dbcode/workspaces", {}), list)
    await ed.stop()


async def test_first_agent_ends_open_mode_for_live_sessions(fresh_database_url: str) -> None:
    """A session that began on an open database needs a token once the first agent exists
    (the server hears of it by NOTIFY: no query per request while the database is open)."""
    async with Store(fresh_database_url) as store:
        await store.write(WS, "src/a.py", "a = 1\n", agent="seed")
        proc, port = _start_network_server(fresh_database_url, "--tcp")
        try:
            ed = await Editor.start(fresh_database_url, "anyone", tcp=("127.0.0.1", port))
            assert len(await ed.request("dbcode/listFiles", {"workspace": WS})) == 1
            await store.access.add_agent("root", [], admin=True)

            async def refused() -> bool:
                try:
                    await ed.request("dbcode/listFiles", {"workspace": WS})
                except JsonRpcException as exc:
                    assert "authentication required" in str(exc)
                    return True
                return False

            for _ in range(200):
                if await refused():
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the open session was never refused")
            assert await refused()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def test_failed_authentications_are_counted_per_address_or_user() -> None:
    """A flood from one host opens many ports, one from one user many processes: each counts
    as one peer for the limiter."""
    from lsp_dbcode.server.auth import peer_key

    assert peer_key("10.0.0.7:41234") == peer_key("10.0.0.7:41999") == "10.0.0.7"
    assert peer_key("[::1]:5000") == "[::1]"
    assert peer_key("pid 100 uid 0") == peer_key("pid 200 uid 0") == "uid 0"
    assert peer_key("pid 100 uid 1000") != peer_key("pid 100 uid 0")
    assert peer_key("") == "?"
