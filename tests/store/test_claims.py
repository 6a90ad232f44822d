"""Claims, sessions and presence on a real PostgreSQL: enforcement in the commit's
transaction, races settled by the database, expiry by its clock, a killed holder."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import psycopg
import pytest

from lsp_dbcode.store import Change, Claimed, InvalidInput, NotFound, Store

CODE = "".join(f"line {i}\n" for i in range(1, 11))


def edit_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line - 1] = new
    return "".join(lines)


async def test_exclusive_claim_refuses_overlap_only(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    claim = await store.claim(
        workspace, "f.txt", agent="ann", lines=(4, 6), note="refactoring", exclusive=True
    )
    assert claim.lines == (4, 6) and claim.exclusive
    with pytest.raises(Claimed, match="claimed exclusively by ann: refactoring") as info:
        await store.write(workspace, "f.txt", edit_line(CODE, 5, "changed\n"), agent="bob")
    assert info.value.claim.id == claim.id
    assert (await store.read(workspace, "f.txt")).revision == 1  # nothing written
    # Elsewhere in the file: fine. Lines inserted above move the claim down.
    text = "new top\n" + edit_line(CODE, 9, "bob was here\n")
    await store.write(workspace, "f.txt", text, agent="bob")
    (moved,) = await store.claims(workspace, "f.txt")
    assert moved.lines == (5, 7)
    # The claimed text at its new place is still refused; the holder may edit it.
    with pytest.raises(Claimed):
        await store.write(workspace, "f.txt", edit_line(text, 6, "x\n"), agent="bob")
    await store.write(workspace, "f.txt", edit_line(text, 6, "ann's\n"), agent="ann")
    # Deleting or renaming the file touches everything; so does a multi-file changeset.
    with pytest.raises(Claimed):
        await store.commit(workspace, [Change.delete("f.txt")], agent="bob")
    with pytest.raises(Claimed):
        await store.commit(
            workspace,
            [Change.write("other.txt", "x"), Change.rename("f.txt", "g.txt")],
            agent="bob",
        )
    with pytest.raises(NotFound):
        await store.read(workspace, "other.txt")  # all or nothing
    await store.release(workspace, claim.id, agent="ann")
    await store.write(workspace, "f.txt", "free\n", agent="bob")


async def test_non_exclusive_claim_warns(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    claim = await store.claim(workspace, "f.txt", agent="ann", lines=(2, 2), note="looking")
    res = await store.write(workspace, "f.txt", edit_line(CODE, 2, "two\n"), agent="bob")
    assert [w.id for w in res.warnings] == [claim.id] and res.warnings[0].note == "looking"
    text = edit_line(edit_line(CODE, 2, "two\n"), 9, "nine\n")
    res = await store.write(workspace, "f.txt", text, agent="bob")
    assert res.warnings == ()
    # In a group commit too: each changeset gets its own warnings.
    results = await asyncio.gather(
        *(store.commit(workspace, [Change.write(f"g{i}.txt", "x")], agent="bob") for i in range(5)),
        store.write(workspace, "f.txt", "all new\n", agent="carl"),
    )
    assert [len(r.warnings) for r in results] == [0, 0, 0, 0, 0, 1]


async def test_whole_file_claim_and_own_agent(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    await store.claim(workspace, "f.txt", agent="ann", exclusive=True, note="mine")
    with pytest.raises(Claimed, match="mine"):
        await store.write(workspace, "f.txt", CODE + "more\n", agent="bob")
    await store.write(workspace, "f.txt", CODE + "more\n", agent="ann")
    with pytest.raises(Claimed):
        await store.claim(workspace, "f.txt", agent="bob", lines=(1, 1))


async def test_overlapping_exclusive_claims_at_once_one_wins(
    store: Store, database_url: str, workspace: str
) -> None:
    """Both claims are sent while a third transaction holds the file row, so they reach the
    database together; it lets exactly one through, every round."""
    await store.write(workspace, "f.txt", CODE, agent="ann")
    async with Store(database_url) as a, Store(database_url) as b:
        for round_ in range(5):
            async with await psycopg.AsyncConnection.connect(database_url) as gate:
                await gate.execute(
                    "SELECT 1 FROM dbcode_file f JOIN dbcode_workspace w ON w.id = f.workspace_id"
                    " WHERE w.name = %s AND f.path = 'f.txt' FOR UPDATE",
                    (workspace,),
                )
                tries = [
                    asyncio.create_task(
                        s.claim(workspace, "f.txt", agent=who, lines=(3, 3 + k), exclusive=True)
                    )
                    for k, (s, who) in enumerate(((a, "ann"), (b, "bob")))
                ]
                await asyncio.sleep(0.3)
                assert not any(t.done() for t in tries)  # both wait on the database
                await gate.rollback()
            results = await asyncio.gather(*tries, return_exceptions=True)
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, Claimed)]
            assert len(won) == 1 and len(lost) == 1, (round_, results)
            await (a if won[0].agent == "ann" else b).release(
                workspace, won[0].id, agent=won[0].agent
            )


async def test_claim_and_commit_at_once_are_serialised(
    store: Store, database_url: str, workspace: str
) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    async with Store(database_url) as a, Store(database_url) as b:
        async with await psycopg.AsyncConnection.connect(database_url) as gate:
            await gate.execute(
                "SELECT 1 FROM dbcode_file f JOIN dbcode_workspace w ON w.id = f.workspace_id"
                " WHERE w.name = %s AND f.path = 'f.txt' FOR UPDATE",
                (workspace,),
            )
            claim = asyncio.create_task(
                a.claim(workspace, "f.txt", agent="ann", lines=(5, 5), exclusive=True)
            )
            commit = asyncio.create_task(
                b.write(workspace, "f.txt", edit_line(CODE, 5, "bob\n"), agent="bob")
            )
            await asyncio.sleep(0.3)
            await gate.rollback()
        got_claim, got_commit = await asyncio.gather(claim, commit, return_exceptions=True)
    if isinstance(got_commit, Claimed):  # the claim went first
        assert not isinstance(got_claim, BaseException) and got_claim.revision == 1
    else:  # the commit went first: the claim is on its revision (or retried onto it)
        assert not isinstance(got_commit, BaseException)
        assert not isinstance(got_claim, BaseException) and got_claim.revision == 2


async def test_claim_expires_by_the_database_clock_and_renews(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    claim = await store.claim(workspace, "f.txt", agent="ann", exclusive=True, ttl_s=1.5)
    renewed = await store.claim(
        workspace, "f.txt", agent="ann", exclusive=True, ttl_s=1.5, claim_id=claim.id
    )
    assert renewed.id == claim.id and renewed.expires_at > claim.expires_at
    with pytest.raises(Claimed):
        await store.write(workspace, "f.txt", "x\n", agent="bob")
    await asyncio.sleep(1.8)
    assert await store.claims(workspace) == []
    await store.write(workspace, "f.txt", "x\n", agent="bob")


async def test_session_end_releases_its_claims_and_presence(
    store: Store, database_url: str, workspace: str
) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    async with Store(database_url) as other:
        session = await other.open_session("ann", "live")
        await other.claim(workspace, "f.txt", agent="ann", exclusive=True, session=session)
        await other.set_presence(session, workspace, "f.txt", present=True)
        seen = await store.presence(workspace)
        assert [(p.agent, p.path, p.mode) for p in seen] == [("ann", "f.txt", "live")]
        changes = store.hub.coordination_changes(workspace)
        changed = asyncio.create_task(anext(changes))
        await asyncio.sleep(0.2)
        await other.close_session(session)
        await asyncio.wait_for(changed, 5)  # others are told
        assert await store.claims(workspace) == []
        assert await store.presence(workspace) == []
        await store.write(workspace, "f.txt", "x\n", agent="bob")
        # The follower gone, the hub forgets the workspace (no state kept per workspace ever
        # followed by a long-lived process).
        await changes.aclose()
        assert workspace not in store.hub._coord_gen


async def test_configure_changes_the_presence_of_the_session(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    session = await store.open_session("ann", "live")
    await store.set_presence(session, workspace, "f.txt", present=True)
    changes = store.hub.coordination_changes(workspace)
    changed = asyncio.create_task(anext(changes))
    await asyncio.sleep(0.2)
    await store.update_session(session, "ann-2", "save")
    await asyncio.wait_for(changed, 5)  # others are told
    assert [(p.agent, p.mode) for p in await store.presence(workspace)] == [("ann-2", "save")]
    with pytest.raises(InvalidInput):
        await store.update_session(session, "", "save")
    assert [(p.agent, p.mode) for p in await store.presence(workspace)] == [("ann-2", "save")]
    await changes.aclose()


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from lsp_dbcode.store import Store

    async def main():
        async with Store(sys.argv[1]) as s:
            session = await s.open_session("ann", "save")
            await s.claim(sys.argv[2], "f.txt", agent="ann", exclusive=True, ttl_s=600,
                          session=session, note="held")
            await s.set_presence(session, sys.argv[2], "f.txt", present=True)
            print("ready", flush=True)
            await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_claim_ends_when_its_process_is_killed(
    store: Store, database_url: str, workspace: str
) -> None:
    """SIGKILL: no clean-up runs, yet the claim (TTL 600 s) ends with the process."""
    await store.write(workspace, "f.txt", CODE, agent="ann")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, database_url, workspace, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready"
        with pytest.raises(Claimed, match="held"):
            await store.write(workspace, "f.txt", "x\n", agent="bob")
        assert [p.agent for p in await store.presence(workspace)] == ["ann"]
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        # Nothing notifies a death: poll (the backend ends as soon as it sees the socket close).
        for _ in range(100):
            if not await store.claims(workspace):
                break
            await asyncio.sleep(0.1)
        assert await store.claims(workspace) == []
        assert await store.presence(workspace) == []
        await store.write(workspace, "f.txt", "x\n", agent="bob")
        # Its rows are ignored at once, and removed when a session opens somewhere.
        q = "SELECT count(*) FROM dbcode_session s WHERE NOT dbcode_holder_alive(s.holder)"
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            row = await (await c.execute(q)).fetchone()
            assert row is not None and row[0] >= 1
            await store.open_session("bob")
            assert (await (await c.execute(q)).fetchone()) == (0,)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": "nope.txt"}, NotFound, "no such file"),
        ({"path": "nope.txt", "lines": (1, 1)}, NotFound, "no such file"),
        ({"path": "f.txt", "lines": (11, 12)}, InvalidInput, "beyond the end"),
        ({"path": "f.txt", "ttl_s": 0}, InvalidInput, "time to live"),
        ({"path": "f.txt", "ttl_s": 10**9}, InvalidInput, "time to live"),
        ({"path": "f.txt", "note": "n" * 5000}, InvalidInput, "over the limit"),
        ({"path": "f.txt", "claim_id": 999999}, NotFound, "no claim 999999"),
    ],
)
async def test_bad_claims_write_nothing(
    store: Store, workspace: str, kwargs: dict, error: type, match: str
) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    with pytest.raises(error, match=match):
        await store.claim(workspace, agent="ann", **kwargs)
    assert await store.claims(workspace) == []


async def test_release_errors(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    claim = await store.claim(workspace, "f.txt", agent="ann")
    with pytest.raises(InvalidInput, match="held by ann"):
        await store.release(workspace, claim.id, agent="bob")
    with pytest.raises(NotFound, match="no claim 999999"):
        await store.release(workspace, 999999, agent="ann")
    assert [c.id for c in await store.claims(workspace)] == [claim.id]


def _common_ends(a: str, b: str) -> tuple[int, int]:
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1
    return p, s


async def test_common_ends_in_sql_match_python(store: Store) -> None:
    """dbcode_common_ends (bytes, galloping, character boundaries) against a plain loop."""
    import random

    rnd = random.Random(15)
    alphabet = ["a", "b", "é", "😀", "中", "\n", "\r\n", "ab"]
    cases = [("", ""), ("abc", "abc"), ("é", "è"), ("😀a", "😁a"), ("x" * 500, "x" * 501)]
    for _ in range(400):
        a = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        b = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        if rnd.random() < 0.6:
            b = a[: rnd.randint(0, len(a))] + b[:3] + a[rnd.randint(0, len(a)) :]
        cases.append((a, b))
    for a, b in cases:
        (got,) = await store._fetchall("SELECT pre, suf FROM dbcode_common_ends(%s, %s)", (a, b))
        assert tuple(got) == _common_ends(a, b), (a, b)


async def test_a_change_while_the_follower_is_busy_is_not_lost(
    store: Store, database_url: str, workspace: str
) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    changes = store.hub.coordination_changes(workspace)
    first = asyncio.create_task(anext(changes))
    await asyncio.sleep(0.2)
    async with Store(database_url) as other:
        await other.claim(workspace, "f.txt", agent="bob", lines=(1, 1))
        await asyncio.wait_for(first, 5)
        # The follower is busy (not waiting) when the next change comes.
        await other.claim(workspace, "f.txt", agent="bob", lines=(2, 2))
        await asyncio.sleep(0.3)
        await asyncio.wait_for(anext(changes), 5)


async def test_import_respects_claims(store: Store, workspace: str) -> None:
    await store.write(workspace, "f.txt", CODE, agent="ann")
    await store.write(workspace, "g.txt", CODE, agent="ann")
    claim = await store.claim(workspace, "f.txt", agent="ann", lines=(3, 3), exclusive=True)
    with pytest.raises(Claimed):
        await store.import_files(
            workspace, [("f.txt", edit_line(CODE, 3, "x\n")), ("h.txt", "new")], agent="bob"
        )
    with pytest.raises(NotFound):
        await store.read(workspace, "h.txt")  # nothing of the import was written
    await store.release(workspace, claim.id, agent="ann")
    await store.claim(workspace, "g.txt", agent="ann", note="reading")
    res = await store.import_files(
        workspace, [("f.txt", edit_line(CODE, 3, "x\n")), ("g.txt", "changed\n")], agent="bob"
    )
    assert [w.note for w in res.warnings] == ["reading"] and res.updated == 2


async def test_a_lost_holder_connection_ends_its_claims_for_good(
    store: Store, database_url: str, workspace: str
) -> None:
    """The holder's backend is terminated (a database restart, a network cut): its sessions'
    claims end at once for everyone, and are not revived when the process makes a new holder
    (someone may have claimed meanwhile); new claims hang on a new session."""
    await store.write(workspace, "f.txt", CODE, agent="ann")
    async with Store(database_url) as mine:
        session = await mine.open_session("ann")
        await mine.claim(workspace, "f.txt", agent="ann", exclusive=True, session=session)
        holder = await mine.holder()
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = 1684234099 AND objid = %s AND granted",
                (holder % 2147483647,),
            )
        for _ in range(50):
            if not await store.claims(workspace):
                break
            await asyncio.sleep(0.1)
        assert await store.claims(workspace) == []
        await store.claim(workspace, "f.txt", agent="bob", exclusive=True, note="meanwhile")
        assert await mine.holder() != holder
        assert mine.holder_generation == 1
        (c,) = await store.claims(workspace)
        assert c.agent == "bob"  # ann's old claim did not come back
