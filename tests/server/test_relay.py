"""`dbcode serve` over stdio is a relay to one shared server process (server/relay.py): real
relays, real shared servers, real PostgreSQL. The ``shared_servers`` fixture (tests/conftest.py)
gives each test a socket directory of its own and ends its servers afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from lsp_dbcode.server import relay
from lsp_dbcode.server.options import ServeOptions
from lsp_dbcode.store import Store, hub
from lsp_dbcode.uris import make_uri
from tests.server import editor as editor_module
from tests.server.editor import Editor, wait_until

SERVE = [sys.executable, "-m", "lsp_dbcode"]
HEAVY_LIBRARIES = ("psycopg", "pygls", "lsprotocol", "tree_sitter", "_asyncio", "_ssl")


class Editors:
    """Starts editors whose server command is a given `dbcode ... serve ...` command line."""

    def __init__(self, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.database_url = database_url
        self.monkeypatch = monkeypatch
        self.started: list[Editor] = []

    async def start(
        self,
        name: str,
        *,
        before: list[str] | None = None,
        after: list[str] | None = None,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
    ) -> Editor:
        cmd = [*SERVE, *(before or []), "serve", *(after or [])]
        self.monkeypatch.setattr(editor_module, "SERVER_CMD", cmd)
        ed = await Editor.start(database_url or self.database_url, name, env=env)
        self.started.append(ed)
        return ed

    async def stop_all(self) -> None:
        for ed in self.started:
            with contextlib.suppress(Exception):
                if ed.client._server is not None and ed.client._server.returncode is None:
                    await asyncio.wait_for(ed.stop(), 15)


@pytest.fixture
async def editors(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Editors]:
    eds = Editors(database_url, monkeypatch)
    yield eds
    await eds.stop_all()


def relay_pid(ed: Editor) -> int:
    assert ed.client._server is not None
    return ed.client._server.pid


def attached_pids(log: Path) -> list[int]:
    """The shared server pids the relays logging to ``log`` attached to. A relay that handed its
    pipes over writes its line after the server's answer to its preamble, while the server may
    already be answering the editor: wait for the lines, do not expect them with the answer."""
    if not log.exists():
        return []
    return [
        int(line.split("attached to shared server pid ")[1].split(":")[0].split()[0])
        for line in log.read_text().splitlines()
        if "attached to shared server pid" in line
    ]


def server_log(directory: Path) -> str:
    return "".join(p.read_text() for p in sorted(directory.glob("*.log")))


def paths_for_env(env: dict[str, str]) -> relay.ServerPaths:
    return relay.relay_for(ServeOptions(agent="a"), env).paths


def with_param(url: str, **params: str) -> str:
    return psycopg.conninfo.make_conninfo(url, **params)


async def test_two_relays_one_server_push_and_agents(
    editors: Editors, shared_servers: Path, store: Store, workspace: str, tmp_path: Path
) -> None:
    await store.write(workspace, "m.py", "a = 1\n", agent="seed")
    uri = make_uri(workspace, "m.py")
    log = tmp_path / "relays.log"
    # --agent of each relay wins over initializationOptions.agent (the editors' names).
    alice = await editors.start("ed-a", before=["--agent", "alice"], after=["--log-file", str(log)])
    bob = await editors.start("ed-b", before=["--agent", "bob"], after=["--log-file", str(log)])
    servers = relay.live_servers(shared_servers)
    assert len(servers) == 1
    await wait_until(lambda: len(attached_pids(log)) >= 2, what="both relays' log lines")
    assert attached_pids(log) == servers * 2
    assert relay_pid(alice) not in servers and relay_pid(bob) not in servers

    abuf = await alice.open(uri)
    await bob.open(uri)
    bob.edit(uri, (0, 4), (0, 5), "2")
    bob.save(uri)
    await wait_until(lambda: abuf.text == "a = 2\n", what="push from bob to alice")
    alice.edit(uri, (0, 0), (0, 0), "# alice\n")
    alice.save(uri)
    await wait_until(lambda: bob.buffers[uri].text == "# alice\na = 2\n", what="push to bob")
    history = await store.log(workspace, "m.py")
    assert [cs.agent for cs in history[:2]] == ["alice", "bob"]
    # DBCODE_AGENT forces the agent the same way.
    carol = await editors.start("ed-c", env={"DBCODE_AGENT": "carol"})
    assert (await carol.request("dbcode/configure", {}))["agent"] == "carol"
    # Without either, the client's initializationOptions.agent is used.
    dave = await editors.start("ed-d")
    assert (await dave.request("dbcode/configure", {}))["agent"] == "ed-d"
    assert relay.live_servers(shared_servers) == servers
    # One LISTEN connection for all of them.
    await carol.request("dbcode/subscribe", {"workspace": workspace})
    await dave.request("dbcode/subscribe", {"workspace": workspace})
    async with await psycopg.AsyncConnection.connect(editors.database_url, autocommit=True) as c:
        cur = await c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN dbcode'"
            " AND datname = current_database()"
        )
        assert (await cur.fetchone()) == (1,)


async def test_killed_relay_ends_its_session_only(
    editors: Editors, shared_servers: Path, store: Store, workspace: str
) -> None:
    await store.write(workspace, "k.py", "k = 1\n", agent="seed")
    uri = make_uri(workspace, "k.py")
    eds = [await editors.start(f"k{i}") for i in range(3)]
    bufs = [await ed.open(uri) for ed in eds]
    await eds[0].request("dbcode/subscribe", {"workspace": workspace})
    [server] = relay.live_servers(shared_servers)
    os.kill(relay_pid(eds[0]), signal.SIGKILL)
    assert eds[0].client._server is not None
    await eds[0].client._server.wait()
    await wait_until(
        lambda: "relay connection closed (2 left)" in server_log(shared_servers),
        timeout=20,
        what="the server ends the killed relay's session",
    )
    eds[1].edit(uri, (0, 4), (0, 5), "2")
    eds[1].save(uri)
    await wait_until(lambda: bufs[2].text == "k = 2\n", what="push to the surviving session")
    assert relay.live_servers(shared_servers) == [server]
    # `exit` ends a relay (the server closes its end after ending the session) and nothing else.
    await asyncio.wait_for(eds[2].stop(), 15)
    assert eds[2].client._server is not None and eds[2].client._server.returncode == 0
    await wait_until(
        lambda: "relay connection closed (1 left)" in server_log(shared_servers),
        timeout=20,
        what="the session of the relay that exited ends",
    )
    assert (await eds[1].request("dbcode/readFile", {"uri": uri}))["text"] == "k = 2\n"
    assert relay.live_servers(shared_servers) == [server]


async def test_other_database_or_settings_other_server(
    editors: Editors, shared_servers: Path, database_url: str
) -> None:
    await editors.start("one")
    await editors.start("two")
    assert len(relay.live_servers(shared_servers)) == 1
    # The DSN as given is the key: the same database spelled otherwise is another server.
    await editors.start("three", database_url=with_param(database_url, application_name="x"))
    assert len(relay.live_servers(shared_servers)) == 2
    # So are the settings that change what a server does.
    await editors.start("four", env={"DBCODE_MAX_FILE_BYTES": "12345"})
    await editors.start("five", env={"DBCODE_RUFF_ENGINE": "subprocess"})
    assert len(relay.live_servers(shared_servers)) == 4
    # ... but not the agent.
    await editors.start("six", env={"DBCODE_AGENT": "someone"})
    assert len(relay.live_servers(shared_servers)) == 4


def test_code_version_is_in_the_key(tmp_path: Path) -> None:
    package = tmp_path / "lsp_dbcode"
    shutil.copytree(relay.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"DBCODE_DATABASE_URL": "postgresql://u@h/db"}
    key = relay.server_key("postgresql://u@h/db", env, package)
    assert relay.server_key("postgresql://u@h/db", env, package) == key
    module = package / "server" / "session.py"
    st = module.stat()
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert relay.server_key("postgresql://u@h/db", env, package) != key  # same version number
    assert relay.server_key("postgresql://u@h/other", env, package) != key
    # Without a DSN: the embedded server's home is the key.
    home1 = relay.server_key(None, {"DBCODE_HOME": str(tmp_path / "h1")}, package)
    home2 = relay.server_key(None, {"DBCODE_HOME": str(tmp_path / "h2")}, package)
    assert home1 != home2


async def test_secrets_stay_out_of_names_titles_and_logs(
    editors: Editors, shared_servers: Path, database_url: str, tmp_path: Path
) -> None:
    secret = "s3cret-pw-do-not-show"
    dsn = with_param(database_url, password=secret)  # trust auth: accepted, not needed
    log = tmp_path / "relay.log"
    await editors.start("sec", database_url=dsn, after=["--log-file", str(log)])
    [pid] = relay.live_servers(shared_servers)
    names = [p.name for p in shared_servers.iterdir()]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    for text in (*names, cmdline):  # not even without its password
        assert secret not in text and database_url not in text
    for text in (server_log(shared_servers), log.read_text()):  # redacted: no password
        assert secret not in text


def test_unreachable_database_is_one_line_and_exit_1(shared_servers: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
    env["DBCODE_DATABASE_URL"] = "postgresql://someone:pw-xyz@127.0.0.1:1/nodb"
    r = subprocess.run([*SERVE, "serve"], env=env, input=b"", capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.startswith("dbcode: cannot connect to PostgreSQL at ") and err.count("\n") == 1
    assert "pw-xyz" not in err and "Traceback" not in err
    assert relay.live_servers(shared_servers) == []


def test_bad_socket_directory_is_one_line(tmp_path: Path) -> None:
    runtime = tmp_path / "rt"
    runtime.mkdir()
    (runtime / "dbcode").write_text("not a directory")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    r = subprocess.run([*SERVE, "serve"], env=env, input=b"", capture_output=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.decode() == (
        f"dbcode: refusing the socket directory {runtime / 'dbcode'}: not a directory\n"
    )


async def test_concurrent_first_start_is_one_server(
    editors: Editors, shared_servers: Path, tmp_path: Path
) -> None:
    log = tmp_path / "relays.log"
    cmd = [*SERVE, "serve", "--log-file", str(log)]
    editors.monkeypatch.setattr(editor_module, "SERVER_CMD", cmd)
    eds = await asyncio.gather(*(Editor.start(editors.database_url, f"c{i}") for i in range(5)))
    editors.started += eds
    servers = relay.live_servers(shared_servers)
    assert len(servers) == 1
    await wait_until(lambda: len(attached_pids(log)) >= 5, what="the relays' log lines")
    assert attached_pids(log) == servers * 5
    for ed in eds:
        assert (await ed.request("dbcode/configure", {}))["agent"] == ed.name


async def test_stale_socket_is_replaced(editors: Editors, shared_servers: Path) -> None:
    env = {**os.environ, "DBCODE_DATABASE_URL": editors.database_url}
    env.pop("DBCODE_AGENT", None)
    paths = paths_for_env(env)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(paths.socket))  # a socket file nobody listens on
    stale.close()
    ed = await editors.start("after-stale")
    assert (await ed.request("dbcode/configure", {}))["agent"] == "after-stale"
    assert len(relay.live_servers(shared_servers)) == 1


async def test_idle_server_exits_and_removes_its_socket(
    editors: Editors, shared_servers: Path
) -> None:
    ed = await editors.start("idle", after=["--idle-exit", "0.5"])
    [pid] = relay.live_servers(shared_servers)
    await ed.stop()
    await wait_until(lambda: not relay.live_servers(shared_servers), timeout=30, what="idle exit")
    assert not list(shared_servers.glob("*.sock"))
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    # The next relay starts a new one.
    again = await editors.start("again")
    assert relay.live_servers(shared_servers) not in ([], [pid])
    assert (await again.request("dbcode/configure", {}))["agent"] == "again"


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    return True


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_standalone_runs_in_process(editors: Editors, shared_servers: Path, how: str) -> None:
    if how == "flag":
        ed = await editors.start("alone", before=["--agent", "forced"], after=["--standalone"])
    else:
        env = {"DBCODE_SERVE_STANDALONE": "1", "DBCODE_AGENT": "forced"}
        ed = await editors.start("alone", env=env)
    assert (await ed.request("dbcode/configure", {}))["agent"] == "forced"
    assert relay.live_servers(shared_servers) == []
    other = await editors.start("other", after=["--standalone"])
    assert (await other.request("dbcode/configure", {}))["agent"] == "other"


async def test_a_bad_preamble_is_refused_and_the_server_keeps_serving(
    editors: Editors, shared_servers: Path
) -> None:
    first = await editors.start("first")
    [sock_path] = shared_servers.glob("*.sock")

    def raw(data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(os.fspath(sock_path))
            s.sendall(data)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out

    body = b'{"jsonrpc":"2.0","id":1,"method":"shutdown"}'
    assert await asyncio.to_thread(raw, b"Content-Length: %d\r\n\r\n" % len(body) + body) == b""
    hello = json.dumps({"dbcode-relay": 1, "agent": "", "defaultAgent": "x"}).encode() + b"\n"
    assert await asyncio.to_thread(raw, hello) == b""  # an empty agent is not one
    assert (await first.request("dbcode/configure", {}))["agent"] == "first"
    second = await editors.start("second")
    assert (await second.request("dbcode/configure", {}))["agent"] == "second"
    assert "not a dbcode relay preamble" in server_log(shared_servers)


async def test_relay_loads_none_of_the_server_libraries(editors: Editors) -> None:
    ed = await editors.start("light")
    maps = Path(f"/proc/{relay_pid(ed)}/maps").read_text()
    loaded = [lib for lib in HEAVY_LIBRARIES if lib in maps]
    assert loaded == []


def test_cli_and_relay_import_none_of_the_server_libraries() -> None:
    probe = (
        "import sys; from lsp_dbcode import cli; from lsp_dbcode.server import relay; "
        "cli.build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'psycopg', 'pygls', 'lsprotocol', 'tree_sitter', 'asyncio', 'ssl', 'hashlib'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def _lsp_exchange(sock: socket.socket, message: dict[str, object]) -> dict[str, object]:
    body = json.dumps(message).encode()
    sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n"))
    length = int(fields[b"Content-Length"])
    while len(rest) < length:
        rest += sock.recv(65536)
    return json.loads(rest[:length])  # type: ignore[no-any-return]


def test_pipes_are_handed_over_other_streams_are_copied(
    database_url: str, shared_servers: Path
) -> None:
    """An editor's pipes go to the shared server itself (the relay keeps no copy in use); a
    stdin/stdout that is not a pipe (here a socket) is copied by the relay — both work."""
    env = {**os.environ, "DBCODE_DATABASE_URL": database_url}
    env.pop("DBCODE_AGENT", None)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"capabilities": {}, "processId": None},
    }
    # Pipes: handed over.
    proc = subprocess.Popen(
        [*SERVE, "serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        body = json.dumps(init).encode()
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        proc.stdin.flush()
        assert proc.stdout.readline().startswith(b"Content-Length:")
        fds = {os.readlink(f"/proc/{proc.pid}/fd/{n}") for n in (0, 1)}
        assert fds == {os.devnull}, fds  # the relay no longer holds the editor's pipes
    finally:
        proc.kill()
        proc.wait(10)
    # A socket as stdin and stdout: copied by the relay.
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([*SERVE, "serve"], env=env, stdin=theirs, stdout=theirs)
    theirs.close()
    try:
        ours.settimeout(60)
        reply = _lsp_exchange(ours, init)
        assert "capabilities" in reply["result"]  # type: ignore[operator]
        assert {os.readlink(f"/proc/{proc.pid}/fd/{n}") for n in (0, 1)} != {os.devnull}
    finally:
        ours.close()
        proc.kill()
        proc.wait(10)


def _inheritable_fds(pid: int) -> list[str]:
    """What the fds of ``pid`` above 2 without close-on-exec point to (O_CLOEXEC is octal
    02000000 in the ``flags`` line of /proc/PID/fdinfo/N)."""
    found = []
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            info = Path(f"/proc/{pid}/fdinfo/{entry.name}").read_text()
            flags = int(info.split("flags:")[1].split()[0], 8)
            if int(entry.name) > 2 and not flags & 0o2000000:
                found.append(os.readlink(entry))
    return found


async def test_handed_over_pipes_are_not_inherited_by_children(
    editors: Editors, shared_servers: Path
) -> None:
    """The editor's pipes that a relay hands over are close-on-exec in the shared server: a
    child it starts (ruff, or any other) can never hold an editor's pipe open, which would
    keep that editor waiting for its server to exit after its session ended."""
    ed = await editors.start("fds")
    [pid] = relay.live_servers(shared_servers)
    pipes = [t for t in _inheritable_fds(pid) if t.startswith("pipe:")]
    assert pipes == [], pipes
    own = {os.readlink(f"/proc/{relay_pid(ed)}/fd/{n}") for n in (0, 1)}
    assert own == {os.devnull}  # handed over: the server holds the editor's pipes
    await asyncio.wait_for(ed.stop(), 15)


def _connections(database_url: str, server_pid: int) -> list[tuple[str, str]]:
    """The connections of the `dbcode serve` process ``server_pid``: (state, last query)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, ''), left(query, 80) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (f"dbcode serve {server_pid}",),
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


