"""The process backend's dispatch protocol (backends/process/).

The soak suite (tests/soak) hammers the whole pool; these tests pin down single protocol rules
deterministically, by widening the race windows they are about.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import multitask as mt
from multitask._core._ring import Ring


def ident(x):
    return x


def test_sends_reach_a_worker_in_the_order_they_were_decided(monkeypatch):
    """Issue #16: two threads dispatching to the same worker must not reorder its messages.

    Dispatch decides under the backend's lock (tasks appended to the worker's inflight list) and
    copies into the worker's ring after releasing it.  Here the main thread's copy is held back
    for 0.3 s while a second thread submits: before the fix the second thread's task overtook
    the first in the ring, the worker answered it first, the parent dropped that answer as
    stale (it was not the head of inflight) and the second ``get()`` hung.  Now the copies are
    serialized per worker and keep the decided order.
    """
    parent = os.getpid()
    hold = threading.Event()
    orig_put_many = Ring.put_many
    orig_put = Ring.put
    rings: set[int] = set()

    def held(ring):
        if (os.getpid() == parent and hold.is_set() and id(ring) in rings
                and threading.current_thread() is threading.main_thread()):
            hold.clear()
            time.sleep(0.3)

    def put_many(self, items, timeout=None):
        held(self)
        return orig_put_many(self, items, timeout)

    def put(self, data, timeout=None):
        held(self)
        return orig_put(self, data, timeout)

    monkeypatch.setattr(Ring, "put_many", put_many)
    monkeypatch.setattr(Ring, "put", put)
    with mt.get_context("fork").Pool(1) as pool:
        # measured as quick: the worker now takes more tasks while it holds one (prefetch)
        assert pool.map(ident, range(100)) == list(range(100))
        backend: Any = pool._backend   # the process backend's internals
        rings.update(id(w.ring) for w in backend._workers)
        hold.set()
        second: list[mt.pool.AsyncResult] = []

        def submit_second() -> None:
            time.sleep(0.1)
            second.append(pool.apply_async(ident, ("b",)))

        helper = threading.Thread(target=submit_second)
        helper.start()
        first = pool.apply_async(ident, ("a",))   # its copy into the ring waits 0.3 s
        helper.join(10)
        assert first.get(timeout=10) == "a"
        assert second[0].get(timeout=10) == "b"


@pytest.mark.parametrize("n", [20_000])
def test_two_callers_flood_one_pool(n):
    """Many submitters at once, every result delivered (a shorter relative of the soak)."""
    with mt.get_context("fork").Pool(2) as pool:
        out: dict[int, list[int]] = {}

        def caller(k):
            rs = [pool.apply_async(ident, (i,)) for i in range(n)]
            out[k] = [r.get(timeout=30) for r in rs]

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(out[k] == list(range(n)) for k in range(3))


def test_a_callback_waiting_on_its_own_pool_raises_instead_of_hanging(caplog):
    """Results are delivered by the thread that runs callbacks: a callback that waits for one
    would wait for ever (the stdlib hangs there).  It gets a ProcessError; the pool goes on."""
    with mt.get_context("fork").Pool(2) as pool:
        seen: list[BaseException] = []

        def cb(value):
            try:
                pool.apply(ident, (value,))
            except mt.ProcessError as exc:
                seen.append(exc)

        rs = [pool.apply_async(ident, (i,), callback=cb) for i in range(20)]
        assert [r.get(timeout=30) for r in rs] == list(range(20))
        assert len(seen) == 20
        assert "callback" in str(seen[0]) and "for ever" in str(seen[0])
        assert pool.apply(ident, ("after",)) == "after"


def test_results_failed_by_terminate_do_not_share_a_growing_traceback():
    """terminate() fails every unfinished result with one ClosedError.  Re-raising one object
    prepends frames to its traceback, so each get() grew it: after 20 000 gets, tracebacks of
    ~40 000 frames, and logging each unretrieved one took minutes (found by the soak)."""
    import traceback

    pool = mt.get_context("fork").Pool(1)
    blocker = pool.apply_async(time.sleep, (30,))
    rs = [pool.apply_async(ident, (i,)) for i in range(20_000)]
    futs = [pool.submit(ident, i) for i in range(2_000)]
    pool.terminate()
    depths = []
    for r in [blocker, *rs]:
        try:
            r.get(timeout=10)
        except mt.ClosedError as exc:
            depths.append(len(traceback.extract_tb(exc.__traceback__)))
    assert len(depths) == 20_001 and max(depths) < 10, max(depths)
    fdepths = []
    for f in futs:
        fexc = f.exception(timeout=10)
        try:
            f.result()
        except mt.ClosedError as raised:
            assert raised is fexc
            fdepths.append(len(traceback.extract_tb(raised.__traceback__)))
    assert len(fdepths) == 2_000 and max(fdepths) < 10, max(fdepths)


class BlocksWhilePickled:
    """Pickles as 7, once ``release`` is set (or after 20 s, which the test then reports)."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered, self.release = entered, release
        self.waited_out = False

    def __reduce__(self) -> tuple[Any, ...]:
        self.entered.set()
        self.waited_out = not self.release.wait(20)
        return (int, (7,))


def test_a_chunks_items_are_pickled_outside_the_dispatch_lock():
    """Issue #20: a map's items are user objects (``__reduce__`` is user code).  They were
    pickled under the backend's lock, so one slow to pickle held up every other call's dispatch
    and every result's settling: here a second call could not even be submitted until the first
    map's pickling gave up.  Now the chunk is pickled after the lock is released (``_flush``,
    under its worker's send lock only), and the second call runs on the other worker meanwhile.
    """
    entered, release = threading.Event(), threading.Event()
    blocker = BlocksWhilePickled(entered, release)
    with mt.get_context("fork").Pool(2) as pool:
        assert pool.map(abs, range(-3, 0)) == [3, 2, 1]   # both workers up, abs measured
        out: list[Any] = []
        mapper = threading.Thread(target=lambda: out.append(pool.map(ident, [blocker])))
        mapper.start()
        assert entered.wait(60)
        try:
            assert pool.apply_async(abs, (-5,)).get(timeout=30) == 5
        finally:
            release.set()
        mapper.join(60)
        assert out == [[7]]
    assert not blocker.waited_out, "the second call waited for the first one's pickling"


class Unpicklable:
    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("this item cannot be pickled")


def test_a_chunk_that_cannot_be_pickled_fails_its_call_and_leaves_no_task_behind():
    # pickled by _flush now: the chunk leaves its worker's inflight (the worker never got it),
    # its map fails with SerializationError, and the pool goes on with nothing outstanding
    with mt.get_context("fork").Pool(2) as pool:
        with pytest.raises(mt.SerializationError, match="cannot be pickled"):
            pool.map(ident, [1, 2, Unpicklable(), 4], chunksize=4)
        assert pool.map(abs, range(-100, 0)) == list(range(100, 0, -1))
        stats = pool.statistics()
        assert stats.queued == 0 and stats.running == 0, stats
