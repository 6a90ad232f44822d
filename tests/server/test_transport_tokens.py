"""The token's way from every client to the server (issue 18, the transport part): the ws
``Authorization: Bearer`` header, the stdio relay's preamble, ``--token`` / ``DBCODE_TOKEN`` of
the CLI (fast and direct paths), the client library and a ``--standalone`` session. Real
processes and a real PostgreSQL. Whether the server accepts a token is not tested here (the
server's checks): that the token arrives where it is read, and never anywhere else — no log
line, error message, command line, environment or file of the shared server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lsp_dbcode.attach import shared_relay
from lsp_dbcode.client import ConnectionLost, ConnectOptions, connect
from lsp_dbcode.framing import FrameSplitter
from lsp_dbcode.server import relay
from lsp_dbcode.server.options import ServeOptions
from lsp_dbcode.store import Store
from tests.conftest import Cli
from tests.server.netserver import NetServer, start_server
from tests.server.test_relay import Editors, attached_pids, server_log, wait_until

TOKEN = "dbc_7_Zm9vYmFyYmF6cXV4LXNlY3JldC10b2tlbi0x"  # the format of a token, not a real one
OTHER_TOKEN = "dbc_8_b3RoZXItc2VjcmV0LXRva2VuLXNob3duLW5ldmVy"
WITH_TOKEN = "with a transport token"


@pytest.fixture
async def editors(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    eds = Editors(database_url, monkeypatch)
    yield eds
    await eds.stop_all()


@pytest.fixture
def ws_server(database_url: str, tmp_path: Path) -> Iterator[NetServer]:
    server = start_server(database_url, "--ws", tmp_path / "ws.log")
    yield server
    server.stop()


def _opened(log: str) -> list[str]:
    return [line for line in log.splitlines() if " session opened from " in line]


async def test_ws_bearer_token_reaches_the_session_never_the_log(
    ws_server: NetServer, store: Store, workspace: str
) -> None:
    await store.write(workspace, "a.py", "a = 1\n", agent="seed")
    url = f"ws://127.0.0.1:{ws_server.port}"
    async with await connect(workspace, agent="bearer", ws=url, token=TOKEN) as db:
        assert (await db.read("a.py")).text == "a = 1\n"
    async with await connect(workspace, agent="none", ws=url, token="") as db:
        assert (await db.read("a.py")).text == "a = 1\n"
    lines = _opened(ws_server.log_text())
    assert len(lines) == 2
    assert "ws session opened from 127.0.0.1:" in lines[0] and WITH_TOKEN in lines[0]
    assert WITH_TOKEN not in lines[1]
    assert TOKEN not in ws_server.log_text()


async def test_relay_brings_the_token_to_one_shared_server_and_nowhere_else(
    editors: Editors, shared_servers: Path, tmp_path: Path
) -> None:
    log = tmp_path / "relays.log"
    first = await editors.start(
        "tok-a", after=["--log-file", str(log)], env={"DBCODE_TOKEN": TOKEN}
    )
    second = await editors.start(
        "tok-b", after=["--log-file", str(log)], env={"DBCODE_TOKEN": OTHER_TOKEN}
    )
    plain = await editors.start("tok-c", after=["--log-file", str(log)])
    for ed in (first, second, plain):
        await ed.request("dbcode/configure", {})
    # One shared server for every agent: the token is not part of its key.
    servers = relay.live_servers(shared_servers)
    assert len(servers) == 1
    await wait_until(lambda: len(attached_pids(log)) >= 3, what="the relays' log lines")
    assert attached_pids(log) == servers * 3
    base = {k: v for k, v in os.environ.items() if k != "DBCODE_TOKEN"}
    with_token = relay.relay_for(ServeOptions(agent="a"), {**base, "DBCODE_TOKEN": TOKEN})
    assert with_token.paths == relay.relay_for(ServeOptions(agent="a"), base).paths
    # Each session got its own token from its relay's preamble.
    lines = _opened(server_log(shared_servers))
    assert len(lines) == 3 and all("stdio session opened from pid " in line for line in lines)
    assert sum(WITH_TOKEN in line for line in lines) == 2
    # ... and it is nowhere else.
    [pid] = servers
    proc = Path(f"/proc/{pid}")
    places = {
        "cmdline": (proc / "cmdline").read_bytes(),
        "environ": (proc / "environ").read_bytes(),
        "relay log": log.read_bytes(),
        "names": " ".join(p.name for p in shared_servers.iterdir()).encode(),
    }
    for p in shared_servers.iterdir():
        if p.is_file():
            places[p.name] = p.read_bytes()
    for token in (TOKEN, OTHER_TOKEN):
        leaked = [where for where, data in places.items() if token.encode() in data]
        assert leaked == []


async def test_standalone_stdio_session_takes_dbcode_token(
    editors: Editors, tmp_path: Path
) -> None:
    log = tmp_path / "standalone.log"
    ed = await editors.start(
        "alone", after=["--standalone", "--log-file", str(log)], env={"DBCODE_TOKEN": TOKEN}
    )
    await ed.request("dbcode/configure", {})
    [line] = _opened(log.read_text())
    assert "stdio session opened from pid " in line and WITH_TOKEN in line
    assert TOKEN not in log.read_text()


def test_a_relay_refuses_a_token_too_long_in_one_line(shared_servers: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "DBCODE_TOKEN": "x" * 100_000}  # execve takes 128 KiB a string
    r = subprocess.run(
        [sys.executable, "-m", "lsp_dbcode", "serve"],
        env=env,
        input=b"",
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.decode() == (
        f"dbcode: the token is too long to be a dbcode token (over {relay.TOKEN_BYTES_MAX} bytes)\n"
    )
    assert relay.live_servers(shared_servers) == []


class Capture:
    """A unix socket that takes the place of a shared server: records each client's preamble
    and its initialize request, then closes the connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(os.fspath(path))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                with contextlib.suppress(OSError, ValueError):
                    self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        buf = b""
        while b"\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        conn.sendall(relay.answer(os.getpid()))
        frames = FrameSplitter()
        frames.feed(rest)
        init = None
        while init is None:
            body = frames.next_body()
            if body is None:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                frames.feed(chunk)
                continue
            msg = json.loads(body)
            if msg.get("method") == "initialize":
                init = msg
        self.got.append((json.loads(line), init))

    def tokens(self) -> list[Any]:
        found = []
        for hello, init in self.got:
            assert "token" not in hello  # a client's token goes in its initialize
            opts = (init or {}).get("params", {}).get("initializationOptions") or {}
            found.append(opts.get("token"))
        return found

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def capture(cli: Cli) -> Iterator[Capture]:
    """Listening where the fast CLI (with the cli fixture's environment) attaches."""
    paths = shared_relay(None, "x", cli.env).paths
    cap = Capture(paths.socket)
    yield cap
    cap.close()


