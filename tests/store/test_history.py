"""History on a real PostgreSQL: revisions as reverse deltas read back exactly, migration of a
v3 history under concurrent commits, blame against git's, time travel, changeset meta."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsp_dbcode.store import Change, InvalidInput, NotFound, Store
from lsp_dbcode.store.history import apply_delta, blame_lines, encode_delta, line_hunks, rebuild
from lsp_dbcode.store.schema import MIGRATION_LOCK_KEY, MIGRATIONS, SCHEMA_VERSION
from lsp_dbcode.text.diff import diff_edits


def _examples(default: int) -> int:
    return int(os.environ.get("DBCODE_TEXT_EXAMPLES", default))


# -- pure ---------------------------------------------------------------------------------

TEXTS = st.text(alphabet=st.sampled_from("ab\n\r é😀"), max_size=60)


@settings(max_examples=_examples(300), deadline=None)
@given(TEXTS, TEXTS)
def test_delta_rebuilds_older_text(newer: str, older: str) -> None:
    assert apply_delta(newer, encode_delta(newer, older)) == older


@settings(max_examples=_examples(300), deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcde"), max_size=8), min_size=1, max_size=6))
def test_blame_lines_agrees_with_a_line_by_line_replay(versions: list[list[str]]) -> None:
    """Every line of the newest text is attributed to a version that has that line, and the
    lines no older version could have passed on belong to the newest."""
    texts = ["".join(f"{c}\n" for c in v) for v in versions]  # oldest first
    keys = blame_lines(reversed([(t, i) for i, t in enumerate(texts)]))
    newest = texts[-1].splitlines(keepends=True)
    assert len(keys) == len(newest)
    for line, k in zip(newest, keys, strict=True):
        assert line in texts[k].splitlines(keepends=True)
    if len(texts) == 1:
        assert keys == [0] * len(newest)


# -- exact reads of a random history --------------------------------------------------------


@dataclass
class _Model:
    """What the store should hold: every revision's text (None: deletion / moved)."""

    texts: dict[tuple[str, int], str | None] = field(default_factory=dict)
    current: dict[str, str | None] = field(default_factory=dict)
    revision: dict[str, int] = field(default_factory=dict)
    at_seq: list[dict[str, str | None]] = field(default_factory=list)

    def record(self, path: str, rev: int, text: str | None) -> None:
        self.texts[(path, rev)] = text
        self.current[path] = text
        self.revision[path] = rev


_LINES = [f"line {i} {'x' * (i % 7)}\n" for i in range(40)]

OPS = st.lists(
    st.tuples(
        st.sampled_from(["edit", "edit", "edit", "edit", "big", "delete", "rename"]),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.text(alphabet=st.sampled_from("ab\n é😀\r"), max_size=12),
    ),
    min_size=1,
    max_size=45,
)


async def _play(store: Store, ws: str, ops: list[tuple[str, int, int, str]]) -> _Model:
    model = _Model()
    paths = ["a.py", "dir/b.txt"]
    await store.write(ws, "a.py", "".join(_LINES), agent="p", base=0)
    model.record("a.py", 1, "".join(_LINES))
    model.at_seq.append(dict(model.current))
    for op, x, y, ins in ops:
        path = paths[x % 2]
        cur = model.current.get(path)
        if op == "rename" and cur is not None:
            other = paths[1 - x % 2]
            if model.current.get(other) is None:
                res = await store.commit(ws, [Change.rename(path, other)], agent="r")
                model.record(path, res.revisions[path], None)
                model.record(other, res.revisions[other], cur)
                model.at_seq.append(dict(model.current))
                continue
        if op == "delete" and cur is not None:
            res = await store.commit(ws, [Change.delete(path)], agent="d")
            model.record(path, res.revisions[path], None)
        else:
            base = cur or ""
            if op == "big":
                new = "".join(_LINES[y % 40 :] + _LINES[: x % 40]) + ins
            else:
                i = x % (len(base) + 1)
                j = min(len(base), i + y % 9)
                new = base[:i] + ins + base[j:]
            res = await store.write(ws, path, new, agent=f"w{x % 3}")
            model.record(path, res.revisions[path], new)
        model.at_seq.append(dict(model.current))
    return model


