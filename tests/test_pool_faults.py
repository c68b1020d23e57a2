"""A table of saboteurs (loky's crash_cases idea), run for every start method.

Each row crashes or raises at one stage of a task's life -- unpickling the task in the worker,
running it, pickling the result, unpickling the result in the parent -- through one API
(apply_async, map, imap, submit), asserts the exact exception, and then checks that the pool
still works.  Nothing may hang: every wait here is bounded.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import pytest

import multitask

# -- saboteurs -----------------------------------------------------------------------------


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _exit() -> None:
    os._exit(17)


def _segfault() -> None:
    # A real SIGSEGV in native code, as a buggy C extension would cause.  faulthandler may print.
    ctypes.string_at(0)


class _Raise(Exception):
    pass


def _raise() -> None:
    raise _Raise("sabotage")


CRASHES = {"sigkill": _sigkill, "exit": _exit, "segfault": _segfault, "raise": _raise}


def _crash_by_name(name: str):
    return CRASHES[name]()


class CrashOnUnpickle:
    """An argument that crashes the worker while it is being unpickled."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self):
        return (_crash_by_name, (self.how,))


class CrashOnPickle:
    """A result that crashes the worker while it is being pickled."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self):
        CRASHES[self.how]()
        return (str, ("unreachable",))


def _raise_in_parent(value):
    raise _Raise(f"cannot rebuild {value}")


class RaiseOnUnpickle:
    """A result that pickles in the worker but raises while the parent unpickles it."""

    def __reduce__(self):
        return (_raise_in_parent, ("result",))


def task_identity(x):
    return x


def task_crash(how):
    CRASHES[how]()


def task_bad_result(how):
    return CrashOnPickle(how)


def task_unloadable_result(_):
    return RaiseOnUnpickle()


def sq(x):
    return x * x


def task_crash_if(x, how="sigkill", at=5):
    if x == at:
        CRASHES[how]()
    return x


# Stage -> (function, argument factory) for a single task.
STAGES = {
    "unpickle_task": (task_identity, lambda how: CrashOnUnpickle(how)),
    "run": (task_crash, lambda how: how),
    "pickle_result": (task_bad_result, lambda how: how),
}


def expected_error(stage: str, how: str) -> type[BaseException]:
    if how in ("sigkill", "exit", "segfault"):
        return multitask.WorkerDiedError
    if stage == "run":
        return _Raise
    return multitask.SerializationError


def _run(pool, api: str, fn, arg):
    if api == "apply_async":
        return pool.apply_async(fn, (arg,)).get(timeout=30)
    if api == "map":
        return pool.map(fn, [arg])
    if api == "imap":
        return list(pool.imap(fn, [arg]))
    if api == "submit":
        return pool.submit(fn, arg).result(timeout=30)
    raise AssertionError(api)


@pytest.mark.parametrize("api", ["apply_async", "map", "imap", "submit"])
@pytest.mark.parametrize("how", sorted(CRASHES))
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_saboteur(ctx, stage, how, api):
    fn, make_arg = STAGES[stage]
    with ctx.Pool(2) as pool:
        t0 = time.monotonic()
        with pytest.raises(expected_error(stage, how)) as info:
            _run(pool, api, fn, make_arg(how))
        assert time.monotonic() - t0 < 20
        if expected_error(stage, how) is multitask.WorkerDiedError:
            err = info.value
            assert isinstance(err, multitask.WorkerDiedError)
            assert err.pid and err.exitcode is not None
            if how == "sigkill":
                assert err.signal == signal.SIGKILL and err.exitcode == -signal.SIGKILL
            elif how == "segfault":
                assert err.signal == signal.SIGSEGV
            else:
                assert err.signal is None and err.exitcode == 17
        # The pool goes on, with a replacement worker where one died.
        assert pool.map(sq, range(20)) == [x * x for x in range(20)]
        assert pool.apply(sq, (3,)) == 9


@pytest.mark.parametrize("api", ["apply_async", "map", "imap", "submit"])
def test_result_that_cannot_be_unpickled_in_parent(ctx, api):
    with ctx.Pool(1) as pool:
        with pytest.raises(multitask.SerializationError, match="unpickled in the parent"):
            _run(pool, api, task_unloadable_result, 0)
        assert pool.apply(sq, (4,)) == 16


def test_unpicklable_exception_is_described_not_lost(ctx):
    with ctx.Pool(1) as pool:
        with pytest.raises(multitask.RemoteError) as info:
            pool.apply(raise_unpicklable, (1,))
        assert "Unpicklable" in str(info.value)
        assert "Traceback" in info.value.remote_traceback
        assert pool.apply(sq, (2,)) == 4


class Unpicklable(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.lock = __import__("threading").Lock()


def raise_unpicklable(x):
    raise Unpicklable(x)


def test_dead_worker_fails_exactly_its_task_and_the_rest_complete(ctx):
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(task_crash_if, (i,)) for i in range(12)]
        outcomes = []
        for r in results:
            try:
                outcomes.append(r.get(timeout=30))
            except multitask.WorkerDiedError:
                outcomes.append("died")
        assert outcomes == [i if i != 5 else "died" for i in range(12)]
        stats = pool.statistics()
        assert stats.workers_replaced == 1
        assert stats.failed == 1


def test_map_over_a_dying_worker_raises_instead_of_hanging(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(multitask.WorkerDiedError):
            pool.map(task_crash_if, range(40), chunksize=1)
        with pytest.raises(multitask.WorkerDiedError):
            list(pool.imap_unordered(task_crash_if, range(40)))
        assert pool.map(sq, range(5)) == [0, 1, 4, 9, 16]


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def test_task_timeout_per_pool_and_per_call(ctx):
    with ctx.Pool(2, task_timeout=0.5) as pool:
        t0 = time.monotonic()
        with pytest.raises(multitask.TaskTimeoutError) as info:
            pool.apply(sleep_for, (30,))
        assert time.monotonic() - t0 < 10
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 0.5
        assert pool.apply(sleep_for, (0.01,)) == 0.01
        assert pool.apply(sleep_for, (1.0,), task_timeout=5) == 1.0
        results = pool.map(sleep_for, [0.01, 0.02], task_timeout=5)
        assert results == [0.01, 0.02]
        with pytest.raises(multitask.TaskTimeoutError):
            pool.map(sleep_for, [0.01, 30, 0.01])
        assert pool.statistics().workers_replaced >= 2
        assert pool.apply(sq, (5,)) == 25


def test_task_timeout_counts_from_start_not_from_queueing(ctx):
    # Two 0.6 s tasks on one worker with a 1 s timeout: the second waits 0.6 s in the queue,
    # but must not be failed for it.
    with ctx.Pool(1) as pool:
        rs = [pool.apply_async(sleep_for, (0.6,), task_timeout=1.0) for _ in range(2)]
        assert [r.get(timeout=30) for r in rs] == [0.6, 0.6]


# -- item groups: imap with chunksize 1 sends cheap items together, each still its own task ------


def item_group_crash(x):
    if x == 2000:
        os._exit(9)
    return x


def item_group_raise(x):
    if x % 500 == 499:
        raise ValueError(f"item {x}")
    return x * 2


def item_group_slow(x):
    if x == 1500:
        time.sleep(30)
    return x


class UnpicklableItem:
    def __init__(self, x: int) -> None:
        self.x = x

    def __reduce__(self):
        raise TypeError(f"cannot pickle item {self.x}")


def _drain(it, errors: type[BaseException]) -> list:
    """Every outcome of an imap iterator, in the order it gives them: a value or an exception
    of type ``errors`` (iteration goes on after a failed item)."""
    out: list = []
    while True:
        try:
            out.append(next(it))
        except StopIteration:
            return out
        except errors as exc:
            out.append(exc)


def _grouped(pool) -> bool:
    """True if the pool ran some item group of more than one item (timeline records)."""
    return any(r.items > 1 for r in pool.timeline())


def test_item_group_worker_death_fails_only_the_running_item(ctx):
    with ctx.Pool(2) as pool:
        out = _drain(pool.imap_unordered(item_group_crash, range(3000)), multitask.WorkerDiedError)
        errors = [x for x in out if isinstance(x, BaseException)]
        got = {x for x in out if not isinstance(x, BaseException)}
        assert len(errors) == 1 and isinstance(errors[0], multitask.WorkerDiedError)
        assert errors[0].exitcode == 9
        assert got == set(range(3000)) - {2000}     # the others ran exactly once, all delivered
        assert _grouped(pool)
        assert pool.apply(sq, (7,)) == 49


def test_item_group_errors_raise_at_their_own_positions(ctx):
    with ctx.Pool(2) as pool:
        out = [str(x) if isinstance(x, ValueError) else x
               for x in _drain(pool.imap(item_group_raise, range(3000)), ValueError)]
        assert out == [f"item {x}" if x % 500 == 499 else x * 2 for x in range(3000)]
        assert _grouped(pool)


def test_item_group_timeout_fails_only_the_overdue_item(ctx):
    with ctx.Pool(2, task_timeout=1.0) as pool:
        t = time.monotonic()
        out = _drain(pool.imap_unordered(item_group_slow, range(3000)),
                     multitask.TaskTimeoutError)
        assert time.monotonic() - t < 20
        errors = [x for x in out if isinstance(x, BaseException)]
        got = {x for x in out if not isinstance(x, BaseException)}
        assert len(errors) == 1
        assert got == set(range(3000)) - {1500}


def test_item_group_with_an_unpicklable_item_fails_only_that_item():
    with multitask.Pool(2) as pool:
        items = [UnpicklableItem(i) if i == 1234 else i for i in range(3000)]
        out = _drain(pool.imap(task_identity, items), multitask.SerializationError)
        assert len(out) == 3000
        assert isinstance(out[1234], multitask.SerializationError)
        assert [x for i, x in enumerate(out) if i != 1234] == [i for i in range(3000) if i != 1234]


def report_then_sleep(q, i):
    q.put((i, os.getpid()))
    time.sleep(60)


def test_killing_each_worker_fails_its_task_whoever_forked_it(ctx):
    """Under fork the first worker is the pool's own child and the others the zygote's (see
    ProcessBackend.start): a SIGKILL fails exactly the task of the worker it hits, with that
    worker's pid and signal, wherever the worker came from, and replacements take work."""
    q = ctx.Queue()
    seen: set[int] = set()
    with ctx.Pool(2) as pool:
        for _round in range(2):   # the first workers, then their replacements
            results = [pool.apply_async(report_then_sleep, (q, i)) for i in range(2)]
            where = dict(q.get(timeout=30) for _ in range(2))     # task -> pid running it
            assert len(set(where.values())) == 2
            for i, pid in where.items():
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(multitask.WorkerDiedError) as info:
                    results[i].get(timeout=30)
                assert info.value.pid == pid and info.value.signal == signal.SIGKILL
            seen.update(where.values())
            assert pool.map(sq, range(10)) == [x * x for x in range(10)]
        assert pool.statistics().workers_replaced == 4
        pool.close()
        pool.join()
    q.close()
    assert len(seen) == 4     # (the leak check after each test: no worker left, no zombie)


