"""`dbcode comment/reply/resolve/comments/claim/release/claims/who`, as real subprocesses on a
real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from lsp_dbcode.store import Store
from lsp_dbcode.store.review import COMMENT_BYTES_MAX
from tests.conftest import Cli

CODE = "".join(f"x{i} = {i}\n" for i in range(1, 11))


def ok(r) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode == 0, r.stderr
    return str(r.stdout)


def threads(cli: Cli, ws: str, *extra: str) -> list[dict]:
    return [json.loads(x) for x in ok(cli("comments", ws, "--json", *extra)).splitlines()]


def test_review_threads_follow_cli_writes(cli: Cli, workspace: str) -> None:
    ok(cli("write", workspace, "m.txt", input=CODE))
    out = ok(cli("comment", workspace, "m.txt", "4-5", "why these two?"))
    thread = int(out.split()[1])
    # Another agent inserts lines above: the thread moves down with its text.
    ok(cli("write", workspace, "m.txt", input="a\nb\nc\n" + CODE, env={"DBCODE_AGENT": "bob"}))
    (t,) = threads(cli, workspace)
    assert (t["thread"], t["startLine"], t["endLine"], t["outdated"]) == (thread, 7, 8, False)
    text = ok(cli("comments", workspace, "m.txt"))
    assert f"#{thread}  m.txt:7-8  note  open" in text and "why these two?" in text
    ok(cli("reply", workspace, str(thread), "because", env={"DBCODE_AGENT": "bob"}))
    # Deleting all its text: outdated, kept.
    rest = "a\nb\nc\n" + "".join(f"x{i} = {i}\n" for i in (1, 2, 3, 6, 7, 8, 9, 10))
    ok(cli("write", workspace, "m.txt", input=rest, env={"DBCODE_AGENT": "carl"}))
    (t,) = threads(cli, workspace)
    assert t["outdated"] and t["startLine"] == 7
    assert [(c["agent"], c["text"]) for c in t["comments"]] == [
        ("test-agent", "why these two?"),
        ("bob", "because"),
    ]
    assert "thread" in ok(cli("resolve", workspace, str(thread)))
    assert threads(cli, workspace) == []
    (t,) = threads(cli, workspace, "--all")
    assert t["state"] == "resolved"
    assert "reopened" in ok(cli("resolve", workspace, str(thread), "--reopen"))
    assert len(threads(cli, workspace)) == 1


def test_suggestion_from_stdin(cli: Cli, workspace: str) -> None:
    ok(cli("write", workspace, "m.txt", input=CODE))
    ok(cli("comment", workspace, "m.txt", "2", "better", "--suggest", "-", input="x2 = 22\n"))
    (t,) = threads(cli, workspace)
    assert t["kind"] == "suggestion" and t["replacement"] == "x2 = 22\n"
    ok(cli("comment", workspace, "m.txt", "3", "stop", "--kind", "blocking"))
    assert [t["kind"] for t in threads(cli, workspace)] == ["suggestion", "blocking"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["comment", "{ws}", "m.txt", "9-12", "hi"], "line 12 is beyond the end"),
        (["comment", "{ws}", "m.txt", "0", "hi"], "invalid lines"),
        (["comment", "{ws}", "m.txt", "x-y", "hi"], "invalid lines"),
        (["comment", "{ws}", "nope.txt", "1", "hi"], "no such file"),
        (["comment", "{ws}", "m.txt", "1", "big"], "over the limit"),
        (["comment", "{ws}", "m.txt", "1", "hi", "--kind", "suggestion"], "--suggest"),
        (["comment", "no-such-ws", "m.txt", "1", "hi"], "unknown workspace"),
        (["reply", "{ws}", "999999", "hi"], "no thread 999999"),
        (["resolve", "{ws}", "999999"], "no thread 999999"),
        (["reply", "{ws}", "abc", "hi"], "invalid id"),
    ],
)
def test_bad_review_input_writes_nothing(
    cli: Cli, workspace: str, args: list[str], message: str
) -> None:
    ok(cli("write", workspace, "m.txt", input=CODE))
    args = [a.replace("{ws}", workspace) for a in args]
    if args[-1] == "big":
        args[-1] = "x" * (COMMENT_BYTES_MAX + 1)
    r = cli(*args)
    assert r.returncode == 1
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert threads(cli, workspace, "--all") == []


def test_claims_refuse_warn_and_release(cli: Cli, workspace: str) -> None:
    ok(cli("write", workspace, "m.txt", input=CODE))
    claim_id = int(ok(cli("claim", workspace, "m.txt", "4-6", "--exclusive", "--note", "mine")))
    bob = {"DBCODE_AGENT": "bob"}
    # Bob's commit touching line 5: exit 4, naming the holder and the note; nothing written.
    r = cli("write", workspace, "m.txt", input=CODE.replace("x5 = 5", "x5 = 50"), env=bob)
    assert r.returncode == 4, r.stderr
    assert "claimed exclusively by test-agent: mine" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert ok(cli("cat", workspace, "m.txt")) == CODE
    # Elsewhere in the file: fine.
    text = CODE.replace("x9 = 9", "x9 = 90")
    ok(cli("write", workspace, "m.txt", input=text, env=bob))
    (c,) = [json.loads(x) for x in ok(cli("claims", workspace, "--json")).splitlines()]
    assert (c["id"], c["agent"], c["startLine"], c["endLine"], c["exclusive"], c["note"]) == (
        claim_id,
        "test-agent",
        4,
        6,
        True,
        "mine",
    )
    # Someone else cannot release it; its holder can.
    r = cli("release", workspace, str(claim_id), env=bob)
    assert r.returncode == 1 and "held by test-agent" in r.stderr
    ok(cli("release", workspace, str(claim_id)))
    assert ok(cli("claims", workspace)) == ""
    # A non-exclusive claim only warns, on stderr; the write goes through.
    ok(cli("claim", workspace, "m.txt", "--note", "reading"))
    r = cli("write", workspace, "m.txt", input=text + "more\n", env=bob)
    assert r.returncode == 0, r.stderr
    assert "warning: m.txt is claimed by test-agent: reading" in r.stderr
    assert ok(cli("cat", workspace, "m.txt")).endswith("more\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["claim", "{ws}", "nope.txt"], "no such file"),
        (["claim", "{ws}", "m.txt", "11"], "beyond the end"),
        (["claim", "{ws}", "m.txt", "--ttl", "-5"], "invalid number of seconds"),
        (["claim", "{ws}", "m.txt", "--ttl", "0"], "time to live"),
        (["claim", "{ws}", "m.txt", "--id", "999999"], "no claim 999999"),
        (["release", "{ws}", "999999"], "no claim 999999"),
    ],
)
def test_bad_claims(cli: Cli, workspace: str, args: list[str], message: str) -> None:
    ok(cli("write", workspace, "m.txt", input=CODE))
    r = cli(*[a.replace("{ws}", workspace) for a in args])
    assert r.returncode == 1
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ok(cli("claims", workspace)) == ""


async def test_who_lists_sessions_of_other_processes(
    cli: Cli, database_url: str, workspace: str
) -> None:
    ok(cli("write", workspace, "m.txt", input=CODE))
    async with Store(database_url) as s:
        session = await s.open_session("ann", "live")
        await s.set_presence(session, workspace, "m.txt", present=True)
        (row,) = [json.loads(x) for x in ok(cli("who", workspace, "--json")).splitlines()]
        assert (row["agent"], row["path"], row["mode"]) == ("ann", "m.txt", "live")
        assert row["uri"] == f"dbcode://{workspace}/m.txt"
        assert "ann" in ok(cli("who", workspace, "m.txt"))
    assert ok(cli("who", workspace)) == ""  # the process's holder ended with its Store
