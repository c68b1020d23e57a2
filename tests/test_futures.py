"""multitask.futures: the concurrent.futures API on the engine (issue #18).

CPython's own test_concurrent_futures runs against it too (tests/cpython); these are the
promises beyond the stdlib and the behaviour a user of concurrent.futures relies on, for every
start method (``start_method`` fixture) and, where it must hold for any backend, parametrised
over the backends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time

import pytest
from _procs import alive

import multitask
from multitask import futures
from multitask.futures import BrokenProcessPool, ProcessPoolExecutor


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail(x):
    raise ValueError(f"bad {x}")


def die(code=3):
    os._exit(code)


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def pid_of(_=None):
    return os.getpid()


def bad_initializer():
    raise RuntimeError("no database")


def touch_then_sleep(path, seconds):
    with open(path, "w") as f:
        f.write("started")
    time.sleep(seconds)
    return "finished"


@pytest.fixture
def executor(start_method):
    with ProcessPoolExecutor(2, mp_context=multitask.get_context(start_method)) as ex:
        yield ex


def test_the_module_replaces_the_concurrent_futures_import():
    for name in ("ThreadPoolExecutor", "as_completed", "wait", "FIRST_COMPLETED",
                 "ALL_COMPLETED", "FIRST_EXCEPTION", "CancelledError", "TimeoutError",
                 "BrokenExecutor", "InvalidStateError", "Executor"):
        assert getattr(futures, name) is getattr(concurrent.futures, name), name
    assert multitask.ProcessPoolExecutor is ProcessPoolExecutor
    assert issubclass(ProcessPoolExecutor, concurrent.futures.Executor)


def test_submit_map_and_real_futures(executor):
    fut = executor.submit(add, 2, b=3)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=60) == 5
    assert list(executor.map(square, range(50))) == [x * x for x in range(50)]
    assert list(executor.map(add, range(5), range(10, 20))) == [10 + 2 * i for i in range(5)]
    assert list(executor.map(square, range(1000), chunksize=64)) == \
        [x * x for x in range(1000)]
    done, pending = concurrent.futures.wait([executor.submit(square, i) for i in range(20)],
                                            timeout=60)
    assert not pending and sorted(f.result() for f in done) == [i * i for i in range(20)]
    got = sorted(f.result() for f in concurrent.futures.as_completed(
        [executor.submit(square, i) for i in range(20)], timeout=60))
    assert got == [i * i for i in range(20)]


def test_lambdas_and_closures_by_every_start_method(executor):
    k = 7
    assert executor.submit(lambda x: x + k, 1).result(timeout=60) == 8
    assert list(executor.map(lambda x: x * k, range(3))) == [0, 7, 14]


def test_asyncio_run_in_executor_and_wrap_future(executor):
    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(executor, square, 9)
        b = await asyncio.wrap_future(executor.submit(square, 4))
        return a, b

    assert asyncio.run(main()) == (81, 16)


def test_a_task_exception_is_raised_with_the_worker_traceback(executor):
    fut = executor.submit(fail, 1)
    with pytest.raises(ValueError, match="bad 1") as info:
        fut.result(timeout=60)
    assert "Traceback" in str(info.value.__cause__)
    assert isinstance(fut.exception(), ValueError)
    it = executor.map(fail, [5])
    with pytest.raises(ValueError, match="bad 5"):
        next(it)


def test_a_dead_worker_fails_only_its_future_and_is_replaced(executor):
    fut = executor.submit(die, 3)
    with pytest.raises(multitask.WorkerDiedError) as info:
        fut.result(timeout=60)
    assert info.value.exitcode == 3
    # existing `except BrokenProcessPool` code still catches it
    assert isinstance(info.value, BrokenProcessPool)
    assert isinstance(info.value, concurrent.futures.BrokenExecutor)
    # the executor is not broken: later submits run
    assert executor.submit(square, 6).result(timeout=60) == 36
    assert executor.statistics().workers_replaced >= 1


def test_pending_futures_survive_a_death_beside_them(executor):
    slow = [executor.submit(sleep_then, 0.3, i) for i in range(4)]
    dead = executor.submit(die, 9)
    more = [executor.submit(square, i) for i in range(10)]
    with pytest.raises(BrokenProcessPool):
        dead.result(timeout=60)
    assert [f.result(timeout=60) for f in slow] == list(range(4))
    assert [f.result(timeout=60) for f in more] == [i * i for i in range(10)]


def test_submit_with_a_task_timeout_stops_the_worker(executor):
    fut = executor.submit_with(sleep_then, (30,), task_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(multitask.TaskTimeoutError):
        fut.result(timeout=60)
    assert time.monotonic() - t0 < 20
    assert executor.submit(square, 3).result(timeout=60) == 9


def test_the_executors_task_timeout_and_maps_per_call_one():
    with ProcessPoolExecutor(1, task_timeout=0.5) as ex:
        with pytest.raises(multitask.TaskTimeoutError):
            ex.submit(sleep_then, 30).result(timeout=60)
        it = ex.map(sleep_then, [0.01, 30], task_timeout=0.5)
        assert next(it) is None
        with pytest.raises(multitask.TaskTimeoutError):
            next(it)


def test_cancel_of_a_pending_future_means_it_never_runs(tmp_path):
    with ProcessPoolExecutor(1) as ex:
        blocker = ex.submit(sleep_then, 0.5, "first")
        marker = tmp_path / "ran"
        queued = ex.submit(touch_then_sleep, str(marker), 0)
        assert queued.cancel()
        assert queued.cancelled()
        assert blocker.result(timeout=60) == "first"
        assert ex.submit(square, 2).result(timeout=60) == 4
    assert not marker.exists()


def test_cancel_of_a_running_future_without_the_option_is_refused(tmp_path):
    with ProcessPoolExecutor(1) as ex:
        marker = tmp_path / "started"
        fut = ex.submit(touch_then_sleep, str(marker), 0.5)
        _wait_for(marker.exists)
        assert fut.running()
        assert not fut.cancel()
        assert fut.result(timeout=60) == "finished"


def test_cancel_running_stops_the_task_and_replaces_its_worker(tmp_path):
    with ProcessPoolExecutor(1, cancel_running=True) as ex:
        marker = tmp_path / "started"
        fut = ex.submit(touch_then_sleep, str(marker), 60)
        _wait_for(marker.exists)
        before = ex.statistics().workers[0].pid
        t0 = time.monotonic()
        assert fut.cancel()
        assert fut.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result(timeout=1)
        assert list(concurrent.futures.as_completed([fut], timeout=5)) == [fut]
        assert ex.submit(square, 5).result(timeout=60) == 25
        assert time.monotonic() - t0 < 30
        assert ex.submit(pid_of).result(timeout=60) != before


def test_cancel_running_never_reruns_the_cancelled_task(tmp_path):
    with ProcessPoolExecutor(2, cancel_running=True) as ex:
        marker = tmp_path / "started"
        fut = ex.submit(touch_then_sleep, str(marker), 60)
        _wait_for(marker.exists)
        marker.unlink()
        assert fut.cancel()
        assert ex.submit(sleep_then, 0.5, "ok").result(timeout=60) == "ok"
        assert not marker.exists()


def test_shutdown_cancel_futures_cancels_only_what_no_worker_took():
    ex = ProcessPoolExecutor(1)
    running = ex.submit(sleep_then, 0.5, "ran")
    time.sleep(0.2)
    queued = [ex.submit(square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=1) == "ran"
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    ex.shutdown()   # again: harmless


def test_shutdown_waits_for_submitted_work():
    ex = ProcessPoolExecutor(2)
    futs = [ex.submit(sleep_then, 0.1, i) for i in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == list(range(6))


def test_shutdown_timeout_stops_workers_that_do_not_finish():
    ex = ProcessPoolExecutor(1)
    fut = ex.submit(sleep_then, 60)
    time.sleep(0.2)
    t0 = time.monotonic()
    ex.shutdown(wait=True, timeout=0.5)
    assert time.monotonic() - t0 < 20
    with pytest.raises(BrokenProcessPool):
        fut.result(timeout=5)


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers(how):
    ex = ProcessPoolExecutor(1)
    running = ex.submit(sleep_then, 60)
    time.sleep(0.2)
    queued = ex.submit(square, 3)
    pids = [w.pid for w in ex.statistics().workers if w.pid]
    t0 = time.monotonic()
    getattr(ex, how)()
    assert time.monotonic() - t0 < 20
    with pytest.raises(BrokenProcessPool):
        running.result(timeout=10)
    assert queued.cancelled()
    for pid in pids:
        _wait_for(lambda pid=pid: not alive(pid))
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_a_failing_initializer_breaks_the_executor_as_the_stdlibs_does():
    ex = ProcessPoolExecutor(1, initializer=bad_initializer)
    try:
        # (as CPython's test: the executor may already be broken when submit() is called)
        with pytest.raises(BrokenProcessPool) as info:
            ex.submit(square, 2).result(timeout=60)
        assert "no database" in str(info.value) or "no database" in str(info.value.__cause__)
        with pytest.raises(BrokenProcessPool):
            ex.submit(square, 2)
    finally:
        ex.shutdown(wait=True)


def init_logging_to(log_queue):
    import logging
    from logging.handlers import QueueHandler

    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(QueueHandler(log_queue))
    logger.propagate = False
    raise ValueError("error in initializer")


def test_a_failing_initializer_is_logged_in_the_worker_before_the_executor_breaks(start_method):
    # As the stdlib's worker: CRITICAL "Exception in initializer:" with the traceback, on the
    # concurrent.futures logger, delivered before the executor is seen broken (CPython's
    # test_init reads its queue right after).
    import queue

    ctx = multiprocessing.get_context(start_method)
    log_queue = ctx.Queue()
    ex = ProcessPoolExecutor(1, mp_context=ctx, initializer=init_logging_to,
                             initargs=(log_queue,))
    try:
        with pytest.raises(BrokenProcessPool):
            ex.submit(square, 2).result(timeout=60)
        record = log_queue.get(timeout=10)
        assert record.getMessage().startswith("Exception in initializer:")
        assert "ValueError: error in initializer" in record.getMessage()
        with pytest.raises(queue.Empty):   # one worker, one record
            log_queue.get(timeout=0.2)
    finally:
        ex.shutdown(wait=True)
        log_queue.close()
        log_queue.join_thread()


def test_map_timeout_is_from_the_call():
    with ProcessPoolExecutor(1) as ex:
        it = ex.map(sleep_then, [0.01, 30], timeout=1.0)
        assert next(it) is None
        with pytest.raises(concurrent.futures.TimeoutError):
            next(it)


def test_map_buffersize_reads_the_input_lazily():
    read = []

    def source():
        for i in range(1000):
            read.append(i)
            yield i

    with ProcessPoolExecutor(2) as ex:
        it = ex.map(square, source(), buffersize=4)
        assert next(it) == 0
        time.sleep(0.3)
        assert len(read) <= 6      # the window (4) plus the one consumed, give or take one
        assert list(it) == [x * x for x in range(1, 1000)]
        with pytest.raises(ValueError, match="buffersize"):
            ex.map(square, [1], buffersize=0)


def test_closing_a_map_early_cancels_what_has_not_started(tmp_path):
    with ProcessPoolExecutor(1) as ex:
        it = ex.map(sleep_then, [0.05] * 200)
        next(it)
        it.close()
        t0 = time.monotonic()
        assert ex.submit(square, 4).result(timeout=60) == 16
        assert time.monotonic() - t0 < 5     # not behind the ~10 s of the other 199


def test_progress_on_map():
    with ProcessPoolExecutor(1) as ex:
        assert list(ex.map(square, range(10), progress=True)) == [x * x for x in range(10)]
        with pytest.raises(ValueError, match="progress"):
            ex.map(square, range(10), progress="sometimes")


def test_bad_arguments_raise_at_the_call():
    with pytest.raises(ValueError, match="greater than 0"):
        ProcessPoolExecutor(0)
    with pytest.raises(TypeError):
        ProcessPoolExecutor(mp_context="fork")
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        ProcessPoolExecutor(1, max_tasks_per_child=0)
    with ProcessPoolExecutor(1) as ex:
        with pytest.raises(TypeError, match="callable"):
            ex.submit(42)  # type: ignore[arg-type]
        # concurrent.futures' contract: the outcome of a scheduled call is its future's
        bad = ex.submit(square, threading.Lock())
        with pytest.raises(multitask.SerializationError):
            bad.result(timeout=60)
        assert isinstance(bad.exception(), __import__("pickle").PicklingError)
        with pytest.raises(ValueError, match="chunksize"):
            ex.map(square, [1], chunksize=0)
        assert ex.submit(square, 3).result(timeout=60) == 9   # nothing was lost


def test_stdlib_contexts_are_accepted(start_method):
    ctx = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        assert ex.submit(square, 5).result(timeout=60) == 25


def test_max_tasks_per_child_also_with_fork():
    with ProcessPoolExecutor(1, mp_context=multitask.get_context("fork"),
                             max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid_of).result(timeout=60) for _ in range(6)]
    assert len(set(pids)) == 3


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_every_backend_runs_the_executor(backend):
    with ProcessPoolExecutor(2, backend=backend) as ex:
        assert ex.submit(square, 4).result(timeout=60) == 16
        assert list(ex.map(square, range(100))) == [x * x for x in range(100)]
        assert ex.statistics().backend == backend


def test_the_environment_chooses_the_backend(monkeypatch):
    monkeypatch.setenv("MULTITASK_BACKEND", "thread")
    with ProcessPoolExecutor(1) as ex:
        assert ex.statistics().backend == "thread"
        assert ex.submit(threading.get_ident).result(timeout=60) != threading.get_ident()


def test_a_dropped_executor_finishes_its_work_and_its_workers_exit():
    ex = ProcessPoolExecutor(1)
    fut = ex.submit(sleep_then, 0.2, "done")
    pid = ex.submit(pid_of).result(timeout=60)
    del ex
    assert fut.result(timeout=60) == "done"
    _wait_for(lambda: not alive(pid))


def _wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


class _Payload:
    def method(self):
        return 1


def make_payload(_):
    return _Payload()


def test_no_reference_to_a_submitted_bound_method_or_a_yielded_result_is_kept(executor):
    # CPython's test_no_stale_references / test_free_reference (bpo-16284, bpo-14406)
    import gc
    import weakref

    obj = _Payload()
    alive = weakref.ref(obj)
    assert executor.submit(obj.method).result(timeout=60) == 1
    del obj
    gc.collect()
    assert alive() is None
    for item in executor.map(make_payload, range(5)):
        ref = weakref.ref(item)
        del item
        gc.collect()
        assert ref() is None


def test_the_worker_traceback_is_the_executors_remote_traceback(executor):
    with pytest.raises(ValueError) as info:
        executor.submit(fail, 2).result(timeout=60)
    cause = info.value.__cause__
    assert type(cause) is concurrent.futures.process._RemoteTraceback
    assert "raise ValueError" in cause.tb


EXIT_PROGRAM = """
import atexit
@atexit.register
def run_last():
    try:
        t.submit(id, None)
    except RuntimeError:
        print("runtime-error", flush=True)