def test_a_worker_status_taken_by_the_program_still_fails_its_task():
    """The pool's own child (the first worker, under fork) can be reaped by the program
    (os.waitpid, as the stdlib's workers can): its task still fails, never hangs."""
    ctx = multitask.get_context("fork")
    q = ctx.Queue()
    with ctx.Pool(2) as pool:
        mine = [w.pid for w in pool.statistics().workers if _parent_of(w.pid) == os.getpid()]
        assert len(mine) == 1
        results = [pool.apply_async(report_then_sleep, (q, i)) for i in range(2)]
        where = {pid: i for i, pid in (q.get(timeout=30) for _ in range(2))}
        pid = mine[0]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)     # the program takes the status (usually first)
        except ChildProcessError:
            pass                       # the pool's watcher was first: the ordinary path
        with pytest.raises(multitask.WorkerDiedError) as info:
            results[where[mine[0]]].get(timeout=30)
        assert info.value.pid == mine[0]
        assert pool.apply(sq, (3,)) == 9
        pool.terminate()
    q.close()


def _parent_of(pid):
    import psutil

    return psutil.Process(pid).ppid()


def test_a_result_thread_that_cannot_start_breaks_the_pool_instead_of_hanging(ctx, monkeypatch):
    # The watcher starts the result thread (Pool() starts only the watcher): if it cannot,
    # callers get the reason, not a result that never comes.
    real_start = threading.Thread.start

    def start(self):
        if self.name == "multitask-results":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with ctx.Pool(2) as pool, pytest.raises(multitask.ProcessError,
                                            match=r"result thread.*can't start"):
        pool.apply(abs, (-1,))


