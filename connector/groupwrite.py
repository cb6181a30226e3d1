"""Group commit: rows that threads of one process want written at the same moment go to the
database together, in one statement and one commit, and every caller still returns only
after its own row is committed.

A webhook's one durable write is most of what the connector adds to a request; under load a
web worker's threads arrive together, and one INSERT + COMMIT of four rows costs little more
than one of one row (the round trip, the commit and the WAL flush are paid once). Nothing
waits on a timer: a thread that finds no write in progress writes at once; threads arriving
while it writes queue up and the first of them writes all of them next (each thread writes
at most one batch, so nobody serves the others for long).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Row = TypeVar("Row")
Key = TypeVar("Key")


class _Waiter(Generic[Row, Key]):
    __slots__ = ("row", "wake", "finished", "key", "error")

    def __init__(self, row: Row):
        self.row = row
        self.wake = threading.Event()
        self.finished = False
        self.key: Key | None = None
        self.error: BaseException | None = None


class GroupWriter(Generic[Row, Key]):
    """`write(row)` returns what `write_rows` returned for that row (None: not written,
    e.g. a duplicate) or raises what it raised. `write_rows` gets the rows waiting, in the
    order they arrived, and returns one result per row (an exception: that row failed); it
    is never called concurrently."""

    def __init__(self, write_rows: Callable[[Sequence[Row]], Sequence[Key | BaseException | None]]):
        self._write_rows = write_rows
        self._lock = threading.Lock()
        self._waiting: list[_Waiter[Row, Key]] = []
        self._writing = False

    def write(self, row: Row) -> Key | None:
        mine: _Waiter[Row, Key] = _Waiter(row)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._writing
            self._writing = True
        if not lead:
            mine.wake.wait()  # woken when our batch is done, or to write the next batch
        if not mine.finished:
            self._write_batch()
        if mine.error is not None:
            raise mine.error
        return mine.key

    def _write_batch(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            keys = self._write_rows([w.row for w in batch])
            if len(keys) != len(batch):
                raise RuntimeError(f"wrote {len(batch)} rows but got {len(keys)} results")
            for waiter, key in zip(batch, keys, strict=True):
                if isinstance(key, BaseException):
                    waiter.error = key
                else:
                    waiter.key = key
        except BaseException as exc:  # every caller of this batch sees the failure
            for waiter in batch:
                waiter.error = exc
        finally:
            for waiter in batch:
                waiter.finished = True
                waiter.wake.set()
            with self._lock:
                if self._waiting:
                    self._waiting[0].wake.set()  # the next batch is written by its first
                else:
                    self._writing = False