async def _check_all(store: Store, ws: str, model: _Model) -> None:
    for (path, rev), text in model.texts.items():
        if text is None:
            with pytest.raises(NotFound):
                await store.read(ws, path, rev)
        else:
            got = await store.read(ws, path, rev)
            assert got.text.encode() == text.encode(), (path, rev)
            assert await store.revision_text(ws, path, rev) == text
    for seq, state in enumerate(model.at_seq, start=1):
        for path, text in state.items():
            if text is None:
                with pytest.raises(NotFound):
                    await store.read_at(ws, path, seq)
            else:
                assert (await store.read_at(ws, path, seq)).text == text, (path, seq)


async def _delta_rows(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM dbcode_revision WHERE delta IS NOT NULL")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


@settings(
    max_examples=_examples(12),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_every_revision_reads_back_exactly_before_and_after_compaction(
    database_url: str, ops: list[tuple[str, int, int, str]]
) -> None:
    async def run() -> None:
        ws = f"h-{uuid.uuid4().hex[:10]}"
        async with Store(
            database_url, snapshot_every_revisions=4, compact_text_bytes_min=0
        ) as store:
            model = await _play(store, ws, ops)
            await _check_all(store, ws, model)
            await store.compact(ws)
            await _check_all(store, ws, model)
            # Nothing left to compact, and the current texts are whole.
            assert (await store.compact(ws)).revisions == 0
            for path, text in model.current.items():
                if text is not None:
                    assert (await store.read(ws, path)).text == text

    asyncio.run(run())


async def test_long_history_stores_deltas_with_bounded_chains(
    database_url: str, workspace: str
) -> None:
    text = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(2000))
    async with Store(database_url, snapshot_every_revisions=8) as store:
        texts = [text]
        await store.write(workspace, "big.py", text, agent="a", base=0)
        for i in range(40):
            text = text.replace(f"return x + {i}\n", f"return x - {i}\n", 1)
            texts.append(text)
            await store.write(workspace, "big.py", text, agent="a", base=i + 1)
        # The background compaction after commits, as in a server: wait for it.
        await store.close()
    async with Store(database_url, snapshot_every_revisions=8) as store:
        for rev, want in enumerate(texts, start=1):
            assert (await store.read(workspace, "big.py", rev)).text == want
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT r.revision, r.delta IS NOT NULL, octet_length(coalesce(r.delta, '')),"
            " r.packed IS NOT NULL, r.content IS NOT NULL"
            " FROM dbcode_revision r JOIN dbcode_workspace w ON w.id = r.workspace_id"
            " WHERE w.name = %s ORDER BY r.revision",
            (workspace,),
        )
        rows = await cur.fetchall()
    # Full: each 8th revision (packed) and the current one; every other one a small delta.
    assert [r[0] for r in rows if not r[1]] == [8, 16, 24, 32, 40, 41]
    assert [r[0] for r in rows if r[3]] == [8, 16, 24, 32, 40]
    assert [r[0] for r in rows if r[4]] == [41]
    assert max(r[2] for r in rows if r[1]) < 200


# -- migration of a v3 history ----------------------------------------------------------------


async def _v3_database(database_url: str) -> str:
    name = f"{psycopg.conninfo.conninfo_to_dict(database_url)['dbname']}_v3_{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(database_url, dbname=name)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            await conn.execute(
                "CREATE TABLE dbcode_schema_version (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, ddl in MIGRATIONS[:3]:
                await conn.execute(ddl.encode())
                await conn.execute(
                    "INSERT INTO dbcode_schema_version (version) VALUES (%s)", (version,)
                )
    return url


