"""One bounded cache for the server's shared results (revision texts, diffs, pushes' JSON)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """Least recently used first out, bounded by entries and (with ``size``) by a total size,
    e.g. bytes of text. ``get`` marks an entry used."""

    def __init__(
        self, entries_max: int, *, size_max: int = 0, size: Callable[[V], int] | None = None
    ) -> None:
        self.entries_max = entries_max
        self.size_max = size_max
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self.total = 0

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> None:
        old = self._items.pop(key, None)
        if old is not None and self._size is not None:
            self.total -= self._size(old)
        self._items[key] = value
        if self._size is not None:
            self.total += self._size(value)
        while self._items and (
            len(self._items) > self.entries_max
            or (self.size_max and self.total > self.size_max and len(self._items) > 1)
        ):
            _, evicted = self._items.popitem(last=False)
            if self._size is not None:
                self.total -= self._size(evicted)

    def clear(self) -> None:
        self._items.clear()
        self.total = 0
