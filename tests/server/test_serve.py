"""Transports, subscriptions, encodings, bad input, reconnection: real server processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from lsp_dbcode.framing import MESSAGE_BYTES_MAX
from lsp_dbcode.server.protocol import JSON_DEPTH_MAX, parse_message
from lsp_dbcode.store import Change, Store
from lsp_dbcode.uris import make_uri
from tests.server.editor import SERVER_CMD, Editor, wait_until
from tests.server.test_sync import db_eventually


@pytest.fixture
async def editor(database_url: str) -> AsyncIterator[Editor]:
    ed = await Editor.start(database_url, "solo")
    yield ed
    await ed.stop()


def _start_network_server(database_url: str, flag: str) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
    env["DBCODE_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [*SERVER_CMD, flag, "127.0.0.1:0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for _ in range(200):
        line = proc.stderr.readline().decode()
        m = re.search(r"serving LSP over \w+ on \('127\.0\.0\.1', (\d+)\)", line)
        if m:
            return proc, int(m.group(1))
    raise AssertionError("server did not report its port")


@pytest.fixture
def tcp_server(database_url: str) -> Iterator[int]:
    proc, port = _start_network_server(database_url, "--tcp")
    yield port
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


async def test_many_tcp_sessions_in_one_process(
    tcp_server: int, database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "shared.py", "a = 1\n", agent="seed")
    uri = make_uri(workspace, "shared.py")
    eds = [
        await Editor.start(database_url, f"agent{i}", tcp=("127.0.0.1", tcp_server))
        for i in range(5)
    ]
    bufs = [await ed.open(uri) for ed in eds]
    # One session leaves: the others keep working.
    await eds[4].stop()
    eds[0].edit(uri, (0, 4), (0, 5), "2")
    eds[0].save(uri)
    for buf in bufs[1:4]:
        await wait_until(lambda b=buf: b.text == "a = 2\n", what="push over tcp")
    await db_eventually(database_url, workspace, "shared.py", "a = 2\n")
    log = await eds[1].request("dbcode/log", {"workspace": workspace, "limit": 1})
    assert log[0]["agent"] == "agent0"
    # One LISTEN connection for the whole server process.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        cur = await c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN dbcode'"
            " AND datname = current_database()"
        )
        assert (await cur.fetchone()) == (1,)
    for ed in eds[:4]:
        await ed.stop()


async def test_websocket_session(database_url: str, store: Store, workspace: str) -> None:
    proc, port = _start_network_server(database_url, "--ws")
    try:
        await store.write(workspace, "w.txt", "hello\n", agent="seed")
        ed = await Editor.start(database_url, "wsagent", ws=("127.0.0.1", port))
        res = await ed.request("dbcode/readFile", {"uri": make_uri(workspace, "w.txt")})
        assert res == {"text": "hello\n", "revision": 1}
        await ed.stop()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


async def test_requests_round_trip(editor: Editor, workspace: str) -> None:
    uri = make_uri(workspace, "dir/new file ✓.py")
    assert uri == f"dbcode://{workspace}/dir/new%20file%20%E2%9C%93.py"
    w = await editor.request("dbcode/writeFile", {"uri": uri, "text": "x = 1\n", "baseRevision": 0})
    assert w["revision"] == 1
    with pytest.raises(JsonRpcException) as info:
        await editor.request("dbcode/writeFile", {"uri": uri, "text": "y", "baseRevision": 0})
    assert info.value.code == 409 and info.value.data == {"uri": uri, "currentRevision": 1}
    other = make_uri(workspace, "other.py")
    c = await editor.request(
        "dbcode/commit",
        {
            "workspace": workspace,
            "message": "two files",
            "changes": [
                {"uri": uri, "text": "x = 2\n", "baseRevision": 1},
                {"uri": other, "text": "o = 1\n", "baseRevision": 0},
            ],
        },
    )
    assert c["revisions"] == {uri: 2, other: 1}
    files = await editor.request("dbcode/listFiles", {"workspace": workspace})
    assert [(f["path"], f["revision"], f["updatedBy"]) for f in files] == [
        ("dir/new file ✓.py", 2, "solo"),
        ("other.py", 1, "solo"),
    ]
    log = await editor.request("dbcode/log", {"workspace": workspace})
    assert [e["seq"] for e in log] == [c["seq"], w["seq"]] and log[0]["message"] == "two files"
    older = await editor.request("dbcode/log", {"workspace": workspace, "beforeSeq": c["seq"]})
    assert [e["seq"] for e in older] == [w["seq"]]
    old = await editor.request("dbcode/readFile", {"uri": uri, "revision": 1})
    assert old == {"text": "x = 1\n", "revision": 1}
    content = await editor.client.workspace_text_document_content_async(
        types.TextDocumentContentParams(uri=other)
    )
    assert content.text == "o = 1\n"


BAD_REQUESTS = [
    ("dbcode/readFile", {"uri": "file:///etc/passwd"}, "not a dbcode:// URI"),
    ("dbcode/readFile", {"uri": "dbcode://ws/../etc/passwd"}, "'..' segments"),
    ("dbcode/readFile", {"uri": "dbcode://bad name/x"}, "invalid workspace name"),
    ("dbcode/readFile", {"uri": "dbcode://ws/a%00b"}, "control character"),
    ("dbcode/readFile", {}, "parameter 'uri' must be a string"),
    ("dbcode/readFile", [1, 2], "takes an object"),
    ("dbcode/writeFile", {"uri": "dbcode://{ws}/a.py", "text": 5}, "'text' must be a string"),
    (
        "dbcode/writeFile",
        {"uri": "dbcode://{ws}/a.py", "text": "x", "baseRevision": -1},
        "non-negative",
    ),
    ("dbcode/writeFile", {"uri": "dbcode://{ws}/b.bin", "text": "a\x00b"}, "binary"),
    ("dbcode/commit", {"workspace": "{ws}", "changes": []}, "non-empty list"),
    ("dbcode/log", {"workspace": "{ws}", "limit": "ten"}, "'limit'"),
    ("dbcode/log", {"workspace": "{ws}", "beforeSeq": -3}, "'beforeSeq'"),
    ("dbcode/listFiles", {"workspace": "nope-nope"}, "unknown workspace"),
    ("dbcode/subscribe", {"workspace": "bad/name"}, "invalid workspace name"),
]


@pytest.mark.parametrize(("method", "params", "expected"), BAD_REQUESTS)
async def test_bad_requests_answer_errors_and_write_nothing(
    editor: Editor, store: Store, workspace: str, method: str, params: object, expected: str
) -> None:
    await store.write(workspace, "a.py", "seed\n", agent="seed")
    if isinstance(params, dict):
        params = {
            k: (v.replace("{ws}", workspace) if isinstance(v, str) else v)
            for k, v in params.items()
        }
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wait_for(editor.request(method, params), 10)
    assert expected in info.value.message
    assert await store.head(workspace) == 1
    # The session survives.
    assert (await editor.request("dbcode/readFile", {"uri": make_uri(workspace, "a.py")}))[
        "text"
    ] == "seed\n"


class RawClient:
    """JSON-RPC over a real server's stdio, byte for byte: for messages no LSP library sends."""

    def __init__(self, database_url: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
        env["DBCODE_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen(
            SERVER_CMD,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._messages: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, message: dict[str, object]) -> None:
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def initialize(self) -> dict[str, object]:
        """The initialize request (id 1) with no capabilities; returns its result."""
        params = {"capabilities": {}, "processId": None}
        self.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
        result = self.receive(1)["result"]
        assert isinstance(result, dict)
        return result

    def send_many(self, messages: list[dict[str, object]]) -> None:
        """Several messages in one write: the server reads them back to back."""
        data = b""
        for message in messages:
            body = json.dumps(message).encode()
            data += b"Content-Length: %d\r\n\r\n" % len(body) + body
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_body(self, body: bytes) -> None:
        """One message whose body is given as bytes, whatever they hold."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def receive(self, msg_id: int | None, timeout_s: float = 30) -> dict[str, object]:
        """The next message with id ``msg_id`` (None: an answer with id null); fails the test
        after ``timeout_s`` without one (the session stalled)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no answer with id {msg_id} within {timeout_s} s")
            if msg.get("id") == msg_id and "method" not in msg:
                return msg

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            length = -1
            while (line := stdout.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length < 0:
                return
            self._messages.put(json.loads(stdout.read(length)))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def test_malformed_and_unknown_requests(database_url: str) -> None:
    raw = RawClient(database_url)
    try:
        assert "capabilities" in raw.initialize()
        raw.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        cases = [
            ({"method": "dbcode/noSuchMethod", "params": {}}, -32601),
            ({"method": "textDocument/codeAction", "params": {"textDocument": 3}}, -32602),
            ({"method": "textDocument/codeAction"}, -32602),  # no params at all
            ({"method": "textDocument/formatting", "params": "nonsense"}, -32602),
            ({"method": "dbcode/readFile", "params": {"uri": 42}}, -32602),
        ]
        for i, (msg, code) in enumerate(cases, start=10):
            raw.send({"jsonrpc": "2.0", "id": i, **msg})
            reply = raw.receive(i)
            assert reply["error"]["code"] == code, reply  # type: ignore[index]
            assert reply["error"]["message"]  # type: ignore[index]
        raw.send({"jsonrpc": "2.0", "id": 99, "method": "dbcode/workspaces", "params": {}})
        assert isinstance(raw.receive(99)["result"], list)  # the session survived
    finally:
        raw.close()


def test_unparseable_messages_answer_parse_error_and_the_session_goes_on(
    database_url: str,
) -> None:
    """Issue 13.3, JSON-RPC 2.0: a body that is not JSON, or nested too deep to parse, is
    answered -32700 with id null at once; JSON that is not an object -32600; a body of the
    maximum size is read and answered; the session answers the next request every time."""
    deep_array = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    bodies = [
        (b"{not json", -32700),
        (deep_array, -32700),
        (deep_object, -32700),
        (b'{"jsonrpc": "2.0", "id": 7, "method": "x", "params": ' + b"[" * 5000, -32700),
        (b"[1, 2]", -32600),
        (b"null", -32600),
        (b"x" * MESSAGE_BYTES_MAX, -32700),  # the largest body the framing takes
    ]
    raw = RawClient(database_url)
    try:
        raw.initialize()
        raw.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        for i, (body, code) in enumerate(bodies, start=100):
            raw.send_body(body)
            error = raw.receive(None)["error"]
            assert error["code"] == code, (body[:40], error)  # type: ignore[index]
            raw.send({"jsonrpc": "2.0", "id": i, "method": "dbcode/workspaces", "params": {}})
            assert isinstance(raw.receive(i)["result"], list), body[:40]
        # A well-formed request of the maximum size is served.
        head = b'{"jsonrpc":"2.0","id":200,"method":"dbcode/workspaces","params":{"pad":"'
        pad = MESSAGE_BYTES_MAX - len(head) - len(b'"}}')
        raw.send_body(head + b" " * pad + b'"}}')
        assert isinstance(raw.receive(200)["result"], list)
    finally:
        raw.close()


def test_message_depth_limit_is_the_parsers() -> None:
    """JSON_DEPTH_MAX names the depth the parser refuses beyond (orjson's own limit); a lone
    surrogate escape, which JSON allows and orjson refuses, still parses."""
    ok = b"[" * JSON_DEPTH_MAX + b"]" * JSON_DEPTH_MAX
    assert isinstance(parse_message(ok), list)  # parsed, not refused
    too_deep = b"[" * (JSON_DEPTH_MAX + 1) + b"]" * (JSON_DEPTH_MAX + 1)
    assert not isinstance(parse_message(too_deep), list)
    assert parse_message(b'{"t": "\\ud800"}') == {"t": "\ud800"}


async def test_out_of_range_change_breaks_doc_not_session(
    editor: Editor, store: Store, workspace: str
) -> None:
    await store.write(workspace, "a.py", "one\n", agent="seed")
    uri = make_uri(workspace, "a.py")
    await editor.open(uri)
    editor.client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(40, 0), types.Position(40, 1)), text="x"
                )
            ],
        )
    )
    await wait_until(
        lambda: any("out of step" in m.message for m in editor.client.messages), what="message"
    )
    editor.save(uri)
    await asyncio.sleep(0.3)
    assert (await store.read(workspace, "a.py")).revision == 1
    assert (await editor.request("dbcode/readFile", {"uri": uri}))["text"] == "one\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
