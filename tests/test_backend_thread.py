"""Thread-backend specifics: timeouts (abandon and replace), initializer, settings it rejects.

The behaviour shared with every backend is in test_backends_common.py.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import multitask as mp
from multitask import ProcessError, TaskTimeoutError

_release = threading.Event()
_finished: list[str] = []


def stuck(tag):
    _release.wait(10)
    _finished.append(tag)
    return tag


def square(x):
    return x * x


def bad_init():
    raise RuntimeError("no config")


def thread_name(_=None):
    return threading.current_thread().name


def test_timeout_raises_at_deadline_and_pool_goes_on():
    _release.clear()
    _finished.clear()
    with mp.Pool(2, backend="thread") as p:
        r = p.apply_async(stuck, ("late",), task_timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(TaskTimeoutError) as info:
            r.get(timeout=5)
        assert 0.25 < time.monotonic() - t0 < 1.0
        assert info.value.timeout == 0.3 and info.value.pid == os.getpid()
        # the slot got a fresh thread: the pool keeps two workers and goes on
        assert p.map(square, range(20)) == [i * i for i in range(20)]
        stats = p.statistics()
        assert stats.workers_replaced == 1
        assert len(stats.workers) == 2
        backend: Any = p._backend   # the thread backend's internals
        assert backend.abandoned_threads() == 1
        # the abandoned thread finishes later; its result is discarded, not delivered
        _release.set()
        deadline = time.monotonic() + 5
        while backend.abandoned_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _finished == ["late"]
        assert backend.abandoned_threads() == 0
        with pytest.raises(TaskTimeoutError):
            r.get()


def test_timeout_in_map_fails_the_map():
    _release.clear()
    with mp.Pool(2, backend="thread", task_timeout=0.2) as p:
        with pytest.raises(TaskTimeoutError):
            p.map(stuck, ["a", "b", "c"])
        _release.set()
        assert p.map(square, [3]) == [9]


def test_terminate_does_not_wait_for_a_stuck_thread():
    _release.clear()
    p = mp.Pool(1, backend="thread")
    r = p.apply_async(stuck, ("x",))
    time.sleep(0.1)
    t0 = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(mp.ClosedError):
        r.get(timeout=1)
    _release.set()


def test_initializer_failure_breaks_the_pool():
    p = mp.Pool(2, initializer=bad_init, backend="thread")
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                r = p.apply_async(square, (2,))
            except ProcessError as exc:
                assert isinstance(exc.__cause__, RuntimeError)
                break
            with pytest.raises(ProcessError):
                r.get(timeout=5)
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        p.terminate()
        p.join()


def test_worker_threads_are_named_and_no_nice():
    with mp.Pool(2, backend="thread") as p:
        names = set(p.map(thread_name, range(10), 1))
    assert names and all(n.startswith("mt-thread-") for n in names)
    with pytest.raises(ValueError, match="thread backend"):
        mp.Pool(1, backend="thread", nice=5)


def test_arguments_are_shared_not_copied():
    data = [1, 2, 3]
    with mp.Pool(1, backend="thread") as p:
        assert p.apply(id, (data,)) == id(data)


def stuck_thread_here(event):
    event.wait(30)


def test_task_timeout_error_carries_the_threads_stack():
    import threading

    ev = threading.Event()
    try:
        with mp.Pool(1, backend="thread", task_timeout=0.3) as p:
            with pytest.raises(mp.TaskTimeoutError) as info:
                p.apply(stuck_thread_here, (ev,))
            assert "stuck_thread_here(" in str(info.value)
            assert "stuck_thread_here" in str(info.value.__cause__)
    finally:
        ev.set()
