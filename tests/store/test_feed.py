"""The ordered, durable feed: every changeset exactly once, in seq order, with catch-up."""

from __future__ import annotations

import asyncio

import psycopg

from lsp_dbcode.store import Change, Store


async def _collect(store: Store, workspace: str, since: int, n: int, out: list[int]) -> None:
    async for cs in store.subscribe(workspace, since):
        out.append(cs.seq)
        if len(out) >= n:
            return


async def test_racing_committers_against_subscriber(database_url: str, workspace: str) -> None:
    """Many committers in several pools (own connections), one subscriber: gap-free, in order."""
    committers, each = 12, 40
    async with (
        Store(database_url, max_size=6) as a,
        Store(database_url, max_size=6) as b,
        Store(database_url, max_size=2) as sub,
    ):
        seen: list[int] = []
        reader = asyncio.create_task(_collect(sub, workspace, 0, committers * each, seen))
        await asyncio.sleep(0.1)

        async def commit(i: int) -> list[int]:
            store = a if i % 2 else b
            seqs = []
            for j in range(each):
                changes = [Change.write(f"c{i}/f{j % 3}.txt", f"{i} {j}\n")]
                if j % 5 == 0:
                    changes.append(Change.write("shared.txt", f"{i} {j}\n"))
                seqs.append((await store.commit(workspace, changes, agent=f"c{i}")).seq)
            return seqs

        results = await asyncio.gather(*(commit(i) for i in range(committers)))
        await asyncio.wait_for(reader, 30)
        committed = sorted(s for r in results for s in r)
        assert committed == list(range(1, committers * each + 1))
        assert seen == committed  # every one, once, in order


async def test_subscriber_disconnected_catches_up(database_url: str, workspace: str) -> None:
    async with Store(database_url) as writer:
        await writer.write(workspace, "f", "0", agent="w")
        async with Store(database_url) as sub:
            got: list[int] = []
            await _collect(sub, workspace, 0, 1, got)
        last = got[-1]
        # The subscriber is gone: 100 changesets commit meanwhile.
        for i in range(100):
            await writer.write(workspace, "f", str(i + 1), agent="w")
        async with Store(database_url) as sub:
            got2: list[int] = []
            await asyncio.wait_for(_collect(sub, workspace, last, 100, got2), 20)
            assert got2 == list(range(last + 1, last + 101))
            # and nothing more is pending: a new commit is the next one seen
            nxt = asyncio.create_task(_collect(sub, workspace, last + 100, 1, got3 := []))
            await writer.write(workspace, "f", "done", agent="w")
            await asyncio.wait_for(nxt, 10)
            assert got3 == [last + 101]


async def test_listen_connection_killed_during_commits(database_url: str, workspace: str) -> None:
    """The LISTEN backend is terminated while 100 changesets commit: none is missed."""
    async with Store(database_url) as writer, Store(database_url) as sub:
        await writer.write(workspace, "f", "start", agent="w")
        seen: list[int] = []
        reader = asyncio.create_task(_collect(sub, workspace, 1, 100, seen))
        await asyncio.sleep(0.2)
        assert sub.hub.connected

        async def kill_listener() -> None:
            await asyncio.sleep(0.05)
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
                await c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query = 'LISTEN dbcode' AND pid <> pg_backend_pid()"
                )

        killer = asyncio.create_task(kill_listener())
        for i in range(100):
            await writer.write(workspace, "f", str(i), agent="w")
        await killer
        await asyncio.wait_for(reader, 30)
        assert seen == list(range(2, 102))
        assert sub.hub.reconnects >= 1


async def test_many_subscribers_one_listen_connection(database_url: str, workspace: str) -> None:
    async with Store(database_url) as writer, Store(database_url) as sub:
        outs: list[list[int]] = [[] for _ in range(20)]
        tasks = [asyncio.create_task(_collect(sub, workspace, 0, 10, o)) for o in outs]
        await asyncio.sleep(0.2)
        for i in range(10):
            await writer.write(workspace, f"f{i}", "x", agent="w")
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert all(o == list(range(1, 11)) for o in outs)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            cur = await c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN dbcode'"
                " AND datname = current_database()"
            )
            row = await cur.fetchone()
            assert row is not None and row[0] == 1  # only `sub` listens