async def test_position_encodings_round_trip(
    database_url: str, store: Store, workspace: str, encoding: str
) -> None:
    text = "s = '😀👨‍👩‍👧 é'  # e\u0301 combining\nt = '中文'\n"
    await store.write(workspace, "u.py", text, agent="seed")
    uri = make_uri(workspace, "u.py")
    a = await Editor.start(database_url, "enc-a", encodings=[encoding])
    b = await Editor.start(database_url, "enc-b", encodings=[encoding])
    try:
        assert a.encoding.value == encoding
        await a.open(uri)
        bbuf = await b.open(uri)
        # Insert after the emoji family and after the combining character.
        a.type_at_offset(uri, text.index(" é"), "🎉")
        a.type_at_offset(uri, a.buffers[uri].text.index("combining") - 1, "ñ")
        a.type_at_offset(uri, a.buffers[uri].text.index("文") + 1, "字")
        expected = a.buffers[uri].text
        a.save(uri)
        await db_eventually(database_url, workspace, "u.py", expected)
        await wait_until(lambda: bbuf.text == expected, what="push with emoji")
    finally:
        await a.stop()
        await b.stop()


async def test_subscribe_since_catches_up_then_live(
    editor: Editor, store: Store, workspace: str
) -> None:
    for i in range(5):
        await store.write(workspace, f"f{i}.txt", str(i), agent="early")
    res = await editor.request("dbcode/subscribe", {"workspace": workspace, "sinceSeq": 2})
    assert res == {"seq": 5, "commentSeq": 0}  # commentSeq: the review feed (issue 15)

    async def committer(tag: str) -> None:
        for j in range(15):
            await store.commit(workspace, [Change.write(f"{tag}{j % 3}.txt", str(j))], agent=tag)

    await asyncio.gather(committer("x"), committer("y"), committer("z"))
    await wait_until(lambda: len(editor.commits) >= 48, what="48 didCommit")
    await asyncio.sleep(0.2)
    seqs = [c["seq"] for c in editor.commits]
    assert seqs == list(range(3, 51))
    assert editor.commits[0]["files"][0]["uri"] == make_uri(workspace, "f2.txt")
    await editor.request("dbcode/unsubscribe", {"workspace": workspace})
    await store.write(workspace, "after.txt", "x", agent="late")
    await asyncio.sleep(0.3)
    assert len(editor.commits) == 48