async def test_connections_return_to_their_level_after_many_sessions_end(
    editors: Editors, shared_servers: Path, database_url: str, store: Store, workspace: str
) -> None:
    """Issue 13.4: 60 stdio sessions on one shared server, each on a workspace of its own, work
    and exit; the database's connections come back to their level before within a few
    seconds (the pool may keep its idle minimum) and stay there through the LISTEN safety poll.
    Before the fix every workspace ever served kept a feed that the safety poll refreshed, all
    at once: 10 s after the sessions had ended the pool grew to its maximum."""
    spaces = [f"{workspace}-{i}" for i in range(60)]
    for ws in [workspace, *spaces]:
        await store.write(ws, "m.py", "x = 1\n", agent="seed")
    first = await editors.start("first")  # starts the shared server
    await first.open(make_uri(workspace, "m.py"))
    [server_pid] = relay.live_servers(shared_servers)
    await asyncio.sleep(1)
    before = len(_connections(database_url, server_pid))
    assert before >= 2  # the pool's minimum and the LISTEN connection

    sessions = await asyncio.gather(*(editors.start(f"s{i}") for i in range(len(spaces))))
    for i, (ed, ws) in enumerate(zip(sessions, spaces, strict=True)):
        await ed.open(make_uri(ws, "m.py"))
        await ed.request("dbcode/subscribe", {"workspace": ws})
        if i % 6 == 0:
            await ed.request(
                "dbcode/writeFile",
                {"uri": make_uri(ws, "n.py"), "text": f"y = {i}\n", "baseRevision": 0},
            )
    await asyncio.gather(*(asyncio.wait_for(ed.stop(), 30) for ed in sessions))
    editors.started = [first]

    def settled() -> bool:
        return len(_connections(database_url, server_pid)) <= before + POOL_IDLE_MIN_ALLOWANCE

    try:
        await wait_until(settled, timeout=CONNECTIONS_SETTLE_S, what="connections settle")
        # ... and they stay settled past the LISTEN connection's safety poll.
        deadline = asyncio.get_running_loop().time() + hub.SAFETY_POLL_S + 3
        while asyncio.get_running_loop().time() < deadline:
            assert settled()
            await asyncio.sleep(0.25)
    except AssertionError:
        pytest.fail(f"{before} connections before, now: {_connections(database_url, server_pid)}")


POOL_IDLE_MIN_ALLOWANCE = 2
CONNECTIONS_SETTLE_S = 5.0