from multitask.futures import ProcessPoolExecutor
if __name__ == "__main__":
    t = ProcessPoolExecutor(2)
    slow = t.submit(__import__("time").sleep, 0.3)
    t.submit(id, 42).result()
"""


def test_at_exit_submitted_work_finishes_and_later_submits_raise(tmp_path):
    # as the stdlib's: the interpreter's exit waits for the work, then submit() raises
    import subprocess
    import sys

    script = tmp_path / "exit.py"
    script.write_text(EXIT_PROGRAM)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "runtime-error" in out.stdout


_LAZY_PROGRAM = """
import os, sys
import multitask
from multitask.futures import ProcessPoolExecutor
from concurrent.futures import BrokenExecutor
print("loaded_at_import=" + str("concurrent.futures.process" in sys.modules))
print("thread_module_at_import=" + str("concurrent.futures.thread" in sys.modules))
with ProcessPoolExecutor(1, mp_context=multitask.get_context("fork")) as ex:
    print("result=" + str(ex.submit(pow, 2, 5).result(timeout=60)))
    print("loaded_after_a_result=" + str("concurrent.futures.process" in sys.modules))
    err = ex.submit(os._exit, 3).exception(timeout=60)
    print("broken_executor=" + str(isinstance(err, BrokenExecutor)))
    from concurrent.futures.process import BrokenProcessPool   # the stdlib's own path
    err = ex.submit(os._exit, 4).exception(timeout=60)
    print("broken_process_pool=" + str(isinstance(err, BrokenProcessPool)))
print("thread_module_after=" + str("concurrent.futures.thread" in sys.modules))
from multitask.futures import *   # noqa: F403 -- __all__ names the lazy re-exports too
from concurrent.futures import thread
print("thread_pool_executor=" + str(ThreadPoolExecutor is thread.ThreadPoolExecutor))
"""


def test_the_executor_imports_concurrent_futures_process_only_when_it_is_needed():
    # ~11 ms of an executor's start-up (E4); a dead worker's error is a BrokenExecutor before,
    # and a BrokenProcessPool once the program has that name.  ThreadPoolExecutor's module
    # (~4 ms with queue) likewise loads when the name is first taken from multitask.futures.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _LAZY_PROGRAM], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.split())
    assert out == {"loaded_at_import": "False", "result": "32", "loaded_after_a_result": "False",
                   "broken_executor": "True", "broken_process_pool": "True",
                   "thread_module_at_import": "False", "thread_module_after": "False",
                   "thread_pool_executor": "True"}