async def test_feed_carries_texts_and_own_commits(database_url: str, workspace: str) -> None:
    """A subscriber gets its own process's commits (fed from the commit's result) and other
    processes' (fetched) with the texts of small files; big files' texts are left to a read;
    all in order, once."""
    big = "x = 1\n" * 30_000  # 180 KB: above the feed's text limit
    async with Store(database_url) as mine, Store(database_url) as other:
        await mine.write(workspace, "seed.txt", "0", agent="seed")
        head = await mine.head(workspace)
        got: list = []

        async def collect() -> None:
            async for cs in mine.subscribe(workspace, head):
                got.append(cs)
                if len(got) == 6:
                    return

        reader = asyncio.create_task(collect())
        await asyncio.sleep(0.1)
        await mine.write(workspace, "a.py", "own\n", agent="me")
        await other.write(workspace, "b.py", "theirs\n", agent="them")
        await mine.commit(
            workspace,
            [Change.write("c.py", "c\n"), Change.rename("a.py", "d.py")],
            agent="me",
        )
        await other.write(workspace, "big.py", big, agent="them")
        await asyncio.gather(
            mine.write(workspace, "e.py", "e\n", agent="me"),
            other.write(workspace, "f.py", "f\n", agent="them"),
        )
        await asyncio.wait_for(reader, 10)
    assert [cs.seq for cs in got] == list(range(head + 1, head + 7))
    files = {f.path: f for cs in got for f in cs.files}
    assert files["a.py"].text == "own\n"
    assert files["b.py"].text == "theirs\n"
    assert files["c.py"].text == "c\n"
    assert files["d.py"].kind == "rename" and files["d.py"].old_path == "a.py"
    assert files["big.py"].text is None
    assert {f.path for cs in got[4:] for f in cs.files} == {"e.py", "f.py"}
    assert files["e.py"].text == "e\n" and files["f.py"].text == "f\n"
    assert [(f.path, f.revision, f.kind) for f in got[2].files] == [
        ("c.py", 1, "create"),
        ("d.py", 1, "rename"),
    ]


async def test_foreign_commit_notified_while_own_commit_waits(
    database_url: str, workspace: str
) -> None:
    """A NOTIFY that comes while this process's own commit is in flight waits for that
    commit's answer (it is usually the commit's own); a foreign changeset behind it is still
    delivered at once after, in order, whether the own commit succeeds or fails."""
    async with Store(database_url, max_size=4) as store:
        base = (await store.write(workspace, "a.txt", "0\n", agent="seed")).seq
        seen: list[int] = []
        reader = asyncio.create_task(_collect(store, workspace, base, 3, seen))
        await asyncio.sleep(0.1)
        for own_base, expect_ok in ((None, True), (1, False)):  # the second one: a stale CAS
            foreign = await psycopg.AsyncConnection.connect(database_url)
            async with foreign:
                # A foreign transaction writes a.txt (row locks, a seq) and holds them.
                await foreign.execute(
                    "SELECT dbcode_write(%s, 'other', NULL, 'a.txt', NULL, %s)",
                    (workspace, f"{own_base}\n"),
                )
                own = asyncio.create_task(
                    store.write(workspace, "a.txt", "mine\n", agent="me", base=own_base)
                )
                await asyncio.sleep(0.3)  # our commit is in flight, waiting for the lock
                assert not own.done()
                await foreign.commit()  # its NOTIFY comes while our commit is in flight
            if expect_ok:
                await own
            else:
                try:
                    await own
                except Exception as exc:  # the stale base: Conflict
                    assert type(exc).__name__ == "Conflict"
                else:
                    raise AssertionError("a stale base committed")
        # Never the 10 s safety poll: the deferred fetch runs once our answer is in.
        await asyncio.wait_for(reader, 5)
    assert seen == [base + 1, base + 2, base + 3]


async def test_a_feed_lives_while_it_has_subscribers(store: Store, workspace: str) -> None:
    """Issue 13.4: when a workspace's last subscriber leaves (cancelled, as a session that ends
    cancels its watcher), its feed goes: the LISTEN safety poll no longer fetches for it. A
    later subscriber gets every changeset since its seq all the same."""
    await store.write(workspace, "a.txt", "1", agent="a")
    seen: list[int] = []
    readers = [
        asyncio.create_task(_collect(store, workspace, 0, 99, seen)),
        asyncio.create_task(_collect(store, workspace, 0, 99, [])),
    ]
    await asyncio.sleep(0.2)
    assert workspace in store.hub._feeds and seen == [1]
    readers[0].cancel()
    await asyncio.sleep(0.05)
    assert workspace in store.hub._feeds  # one subscriber is left
    readers[1].cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    assert workspace not in store.hub._feeds

    await store.write(workspace, "a.txt", "2", agent="a")
    await store.write(workspace, "a.txt", "3", agent="a")
    again: list[int] = []
    await asyncio.wait_for(_collect(store, workspace, 1, 2, again), 10)
    assert again == [2, 3]
