"""A memo bounded by the size of what it holds, not only by its number of entries."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SizedMemo(dict[K, V]):
    """A dict that starts over when the next entry would take it past `max_bytes` (an
    estimate the caller gives with each entry) or `max_entries`. Its entries differ in size
    by orders of magnitude — a rare word's few hits, the thousands of an everyday word in a
    large catalogue — so a bound on their number alone bounds no memory. Starting over
    keeps it simple: what a worker sees next is about as likely to be new as what it saw
    first, and an entry is only a recomputation away."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0

    def put(self, key: K, value: V, size: int) -> V:
        """Keep `value` under `key` (a key not yet held), counting `size` bytes for it; a
        value larger than the whole memo is returned without being kept."""
        if size > self.max_bytes:
            return value
        if len(self) >= self.max_entries or self.bytes + size > self.max_bytes:
            self.clear()
        self[key] = value
        self.bytes += size
        return value

    def clear(self) -> None:
        super().clear()
        self.bytes = 0