async def _drop(database_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_v3_history_migrates_in_place_under_concurrent_commits(database_url: str) -> None:
    url = await _v3_database(database_url)
    try:
        # A history written by the v3 functions, as the current release writes it.
        want: dict[tuple[str, int], str] = {}
        body = "".join(f"row {i}\n" for i in range(3000))
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for f in range(6):
                text = body
                for rev in range(1, 31):
                    text = text.replace(f"row {rev * 7 + f}\n", f"ROW {rev} by {f}\n")
                    await conn.execute(
                        "SELECT dbcode_write('w', %s, NULL, %s, %s, %s)",
                        (f"a{f}", f"f{f}.txt", rev - 1, text),
                    )
                    want[(f"f{f}.txt", rev)] = text
            await conn.execute(
                "SELECT dbcode_commit('w', 'mover', 'mv', %s)",
                (
                    psycopg.types.json.Jsonb(
                        [{"op": "rename", "path": "f0.txt", "new_path": "g0.txt", "base": 30}]
                    ),
                ),
            )
            want[("g0.txt", 1)] = want[("f0.txt", 30)]
        async with Store(url, max_size=8) as store:
            cur_v = await store._fetchall("SELECT max(version) FROM dbcode_schema_version")
            assert cur_v[0][0] == SCHEMA_VERSION
            head0 = await store.head("w")

            # Agents keep committing to the same files while the history converts.
            async def agent(f: int) -> list[int]:
                seqs = []
                for i in range(15):
                    cur = await store.read("w", f"f{f}.txt")
                    new = cur.text.replace("row 1000\n", f"row 1000 {i}\n", 1) + f"tail {i}\n"
                    res = await store.write(
                        "w", f"f{f}.txt", new, agent=f"live{f}", base=cur.revision
                    )
                    want[(f"f{f}.txt", res.revisions[f"f{f}.txt"])] = new
                    seqs.append(res.seq)
                return seqs

            progress: list[tuple[int, int]] = []
            compacted, *seqs = await asyncio.gather(
                store.compact(progress=lambda d, t: progress.append((d, t))),
                *(agent(f) for f in range(1, 6)),
            )
            assert compacted.revisions > 100
            assert progress and progress[-1][0] == progress[-1][1]
            await store.compact()
            # Every revision, byte for byte; seqs gap-free and every commit there.
            for (path, rev), text in want.items():
                assert (await store.read("w", path, rev)).text.encode() == text.encode()
            head = await store.head("w")
            assert head == head0 + 75
            assert sorted(s for ss in seqs for s in ss) == list(range(head0 + 1, head + 1))
            log = await store.log("w", limit=10_000)
            assert [c.seq for c in log] == list(range(head, 0, -1))
            rows = await store._fetchall(
                "SELECT count(*) FILTER (WHERE delta IS NOT NULL), count(*) FROM dbcode_revision"
            )
            assert rows[0][0] > 0.8 * rows[0][1]
    finally:
        await _drop(database_url, url)


# -- blame --------------------------------------------------------------------------------


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed as the reference")
async def test_blame_matches_git_blame_across_agents_and_a_rename(
    database_url: str, workspace: str, tmp_path: Path
) -> None:
    """A history by several agents (inserts, deletes, edits, a rename), replayed into git:
    every line's changeset is git blame's commit for that line, also for an old revision."""
    lines = [f"def f{i}():\n    return {i}\n\n" for i in range(60)]
    steps: list[tuple[str, str, str | None]] = [("ann", "src/a.py", "".join(lines))]
    cur = list(lines)
    cur.insert(10, "# inserted by bob\n")
    steps.append(("bob", "src/a.py", "".join(cur)))
    del cur[30:34]
    steps.append(("cy", "src/a.py", "".join(cur)))
    steps.append(("dee", "src/b.py", None))  # rename src/a.py -> src/b.py
    cur[5] = "def changed_by_eve():\n"
    cur.append("# tail by eve\n")
    steps.append(("eve", "src/b.py", "".join(cur)))
    cur[12:12] = ["# ann again\n", "x = 1\n"]
    steps.append(("ann", "src/b.py", "".join(cur)))
    repo = tmp_path / "git"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    seq_of_commit: dict[str, int] = {}
    async with Store(database_url, snapshot_every_revisions=3, compact_text_bytes_min=0) as store:
        for agent, path, text in steps:
            if text is None:
                res = await store.commit(workspace, [Change.rename("src/a.py", path)], agent=agent)
                _git(repo, "mv", "src/a.py", path)
            else:
                res = await store.write(workspace, path, text, agent=agent, message=f"by {agent}")
                (repo / path).parent.mkdir(parents=True, exist_ok=True)
                (repo / path).write_text(text)
                _git(repo, "add", path)
            env = {
                "GIT_AUTHOR_NAME": agent,
                "GIT_AUTHOR_EMAIL": "a@x",
                "GIT_COMMITTER_NAME": "c",
                "GIT_COMMITTER_EMAIL": "c@x",
            }
            _git(repo, "commit", "-q", "-m", f"seq {res.seq}", env=env)
            seq_of_commit[_git(repo, "rev-parse", "HEAD").strip()] = res.seq
        await store.compact(workspace)

        def git_blame(path: str, rev: str) -> list[int]:
            out = _git(repo, "blame", "--porcelain", rev, "--", path)
            seqs = []
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 3 and len(parts[0]) == 40 and parts[0] in seq_of_commit:
                    seqs.append(seq_of_commit[parts[0]])
            return seqs

        def ours(runs: list) -> list[int]:
            return [r.seq for r in runs for _ in range(r.start_line, r.end_line + 1)]

        runs = await store.blame(workspace, "src/b.py")
        assert ours(runs) == git_blame("src/b.py", "HEAD")
        assert {r.agent for r in runs} == {"ann", "bob", "eve"}
        assert {r.path for r in runs} == {"src/a.py", "src/b.py"}
        # --rev: the file as revision 2 of src/a.py (bob's insert), against git's HEAD~4.
        old = await store.blame(workspace, "src/a.py", 2)
        assert ours(old) == git_blame("src/a.py", "HEAD~4")
        assert old[0].message == "by ann" and old[1].agent == "bob"
        with pytest.raises(NotFound):
            await store.blame(workspace, "src/a.py", 4)  # the rename's "moved" revision
        with pytest.raises(NotFound):
            await store.blame(workspace, "src/a.py", 99)
        with pytest.raises(InvalidInput):
            await store.blame(workspace, "src/b.py", -1)


# -- time travel and meta ---------------------------------------------------------------------


async def test_read_at_seq_and_its_errors(store: Store, workspace: str) -> None:
    s1 = (await store.write(workspace, "f", "one\n", agent="a")).seq
    s2 = (await store.write(workspace, "g", "other\n", agent="a")).seq
    s3 = (await store.write(workspace, "f", "two\n", agent="a")).seq
    s4 = (await store.commit(workspace, [Change.delete("f")], agent="a")).seq
    assert (await store.read_at(workspace, "f", s1)).text == "one\n"
    assert (await store.read_at(workspace, "f", s2)).text == "one\n"
    assert (await store.read_at(workspace, "f", s3)).revision == 2
    with pytest.raises(NotFound, match="deleted at seq"):
        await store.read_at(workspace, "f", s4)
    with pytest.raises(NotFound, match="did not exist"):
        await store.read_at(workspace, "g", s1)
    with pytest.raises(InvalidInput, match="beyond the head"):
        await store.read_at(workspace, "f", s4 + 1)
    with pytest.raises(InvalidInput, match="invalid seq"):
        await store.read_at(workspace, "f", -1)
    assert await store.head(workspace) == s4


async def test_meta_is_kept_logged_and_limited(store: Store, workspace: str) -> None:
    meta = {"conversation": "c-42", "task": "issue 16", "prompt": "make it é"}
    res = await store.write(workspace, "f", "x\n", agent="a", meta=meta)
    await store.write(workspace, "f", "y\n", agent="a")
    res3 = await store.commit(
        workspace, [Change.write("g", "g\n"), Change.delete("f")], agent="b", meta={"n": 3}
    )
    log = await store.log(workspace)
    assert [(c.seq, c.meta) for c in log] == [
        (res3.seq, {"n": 3}),
        (res.seq + 1, None),
        (res.seq, meta),
    ]
    runs = await store.blame(workspace, "g")
    assert runs[0].meta == {"n": 3}
    head = await store.head(workspace)
    for bad in ({"big": "x" * 5000}, ["not", "an", "object"], "text", {"nan": float("nan")}):
        with pytest.raises(InvalidInput):
            await store.write(workspace, "g", "z\n", agent="a", meta=bad)  # type: ignore[arg-type]
    assert await store.head(workspace) == head


def test_time_travel_uris_parse_and_are_read_only() -> None:
    from lsp_dbcode.uris import DocUri, make_uri, parse_doc_uri, parse_uri

    uri = make_uri("ws", "src/a b.py", seq=12)
    assert uri == "dbcode://ws@12/src/a%20b.py"
    assert parse_doc_uri(uri) == DocUri("ws", "src/a b.py", 12)
    assert parse_doc_uri("dbcode://ws/src/x.py") == DocUri("ws", "src/x.py", None)
    with pytest.raises(InvalidInput, match="read-only"):
        parse_uri(uri)
    for bad in (
        "dbcode://ws@/a",
        "dbcode://ws@-1/a",
        "dbcode://ws@x/a",
        "dbcode://@3/a",
        "dbcode://ws@99999999999999999999/a",
        "dbcode://ws@1@2/a",
    ):
        with pytest.raises(InvalidInput):
            parse_doc_uri(bad)


@settings(max_examples=_examples(300), deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=8))
def test_rebuild_through_a_piece_table_equals_applying_each_delta(texts: list[str]) -> None:
    """texts[0] is the newest; each delta leads one step further back."""
    deltas = [encode_delta(texts[i], texts[i + 1]) for i in range(len(texts) - 1)]
    assert rebuild(texts[0], deltas) == texts[-1]
    step = texts[0]
    for d in deltas:
        step = apply_delta(step, d)
    assert step == texts[-1]


