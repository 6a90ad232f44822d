"""Issue 19, as a user tried it: 8 live-mode and 2 save-mode sessions type into one file for
20 s through a real `dbcode serve` and a real PostgreSQL. Each inserts words at word starts
and deletes only its own older words; save-mode sessions save every few actions and at the
end. Within 8 s of the typing stopping: every buffer equals the database, no buffer holds a
conflict block, and every word not deleted by its author is in the database."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from dataclasses import dataclass, field

from lsp_dbcode.store import Store
from lsp_dbcode.text.merge import find_conflicts
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor
from tests.server.test_sync import db_text

LIVE_SESSIONS = 8
SAVE_SESSIONS = 2
TYPING_S = 20.0
CONVERGENCE_S = 8.0  # the bound, from the end of the typing
ACTION_GAP_S = (0.25, 0.6)  # each session's pause between two actions
SAVE_EVERY_ACTIONS = 6
DELETE_SHARE = 0.3
POLL_S = 0.1

BASE = "".join(
    " ".join(f"w{line}x{k}" for k in range(6)) + "\n" for line in range(24)
)  # short lines: 24 lines of 6 words


@dataclass
class Typist:
    editor: Editor
    uri: str
    mode: str
    rng: random.Random
    typed: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)

    @property
    def text(self) -> str:
        return self.editor.buffers[self.uri].text

    def act(self) -> None:
        text = self.text
        own = [w for w in self.typed if w not in self.deleted and _find(text, w) is not None]
        if own and self.rng.random() < DELETE_SHARE:
            word = self.rng.choice(own[: max(1, len(own) - 2)])  # an older one
            at = _find(text, word)
            assert at is not None
            self.editor.type_at_offset(self.uri, at, "", delete=len(word) + 1)
            self.deleted.add(word)
            return
        starts = [m.start() for m in re.finditer(r"(?<!\S)\S", text)]
        at = self.rng.choice(starts)
        word = f"{self.editor.name}n{len(self.typed)}"
        self.editor.type_at_offset(self.uri, at, word + " ")
        self.typed.append(word)


def _find(text: str, word: str) -> int | None:
    """Offset of ``word`` followed by a space, as a whole word."""
    m = re.search(rf"(?<!\S){re.escape(word)} ", text)
    return m.start() if m else None


async def _type(t: Typist, until: float) -> None:
    actions = 0
    while time.monotonic() < until:
        await asyncio.sleep(t.rng.uniform(*ACTION_GAP_S))
        t.act()
        actions += 1
        if t.mode == "save" and actions % SAVE_EVERY_ACTIONS == 0:
            t.editor.save(t.uri)


async def test_ten_sessions_typing_for_20_s_converge_and_keep_every_word(
    database_url: str, store: Store, workspace: str
) -> None:
    await store.write(workspace, "storm.txt", BASE, agent="seed")
    uri = make_uri(workspace, "storm.txt")
    modes = ["live"] * LIVE_SESSIONS + ["save"] * SAVE_SESSIONS
    typists: list[Typist] = []
    try:
        for n, mode in enumerate(modes):
            ed = await Editor.start(database_url, f"{mode[0]}{n}", mode=mode)
            await ed.open(uri, "plaintext")
            typists.append(Typist(ed, uri, mode, random.Random(n)))
        until = time.monotonic() + TYPING_S
        await asyncio.gather(*(_type(t, until) for t in typists))
        for t in typists:
            if t.mode == "save":
                t.editor.save(uri)

        stored = ""

        async def settled() -> bool:
            nonlocal stored
            stored = await db_text(database_url, workspace, "storm.txt")
            return all(t.text == stored for t in typists)

        deadline = time.monotonic() + CONVERGENCE_S
        for _ in range(int(CONVERGENCE_S / POLL_S) + 1):
            if await settled() or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)

        differing = [t.editor.name for t in typists if t.text != stored]
        assert not differing, f"buffers differing from the database: {differing}"
        assert not any(find_conflicts(t.text) for t in typists)
        missing = [
            w for t in typists for w in t.typed if w not in t.deleted and _find(stored, w) is None
        ]
        assert not missing, f"words typed, never deleted by their author, not stored: {missing}"
        typed = sum(len(t.typed) for t in typists)
        assert typed > 200  # the sessions really typed (about 10 x 20 / 0.43)
        assert re.findall(r"w\d+x\d+", stored) == BASE.split()  # base words: kept, in order
    finally:
        for t in typists:
            with contextlib.suppress(Exception):
                await t.editor.stop()