async def test_listen_killed_session_catches_up(
    database_url: str, store: Store, workspace: str
) -> None:
    """The server's LISTEN connection is killed; changesets committed meanwhile all arrive."""
    await store.write(workspace, "doc.py", "n = 0\n", agent="seed")
    uri = make_uri(workspace, "doc.py")
    ed = await Editor.start(database_url, "watcher")
    try:
        buf = await ed.open(uri)
        await ed.request("dbcode/subscribe", {"workspace": workspace})
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = 'LISTEN dbcode' AND datname = current_database()"
            )
        for i in range(1, 21):
            await store.write(workspace, "doc.py", f"n = {i}\n", agent="writer")
        await wait_until(lambda: len(ed.commits) == 20, timeout=20, what="20 didCommit")
        assert [c["seq"] for c in ed.commits] == list(range(2, 22))
        await wait_until(lambda: buf.text == "n = 20\n", timeout=20, what="buffer caught up")
    finally:
        await ed.stop()


async def test_delete_and_rename_of_open_doc_are_told(
    editor: Editor, store: Store, workspace: str
) -> None:
    await store.write(workspace, "gone.py", "x\n", agent="seed")
    await store.write(workspace, "moved.py", "y\n", agent="seed")
    await editor.open(make_uri(workspace, "gone.py"))
    await editor.open(make_uri(workspace, "moved.py"))
    await store.commit(workspace, [Change.delete("gone.py")], agent="remover")
    await store.commit(workspace, [Change.rename("moved.py", "new/place.py")], agent="mover")
    await wait_until(
        lambda: any("remover deleted gone.py" in m.message for m in editor.client.messages),
        what="delete message",
    )
    await wait_until(
        lambda: any(
            "mover renamed moved.py to new/place.py" in m.message for m in editor.client.messages
        ),
        what="rename message",
    )
    assert editor.buffers[make_uri(workspace, "gone.py")].text == "x\n"  # buffer kept