@settings(max_examples=_examples(500), deadline=None)
@given(
    st.lists(st.sampled_from(["a\n", "b\n", "\n", "c", "a", "ab\n"]), max_size=10),
    st.lists(st.sampled_from(["a\n", "b\n", "\n", "c", "a", "ab\n"]), max_size=10),
)
def test_line_hunks_keep_exactly_the_unchanged_lines(cur_l: list[str], old_l: list[str]) -> None:
    """Lines outside the hunks of a diff are equal, in order, on both sides, and the counts
    add up to the old text's lines."""
    cur, old = "".join(cur_l), "".join(old_l)
    edits = [(x.start, x.end, x.text) for x in diff_edits(cur, old)]
    hunks = line_hunks(cur, edits)
    cur_lines = cur.splitlines(keepends=True)
    old_lines = old.splitlines(keepends=True)
    kept_cur, kept_old, at, at_old = [], [], 0, 0
    for first, end, count in hunks:
        assert at <= first <= end
        kept_cur += cur_lines[at:first]
        kept_old += old_lines[at_old : at_old + first - at]
        at_old += first - at + count
        at = end
    kept_cur += cur_lines[at:]
    kept_old += old_lines[at_old:]
    assert kept_cur == kept_old
    assert at_old + len(cur_lines) - at == len(old_lines)


