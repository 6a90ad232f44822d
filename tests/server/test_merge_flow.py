"""Merges in the editor flow, end to end: real `dbcode serve` processes, real pytest-lsp
clients, a real PostgreSQL (issue 19)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from lsprotocol import types

from lsp_dbcode.server.documents import PUSH_RETRIES_MAX
from lsp_dbcode.store import Store
from lsp_dbcode.text.diff import diff_edits
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


@pytest.fixture
async def editor(database_url: str) -> AsyncIterator[Editor]:
    ed = await Editor.start(database_url, "bob")
    yield ed
    with contextlib.suppress(Exception):
        await ed.stop()


def _type(ed: Editor, uri: str, before: str, after: str) -> None:
    """Type, as a user would, the change from ``before`` (the buffer) to ``after``."""
    assert ed.buffers[uri].text == before
    for e in reversed(diff_edits(before, after)):
        ed.type_at_offset(uri, e.start, e.text, delete=e.end - e.start)
    assert ed.buffers[uri].text == after


MOD = "import os\n\n\ndef main():\n    return os.sep\n"
CLEAN_CASES = {
    "two functions appended at the end": (
        MOD,
        MOD + "\n\ndef mine():\n    return 1\n",
        MOD + "\n\ndef theirs():\n    return 2\n",
        MOD + "\n\ndef theirs():\n    return 2\n\n\ndef mine():\n    return 1\n",
    ),
    "two imports added at the top": (
        MOD,
        "import re\n" + MOD,
        "import json\n" + MOD,
        "import json\nimport re\n" + MOD,
    ),
    "two words inserted at one column": (
        "names = 'alpha beta'\n",
        "names = 'alpha bee beta'\n",
        "names = 'alpha bat beta'\n",
        "names = 'alpha bat bee beta'\n",
    ),
    "touching edits": (
        "total = b+c\n",
        "total = x+c\n",
        "total = b-d\n",
        "total = x-d\n",
    ),
    "the same typo fixed by both": (
        "# notes\ndef f():\n    retrun 1\n",
        "# my notes\ndef f():\n    return 1\n",
        "# notes\ndef f():\n    return 1\n",
        "# my notes\ndef f():\n    return 1\n",
    ),
}


@pytest.mark.parametrize("case", list(CLEAN_CASES))
async def test_unsaved_edits_then_another_commit_then_save_merge_cleanly(
    case: str, editor: Editor, store: Store, workspace: str, database_url: str
) -> None:
    """The editor flow: a buffer with unsaved edits; another agent commits; the buffer is
    rebased (pushed edits, no conflict); the save stores both sides' changes."""
    base, mine, theirs, want = CLEAN_CASES[case]
    await store.write(workspace, "m.py", base, agent="seed")
    uri = make_uri(workspace, "m.py")
    buf = await editor.open(uri)
    _type(editor, uri, base, mine)
    await store.write(workspace, "m.py", theirs, agent="other", base=1)
    await wait_until(lambda: buf.text == want, what=f"rebased buffer {want!r}")
    editor.save(uri)
    await db_eventually(database_url, workspace, "m.py", want)
    assert not editor.diagnostics(uri, "dbcode")
    ast.parse(want)


async def test_a_true_overlap_conflicts_with_both_sides_kept(
    editor: Editor, store: Store, workspace: str, database_url: str
) -> None:
    base = "head = 0\nvalue = 1\ntail = 2\n"
    await store.write(workspace, "m.py", base, agent="seed")
    uri = make_uri(workspace, "m.py")
    buf = await editor.open(uri)
    _type(editor, uri, base, "head = 0\nvalue = 'mine'\ntail = 2\n")
    await store.write(workspace, "m.py", "head = 0\nvalue = 'theirs'\ntail = 2\n", agent="other")
    (diag,) = await wait_until(lambda: editor.diagnostics(uri, "dbcode"), what="conflict")
    assert buf.text == (
        "head = 0\n<<<<<<< mine\nvalue = 'mine'\n=======\nvalue = 'theirs'\n"
        ">>>>>>> other (revision 2)\ntail = 2\n"
    )
    assert diag.range.start.line == 1 and diag.range.end.line == 6
    editor.save(uri)  # refused: a buffer with a conflict block is never committed
    await wait_until(
        lambda: any("resolve" in m.message for m in editor.client.messages), what="refusal"
    )
    stored = await db_text(database_url, workspace, "m.py")
    assert stored == "head = 0\nvalue = 'theirs'\ntail = 2\n"


async def test_a_function_deleted_while_edited_inside_conflicts_losing_nothing(
    editor: Editor, store: Store, workspace: str, database_url: str
) -> None:
    keep = "def keep():\n    return 0\n"
    gone = "\n\ndef gone():\n    x = 1\n    return x\n"
    await store.write(workspace, "m.py", keep + gone, agent="seed")
    uri = make_uri(workspace, "m.py")
    buf = await editor.open(uri)
    edited = "\n\ndef gone():\n    x = 41\n    log(x)\n    return x\n"
    _type(editor, uri, keep + gone, keep + edited)
    await store.write(workspace, "m.py", keep, agent="other", base=1)
    (conflict,) = await wait_until(lambda: editor.diagnostics(uri, "dbcode"), what="conflict")
    assert conflict.severity == 1
    (block,) = find_conflicts(buf.text)
    assert buf.text.startswith(keep)
    assert "x = 41" in block.ours and "log(x)" in block.ours  # nothing typed lost
    assert "def gone" not in block.theirs
    # Keep mine: the function, with the edits, is saved.
    actions = await editor.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=conflict.range,
            context=types.CodeActionContext(diagnostics=[conflict]),
        )
    )
    action = next(x for x in actions if x.title.endswith("Keep mine"))
    editor._apply_edit(types.ApplyWorkspaceEditParams(edit=action.edit))
    await wait_until(lambda: not editor.diagnostics(uri, "dbcode"), what="conflict cleared")
    editor.save(uri)
    await db_eventually(database_url, workspace, "m.py", buf.text)
    assert "log(x)" in buf.text and buf.text.startswith(keep)


async def test_pushes_refused_because_the_user_kept_typing_never_give_up(
    editor: Editor, store: Store, workspace: str
) -> None:
    """A push that reaches the buffer after a keystroke the server had not seen is refused
    (Neovim: the typing waited in its didChange debounce; it flushes it, then refuses). That is
    the normal race of someone typing, not an editor refusing edits: the server merges again at
    once, however long it lasts, and never gives up on the document ("could not be updated")."""
    await store.write(workspace, "t.py", "A = 1\n\n\nB = 2\n", agent="seed")
    uri = make_uri(workspace, "t.py")
    buf = await editor.open(uri)
    keystrokes = PUSH_RETRIES_MAX + 5

    def type_one() -> None:
        if editor.refused < keystrokes:
            editor.edit(uri, (0, 0), (0, 0), "x")

    editor.before_answer = type_one
    await store.write(workspace, "t.py", "A = 1\n\n\nB = 3\n", agent="alice")
    want = "x" * keystrokes + "A = 1\n\n\nB = 3\n"
    await wait_until(
        lambda: buf.text == want, timeout=30, what=f"their change merged in: {buf.text!r}"
    )
    assert editor.refused == keystrokes
    gave_up = [m.message for m in editor.client.messages if "could not be updated" in m.message]
    assert not gave_up, gave_up
