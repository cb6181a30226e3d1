"""Group commit: every caller gets its own row's result, rows written while another write is
in progress share one batch, a failure reaches exactly the callers of its batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from connector.groupwrite import GroupWriter


class SlowTable:
    """A stand-in database: writing a batch takes `delay` seconds; records the batches and
    whether two writes ever overlapped."""

    def __init__(self, delay: float = 0.02, fail_when: str | None = None):
        self.delay = delay
        self.fail_when = fail_when
        self.batches: list[list[str]] = []  # written
        self.attempts: list[list[str]] = []  # written or failed
        self.active = 0
        self.overlapped = False
        self._lock = threading.Lock()

    def write(self, rows: Sequence[str]) -> list[int | None]:
        with self._lock:
            self.active += 1
            self.overlapped |= self.active > 1
        try:
            time.sleep(self.delay)
            self.attempts.append(list(rows))
            if self.fail_when is not None and self.fail_when in rows:
                raise ValueError(f"bad row {self.fail_when}")
            self.batches.append(list(rows))
            return [int(r.split("-")[1]) * 10 for r in rows]
        finally:
            with self._lock:
                self.active -= 1


def run_threads(writer: GroupWriter[str, int], rows: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}
    start = threading.Barrier(len(rows))

    def call(row: str) -> None:
        start.wait()
        try:
            results[row] = writer.write(row)
        except Exception as exc:
            results[row] = exc

    threads = [threading.Thread(target=call, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a caller never returned"
    return results


def test_alone_a_row_is_written_at_once_in_its_own_batch():
    table = SlowTable(delay=0)
    writer = GroupWriter(table.write)
    assert writer.write("row-1") == 10
    assert writer.write("row-2") == 20
    assert table.batches == [["row-1"], ["row-2"]]


def test_concurrent_callers_share_batches_and_each_gets_its_own_result():
    table = SlowTable()
    writer = GroupWriter(table.write)
    rows = [f"row-{i}" for i in range(40)]
    results = run_threads(writer, rows)
    assert results == {row: int(row.split("-")[1]) * 10 for row in rows}
    written = [row for batch in table.batches for row in batch]
    assert sorted(written) == sorted(rows)  # each row once
    assert len(table.batches) < len(rows)  # rows arriving during a write were grouped
    assert not table.overlapped  # one write at a time


def test_a_failed_batch_fails_its_callers_and_no_others():
    table = SlowTable(fail_when="row-0")
    writer = GroupWriter(table.write)
    results = run_threads(writer, [f"row-{i}" for i in range(12)])
    failed = {row for row, result in results.items() if isinstance(result, ValueError)}
    assert failed == set(next(batch for batch in table.attempts if "row-0" in batch))
    written = {row for batch in table.batches for row in batch}
    assert written == set(results) - failed
    assert all(results[row] == int(row.split("-")[1]) * 10 for row in written)
    assert writer.write("row-99") == 990  # usable after a failure


def test_a_result_count_mismatch_is_an_error_not_a_wrong_answer():
    writer: GroupWriter[str, int] = GroupWriter(lambda rows: [])
    with pytest.raises(RuntimeError, match="wrote 1 rows but got 0"):
        writer.write("a")