# ---- why a worker died (issue #19) -------------------------------------------------------------

def deep_in_native(how):
    """A recognisable frame for the crash report's stack."""
    return task_crash(how)


@pytest.mark.parametrize("how,cause,sig", [("sigkill", "signal", signal.SIGKILL),
                                            ("segfault", "segfault", signal.SIGSEGV),
                                            ("exit", "exit", None)])
def test_worker_died_error_says_why_and_what(ctx, how, cause, sig):
    with ctx.Pool(1) as pool:
        with pytest.raises(multitask.WorkerDiedError) as info:
            pool.apply(deep_in_native, (how,))
        err = info.value
        assert err.cause == cause and err.signal == sig
        assert err.task == f"{__name__}.deep_in_native({how!r})"
        assert err.worker == 0 and err.pid
        assert err.rss_peak is not None and err.rss_peak > 1 << 20   # a Python process
        text = str(err)
        assert "\n" not in text and f"pid {err.pid}" in text and "deep_in_native" in text
        assert "peak RSS" in text
        if cause == "segfault":
            # faulthandler's dump, taken in the worker as it crashed
            assert type(err.__cause__).__name__ == "RemoteTraceback"
            assert "Segmentation fault" in str(err.__cause__)
            assert "deep_in_native" in str(err.__cause__)
        assert pool.apply(sq, (3,)) == 9   # replaced