def test_fast_cli_sends_the_token_in_initialize(cli: Cli, capture: Capture) -> None:
    runs = [
        cli("ls", "ws1", env={"DBCODE_TOKEN": TOKEN}),
        cli("--token", OTHER_TOKEN, "cat", "ws1", "a.py", env={"DBCODE_TOKEN": TOKEN}),
        cli("log", "ws1", "--token", OTHER_TOKEN),
        cli("ls", "ws1"),
    ]
    assert capture.tokens() == [TOKEN, OTHER_TOKEN, OTHER_TOKEN, None]
    for r in runs:  # the stand-in server closed the session: one line, no token in it
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert TOKEN not in r.stderr and OTHER_TOKEN not in r.stderr


async def test_client_library_sends_the_token_in_initialize(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = Capture(Path(os.environ["XDG_RUNTIME_DIR"]) / "cap.sock")
    try:
        monkeypatch.setenv("DBCODE_TOKEN", TOKEN)
        for token in (None, OTHER_TOKEN, ""):
            with pytest.raises(ConnectionLost) as err:
                await connect("ws1", agent="lib", unix=str(cap.path), token=token, timeout_s=30)
            assert TOKEN not in str(err.value) and OTHER_TOKEN not in str(err.value)
        await asyncio.to_thread(wait_for_captures, cap, 3)
        assert cap.tokens() == [TOKEN, OTHER_TOKEN, None]
    finally:
        cap.close()


def wait_for_captures(cap: Capture, n: int) -> None:
    for _ in range(600):
        if len(cap.got) >= n:
            return
        threading.Event().wait(0.05)


def test_cli_token_never_in_messages_or_the_server_log(
    cli: Cli, shared_servers: Path, store: Store, workspace: str
) -> None:
    assert cli("--token", TOKEN, "write", workspace, "a.py", input="a = 1\n").returncode == 0
    assert cli("ls", workspace, env={"DBCODE_TOKEN": TOKEN}).returncode == 0
    missing = cli("cat", workspace, "nope.py", "--token", TOKEN)
    assert missing.returncode == 1 and "nope.py" in missing.stderr
    usage = cli("ls", "--token", TOKEN, "--bogus", "x")  # argparse repeats the bad arguments
    assert usage.returncode == 1 and "--bogus" in usage.stderr
    usage2 = cli("ls", workspace, f"--token={TOKEN}", "extra", "more")
    assert usage2.returncode == 1 and "more" in usage2.stderr
    direct = cli("--token", TOKEN, "ls", workspace, env={"DBCODE_CLI_DIRECT": "1"})
    assert direct.returncode == 0 and "a.py" in direct.stdout
    for r in (missing, usage, usage2, direct):
        assert TOKEN not in r.stderr + r.stdout
    assert server_log(shared_servers) and TOKEN not in server_log(shared_servers)


def test_options_reprs_hide_the_token() -> None:
    options = ConnectOptions("ws", agent="a", token=TOKEN)
    assert TOKEN not in repr(options) and "token='***'" not in repr(options)
    assert "token=***" in repr(options) and "agent='a'" in repr(options)
    assert TOKEN not in repr(ServeOptions(token=TOKEN)) and TOKEN not in str(
        ServeOptions(token=TOKEN)
    )
    assert TOKEN.encode() in relay.preamble(None, "a", token=TOKEN)
    assert relay.preamble_token(relay.preamble(None, "a", token=TOKEN)) == TOKEN
    assert relay.preamble_token(relay.preamble(None, "a")) is None


async def test_mcp_reaches_a_wss_server_with_its_token(
    database_url: str, workspace: str, tmp_path: Path
) -> None:
    import sys

    from mcp.client import Client as McpClient
    from mcp.client.stdio import StdioServerParameters

    from tests.server.netserver import make_cert
    from tests.test_mcp import call

    cert = make_cert(tmp_path / "tls")
    server = start_server(
        database_url,
        "--ws",
        tmp_path / "wss.log",
        "--tls-cert",
        str(cert.cert),
        "--tls-key",
        str(cert.key),
    )
    try:
        url = f"wss://127.0.0.1:{server.port}"
        args = ["-m", "lsp_dbcode", "--agent", "mcp-tls", "mcp", "--workspace", workspace]
        params = StdioServerParameters(
            command=sys.executable,
            args=[*args, "--server", url, "--tls-ca", str(cert.cert)],
            env={
                "DBCODE_TOKEN": TOKEN,
                "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"],
                "PATH": os.environ.get("PATH", ""),
            },
        )
        async with McpClient(params) as mcp:
            done = await call(mcp, "write_file", path="m.py", text="m = 1\n", base_revision=0)
            assert done["revision"] == 1
            assert (await call(mcp, "read_file", path="m.py"))["text"] == "m = 1\n"
        [line] = _opened(server.log_text())
        assert "wss session opened from 127.0.0.1:" in line and WITH_TOKEN in line
        assert TOKEN not in server.log_text()
    finally:
        server.stop()


def test_a_usage_error_never_repeats_a_token() -> None:
    from lsp_dbcode.cli import _hide_tokens

    for argv in (["--token", TOKEN, "ls"], [f"--token={TOKEN}", "ls"]):
        said = _hide_tokens(f"unrecognized arguments: {TOKEN} x", argv)
        assert said == "unrecognized arguments: *** x"
