"""lsp_dbcode.client against a real shared `dbcode serve` and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lsp_dbcode import client as client_module
from lsp_dbcode.client import (
    AccessDenied,
    Change,
    Claimed,
    Client,
    Conflict,
    ConnectionLost,
    InvalidInput,
    NotFound,
    ServerError,
    connect,
)
from lsp_dbcode.rpc import error_from
from lsp_dbcode.server.relay import live_servers
from lsp_dbcode.store.coordination import CLAIM_TTL_S_DEFAULT
from tests.conftest import Cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def db(database_url: str, workspace: str) -> AsyncIterator[Client]:
    client = await connect(workspace, agent="client-test", database_url=database_url)
    try:
        yield client
    finally:
        await client.close()


async def test_read_write_cas_conflict_names_current_revision(db: Client) -> None:
    first = await db.write("pkg/app.py", "import os\n\nx = 1\n", base=0)
    assert (first.revision, first.seq) == (1, 1)
    assert first.check is not None
    assert [(f.code, f.line, f.column) for f in first.check.findings] == [("F401", 1, 8)]
    got = await db.read("pkg/app.py")
    assert (got.text, got.revision) == ("import os\n\nx = 1\n", 1)
    await db.write("pkg/app.py", "x = 2\n", base=1)
    with pytest.raises(Conflict) as err:
        await db.write("pkg/app.py", "x = 3\n", base=1)
    assert (
        err.value.current_revision == 2 and err.value.uri == f"dbcode://{db.workspace}/pkg/app.py"
    )
    assert (await db.read("pkg/app.py")).text == "x = 2\n"  # nothing written
    assert (await db.read("pkg/app.py", revision=1)).text == "import os\n\nx = 1\n"
    assert db.agent == "client-test"
    assert [(e.path, e.revision, e.updated_by) for e in await db.ls()] == [
        ("pkg/app.py", 2, "client-test")
    ]


async def test_commit_is_all_or_nothing(db: Client) -> None:
    await db.write("a.txt", "a1")
    done = await db.commit([Change("a.txt", "a2", 1), Change("b.py", "y = (\n", 0)], "two")
    assert done.revisions == {"a.txt": 2, "b.py": 1}
    assert done.checks["b.py"].errors > 0  # the new revision's findings come back
    with pytest.raises(Conflict) as err:
        await db.commit([Change("a.txt", "a3", 2), Change("b.py", "y = 1\n", 0)])
    assert err.value.current_revision == 1
    assert (await db.read("a.txt")).text == "a2"
    log = await db.log()
    assert [cs.seq for cs in log] == [2, 1] and log[0].message == "two"
    assert {(f.path, f.kind) for f in log[0].files} == {("a.txt", "update"), ("b.py", "create")}
    assert (await db.commit({"a.txt": None})).revisions == {"a.txt": 3}  # a delete is one too
    with pytest.raises(NotFound):
        await db.read("a.txt")


async def test_diagnostics_of_a_text_before_it_is_written(db: Client) -> None:
    await db.write("ruff.toml", '[lint]\nignore = ["F401"]\n')
    found = await db.diagnostics("m.py", "import os\ndef (:\n")
    assert found.revision is None and found.errors >= 1
    assert {f.code for f in found.findings} == {"invalid-syntax"}  # F401: the stored config
    broken = await db.diagnostics("data.json", '{"a": ')
    assert [(f.source, f.severity) for f in broken.findings] == [("syntax", "error")]
    with pytest.raises(NotFound):
        await db.read("m.py")  # checking wrote nothing
    report = await db.check_workspace()
    assert (report.files, report.findings) == (1, [])


async def test_bad_input_is_refused_and_changes_nothing(db: Client, database_url: str) -> None:
    await db.write("seed.txt", "seed")
    with pytest.raises(InvalidInput, match=r"'\.\.' segments"):
        await db.write("../escape.txt", "x")
    with pytest.raises(InvalidInput, match=r"'\.\.' segments"):
        await db.diagnostics("a/../../b.py", "x = 1\n")
    with pytest.raises(NotFound, match="unknown workspace"):
        await db.ls(workspace="no-such-ws")
    with pytest.raises(InvalidInput):
        await db.write("big.txt", "x" * (10 * 2**20 + 1))
    with pytest.raises(Conflict):
        await db.write("seed.txt", "stale", base=0)
    assert [cs.seq for cs in await db.log()] == [1]


async def test_changes_catch_up_then_woken_by_another_process(db: Client, cli: Cli) -> None:
    for i in range(3):
        await db.write(f"f{i}.txt", str(i))
    got = []
    it = db.changes(since=1, timeout_s=30)
    got.append(await anext(it))
    got.append(await anext(it))
    assert [cs.seq for cs in got] == [2, 3]  # catch-up, in order
    writer = await asyncio.to_thread(
        cli, "write", db.workspace or "", "other.txt", input="from another process"
    )
    assert writer.returncode == 0, writer.stderr
    cs = await anext(it)
    assert (cs.seq, cs.agent, [f.path for f in cs.files]) == (4, "test-agent", ["other.txt"])
    await it.aclose()
    # A bounded wait with nothing to see ends quietly.
    assert [c async for c in db.changes(timeout_s=0.2)] == []


async def test_a_killed_server_is_reported_not_hung_on(db: Client, shared_servers: Path) -> None:
    await db.write("a.txt", "a")
    (pid,) = live_servers(shared_servers)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(db.read("a.txt"), 30)
    with pytest.raises(ConnectionLost):
        await db.read("a.txt")


async def test_the_example_agent_loop_runs(db: Client, database_url: str, tmp_path: Path) -> None:
    await db.write("app.py", "import os\nimport sys\n\nprint(sys.argv)\n")
    env = {**os.environ, "DBCODE_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "agent_loop.py"),
        db.workspace or "",
        "app.py",
        "--wait",
        "20",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.decode() == "app.py: r2 (seq 2), 0 finding(s) left\n"
    assert (await db.read("app.py")).text == "import sys\n\nprint(sys.argv)\n"
    await db.write("other.py", "x = 1\n")  # the example sees it
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.decode() == "seq 3 by client-test: other.py\n"
    proc.terminate()
    await proc.wait()


def _start_server(database_url: str, *flag: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k != "DBCODE_AGENT"}
    env["DBCODE_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsp_dbcode", "serve", *flag],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for _ in range(200):
        line = proc.stderr.readline().decode()
        m = re.search(r"serving LSP over (TCP on|WebSocket on|unix socket) (.*)", line)
        if m:
            return proc, m.group(2)
    raise AssertionError("the server did not say where it listens")


@pytest.mark.parametrize("transport", ["tcp", "ws", "unix"])
async def test_own_servers_over_tcp_ws_and_unix(
    transport: str, database_url: str, workspace: str, tmp_path: Path
) -> None:
    if transport == "unix":
        where = str(Path(os.environ["XDG_RUNTIME_DIR"]) / "own.sock")
        proc, _ = _start_server(database_url, "--unix", where, "--idle-exit", "0")
        kwargs = {"unix": where}
    else:
        proc, addr = _start_server(database_url, f"--{transport}", "127.0.0.1:0")
        port = re.search(r"(\d+)\)", addr)
        assert port is not None
        kwargs = {transport: f"127.0.0.1:{port.group(1)}"}
    try:
        async with await connect(workspace, agent="own", **kwargs) as db:  # type: ignore[arg-type]
            done = await db.write("a.py", "import os\n", base=0)
            assert done.check is not None and [f.code for f in done.check.findings] == ["F401"]
            with pytest.raises(Conflict) as err:
                await db.write("a.py", "x", base=0)
            assert err.value.current_revision == 1
            seen = [cs.seq async for cs in db.changes(since=0, timeout_s=2)]
            assert seen == [1] and (await db.log())[0].agent == "own"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


CODE = "".join(f"x{i} = {i}\n" for i in range(1, 11))


@pytest.fixture
async def bob(database_url: str, workspace: str) -> AsyncIterator[Client]:
    client = await connect(workspace, agent="bob", database_url=database_url)
    try:
        yield client
    finally:
        await client.close()


async def test_read_at_a_seq_and_blame(db: Client, bob: Client) -> None:
    await db.write("a.txt", "one\ntwo\nthree\n", base=0)
    await bob.write("a.txt", "one\nTWO\nthree\n", base=1)
    await db.write("b.txt", "b")
    old = await db.read("a.txt", at=1)
    assert (old.text, old.revision, old.at) == ("one\ntwo\nthree\n", 1, 1)
    assert (await db.read("a.txt", at=3)).text == "one\nTWO\nthree\n"
    runs = await db.blame("a.txt")
    assert [(r.start_line, r.end_line, r.seq, r.agent, r.revision) for r in runs] == [
        (1, 1, 1, "client-test", 1),
        (2, 2, 2, "bob", 2),
        (3, 3, 1, "client-test", 1),
    ]
    assert [(r.start_line, r.end_line, r.seq) for r in await db.blame("a.txt", 1)] == [(1, 3, 1)]
    assert [(r.start_line, r.end_line, r.seq) for r in await db.blame("a.txt", at=1)] == [(1, 3, 1)]
    with pytest.raises(InvalidInput, match="beyond the head"):
        await db.read("a.txt", at=99)
    with pytest.raises(NotFound, match="did not exist at seq 1"):
        await db.read("b.txt", at=1)
    with pytest.raises(NotFound, match="no revision 9"):
        await db.blame("a.txt", 9)
    with pytest.raises(InvalidInput, match=r"'\.\.' segments"):
        await db.blame("../a.txt")


async def test_claims_refuse_name_holder_and_end_with_the_session(
    db: Client, bob: Client, database_url: str, workspace: str
) -> None:
    await db.write("m.py", CODE, base=0)
    mine = await db.claim("m.py", (4, 6), exclusive=True, note="splitting it")
    assert (mine.path, mine.lines, mine.exclusive, mine.agent) == (
        "m.py",
        (4, 6),
        True,
        "client-test",
    )
    # Bob's write inside the claim: refused, naming the holder and the note; nothing written.
    with pytest.raises(Claimed) as err:
        await bob.write("m.py", CODE.replace("x5 = 5", "x5 = 50"), base=1)
    assert (err.value.holder, err.value.note, err.value.claim_id) == (
        "client-test",
        "splitting it",
        mine.id,
    )
    assert "claimed exclusively by client-test: splitting it" in err.value.message
    with pytest.raises(Claimed):
        await bob.claim("m.py", (5, 5), exclusive=True)
    assert (await db.read("m.py")).revision == 1
    # Outside it: fine; the claim moves with its lines.
    await bob.write("m.py", "x0 = 0\n" + CODE, base=1)
    (listed,) = await bob.claims()
    assert (listed.id, listed.lines, listed.note) == (mine.id, (5, 7), "splitting it")
    renewed = await db.claim("m.py", (5, 7), renew=mine.id, ttl_s=60)
    assert renewed.id == mine.id and renewed.expires_at != mine.expires_at
    with pytest.raises(ServerError, match="held by client-test"):
        await bob.release(mine.id)
    await db.release(mine.id)
    assert await db.claims() == []
    # A session's claim ends with the session; a detached one lasts until released.
    other = await connect(workspace, agent="carl", database_url=database_url)
    await other.claim("m.py", note="reading")
    kept = await other.claim("m.py", (1, 1), detached=True)
    assert {c.agent for c in await db.claims("m.py")} == {"carl"}
    await other.close()  # the server ends the session when it sees the connection go
    for _ in range(200):
        left = [c.id for c in await db.claims()]
        if left == [kept.id]:
            break
        await asyncio.sleep(0.05)
    assert left == [kept.id]


async def test_review_threads(db: Client, bob: Client) -> None:
    await db.write("m.py", CODE, base=0)
    made = await db.comment("m.py", (4, 5), "why these two?")
    sug = await db.comment("m.py", (2, 2), "better", kind="suggestion", replacement="x2 = 22\n")
    await bob.write("m.py", "a = 1\n" + CODE, base=1)  # the threads move with their code
    reply = await bob.reply(made.thread, "because")
    threads = {t.id: t for t in await db.comments("m.py")}
    t = threads[made.thread]
    assert (t.lines, t.kind, t.state, t.outdated, t.revision) == ((5, 6), "note", "open", False, 2)
    assert [(c.agent, c.text) for c in t.comments] == [
        ("client-test", "why these two?"),
        ("bob", "because"),
    ]
    assert t.comments[1].id == reply
    assert (threads[sug.thread].kind, threads[sug.thread].replacement) == (
        "suggestion",
        "x2 = 22\n",
    )
    assert await db.resolve(made.thread) is True
    assert await db.resolve(made.thread) is False  # already
    assert [x.id for x in await db.comments()] == [sug.thread]
    assert {x.id for x in await db.comments(state="all")} == {made.thread, sug.thread}
    assert await db.resolve(made.thread, reopen=True) is True


async def test_bad_coordination_input_changes_nothing(db: Client) -> None:
    await db.write("m.py", CODE, base=0)
    with pytest.raises(NotFound, match="no thread 999999"):
        await db.reply(999999, "hi")
    with pytest.raises(NotFound, match="no thread 999999"):
        await db.resolve(999999)
    with pytest.raises(InvalidInput, match="line 12 is beyond the end"):
        await db.comment("m.py", (9, 12), "hi")
    with pytest.raises(InvalidInput, match="beyond the end"):
        await db.claim("m.py", (11, 11))
    with pytest.raises(InvalidInput, match="invalid lines"):
        await db.comment("m.py", (0, 1), "hi")
    with pytest.raises(InvalidInput, match=r"'\.\.' segments"):
        await db.comment("../m.py", (1, 1), "hi")
    with pytest.raises(InvalidInput, match=r"'\.\.' segments"):
        await db.claim("a/../../m.py")
    with pytest.raises(NotFound, match="no such file"):
        await db.claim("nope.py")
    with pytest.raises(InvalidInput, match="time to live"):
        await db.claim("m.py", ttl_s=0)
    with pytest.raises(NotFound, match="no claim 999999"):
        await db.release(999999)
    with pytest.raises(Conflict) as err:
        await db.write("m.py", "stale", base=0)
    assert err.value.current_revision == 1
    assert await db.comments(state="all") == []
    assert await db.claims() == []
    assert [cs.seq for cs in await db.log()] == [1]
    assert await db.presence() == []


def test_denied_and_claimed_are_their_own_errors() -> None:
    """401/403 (the server's tokens, issue 18) are AccessDenied; 423 names holder and note."""
    for code in (401, 403):
        err = error_from({"code": code, "message": "token expired"})
        assert isinstance(err, AccessDenied) and err.message == "token expired"
    claimed = error_from(
        {"code": 423, "message": "m", "data": {"claim": {"id": 3, "agent": "ann", "note": "n"}}}
    )
    assert isinstance(claimed, Claimed) and (claimed.holder, claimed.note) == ("ann", "n")
    assert client_module.CLAIM_TTL_S_DEFAULT == CLAIM_TTL_S_DEFAULT