@settings(max_examples=_examples(200), deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a\n", "b\n", "\n", "c"]), max_size=8), min_size=2, max_size=6
    )
)
def test_blame_keeps_track_of_every_line(versions: list[list[str]]) -> None:
    """Through any chain of versions, each line of the blamed text is placed on a version
    that has it, and the step's line count matches the older text."""
    texts = ["".join(v) for v in versions]
    keys = blame_lines(reversed([(t, i) for i, t in enumerate(texts)]))
    newest = texts[-1].splitlines(keepends=True)
    assert len(keys) == len(newest)
    for line, k in zip(newest, keys, strict=True):
        assert line in texts[k].splitlines(keepends=True)


async def test_small_revisions_stay_whole(database_url: str, workspace: str) -> None:
    """Below COMPACT_TEXT_BYTES_MIN a revision is not worth an UPDATE: it stays whole."""
    async with Store(database_url) as store:
        for i in range(5):
            await store.write(workspace, "small.txt", f"tiny {i}\n", agent="a")
        assert (await store.compact(workspace)).revisions == 0
        assert (await store.read(workspace, "small.txt", 2)).text == "tiny 1\n"


async def test_import_update_is_compacted_like_a_commit(database_url: str, workspace: str) -> None:
    big = "".join(f"row {i} of an imported file\n" for i in range(400))
    async with Store(database_url) as store:
        await store.import_files(workspace, [("f.txt", big)], agent="imp")
        await store.import_files(workspace, [("f.txt", big + "more\n")], agent="imp")
    async with Store(database_url) as store:
        rows = await store._fetchall(
            "SELECT r.revision, r.delta IS NOT NULL FROM dbcode_revision r"
            " JOIN dbcode_workspace w ON w.id = r.workspace_id WHERE w.name = %s"
            " ORDER BY r.revision",
            (workspace,),
        )
        assert rows == [(1, True), (2, False)]
        assert (await store.read(workspace, "f.txt", 1)).text == big


async def test_two_processes_compacting_at_once_agree(database_url: str, workspace: str) -> None:
    """Two stores (as two server processes) compact the same history at the same moment:
    each revision is converted once, and every one still reads back exactly."""
    base = "".join(f"line {i} of a shared history file\n" for i in range(300))
    texts = [base.replace(f"line {j} ", f"LINE {j} ", 1) for j in range(60)]
    async with Store(database_url, compact_history=False) as writer:
        for t in texts:
            await writer.write(workspace, "s.txt", t, agent="w")
    async with Store(database_url) as a, Store(database_url) as b:
        ra, rb = await asyncio.gather(a.compact(workspace), b.compact(workspace))
        assert ra.revisions + rb.revisions == len(texts) - 1
        for rev, t in enumerate(texts, start=1):
            assert (await a.read(workspace, "s.txt", rev)).text == t
