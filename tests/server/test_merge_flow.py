"""Merges in the editor flow, end to end: real `dbcode serve` processes, real pytest-lsp
clients, a real PostgreSQL (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from lsp_dbcode.store import Store
from lsp_dbcode.text.merge import find_conflicts
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor, wait_until
from tests.server.test_sync import db_eventually, db_text


@pytest.fixture
async def live_pair(database_url: str) -> AsyncIterator[tuple[Editor, Editor]]:
    a, b = await asyncio.gather(
        Editor.start(database_url, "alice", mode="live"),
        Editor.start(database_url, "bob", mode="live"),
    )
    yield a, b
    for ed in (a, b):
        with contextlib.suppress(Exception):
            await ed.stop()


async def test_live_commit_after_a_merged_commit_keeps_the_merged_text(
    live_pair: tuple[Editor, Editor], store: Store, workspace: str, database_url: str
) -> None:
    """The path that dropped typing (issue 19, third run). A live buffer whose commit was
    merged with another agent's (so the stored revision holds more than the buffer) used to
    record the buffer's own text as the text of that revision. While the push of the merge
    into the buffer was still refused (the user kept typing), the next live commit was a
    compare-and-swap on that revision with the buffer's text: it succeeded and stored the
    buffer without the other agent's words, which then vanished from that agent's own buffer
    too."""
    a, b = live_pair
    await store.write(workspace, "t.txt", "one\ntwo\n", agent="seed")
    uri = make_uri(workspace, "t.txt")
    abuf = await a.open(uri)
    bbuf = await b.open(uri)
    a.refuse_edits = True  # a fast typist: every push arrives for a version already gone
    b.edit(uri, (1, 0), (1, 0), "THEIRS ")
    await db_eventually(database_url, workspace, "t.txt", "one\nTHEIRS two\n")
    # Alice's first commit is stale: it is merged with Bob's and stored.
    a.edit(uri, (0, 0), (0, 0), "A1 ")
    await db_eventually(database_url, workspace, "t.txt", "A1 one\nTHEIRS two\n")
    # Alice keeps typing while the merge cannot reach her buffer.
    for k in range(2, 6):
        a.edit(uri, (0, 0), (0, 0), f"A{k} ")
        await asyncio.sleep(0.2)
    await wait_until(lambda: a.refused >= 2, what="alice refused pushes")
    a.refuse_edits = False
    a.edit(uri, (0, 0), (0, 0), "A6 ")  # one more keystroke, now that pushes apply
    want = "A6 A5 A4 A3 A2 A1 one\nTHEIRS two\n"
    await wait_until(
        lambda: abuf.text == bbuf.text == want,
        timeout=15,
        what=f"both buffers hold everyone's words: {abuf.text!r} / {bbuf.text!r}",
    )
    await db_eventually(database_url, workspace, "t.txt", want)
    assert not find_conflicts(abuf.text)
    assert await db_text(database_url, workspace, "t.txt") == want
