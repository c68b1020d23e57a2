"""_engine/jobs.py: how a map is cut into tasks (no workers needed: tasks are pulled by hand)."""

from __future__ import annotations

from typing import Any

from multitask._engine.codes import MODE_MAP
from multitask._engine.jobs import MapJob


class _Owner:
    def task_finished(self, *a: Any) -> None: ...
    def items_finished(self, *a: Any) -> None: ...
    def count_submitted(self, n: int) -> None: ...
    def wake_backend(self) -> None: ...


class _Result:
    def _deliver(self, *a: Any) -> bool:
        return True

    def _set(self, *a: Any) -> None: ...


def _sizes(job: MapJob) -> list[int]:
    sizes = []
    while (task := job.next_task()) is not None:
        sizes.append(task.n)
    return sizes


def _job(n: int, item_seconds: float = 0.0) -> MapJob:
    return MapJob(_Owner(), abs, MODE_MAP, range(n), _Result(), chunksize=None, workers=2,
                  timeout=None, item_seconds=item_seconds)


def test_guided_chunks_cover_the_input_and_shrink_to_a_floor():
    sizes = _sizes(_job(1000))
    assert sum(sizes) == 1000
    assert sizes[0] == 125                       # remaining / (4 * workers)
    assert min(sizes[:-1]) >= 32                 # length / (16 * workers), not 1
    assert len(sizes) <= 25                      # it was ~55 messages for 1 000 cheap items


def test_a_function_measured_before_is_chunked_by_its_cost_from_the_start():
    # 0.1 us per item: ~0.2 ms of work per chunk takes 2 000 items
    assert _sizes(_job(1000, item_seconds=1e-7)) == [1000]
    # 1 ms per item: the cost bound asks for nothing; the guided sizes stay
    assert _sizes(_job(1000, item_seconds=1e-3)) == _sizes(_job(1000))


def test_a_window_bounds_what_the_feeder_reads_ahead():
    import time

    read = []

    def source():
        for i in range(100):
            read.append(i)
            yield i

    job = MapJob(_Owner(), abs, MODE_MAP, source(), _Result(), chunksize=1, workers=2,
                 timeout=None, window=3)
    job.start_feeding()
    deadline = time.monotonic() + 10
    while len(read) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(read) in (3, 4)   # the feeder may have read the next item before it waits
    job.consumed(10)
    while len(read) < 14 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(read) >= 13
    job.cancel()
