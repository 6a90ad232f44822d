"""State shared by every session of one server process: the store (one pool, one LISTEN
connection), caches, and the analysis engines."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..store import Store
from .analysis import Analyzer

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

REVISION_CACHE_MAX = 512
REVISION_CACHE_BYTES_MAX = 64 * 1024 * 1024


class App:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.analyzer = Analyzer(store)
        self.sessions: set[Session] = set()
        self._revisions: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._revisions_bytes = 0
        self._inflight: dict[tuple[str, str, int], asyncio.Future[str]] = {}

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
            text = (await self.store.read(workspace, path, revision)).text
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
