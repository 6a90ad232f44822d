"""Review threads on a real PostgreSQL: anchors follow every changeset, the review feed."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from lsp_dbcode.store import Change, InvalidInput, NotFound, ReviewEvent, Store
from lsp_dbcode.store.review import COMMENT_BYTES_MAX

CODE = "def a():\n    return 1\n\n\ndef b():\n    return 2\n"


async def rows(database_url: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        cur = await c.execute(query)
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def events(store: Store, workspace: str, count: int, since: int = 0) -> list[ReviewEvent]:
    got: list[ReviewEvent] = []

    async def collect() -> None:
        async for e in store.subscribe_review(workspace, since):
            got.append(e)
            if len(got) == count:
                return

    await asyncio.wait_for(collect(), 10)
    return got


async def test_anchor_follows_commits_of_another_process(
    store: Store, database_url: str, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    made = await store.comment(workspace, "m.py", "why 2?", agent="ann", lines=(5, 6))
    async with Store(database_url) as other:  # another process's connection pool
        # Lines inserted above: the thread moves down with its text.
        await other.write(workspace, "m.py", "import os\nimport sys\n" + CODE, agent="bob")
        (t,) = await store.threads(workspace, "m.py")
        assert (t.id, t.lines, t.revision, t.outdated) == (made.thread, (7, 8), 2, False)
        # An edit inside stretches it.
        text = (await other.read(workspace, "m.py")).text
        await other.write(
            workspace,
            "m.py",
            text.replace("    return 2\n", "    x = 2\n    y = 3\n    return x + y\n"),
            agent="bob",
        )
        (t,) = await store.threads(workspace)
        assert t.lines == (7, 10) and not t.outdated
        # Lines inserted below leave it alone.
        text = (await other.read(workspace, "m.py")).text
        await other.write(workspace, "m.py", text + "\n# end\n", agent="bob")
        (t,) = await store.threads(workspace)
        assert t.lines == (7, 10)
        # Deleting all its text makes it outdated, kept at the place the text was.
        text = (await other.read(workspace, "m.py")).text
        cut = text.index("def b")
        await other.write(workspace, "m.py", text[:cut] + "# end\n", agent="carl")
        (t,) = await store.threads(workspace)
        assert t.outdated and t.lines == (7, 7) and t.state == "open"
        assert t.comments[0].text == "why 2?" and t.comments[0].agent == "ann"
    got = await events(store, workspace, 2)
    assert [(e.seq, e.event, e.agent) for e in got] == [
        (1, "created", "ann"),
        (2, "outdated", "carl"),
    ]
    assert got[0].comment is not None and got[0].comment.text == "why 2?"


async def test_outdated_event_once_when_readers_race(
    store: Store, database_url: str, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    for line in range(1, 7):
        await store.comment(workspace, "m.py", f"line {line}", agent="ann", lines=(line, line))
    await store.write(workspace, "m.py", "x = 0\n", agent="bob")
    async with Store(database_url) as a, Store(database_url) as b:
        results = await asyncio.gather(*(s.threads(workspace) for s in (a, b, store, a, b, store)))
    assert all([t.outdated for t in r] == [True] * 6 for r in results)
    n = await rows(
        database_url,
        "SELECT count(*) FROM dbcode_review_event WHERE event = 'outdated'"
        f" AND workspace_id = (SELECT id FROM dbcode_workspace WHERE name = '{workspace}')",
    )
    assert n == 6


async def test_rename_and_delete(store: Store, workspace: str) -> None:
    await store.write(workspace, "old.py", CODE, agent="ann")
    await store.comment(workspace, "old.py", "note", agent="ann", lines=(2, 2))
    await store.commit(workspace, [Change.rename("old.py", "new.py")], agent="bob")
    await store.write(workspace, "new.py", "# top\n" + CODE, agent="bob")
    (t,) = await store.threads(workspace)
    assert (t.path, t.lines, t.outdated) == ("new.py", (3, 3), False)
    await store.commit(workspace, [Change.delete("new.py")], agent="bob")
    (t,) = await store.threads(workspace)
    assert t.outdated and t.path == "new.py"


async def test_resolve_reopen_reply_and_feed_catch_up(store: Store, workspace: str) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    made = await store.comment(
        workspace,
        "m.py",
        "use 3",
        agent="ann",
        lines=(2, 2),
        kind="suggestion",
        replacement="    return 3\n",
    )
    rid = await store.reply(workspace, made.thread, "ok", agent="bob")
    assert await store.resolve(workspace, made.thread, agent="bob")
    assert not await store.resolve(workspace, made.thread, agent="bob")  # already: no event
    assert await store.threads(workspace) == []
    (t,) = await store.threads(workspace, state="resolved")
    assert t.kind == "suggestion" and t.replacement == "    return 3\n"
    assert [c.text for c in t.comments] == ["use 3", "ok"] and t.comments[1].id == rid
    assert await store.resolve(workspace, made.thread, agent="ann", resolved=False)
    assert [t.id for t in await store.threads(workspace)] == [made.thread]
    assert await store.review_head(workspace) == 4
    # A subscriber that saw the first two resumes after them: the rest, in order, once.
    got = await events(store, workspace, 2, since=2)
    assert [(e.seq, e.event) for e in got] == [(3, "resolved"), (4, "reopened")]


async def test_live_review_feed_across_processes(
    store: Store, database_url: str, workspace: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    head = await store.review_head(workspace)
    got: list[ReviewEvent] = []

    async def collect() -> None:
        async for e in store.subscribe_review(workspace, head):
            got.append(e)
            if len(got) == 2:
                return

    task = asyncio.create_task(collect())
    await asyncio.sleep(0.2)
    async with Store(database_url) as other:
        made = await other.comment(workspace, "m.py", "hi", agent="bob", lines=(1, 1))
        await other.reply(workspace, made.thread, "again", agent="bob")
    await asyncio.wait_for(task, 10)
    assert [(e.event, e.thread) for e in got] == [
        ("created", made.thread),
        ("replied", made.thread),
    ]
    assert got[1].comment is not None and got[1].comment.text == "again"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": "m.py", "lines": (7, 9)}, InvalidInput, "beyond the end"),
        ({"path": "m.py", "lines": (0, 1)}, InvalidInput, "1-based"),
        ({"path": "m.py", "span": (0, 999)}, InvalidInput, "not within"),
        ({"path": "nope.py", "lines": (1, 1)}, NotFound, "no such file"),
        ({"path": "m.py", "lines": (1, 1), "text": ""}, InvalidInput, "empty"),
        (
            {"path": "m.py", "lines": (1, 1), "text": "x" * (COMMENT_BYTES_MAX + 1)},
            InvalidInput,
            "over the limit",
        ),
        ({"path": "m.py", "lines": (1, 1), "kind": "suggestion"}, InvalidInput, "replacement"),
        ({"path": "m.py", "lines": (1, 1), "kind": "rant"}, InvalidInput, "invalid kind"),
        ({"path": "m.py", "lines": (1, 1), "revision": 9}, NotFound, "no text at revision"),
        ({"path": "../m.py", "lines": (1, 1)}, InvalidInput, "segments"),
    ],
)
async def test_bad_comments_write_nothing(
    store: Store, database_url: str, workspace: str, kwargs: dict, error: type, match: str
) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    args = {"text": "hello", **kwargs}
    with pytest.raises(error, match=match):
        await store.comment(workspace, agent="ann", **args)
    q = (
        "SELECT count(*) FROM dbcode_thread WHERE workspace_id ="
        f" (SELECT id FROM dbcode_workspace WHERE name = '{workspace}')"
    )
    assert await rows(database_url, q) == 0


async def test_unknown_thread_and_workspace(store: Store, workspace: str) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    with pytest.raises(NotFound, match="no thread 999999"):
        await store.reply(workspace, 999999, "hi", agent="ann")
    with pytest.raises(NotFound, match="no thread 999999"):
        await store.resolve(workspace, 999999, agent="ann")
    with pytest.raises(NotFound, match="unknown workspace"):
        await store.comment("no-such-ws", "m.py", "x", agent="a", lines=(1, 1))


async def test_anchor_follows_an_import(store: Store, workspace: str) -> None:
    await store.write(workspace, "m.py", CODE, agent="ann")
    await store.comment(workspace, "m.py", "here", agent="ann", lines=(2, 2))
    await store.import_files(workspace, [("m.py", "# header\n\n" + CODE)], agent="importer")
    (t,) = await store.threads(workspace)
    assert t.lines == (4, 4) and not t.outdated and t.revision == 2


async def test_threads_move_through_a_history_stored_as_deltas(
    store: Store, database_url: str, workspace: str
) -> None:
    """Issues 15 and 16 together: the revisions a thread moves through are stored as deltas
    (history compaction), not as whole texts; the thread still follows its text, and a comment
    on an old revision reads that revision's text."""
    filler = "".join(
        f"# filler line {i:04d} of a file big enough to be compacted\n" for i in range(120)
    )
    code = CODE + filler  # over COMPACT_TEXT_BYTES_MIN: its old revisions become deltas
    await store.write(workspace, "m.py", code, agent="ann")
    made = await store.comment(workspace, "m.py", "why 2?", agent="ann", lines=(5, 6))
    for n in range(3):  # lines inserted above, three times
        text = (await store.read(workspace, "m.py")).text
        await store.write(workspace, "m.py", f"import m{n}\n" + text, agent="bob")
    await store.compact(workspace)
    stored = await rows(
        database_url,
        "SELECT count(*) FROM dbcode_revision r JOIN dbcode_workspace w ON w.id = r.workspace_id"
        f" WHERE w.name = '{workspace}' AND r.content IS NULL AND r.kind <> 'delete'",
    )
    assert stored >= 3  # the old revisions are deltas now
    (t,) = await store.threads(workspace, "m.py")
    assert (t.id, t.lines, t.outdated) == (made.thread, (8, 9), False)
    old = await store.comment(workspace, "m.py", "on r1", agent="ann", lines=(1, 1), revision=1)
    threads = {x.id: x for x in await store.threads(workspace, "m.py")}
    assert threads[old.thread].lines == (4, 4) and not threads[old.thread].outdated
