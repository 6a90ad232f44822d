"""Timestamps inside a ``dbcode serve`` process, taken from outside by wrapping functions
(nothing in lsp_dbcode changes): the ``--trace`` of push_latency.py and diagnostics_latency.py.
``time.perf_counter`` is CLOCK_MONOTONIC, shared by all processes, so a benchmark's client joins
the server's marks with its own send and arrival times."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

Mark = Callable[[str], None]


def wrap(
    owner: Any,
    name: str,
    mark: Mark,
    *,
    before: str | None = None,
    after: str | None = None,
    when: Callable[[tuple[Any, ...]], bool] | None = None,
) -> None:
    """Replace ``owner.name`` (a function or coroutine function of a class or module) by one
    that marks ``before`` on entry and ``after`` on return (only if ``when(args)``, if given)."""
    orig = getattr(owner, name)

    def leave(args: tuple[Any, ...]) -> None:
        if after is not None and (when is None or when(args)):
            mark(after)

    if asyncio.iscoroutinefunction(orig):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                mark(before)
            try:
                return await orig(*args, **kwargs)
            finally:
                leave(args)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                mark(before)
            try:
                return orig(*args, **kwargs)
            finally:
                leave(args)

    setattr(owner, name, wrapper)


class JsonProbe:
    """Stands in for a module's ``json``: ``loads`` calls ``seen(message, t)``, ``t`` taken
    just before decoding; everything else is json's."""

    def __init__(self, seen: Callable[[Any, float], None]) -> None:
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)

    def loads(self, data: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        message = json.loads(data, **kw)
        self._seen(message, t)
        return message
