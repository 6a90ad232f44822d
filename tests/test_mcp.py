"""`dbcode mcp` driven by the MCP SDK's own client over stdio: a real `dbcode mcp` process, the
real shared language server, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp.client import Client as McpClient
from mcp.client.stdio import StdioServerParameters

from lsp_dbcode.server.relay import live_servers
from tests.conftest import Cli

TOOLS = {
    "list_workspaces",
    "list_files",
    "read_file",
    "write_file",
    "commit",
    "log",
    "check",
    "wait_for_changes",
    "blame",
    "claim",
    "release",
    "list_claims",
    "comment",
    "reply",
    "resolve",
    "list_comments",
}


@contextlib.asynccontextmanager
async def mcp_session(database_url: str, workspace: str) -> AsyncIterator[McpClient]:
    """The SDK's client over stdio to a `dbcode mcp` process. (Not a fixture: anyio's task
    group must be entered and left in the same task.)"""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lsp_dbcode", "--agent", "mcp-agent", "mcp", "--workspace", workspace],
        env={
            "DBCODE_DATABASE_URL": database_url,
            "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"],
            "PATH": os.environ.get("PATH", ""),
        },
    )
    async with McpClient(params) as client:
        yield client


async def call(client: McpClient, tool: str, **args: Any) -> dict[str, Any]:
    res = await asyncio.wait_for(client.call_tool(tool, args), 120)
    assert not res.is_error, res.content
    data = res.structured_content
    if isinstance(data, dict) and set(data) == {"result"}:
        data = data["result"]
    return data  # type: ignore[no-any-return]


async def error(client: McpClient, tool: str, **args: Any) -> str:
    res = await asyncio.wait_for(client.call_tool(tool, args), 120)
    assert res.is_error, res
    return " ".join(getattr(c, "text", "") for c in res.content)


async def test_tools_are_described_for_a_model(database_url: str, workspace: str) -> None:
    async with mcp_session(database_url, workspace) as mcp:
        await _tools_are_described_for_a_model(mcp)


async def _tools_are_described_for_a_model(mcp: McpClient) -> None:
    tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert set(tools) == TOOLS
    for t in tools.values():
        assert t.description and len(t.description) > 60, t.name
    write = tools["write_file"].input_schema
    assert {"path", "text", "base_revision"} <= set(write["required"])
    assert "conflict" in write["properties"]["base_revision"]["description"]
    assert "at_seq" in tools["read_file"].input_schema["properties"]
    assert "exclusive" in tools["claim"].input_schema["properties"]
    assert {"path", "start_line", "text"} <= set(tools["comment"].input_schema["required"])


async def test_every_tool_against_a_real_server(
    database_url: str, workspace: str, cli: Cli
) -> None:
    async with mcp_session(database_url, workspace) as mcp:
        await _every_tool(mcp, workspace, cli)


async def _every_tool(mcp: McpClient, workspace: str, cli: Cli) -> None:
    done = await call(
        mcp, "write_file", path="app.py", text="import os\n\nx = 1\n", base_revision=0
    )
    assert (done["revision"], done["seq"]) == (1, 1)
    assert [p["code"] for p in done["check"]["problems"]] == ["F401"]  # what the write broke

    got = await call(mcp, "read_file", path="app.py")
    assert got == {"path": "app.py", "revision": 1, "text": "import os\n\nx = 1\n"}

    # A stale base: a tool error that names the current revision; nothing written.
    await call(mcp, "write_file", path="app.py", text="x = 2\n", base_revision=1)
    msg = await error(mcp, "write_file", path="app.py", text="x = 3\n", base_revision=1)
    assert "conflict" in msg and "current revision 2" in msg
    assert (await call(mcp, "read_file", path="app.py"))["text"] == "x = 2\n"
    assert (await call(mcp, "read_file", path="app.py", revision=1))["revision"] == 1

    committed = await call(
        mcp,
        "commit",
        changes=[
            {"path": "app.py", "text": "x = (\n", "base_revision": 2},
            {"path": "lib/util.py", "text": "def f():\n    return 1\n", "base_revision": 0},
        ],
        message="two files",
    )
    assert committed["revisions"] == {"app.py": 3, "lib/util.py": 1}
    assert committed["checks"]["app.py"]["errors"] >= 1
    assert committed["checks"]["lib/util.py"]["problems"] == []
    msg = await error(
        mcp,
        "commit",
        changes=[
            {"path": "lib/util.py", "text": "y = 1\n", "base_revision": 1},
            {"path": "app.py", "text": "x = 4\n", "base_revision": 2},
        ],
    )
    assert "current revision 3" in msg
    assert (await call(mcp, "read_file", path="lib/util.py"))["revision"] == 1  # all or nothing

    files = await call(mcp, "list_files")
    assert [(f["path"], f["revision"], f["updatedBy"]) for f in files["files"]] == [
        ("app.py", 3, "mcp-agent"),
        ("lib/util.py", 1, "mcp-agent"),
    ]
    assert [f["path"] for f in (await call(mcp, "list_files", prefix="lib/"))["files"]] == [
        "lib/util.py"
    ]
    log = await call(mcp, "log", limit=2)
    assert [c["seq"] for c in log["changesets"]] == [3, 2]
    assert log["changesets"][0]["message"] == "two files"
    names = [w["name"] for w in await call(mcp, "list_workspaces")]
    assert workspace in names

    before = await call(mcp, "check", path="new.py", text="import sys\ndef (:\n")
    assert before["revision"] is None and before["errors"] >= 1
    whole = await call(mcp, "check")
    assert whole["files"] == 2 and {p["path"] for p in whole["problems"]} == {"app.py"}

    # Catch-up is immediate; a wait is woken by another process's write.
    caught = await call(mcp, "wait_for_changes", since_seq=1, timeout_s=5)
    assert [c["seq"] for c in caught["changesets"]] == [2, 3] and caught["last_seq"] == 3

    async def other_process_writes() -> None:
        await asyncio.sleep(1.0)
        r = await asyncio.to_thread(cli, "write", workspace, "other.txt", input="hi")
        assert r.returncode == 0, r.stderr

    writer = asyncio.create_task(other_process_writes())
    woken = await call(mcp, "wait_for_changes", since_seq=3, timeout_s=60)
    await writer
    assert [(c["seq"], c["agent"]) for c in woken["changesets"]] == [(4, "test-agent")]
    assert woken["changesets"][0]["files"] == [
        {"path": "other.txt", "revision": 1, "kind": "create"}
    ]
    quiet = await call(mcp, "wait_for_changes", since_seq=4, timeout_s=0.3)
    assert quiet == {"changesets": [], "last_seq": 4, "timed_out": True, "truncated": False}


async def test_bad_input_gets_the_clis_errors_and_changes_nothing(
    database_url: str, workspace: str
) -> None:
    async with mcp_session(database_url, workspace) as mcp:
        await _bad_input(mcp)


async def _bad_input(mcp: McpClient) -> None:
    await call(mcp, "write_file", path="seed.txt", text="seed", base_revision=0)
    assert "'..' segments" in await error(
        mcp, "write_file", path="../x.txt", text="x", base_revision=0
    )
    assert "not found" in await error(mcp, "read_file", path="missing.txt")
    assert "unknown workspace" in await error(mcp, "list_files", workspace="no-such-ws")
    assert "over the limit" in await error(
        mcp, "write_file", path="big.txt", text="x" * (10 * 2**20 + 1), base_revision=0
    )
    assert "less than or equal to 300" in await error(  # every wait is bounded
        mcp, "wait_for_changes", since_seq=0, timeout_s=10_000
    )
    log = await call(mcp, "log")
    assert [c["seq"] for c in log["changesets"]] == [1]
    assert json.dumps(log)  # plain JSON


async def test_a_killed_language_server_is_replaced_not_hung_on(
    database_url: str, workspace: str, shared_servers: Path
) -> None:
    async with mcp_session(database_url, workspace) as mcp:
        await call(mcp, "write_file", path="a.txt", text="a", base_revision=0)
        (pid,) = live_servers(shared_servers)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)  # the session's reader sees the socket close
        got = await call(mcp, "read_file", path="a.txt")  # a new shared server, same data
        assert got["text"] == "a"
        assert live_servers(shared_servers) not in ([], [pid])


CODE = "".join(f"x{i} = {i}\n" for i in range(1, 11))


async def test_history_claims_and_review_tools(database_url: str, workspace: str, cli: Cli) -> None:
    async with mcp_session(database_url, workspace) as mcp:
        await _history_claims_and_review(mcp, workspace, cli)


async def _history_claims_and_review(mcp: McpClient, workspace: str, cli: Cli) -> None:
    await call(mcp, "write_file", path="m.py", text=CODE, base_revision=0)
    bob = {"DBCODE_AGENT": "bob"}
    r = cli("write", workspace, "m.py", input=CODE.replace("x3 = 3", "x3 = 30"), env=bob)
    assert r.returncode == 0, r.stderr

    # Time travel and blame.
    old = await call(mcp, "read_file", path="m.py", at_seq=1)
    assert (old["text"], old["revision"], old["at_seq"]) == (CODE, 1, 1)
    assert "beyond the head" in await error(mcp, "read_file", path="m.py", at_seq=99)
    runs = (await call(mcp, "blame", path="m.py"))["runs"]
    assert [(x["start_line"], x["end_line"], x["seq"], x["agent"]) for x in runs] == [
        (1, 2, 1, "mcp-agent"),
        (3, 3, 2, "bob"),
        (4, 10, 1, "mcp-agent"),
    ]
    assert [x["seq"] for x in (await call(mcp, "blame", path="m.py", at_seq=1))["runs"]] == [1]
    assert "not found" in await error(mcp, "blame", path="nope.py")

    # An exclusive claim of the MCP agent refuses bob's write there (exit 4 on the CLI).
    made = await call(
        mcp, "claim", path="m.py", start_line=5, end_line=6, exclusive=True, note="refactor"
    )
    assert (made["start_line"], made["end_line"], made["agent"]) == (5, 6, "mcp-agent")
    r = cli("write", workspace, "m.py", input=CODE.replace("x5 = 5", "x5 = 50"), env=bob)
    assert r.returncode == 4 and "claimed exclusively by mcp-agent: refactor" in r.stderr
    (listed,) = (await call(mcp, "list_claims"))["claims"]
    assert listed["claim_id"] == made["claim_id"] and listed["note"] == "refactor"
    assert (await call(mcp, "release", claim_id=made["claim_id"]))["released"] == made["claim_id"]
    assert (await call(mcp, "list_claims", path="m.py"))["claims"] == []

    # Bob's exclusive claim (a CLI claim): the tools are refused, naming holder and note.
    r = cli("claim", workspace, "m.py", "1-2", "--exclusive", "--note", "mine now", env=bob)
    assert r.returncode == 0, r.stderr
    msg = await error(
        mcp,
        "write_file",
        path="m.py",
        text=CODE.replace("x1 = 1\n", "x1 = 10\n"),
        base_revision=2,
    )
    assert "claimed: " in msg and "bob: mine now" in msg
    msg = await error(mcp, "claim", path="m.py", start_line=2, exclusive=True)
    assert "claimed: " in msg and "bob" in msg and "mine now" in msg
    assert (await call(mcp, "read_file", path="m.py"))["revision"] == 2  # nothing written

    # Review: comment, reply (by bob, on the CLI), resolve.
    t = await call(mcp, "comment", path="m.py", start_line=3, text="why 30?")
    sug = await call(
        mcp,
        "comment",
        path="m.py",
        start_line=9,
        end_line=10,
        text="shorter",
        kind="suggestion",
        replacement="x9 = x10 = 9\n",
    )
    assert cli("reply", workspace, str(t["thread"]), "a test", env=bob).returncode == 0
    threads = (await call(mcp, "list_comments", path="m.py"))["threads"]
    by_id = {x["thread"]: x for x in threads}
    assert [(c["agent"], c["text"]) for c in by_id[t["thread"]]["comments"]] == [
        ("mcp-agent", "why 30?"),
        ("bob", "a test"),
    ]
    assert (by_id[t["thread"]]["start_line"], by_id[t["thread"]]["end_line"]) == (3, 3)
    assert by_id[sug["thread"]]["replacement"] == "x9 = x10 = 9\n"
    await call(mcp, "reply", thread=t["thread"], text="ok, reverting")
    done = await call(mcp, "resolve", thread=t["thread"])
    assert done == {"thread": t["thread"], "state": "resolved", "changed": True}
    assert (await call(mcp, "resolve", thread=t["thread"]))["changed"] is False
    open_now = (await call(mcp, "list_comments"))["threads"]
    assert [x["thread"] for x in open_now] == [sug["thread"]]
    every = (await call(mcp, "list_comments", include_resolved=True))["threads"]
    assert len(every) == 2

    # Bad input: the CLI's errors, nothing changed.
    assert "no thread 999999" in await error(mcp, "reply", thread=999999, text="hi")
    assert "beyond the end" in await error(mcp, "comment", path="m.py", start_line=11, text="x")
    assert "'..' segments" in await error(mcp, "claim", path="../m.py")
    assert "no claim 999999" in await error(mcp, "release", claim_id=999999)
    assert len((await call(mcp, "list_comments", include_resolved=True))["threads"]) == 2
    assert [c["agent"] for c in (await call(mcp, "list_claims"))["claims"]] == ["bob"]
