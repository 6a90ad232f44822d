"""Tasks of one session: every one kept until it ends, and its failure logged (never
fire-and-forget); cancelled together when the session ends."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

from ..store.access import current_role

log = logging.getLogger(__name__)


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.role: str | None = None  # the session's agent role: its tasks' SQL runs as it

    def run(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro`` as a task that is kept, and whose failure is logged."""
        ctx = contextvars.copy_context()
        ctx.run(current_role.set, self.role)
        task = asyncio.get_running_loop().create_task(coro, context=ctx)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task failed: %r", exc, exc_info=exc)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