def break_the_worker_loop(_=None):
    """Damage the worker's own machinery (its result ring): its loop fails after this task."""
    import sys
    import types

    frame: types.FrameType | None = sys._getframe()
    while frame is not None and frame.f_code.co_name != "worker_main":
        frame = frame.f_back
    assert frame is not None
    frame.f_locals["outbound"].close()   # the worker loop's own result ring
    return "unreachable"


def test_an_exception_in_the_worker_loop_is_reported_with_its_traceback(ctx):
    with ctx.Pool(1) as pool:
        with pytest.raises(multitask.WorkerDiedError) as info:
            pool.apply(break_the_worker_loop)
        err = info.value
        assert err.cause == "exception" and err.exitcode == 1
        assert "worker loop raised" in str(err)
        assert "ClosedError" in str(err.__cause__)
        assert pool.apply(sq, (4,)) == 16


def stuck_in_here(seconds):
    time.sleep(seconds)


def test_task_timeout_error_carries_the_workers_stack(ctx):
    with ctx.Pool(1, task_timeout=0.5) as pool:
        with pytest.raises(multitask.TaskTimeoutError) as info:
            pool.apply(stuck_in_here, (30,))
        assert "stuck_in_here(30)" in str(info.value)
        assert "stuck_in_here" in str(info.value.__cause__)
        assert "its stack then is attached" in str(info.value)


