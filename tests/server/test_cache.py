"""The server's one bounded cache (server/cache.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lsp_dbcode.server.cache import BoundedCache


def test_least_recently_used_goes_first() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert "b" not in cache
    assert cache.get("a") == 1
    assert cache.get("c") == 3


def test_bounded_by_size_keeps_the_newest() -> None:
    cache: BoundedCache[int, str] = BoundedCache(100, size_max=10, size=len)
    cache.put(1, "abcd")
    cache.put(2, "efgh")
    cache.put(3, "ijkl")  # 12 > 10: the oldest goes
    assert 1 not in cache
    assert cache.total == 8
    cache.put(4, "x" * 50)  # alone over the bound: kept (the one just asked for), others go
    assert len(cache) == 1
    assert cache.get(4) == "x" * 50
    assert cache.total == 50


@given(st.lists(st.tuples(st.integers(0, 20), st.text(max_size=8)), max_size=60))
def test_bounds_and_total_hold(puts: list[tuple[int, str]]) -> None:
    cache: BoundedCache[int, str] = BoundedCache(5, size_max=16, size=len)
    for key, value in puts:
        cache.put(key, value)
        assert cache.get(key) == value  # what was just put is there
        assert len(cache) <= 5
        assert cache.total == sum(len(v) for v in cache._items.values())
        assert cache.total <= 16 or len(cache) == 1