async def test_live_mode_three_clients_converge(
    database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "live.txt", "start\n", agent="seed")
    uri = make_uri(workspace, "live.txt")
    eds = [await Editor.start(database_url, f"live{i}", mode="live") for i in range(3)]
    try:
        bufs = [await ed.open(uri) for ed in eds]
        for rnd in range(3):
            for i, ed in enumerate(eds):
                ed.type_at_offset(uri, len(ed.buffers[uri].text), f"r{rnd} c{i}\n")
                await asyncio.sleep(0.15)
        expected_lines = {f"r{r} c{i}" for r in range(3) for i in range(3)}

        def converged() -> bool:
            texts = {b.text for b in bufs}
            return len(texts) == 1 and set(bufs[0].text.split("\n")) >= expected_lines

        await wait_until(converged, timeout=20, what="three buffers converge")
        await db_eventually(database_url, workspace, "live.txt", bufs[0].text)
    finally:
        for ed in eds:
            with contextlib.suppress(Exception):
                await ed.stop()


def test_serve_bad_address_is_one_line(database_url: str) -> None:
    env = {**os.environ, "DBCODE_DATABASE_URL": database_url}
    r = subprocess.run(
        [sys.executable, "-m", "lsp_dbcode", "serve", "--tcp", "nohost"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "invalid address" in r.stderr


async def test_open_change_save_in_one_write_apply_in_order(
    database_url: str, store: Store, workspace: str
) -> None:
    """didOpen, several didChange and didSave arriving in one read: each applies in order (the
    document is registered at once, the changes land on it, the save commits the result)."""
    await store.write(workspace, "o.py", "a = 1\n", agent="seed")
    uri = make_uri(workspace, "o.py")
    raw = RawClient(database_url)
    try:
        raw.initialize()
        doc = {"uri": uri, "languageId": "python", "version": 1, "text": "a = 1\n"}

        def change(version: int, line: int, text: str) -> dict[str, object]:
            rng = {"start": {"line": line, "character": 0}, "end": {"line": line, "character": 0}}
            return {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [{"range": rng, "text": text}],
                },
            }

        raw.send_many(
            [
                {"jsonrpc": "2.0", "method": "initialized", "params": {}},
                {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didOpen",
                    "params": {"textDocument": doc},
                },
                change(2, 1, "b = 2\n"),
                change(3, 2, "c = 3\n"),
                change(4, 0, "# top\n"),
                {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didSave",
                    "params": {"textDocument": {"uri": uri}},
                },
                {"jsonrpc": "2.0", "id": 2, "method": "dbcode/readFile", "params": {"uri": uri}},
            ]
        )
        raw.receive(2)
        want = "# top\na = 1\nb = 2\nc = 3\n"
        await db_eventually(database_url, workspace, "o.py", want)
    finally:
        raw.close()


async def test_framing_split_joined_and_broken_messages_over_tcp(tcp_server: int) -> None:
    """Bytes are cut into messages however they arrive: one byte at a time, several messages
    in one write, bare-LF headers. A connection that breaks the framing is closed, alone."""

    def frame(msg_id: int, method: str, params: object, eol: bytes = b"\r\n") -> bytes:
        body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return b"Content-Length: %d%s%s%s" % (len(body), eol, eol, body.encode())

    async def read_message(reader: asyncio.StreamReader) -> dict[str, object]:
        length = -1
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        assert length >= 0, "connection closed"
        msg = json.loads(await reader.readexactly(length))
        assert isinstance(msg, dict)
        return msg

    async def answers(reader: asyncio.StreamReader, ids: list[int]) -> dict[object, object]:
        got: dict[object, object] = {}
        while set(ids) - set(got):
            msg = await asyncio.wait_for(read_message(reader), 20)
            if "id" in msg and "method" not in msg:
                got[msg["id"]] = msg.get("result", msg.get("error"))
        return got

    init = {"processId": None, "capabilities": {}, "rootUri": None}
    good_r, good_w = await asyncio.open_connection("127.0.0.1", tcp_server)
    try:
        for byte in frame(1, "initialize", init):  # one byte per write
            good_w.write(bytes([byte]))
            await good_w.drain()
        assert "capabilities" in (await answers(good_r, [1]))[1]  # type: ignore[operator]
        good_w.write(frame(2, "dbcode/workspaces", {}) + frame(3, "dbcode/workspaces", {}, b"\n"))
        got = await answers(good_r, [2, 3])
        assert isinstance(got[2], list) and got[3] == got[2]

        for bad in (
            b"Content-Type: text/plain\r\nnot a header\r\n\r\n{}",
            b"Content-Length: twelve\r\n\r\n{}",
            b"Content-Length: %d\r\n\r\n" % (2**30),
        ):
            bad_r, bad_w = await asyncio.open_connection("127.0.0.1", tcp_server)
            try:
                bad_w.write(bad)
                await bad_w.drain()
                assert await asyncio.wait_for(bad_r.read(), 20) == b"", bad  # closed by the server
            finally:
                bad_w.close()

        # The well-behaved session was not disturbed.
        good_w.write(frame(4, "dbcode/workspaces", {}))
        assert isinstance((await answers(good_r, [4]))[4], list)
    finally:
        good_w.close()
