"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier across processes."""

from __future__ import annotations

import threading

import pytest

import multitask


def _add_many(lock, counter, n):
    for _ in range(n):
        with lock:
            counter.value += 1


def _set_after_wait(sem, event):
    sem.acquire()
    event.set()


def _cond_worker(cond, flag):
    with cond:
        flag.value = 1
        cond.notify_all()


def _barrier_worker(barrier, counter):
    barrier.wait(timeout=30)
    with counter.get_lock():
        counter.value += 1


def test_lock_protects_a_shared_counter(ctx):
    lock = ctx.Lock()
    counter = ctx.RawValue("i", 0)
    procs = [ctx.Process(target=_add_many, args=(lock, counter, 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert counter.value == 600


def test_semaphore_and_event(ctx):
    sem = ctx.Semaphore(0)
    event = ctx.Event()
    p = ctx.Process(target=_set_after_wait, args=(sem, event))
    p.start()
    assert not event.wait(0.1)
    sem.release()
    assert event.wait(30)
    assert event.is_set()
    p.join()
    assert sem.get_value() == 0


def test_condition_across_processes(ctx):
    cond = ctx.Condition()
    flag = ctx.Value("i", 0)
    with cond:
        p = ctx.Process(target=_cond_worker, args=(cond, flag))
        p.start()
        assert cond.wait_for(lambda: flag.value == 1, timeout=30)
    p.join()


def test_barrier_across_processes(ctx):
    barrier = ctx.Barrier(3)
    counter = ctx.Value("i", 0)
    procs = [ctx.Process(target=_barrier_worker, args=(barrier, counter)) for _ in range(2)]
    for p in procs:
        p.start()
    barrier.wait(timeout=30)
    for p in procs:
        p.join()
    assert counter.value == 2
    assert barrier.parties == 3


def test_semaphore_get_value_and_bounded():
    s = multitask.Semaphore(2)
    assert s.get_value() == 2
    s.acquire()
    assert s.get_value() == 1
    assert s.acquire(timeout=0.01) is True
    assert s.acquire(timeout=0.01) is False
    b = multitask.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        b.release()


def test_rlock_is_recursive_and_lock_is_not():
    r = multitask.RLock()
    with r, r:
        pass
    lock = multitask.Lock()
    assert lock.acquire()
    assert lock.acquire(timeout=0.01) is False
    lock.release()


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: multitask.Semaphore(-1), ValueError, ">= 0"),
        (lambda: multitask.Semaphore("3"), TypeError, "int"),  # type: ignore[arg-type]
        (lambda: multitask.BoundedSemaphore(-2), ValueError, ">= 0"),
        (lambda: multitask.Barrier(0), ValueError, "parties"),
        (lambda: multitask.Barrier(2.5), TypeError, "parties"),  # type: ignore[arg-type]
        (lambda: multitask.Barrier(2, action=3), TypeError, "action"),  # type: ignore[arg-type]
        (lambda: multitask.Condition(threading.Lock()), TypeError, "threading lock"),  # type: ignore[arg-type]
        (lambda: multitask.Event().wait("1"), TypeError, "timeout"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_raises_at_the_call(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_fork_lock_refused_by_spawn_child():
    lock = multitask.get_context("fork").Lock()
    p = multitask.get_context("spawn").Process(target=_add_many, args=(lock, None, 0))
    with pytest.raises(RuntimeError, match="fork context"):
        p.start()
