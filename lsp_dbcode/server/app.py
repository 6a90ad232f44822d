"""State shared by every session of one server process: the store (one pool, one LISTEN
connection), caches, and the analysis engines."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..store import Store
from ..text.diff import diff_edits
from ..text.edits import Edit
from .analysis import Analyzer

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

REVISION_CACHE_MAX = 512
DIFF_CACHE_MAX = 256
REVISION_CACHE_BYTES_MAX = 64 * 1024 * 1024


class App:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.analyzer = Analyzer(store)
        self.forced_agent: str | None = None
        self.sessions: set[Session] = set()
        self._revisions: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._revisions_bytes = 0
        self._inflight: dict[tuple[str, str, int], asyncio.Future[str]] = {}
        self._diffs: dict[tuple[str, str, int, int], list[Edit]] = {}

    def diff(self, key: tuple[str, str, int, int], old: str, new: str) -> list[Edit]:
        """diff_edits(old, new), shared by every session whose buffer is ``old`` (a clean
        buffer of revision key[2] moving to key[3]): 100 editors, one diff."""
        found = self._diffs.get(key)
        if found is None:
            found = diff_edits(old, new)
            self._diffs[key] = found
            if len(self._diffs) > DIFF_CACHE_MAX:
                self._diffs.pop(next(iter(self._diffs)))
        return found

    async def close(self) -> None:
        await self.analyzer.close()

    async def revision_text(self, workspace: str, path: str, revision: int) -> str:
        """Text of one revision; shared by all sessions (100 editors, one read)."""
        key = (workspace, path, revision)
        text = self._revisions.get(key)
        if text is not None:
            self._revisions.move_to_end(key)
            return text
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            text = await self.store.revision_text(workspace, path, revision)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(text)
        self.remember(workspace, path, revision, text)
        return text

    def remember(self, workspace: str, path: str, revision: int, text: str) -> None:
        key = (workspace, path, revision)
        if key in self._revisions:
            return
        self._revisions[key] = text
        self._revisions_bytes += len(text)
        while self._revisions and (
            len(self._revisions) > REVISION_CACHE_MAX
            or self._revisions_bytes > REVISION_CACHE_BYTES_MAX
        ):
            _, old = self._revisions.popitem(last=False)
            self._revisions_bytes -= len(old)