def _memory_cgroup(tmp_name: str, limit: int) -> tuple[str, str] | None:
    """A fresh memory cgroup limited to ``limit`` bytes: (its directory, the procs file), or
    None where this machine does not let us make one (not root, no writable cgroupfs)."""
    v2 = "/sys/fs/cgroup"
    v1 = "/sys/fs/cgroup/memory"
    for base, limits in ((v1, ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")),
                         (v2, ("memory.max", "memory.swap.max"))):
        if not os.path.exists(os.path.join(base, limits[0])) and base == v1:
            continue
        if base == v2 and not os.path.exists(os.path.join(base, "cgroup.controllers")):
            continue
        path = os.path.join(base, tmp_name)
        try:
            os.mkdir(path)
        except OSError:
            continue
        try:
            for name in limits:
                target = os.path.join(path, name)
                if os.path.exists(target):
                    with open(target, "w") as f:
                        f.write("0" if name == "memory.swap.max" else str(limit))
            return path, os.path.join(path, "cgroup.procs")
        except OSError:
            os.rmdir(path)
    return None


OOM_PROGRAM = """
import os, sys, multitask as mt
def hog(n):
    block = bytearray(n)
    for i in range(0, n, 4096):
        block[i] = 1
    return len(block)
if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    with mt.Pool(1) as pool:
        try:
            pool.apply(hog, (int(sys.argv[2]),))
        except mt.WorkerDiedError as err:
            print(err.cause, err.signal.name if err.signal else None, flush=True)
            print(err, flush=True)
        print(pool.apply(abs, (-5,)), flush=True)
"""


def test_an_oom_kill_is_told_from_other_kills(tmp_path):
    """A worker killed by the kernel's OOM killer (in a memory cgroup of 150 MiB) gets cause
    "oom"; the pool replaces it and goes on."""
    import subprocess
    import sys

    made = _memory_cgroup(f"multitask-oom-{os.getpid()}", 150 << 20)
    if made is None:
        pytest.skip("cannot create a memory-limited cgroup here (needs root and a writable "
                    "cgroupfs)")
    path, procs = made
    try:
        out = subprocess.run([sys.executable, "-c", OOM_PROGRAM, procs, str(600 << 20)],
                             capture_output=True, text=True, timeout=120)
        lines = out.stdout.splitlines()
        assert out.returncode == 0, out.stderr
        assert lines[0] == "oom SIGKILL", out.stdout + out.stderr
        assert "OOM killer" in lines[1] and "hog(629145600)" in lines[1]
        assert lines[2] == "5"
    finally:
        os.rmdir(path)


def grow(n_mib):
    """Keep ``n_mib`` MiB alive in the worker (a leak, as a long-running worker's cache)."""
    _LEAK.append(bytearray(n_mib << 20))
    return os.getpid()


_LEAK: list = []


def test_max_memory_per_child_replaces_a_worker_past_the_limit(ctx):
    with ctx.Pool(1, max_memory_per_child=200 << 20) as pool:
        pids = [pool.apply(grow, (60,)) for _ in range(8)]   # ~480 MiB if never recycled
        # every task ran and returned; the worker was replaced before it passed ~260 MiB
        assert len(set(pids)) >= 2, pids
        assert len(pids) == 8
        assert pool.statistics().workers_replaced == 0   # a recycle is not a failure
        # tasks queued behind the recycled worker ran elsewhere, none lost
        assert sorted(pool.map(sq, range(200))) == [x * x for x in range(200)]


def test_max_memory_per_child_is_checked(ctx):
    with pytest.raises(ValueError, match="at least 1 MiB"):
        ctx.Pool(1, max_memory_per_child=1000)
    with pytest.raises(TypeError):
        ctx.Pool(1, max_memory_per_child="1G")
    with pytest.raises(ValueError, match="thread"):
        multitask.Pool(1, backend="thread", max_memory_per_child=1 << 30)


def test_maxtasksperchild_jitter_spreads_restarts(ctx):
    with pytest.raises(ValueError):
        ctx.Pool(1, maxtasksperchild=10, maxtasksperchild_jitter=1.5)
    with ctx.Pool(2, maxtasksperchild=20, maxtasksperchild_jitter=0.5) as pool:
        draws = [pool._backend.new_quota() for _ in range(200)]
        assert all(10 <= q <= 20 for q in draws) and min(draws) < 20   # spread, bounded
        assert pool.map(sq, range(300), chunksize=1) == [x * x for x in range(300)]
    with ctx.Pool(1, maxtasksperchild=20) as pool:
        assert {pool._backend.new_quota() for _ in range(50)} == {20}   # no jitter asked
