"""The store on a real PostgreSQL: CAS, atomic changesets, history, gap-free ordered feed."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest
from psycopg.types.json import Jsonb

from lsp_dbcode.store import Change, Conflict, InvalidInput, NotFound, Store
from lsp_dbcode.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate


async def test_write_read_history(store: Store, workspace: str) -> None:
    r1 = await store.write(workspace, "src/a.py", "one\n", agent="ann", base=0)
    r2 = await store.write(workspace, "src/a.py", "two\n", agent="bob", base=1, message="m")
    assert (r1.revisions, r2.revisions) == ({"src/a.py": 1}, {"src/a.py": 2})
    assert r2.seq == r1.seq + 1
    assert (await store.read(workspace, "src/a.py")).text == "two\n"
    assert (await store.read(workspace, "src/a.py", 1)).text == "one\n"
    hist = await store.history(workspace, "src/a.py")
    assert [(h.revision, h.agent, h.kind) for h in hist] == [
        (2, "bob", "update"),
        (1, "ann", "create"),
    ]
    files = await store.list_files(workspace)
    assert [(f.path, f.revision, f.size, f.updated_by) for f in files] == [
        ("src/a.py", 2, 4, "bob")
    ]


async def test_stale_base_conflict_names_current(store: Store, workspace: str) -> None:
    await store.write(workspace, "a.txt", "x", agent="a", base=0)
    with pytest.raises(Conflict) as info:
        await store.write(workspace, "a.txt", "y", agent="a", base=0)
    assert info.value.current_revision == 1
    assert (await store.read(workspace, "a.txt")).text == "x"


async def test_delete_then_recreate_continues_revisions(store: Store, workspace: str) -> None:
    await store.write(workspace, "f", "1", agent="a", base=0)
    await store.commit(workspace, [Change.delete("f", base=1)], agent="a")
    with pytest.raises(NotFound):
        await store.read(workspace, "f")
    res = await store.write(workspace, "f", "again", agent="a", base=0)
    assert res.revisions == {"f": 3}
    with pytest.raises(NotFound, match="deletion"):
        await store.read(workspace, "f", 2)


async def test_rename_keeps_content_and_history(store: Store, workspace: str) -> None:
    await store.write(workspace, "old.py", "body\n", agent="a", base=0)
    res = await store.commit(workspace, [Change.rename("old.py", "new/name.py", base=1)], agent="b")
    assert (await store.read(workspace, "new/name.py")).text == "body\n"
    with pytest.raises(NotFound):
        await store.read(workspace, "old.py")
    (cs,) = await store.log(workspace, limit=1)
    assert cs.seq == res.seq
    assert [(f.path, f.kind, f.old_path) for f in cs.files] == [("new/name.py", "rename", "old.py")]


async def test_conflicting_changeset_commits_nothing(store: Store, workspace: str) -> None:
    await store.commit(
        workspace, [Change.write("a", "a1", 0), Change.write("b", "b1", 0)], agent="x"
    )
    head = await store.head(workspace)
    with pytest.raises(Conflict) as info:
        await store.commit(
            workspace,
            [
                Change.write("a", "a2", 1),  # fine
                Change.write("b", "b2", 0),  # stale: b is at 1
                Change.write("c", "c1", 0),  # new
                Change.delete("a", 1),
            ][:3],
            agent="y",
        )
    assert info.value.path == "b" and info.value.current_revision == 1
    assert (await store.read(workspace, "a")).text == "a1"
    assert (await store.read(workspace, "b")).text == "b1"
    with pytest.raises(NotFound):
        await store.read(workspace, "c")
    assert await store.head(workspace) == head
    assert [f.path for f in await store.list_files(workspace)] == ["a", "b"]


async def test_invalid_changes_rejected(store: Store, workspace: str) -> None:
    await store.write(workspace, "a", "a", agent="x")
    for bad in (
        [Change.write("../a", "x")],
        [Change.write("/abs", "x")],
        [Change.write("a\x01b", "x")],
        [Change.write("a", "nul\x00")],
        [Change.write("a", "x"), Change.write("a", "y")],
    ):
        with pytest.raises(InvalidInput):
            await store.commit(workspace, bad, agent="x")
    with pytest.raises(NotFound):
        await store.commit(workspace, [Change.delete("missing")], agent="x")
    assert await store.head(workspace) == 1


async def test_sixteen_cas_writers_lose_no_update(database_url: str, workspace: str) -> None:
    writers, increments = 16, 200
    async with Store(database_url, max_size=writers) as store:
        await store.write(workspace, "counter", "", agent="init", base=0)

        async def writer(i: int) -> int:
            attempts = 0
            for _ in range(increments):
                fails = 0
                while True:
                    attempts += 1
                    cur = await store.read(workspace, "counter")
                    counts = dict(
                        (k, int(v)) for k, v in (ln.split() for ln in cur.text.splitlines())
                    )
                    counts[f"w{i:02d}"] = counts.get(f"w{i:02d}", 0) + 1
                    text = "".join(f"{k} {v}\n" for k, v in sorted(counts.items()))
                    try:
                        await store.write(
                            workspace, "counter", text, agent=f"w{i}", base=cur.revision
                        )
                        break
                    except Conflict:
                        # back off a little, as a real agent would: fewer wasted attempts
                        fails += 1
                        await asyncio.sleep(random.uniform(0, 0.001 * 2 ** min(fails, 5)))
            return attempts

        attempts = await asyncio.gather(*(writer(i) for i in range(writers)))
        final = await store.read(workspace, "counter")
        assert final.text == "".join(f"w{i:02d} {increments}\n" for i in range(writers))
        assert final.revision == 1 + writers * increments
        hist = await store.history(workspace, "counter")
        assert [h.revision for h in hist] == list(range(final.revision, 0, -1))
        assert sum(attempts) >= writers * increments
        print(f"attempts: {sum(attempts)} for {writers * increments} increments")


async def test_migrations_concurrent_on_fresh_database(database_url: str) -> None:
    base = psycopg.conninfo.conninfo_to_dict(database_url)
    name = f"{base['dbname']}_mig"
    admin = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = psycopg.conninfo.make_conninfo(database_url, dbname=name)

            async def run() -> int:
                async with await psycopg.AsyncConnection.connect(url) as conn:
                    return await migrate(conn)

            applied = await asyncio.gather(*(run() for _ in range(6)))
            assert sorted(applied) == [0, 0, 0, 0, 0, len(MIGRATIONS)]
            async with await psycopg.AsyncConnection.connect(url) as conn:
                cur = await conn.execute("SELECT max(version) FROM dbcode_schema_version")
                assert (await cur.fetchone()) == (SCHEMA_VERSION,)
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_import_one_changeset_and_unchanged_skip(store: Store, workspace: str) -> None:
    files = [(f"d{i % 7}/f{i}.txt", f"content {i}\n") for i in range(300)]
    res = await store.import_files(workspace, files, agent="imp")
    assert (res.created, res.updated, res.unchanged) == (300, 0, 0)
    assert await store.head(workspace) == res.seq == 1
    (cs,) = await store.log(workspace)
    assert len(cs.files) == 300
    again = await store.import_files(
        workspace, [*files[:-1], (files[-1][0], "changed\n")], agent="imp"
    )
    assert (again.created, again.updated, again.unchanged) == (0, 1, 299)
    assert (await store.read(workspace, files[-1][0])).revision == 2
    assert (await store.import_files(workspace, files[:10], agent="imp")).seq is None
    # Mixed: a deleted file comes back, one changes, one is new, the rest are unchanged.
    await store.commit(workspace, [Change.delete(files[0][0])], agent="x")
    mixed = [(files[0][0], "back\n"), (files[1][0], "new text\n"), ("brand/new.txt", "n\n")]
    res3 = await store.import_files(workspace, [*mixed, *files[2:50]], agent="imp")
    assert (res3.created, res3.updated, res3.unchanged) == (2, 1, 48)
    (cs3,) = await store.log(workspace, limit=1)
    assert {(f.path, f.revision, f.kind) for f in cs3.files} == {
        (files[0][0], 3, "create"),
        (files[1][0], 2, "update"),
        ("brand/new.txt", 1, "create"),
    }
    assert (await store.read(workspace, files[0][0])).text == "back\n"
    hist = await store.history(workspace, files[0][0])
    assert [h.kind for h in hist] == ["create", "delete", "create"]


async def test_import_races_commits_on_the_same_paths(store: Store, workspace: str) -> None:
    """An import and CAS commits creating the same new paths at the same moment: every path
    ends with exactly one creation, and nothing is lost or doubled."""
    files = [(f"r/f{i}.txt", f"import {i}\n") for i in range(200)]

    async def create(i: int) -> str:
        try:
            await store.write(workspace, f"r/f{i}.txt", f"commit {i}\n", agent="c", base=0)
            return "commit"
        except Conflict:
            return "import"

    results = await asyncio.gather(
        store.import_files(workspace, files, agent="imp"),
        *(create(i) for i in range(0, 200, 7)),
    )
    imp = results[0]
    won_by_commit = [i for i, r in zip(range(0, 200, 7), results[1:], strict=True) if r == "commit"]
    for i in range(200):
        hist = await store.history(workspace, f"r/f{i}.txt")
        kinds = [h.kind for h in hist]
        assert kinds.count("create") == 1, (i, kinds)
    assert imp.created + imp.updated + imp.unchanged == 200
    assert imp.created == 200 - len(won_by_commit)  # the others it updated (or found equal)


async def test_group_commit_batches_keep_each_changeset_atomic(
    store: Store, workspace: str
) -> None:
    """Changesets that arrive while a commit is in flight go to the database together; each
    keeps its own outcome and seq, a conflicting one fails alone, and seqs stay gap-free."""
    await store.write(workspace, "shared.py", "v1\n", agent="setup", base=0)
    batches_before = store.batches

    async def attempt(i: int) -> object:
        if i == 7:  # stale base: must fail alone
            change = Change.write("shared.py", "stale\n", base=0)
        elif i == 8:  # multi-file changeset whose second file conflicts: nothing of it lands
            change = Change.write("shared.py", "also stale\n", base=5)
            return await _try(
                store.commit(
                    workspace,
                    [Change.write("m/ok.py", "kept?\n", base=0), change],
                    agent="a8",
                )
            )
        elif i == 9:  # a delete of a missing file: NotFound, alone
            change = Change.delete("missing.py")
        else:
            change = Change.write(f"f/{i:02}.py", f"x = {i}\n", base=0)
        return await _try(store.commit(workspace, [change], agent=f"a{i}", message=f"m{i}"))

    outcomes = await asyncio.gather(*(attempt(i) for i in range(24)))
    assert store.batches - batches_before < 24, "no changesets were batched together"
    assert isinstance(outcomes[7], Conflict) and outcomes[7].current_revision == 1
    assert isinstance(outcomes[8], Conflict) and outcomes[8].path == "shared.py"
    assert isinstance(outcomes[9], NotFound)
    ok = {i: r for i, r in enumerate(outcomes) if i not in (7, 8, 9)}
    seqs = sorted(r.seq for r in ok.values())  # type: ignore[attr-defined]
    assert seqs == list(range(2, 2 + len(ok))), "seqs must be consecutive and gap-free"
    for i, r in ok.items():
        assert r.revisions == {f"f/{i:02}.py": 1}  # type: ignore[attr-defined]
        assert (await store.read(workspace, f"f/{i:02}.py")).text == f"x = {i}\n"
    with pytest.raises(NotFound):
        await store.read(workspace, "m/ok.py")
    assert (await store.read(workspace, "shared.py")).text == "v1\n"
    log = await store.log(workspace, limit=100)
    assert [c.seq for c in log] == list(range(1 + len(ok), 0, -1))
    by_seq = {c.seq: c for c in log}
    for i, r in ok.items():
        cs = by_seq[r.seq]  # type: ignore[attr-defined]
        assert (cs.agent, cs.message) == (f"a{i}", f"m{i}")
    # The feed delivers every one of them, in order, once.
    got = []
    async for cs in store.subscribe(workspace, 0):
        got.append(cs.seq)
        if cs.seq == log[0].seq:
            break
    assert got == list(range(1, log[0].seq + 1))


async def test_group_commit_across_processes_is_gap_free(database_url: str) -> None:
    """Several stores (as several processes would) batching into one workspace at once."""
    ws = f"gc-{random.randrange(10**9)}"
    stores = [Store(database_url, min_size=1, max_size=2) for _ in range(3)]
    for s in stores:
        await s.open()
    try:

        async def writer(s: Store, w: int) -> list[int]:
            seqs = []
            base = 0
            for n in range(15):
                res = await s.write(ws, f"w{w}.txt", f"{w}:{n}", agent=f"w{w}", base=base)
                base = res.revisions[f"w{w}.txt"]
                seqs.append(res.seq)
            return seqs

        results = await asyncio.gather(
            *(writer(stores[w % 3], w) for w in range(12)), return_exceptions=False
        )
        every = sorted(q for seqs in results for q in seqs)
        assert every == list(range(1, 12 * 15 + 1))
        for seqs in results:
            assert seqs == sorted(seqs)
        assert sum(s.batched for s in stores) == 12 * 15
        for w in range(12):
            assert (await stores[0].read(ws, f"w{w}.txt")).text == f"{w}:14"
    finally:
        for s in stores:
            await s.close()


async def _try(coro: object) -> object:
    try:
        return await coro  # type: ignore[misc]
    except (Conflict, NotFound, InvalidInput) as exc:
        return exc


async def test_single_write_function_matches_the_general_commit(
    store: Store, database_url: str, workspace: str
) -> None:
    """dbcode_write (one file written, plain parameters: the common case) and dbcode_commit
    with the same single write leave the same rows and give the same results and errors."""
    ops: list[tuple[str, int | None, str | None]] = [
        ("a.py", 0, "one\n"),  # create
        ("a.py", 1, "two\n"),  # update
        ("a.py", 1, "stale\n"),  # conflict: current is 2
        ("a.py", None, "three\n"),  # unconditional
        ("a.py", None, None),  # delete (general path only, both workspaces alike)
        ("a.py", 0, "again\n"),  # recreate after a delete: revisions continue
        ("b/c.py", 5, "x\n"),  # conflict on a path never written: current is 0
        ("b/c.py", None, "é😀\n"),
    ]
    ws_a, ws_b = workspace + "-write", workspace + "-commit"
    await store.write(ws_a, "seed", "s", agent="seed")
    await store.write(ws_b, "seed", "s", agent="seed")

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:

        async def call(query: str, params: tuple[object, ...]) -> object:
            try:
                cur = await conn.execute(query, params)
                row = await cur.fetchone()
                assert row is not None
                result = dict(row[0])
                result.pop("time")
                return result
            except psycopg.Error as exc:
                return (exc.sqlstate, exc.diag.message_primary, exc.diag.message_detail)

        for path, base, text in ops:
            if text is None:
                change = [{"op": "delete", "path": path, "base": base}]
                for ws in (ws_a, ws_b):
                    await call("SELECT dbcode_commit(%s, 'ann', 'm', %s)", (ws, Jsonb(change)))
                continue
            got_a = await call(
                "SELECT dbcode_write(%s, 'ann', 'm', %s, %s, %s)", (ws_a, path, base, text)
            )
            change = [{"op": "write", "path": path, "base": base, "text": text}]
            got_b = await call("SELECT dbcode_commit(%s, 'ann', 'm', %s)", (ws_b, Jsonb(change)))
            assert got_a == got_b, (path, base, text)

        async def rows(ws: str) -> list[tuple[object, ...]]:
            cur = await conn.execute(
                "SELECT r.path, r.revision, r.seq, r.kind, r.old_path, r.content, r.size, r.sha,"
                "       c.agent, c.message, f.revision, f.deleted"
                "  FROM dbcode_revision r"
                "  JOIN dbcode_workspace w ON w.id = r.workspace_id"
                "  JOIN dbcode_changeset c ON c.workspace_id = r.workspace_id AND c.seq = r.seq"
                "  JOIN dbcode_file f ON f.workspace_id = r.workspace_id AND f.path = r.path"
                " WHERE w.name = %s ORDER BY r.seq, r.path",
                (ws,),
            )
            return await cur.fetchall()

        assert await rows(ws_a) == await rows(ws_b)
        assert len(await rows(ws_a)) == 7
        assert await store.head(ws_a) == await store.head(ws_b) == 7
