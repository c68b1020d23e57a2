"""The Pool's stdlib API and what multitask adds, for every start method."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing.pool
import os
import threading
import time
from typing import Any

import pytest
from _procs import alive

import multitask
from multitask.pool import AsyncResult, PoolStatistics, WorkerStatistics


def sq(x):
    return x * x


def add(a, b):
    return a + b


def kw(a, *, b=0):
    return a - b


def boom(x):
    raise ValueError(f"boom {x}")


def fail_on(x, bad=3):
    if x == bad:
        raise KeyError(x)
    return x


def getpid(_=None):
    return os.getpid()


def sleepy(seconds):
    time.sleep(seconds)
    return seconds


_GLOBAL = {"value": None}


def set_global(value):
    _GLOBAL["value"] = value


def read_global(_=None):
    return _GLOBAL["value"]


@pytest.fixture
def pool(ctx):
    with ctx.Pool(2) as p:
        yield p


# -- the stdlib API ---------------------------------------------------------------------------

def test_apply_and_apply_async(pool):
    assert pool.apply(add, (2, 3)) == 5
    assert pool.apply(kw, (5,), {"b": 2}) == 3
    r = pool.apply_async(sq, (7,))
    assert isinstance(r, AsyncResult)
    assert r.get(timeout=30) == 49
    assert r.ready() and r.successful()
    r.wait(1)


def test_map_family(pool):
    assert pool.map(sq, range(100)) == [x * x for x in range(100)]
    assert pool.map(sq, []) == []
    assert pool.map(sq, range(50), chunksize=7) == [x * x for x in range(50)]
    assert pool.map_async(sq, [1, 2, 3]).get(30) == [1, 4, 9]
    assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.starmap_async(add, [(1, 1)]).get(30) == [2]
    assert list(pool.imap(sq, range(20))) == [x * x for x in range(20)]
    assert sorted(pool.imap_unordered(sq, range(20))) == sorted(x * x for x in range(20))
    assert list(pool.imap(sq, range(30), chunksize=4)) == [x * x for x in range(30)]


def test_imap_lazy_generator_of_unknown_length(pool):
    gen = (i for i in range(1000))
    assert list(pool.imap(sq, gen, chunksize=None)) == [i * i for i in range(1000)]
    assert sorted(pool.imap_unordered(sq, (i for i in range(333)))) == sorted(
        i * i for i in range(333))
    assert list(pool.imap(sq, iter([]))) == []


def test_map_auto_chunksize_large_range(pool):
    out = pool.map(sq, range(100_000))
    assert len(out) == 100_000 and out[-1] == 99_999 ** 2


def test_callbacks_and_error_callbacks(pool):
    got: list[Any] = []
    errs: list[BaseException] = []
    done = threading.Event()

    def on_error(e: BaseException) -> None:
        errs.append(e)
        done.set()

    pool.apply_async(sq, (4,), callback=got.append)
    pool.apply_async(boom, (1,), error_callback=on_error)
    pool.map_async(sq, [1, 2], callback=got.append).get(30)
    assert done.wait(30)
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 16 in got and [1, 4] in got
    assert isinstance(errs[0], ValueError)


def test_raising_callback_does_not_kill_the_pool(pool, caplog):
    def bad_callback(_):
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="multitask"):
        pool.apply_async(sq, (2,), callback=bad_callback).wait(30)
        assert pool.apply(sq, (3,)) == 9
    assert any("callback" in r.getMessage() for r in caplog.records)


def test_exception_reraised_with_remote_traceback(pool):
    with pytest.raises(ValueError, match="boom 5") as info:
        pool.apply(boom, (5,))
    cause = info.value.__cause__
    # the stdlib's own class (code checking `type(e.__cause__) is RemoteTraceback` works as is)
    assert type(cause) is multiprocessing.pool.RemoteTraceback  # type: ignore[attr-defined]
    assert type(cause) is multitask._core._errors.RemoteTraceback
    assert "boom" in str(cause) and "Traceback" in str(cause)
    r = pool.apply_async(boom, (1,))
    r.wait(30)
    assert not r.successful()
    with pytest.raises(KeyError):
        pool.map(fail_on, range(10))
    it = pool.imap(fail_on, range(6))
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(KeyError):
        next(it)
    assert list(it) == [4, 5]   # iteration goes on after a failed item (chunksize 1)


def test_get_timeout_raises_multitask_timeout(pool):
    r = pool.apply_async(sleepy, (1.5,))
    with pytest.raises(multitask.TimeoutError):
        r.get(timeout=0.05)
    with pytest.raises(TimeoutError):   # also the builtin
        r.get(timeout=0.01)
    assert r.get(timeout=30) == 1.5
    it = pool.imap(sleepy, [1.0])
    with pytest.raises(multitask.TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=30) == 1.0


def test_initializer_sets_worker_globals(ctx):
    with ctx.Pool(2, initializer=set_global, initargs=("ready",)) as p:
        assert set(p.map(read_global, range(8))) == {"ready"}


def test_initializer_failure_fails_tasks_not_loop(ctx):
    with ctx.Pool(1, initializer=boom, initargs=(0,)) as p, \
            pytest.raises(multitask.ProcessError, match="initializer"):
        p.apply(sq, (1,))


_STDLIB_QUEUE: Any = None


def keep_queue(q):
    global _STDLIB_QUEUE
    _STDLIB_QUEUE = q


def put_many(i):
    # 200 KB in messages of 2 KB (each written whole): more than a pipe holds, so the stdlib
    # Queue's feeder thread still has most of them when the task returns
    for j in range(100):
        _STDLIB_QUEUE.put((i, j, b"x" * 2000))
    return i


def test_a_worker_that_quits_flushes_what_its_tasks_put_in_a_stdlib_queue(start_method):
    # The stdlib's worker runs multiprocessing's finalizers as it exits (a Queue's feeder
    # flushes); a worker that just os._exit()ed lost what was still in the feeder's buffer.
    # maxtasksperchild=1: each of the two workers quits right after its one task, before the
    # queue is read (the results reach the pool first; the flush waits for this reader).
    import queue

    q = multiprocessing.get_context(start_method).Queue()
    with multitask.get_context(start_method).Pool(
            2, initializer=keep_queue, initargs=(q,), maxtasksperchild=1) as p:
        assert p.map(put_many, range(2), chunksize=1) == [0, 1]
        got: list[tuple[int, int]] = []
        try:
            while len(got) < 200:
                got.append(q.get(timeout=10)[:2])
        except queue.Empty:
            pass
    assert sorted(got) == [(i, j) for i in range(2) for j in range(100)]
    q.close()
    q.join_thread()


_EXIT_IMPORTS_PROGRAM = """
import os, sys
import multitask

def watch_imports(path):
    # each worker: record every module imported from now on (the audit hook sees them all)
    def hook(event, args):
        if event == "import":
            with open(path, "a") as f:
                f.write(args[0] + "\\n")
    sys.addaudithook(hook)

if __name__ == "__main__":
    path = sys.argv[1]
    assert "multiprocessing.util" not in sys.modules
    with multitask.get_context("fork").Pool(2, initializer=watch_imports, initargs=(path,)) as p:
        assert p.map(abs, range(-50, 50)) == [abs(i) for i in range(-50, 50)]
        p.close()
        p.join()
"""


def test_a_worker_that_never_imported_multiprocessing_util_does_not_import_it_to_exit(tmp_path):
    # Its finalizers (run as a worker quits) live in multiprocessing.util; when the program never
    # imported it there are none, and importing it (with subprocess and locale, ~5 ms) only
    # delayed every worker's exit, so every pool's join().
    import subprocess
    import sys

    script = tmp_path / "exit_imports.py"
    script.write_text(_EXIT_IMPORTS_PROGRAM)
    log = tmp_path / "imports.log"
    out = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    imported = log.read_text().split() if log.exists() else []
    assert "multiprocessing.util" not in imported, imported


class Marker:
    """Picklable, and weakly referenceable: is the pool still holding its initargs?"""


def test_a_closed_pool_frees_its_initargs_without_the_garbage_collector(ctx):
    # The process backend was a reference cycle (its function cache's lambda over it), so a
    # pool's initargs lived on after join() until a collection: a stdlib Queue there was
    # reported leaked by its resource tracker (CPython's test_init, gh-104090).
    import gc
    import weakref

    marker = Marker()
    ref = weakref.ref(marker)
    gc.disable()
    try:
        p = ctx.Pool(1, initializer=set_global, initargs=(marker,))
        assert p.apply(sq, (3,)) == 9
        p.close()
        p.join()
        del p, marker
        assert ref() is None
    finally:
        gc.enable()


def exit_at_once(code):
    os._exit(code)


@pytest.mark.parametrize("code", [7, 0])
def test_worker_dying_in_initializer_breaks_the_pool(ctx, code):
    # Every replacement would die the same way: the pool breaks instead of replacing forever.
    with ctx.Pool(2, initializer=exit_at_once, initargs=(code,)) as p:
        with pytest.raises(multitask.ProcessError,
                           match=f"died while starting.*exit code {code}.*initializer"):
            p.apply(sq, (1,))
        with pytest.raises(multitask.ProcessError):
            p.map(sq, range(4))


def test_close_join_and_closed_errors(ctx):
    p = ctx.Pool(2)
    r = p.apply_async(sleepy, (0.2,))
    with pytest.raises(ValueError, match="still running"):
        p.join()
    p.close()
    with pytest.raises(multitask.ClosedError):
        p.apply_async(sq, (1,))
    with pytest.raises(ValueError):        # ClosedError is a ValueError, like the stdlib's
        p.map(sq, [1])
    p.join()
    assert r.get(0) == 0.2      # accepted work finished before the workers left


def _gone_or_zombie(pid):
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_join_right_after_start_and_close_leaves_no_worker(ctx):
    # join() then often waits for a worker whose start message is still unread in the result
    # ring: it settles that itself and waits on the worker's pidfd (process backend).
    import psutil

    me = psutil.Process()
    for _ in range(5):
        p = ctx.Pool(2)
        pids = {w.pid for w in p.statistics().workers} - {None}
        p.close()
        p.join()
        assert all(w.state == "dead" for w in p.statistics().workers)
        for pid in pids:   # gone, or a zombie its parent (the zygote) is about to reap
            assert _gone_or_zombie(pid)
        assert not [c.pid for c in me.children() if c.pid in pids and _gone_or_zombie(c.pid)
                    and psutil.pid_exists(c.pid)]


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_join_twice_returns_at_once(ctx, backend):
    # The stdlib allows it; the process backend's second join() waited for ever on exit
    # reports from threads the first one had ended (found by CPython's test_deadlock, which
    # shuts an executor down twice).
    for end in ("close", "terminate"):
        p = ctx.Pool(2, backend=backend)
        getattr(p, end)()
        p.join()
        t0 = time.monotonic()
        p.join()
        assert time.monotonic() - t0 < 5


def test_concurrent_joins_all_return(ctx):
    # Two joins at once: the second used to wait for ever on exit reports from threads the
    # first had ended (seen at interpreter exit: an executor's exit hook and its finalizer).
    import threading

    p = ctx.Pool(2)
    p.apply(abs, (-1,))
    p.close()
    threads = [threading.Thread(target=p.join) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)


def test_terminate_fails_pending_results_instead_of_hanging(ctx):
    p = ctx.Pool(1)
    rs = [p.apply_async(sleepy, (5,)) for _ in range(3)]
    time.sleep(0.2)
    t0 = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t0 < 10
    for r in rs:
        with pytest.raises(multitask.ClosedError):
            r.get(timeout=5)


def test_context_manager_terminates(ctx):
    with ctx.Pool(2) as p:
        pids = set(p.map(getpid, range(20)))
    assert p._state == "terminated"
    for pid in pids:
        assert not alive(pid)


def test_maxtasksperchild_recycles_workers(ctx):
    with ctx.Pool(2, maxtasksperchild=3) as p:
        pids = [p.apply(getpid) for _ in range(12)]
        assert len(set(pids)) >= 4
        assert p.map(sq, range(40), chunksize=1) == [x * x for x in range(40)]


# -- beyond the stdlib ------------------------------------------------------------------------

def test_submit_returns_future(pool):
    fut = pool.submit(add, 1, b=2)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == 3
    futs = [pool.submit(sq, i) for i in range(10)]
    assert sorted(f.result(30) for f in concurrent.futures.as_completed(futs, 60)) == sorted(
        i * i for i in range(10))
    bad = pool.submit(boom, 2)
    assert isinstance(bad.exception(timeout=30), ValueError)


def test_async_result_is_awaitable(pool):
    async def main():
        a = pool.apply_async(sq, (3,))
        b = pool.map_async(sq, [1, 2])
        return await a, await b

    assert asyncio.run(main()) == (9, [1, 4])


def test_lambdas_and_closures(ctx):
    factor = 3

    def closure(x):
        return x * factor

    with ctx.Pool(2) as p:
        assert p.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]
        assert p.apply(closure, (2,)) == 6
        assert p.submit(lambda: "hi").result(30) == "hi"


MAIN_FUNCTIONS_PROGRAM = """
import sys
import multitask as mp

def before(x):
    return x + 1

def rebound(x):
    return "old"

if __name__ == "__main__":
    method = sys.argv[1]
    with mp.get_context(method).Pool(2) as pool:
        first = pool.apply(before, (1,))
        by_reference = "cloudpickle" not in sys.modules

        def rebound(x):            # noqa: F811 -- a new function under the old name
            return "new"

        def after(x):              # not in the workers' __main__ (made after the pool)
            return x * 2

        print("OK", first, by_reference, pool.apply(rebound, (0,)), pool.apply(after, (3,)),
              flush=True)
"""


def test_main_functions_by_reference_only_when_the_workers_have_them(tmp_path, start_method):
    """Under fork, a __main__ function the workers inherited goes by reference (as the stdlib
    sends it; no cloudpickle); one defined or rebound after the pool started goes by value."""
    import subprocess
    import sys

    script = tmp_path / "mainfns.py"
    script.write_text(MAIN_FUNCTIONS_PROGRAM)
    out = subprocess.run([sys.executable, str(script), start_method], capture_output=True,
                         text=True, timeout=120)
    by_reference = "True" if start_method == "fork" else "False"
    assert out.stdout.split() == ["OK", "2", by_reference, "new", "6"], (out.stdout,
                                                                         out.stderr[-3000:])


def test_statistics_snapshot(pool):
    pool.map(sq, range(1000))
    r = pool.apply_async(sleepy, (1.0,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = pool.statistics()
        if any(w.current_task is not None for w in stats.workers):
            break
        time.sleep(0.02)
    assert isinstance(stats, PoolStatistics)
    assert len(stats.workers) == 2
    assert all(isinstance(w, WorkerStatistics) and w.pid for w in stats.workers)
    busy = [w for w in stats.workers if w.current_task is not None]
    assert busy and busy[0].state == "busy" and busy[0].current_task is not None
    assert busy[0].current_task.function.endswith("sleepy")
    assert stats.submitted >= 1001 and stats.completed >= 1000 and stats.failed == 0
    with pytest.raises(AttributeError):
        stats.completed = 0  # type: ignore[misc]
    r.get(30)
    assert sum(w.tasks_done for w in pool.statistics().workers) >= 2


def test_unretrieved_error_is_logged_when_garbage_collected(pool, caplog):
    with caplog.at_level(logging.ERROR, logger="multitask"):
        r = pool.apply_async(boom, (42,))
        r.wait(30)
        del r
        # seed 004's pattern: the result object is dropped at once
        pool.apply_async(boom, (43,))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                "boom 43" in rec.getMessage() for rec in caplog.records):
            time.sleep(0.02)
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "boom 42" in text and "boom 43" in text
    assert "never retrieved" in text


def test_unretrieved_error_is_logged_when_pool_closes(ctx, caplog):
    with caplog.at_level(logging.ERROR, logger="multitask"):
        p = ctx.Pool(1)
        kept = p.apply_async(boom, (7,))
        retrieved = p.apply_async(boom, (8,))
        with pytest.raises(ValueError):
            retrieved.get(30)
        kept.wait(30)
        p.close()
        p.join()
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "boom 7" in text and "boom 8" not in text
    del kept


def test_progress_bar_forced_and_quiet(pool, capsys):
    assert pool.map(sq, range(50), progress="always") == [x * x for x in range(50)]
    err = capsys.readouterr().err
    assert "50/50" in err
    assert list(pool.imap(sq, range(10), progress=True)) == [x * x for x in range(10)]
    assert "10/10" not in capsys.readouterr().err     # not a terminal: quiet


def test_timeline_records_every_task(pool, tmp_path):
    pool.map(sq, range(40), chunksize=4)
    records = pool.timeline()
    assert len(records) >= 10
    ids = [r.task_id for r in records]
    assert len(ids) == len(set(ids))


# -- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc", [
    ({"processes": 0}, ValueError),
    ({"processes": -1}, ValueError),
    ({"processes": "2"}, TypeError),
    ({"processes": 1, "initializer": 5}, TypeError),
    ({"processes": 1, "maxtasksperchild": 0}, ValueError),
    ({"processes": 1, "task_timeout": -1}, ValueError),
    ({"processes": 1, "backend": "nope"}, ValueError),
    ({"processes": 1, "nice": 99}, ValueError),
])
def test_bad_pool_arguments(kwargs, exc):
    with pytest.raises(exc):
        multitask.Pool(**kwargs)


def test_bad_call_arguments(pool):
    with pytest.raises(TypeError):
        pool.apply_async(5)
    with pytest.raises(TypeError):
        pool.map(sq, range(3), chunksize="x")
    with pytest.raises(ValueError):
        pool.map(sq, range(3), chunksize=0)
    with pytest.raises(ValueError):
        pool.apply_async(sq, (1,)).get(timeout=-1)
    with pytest.raises(ValueError):
        pool.map(sq, [1], progress="loud")
    with pytest.raises(multitask.SerializationError):
        pool.apply_async(sq, (threading.Lock(),))   # raises at the call, not later
    assert pool.apply(sq, (2,)) == 4


def who_am_i(_=None):
    import multiprocessing

    me, parent = multiprocessing.current_process(), multiprocessing.parent_process()
    assert parent is not None
    return me.name, me.daemon, me.pid == os.getpid(), parent.pid, parent.is_alive()


def test_workers_have_names_and_know_their_parent(ctx, start_method):
    """As the stdlib: current_process() in a worker is a daemon named "<Method>PoolWorker-<n>",
    parent_process() is the pool's process (not the zygote that forked it)."""
    prefix = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}[start_method]
    with ctx.Pool(2) as pool:
        seen = set(pool.map(who_am_i, range(40), chunksize=1))
        pool.close()
        pool.join()
    names = {s[0] for s in seen}
    assert names <= {f"{prefix}PoolWorker-1", f"{prefix}PoolWorker-2"} and names
    assert all(s[1:] == (True, True, os.getpid(), True) for s in seen)


def test_dropped_running_pool_warns(ctx):
    """As the stdlib's: a pool garbage-collected while running says so (and is terminated)."""
    import gc
    import warnings

    pool = ctx.Pool(1)
    assert pool.apply(sq, (3,)) == 9
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        del pool
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning)
               and "unclosed running multiprocessing pool" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with ctx.Pool(1) as closed:
            closed.apply(sq, (2,))
        del closed
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_more_distinct_functions_than_the_cache_holds(ctx):
    """Each task a new closure: the backend's function cache stays bounded (the workers are
    told to forget what it evicts) and every result is still right."""
    from multitask.backends.process import _records as process_backend

    limit = process_backend._FUNC_CACHE
    fns = [(lambda k: lambda x: x * k)(i) for i in range(limit + 40)]
    with ctx.Pool(2) as p:
        results = [p.apply_async(fn, (3,)) for fn in fns]
        assert [r.get(timeout=60) for r in results] == [3 * i for i in range(limit + 40)]
        assert len(p._backend._funcs) <= limit


def test_when_running_callbacks_run_once_the_backend_runs():
    """The engine's when_running(fn): the process backend runs fn from its watcher thread (so a
    Pool() call does not start the monitor's thread itself); later, or on other backends, at
    once in the caller.  Every fn runs exactly once."""
    import threading

    ran: list[str] = []
    done = threading.Event()

    def record():
        ran.append(threading.current_thread().name)
        done.set()

    with multitask.Pool(1) as p:
        p._backend.when_running(record)
        assert done.wait(30)
        p.apply(abs, (-1,))
        p._backend.when_running(record)    # the watcher ran long ago: at once, here
    assert ran[1] == threading.current_thread().name and len(ran) == 2
    assert ran[0] in (threading.current_thread().name, "multitask-watcher")
    with multitask.pool.ThreadPool(1) as t:
        t._backend.when_running(record)
    assert len(ran) == 3 and ran[2] == threading.current_thread().name


_FORKED_CHILD_PROGRAM = """
import multiprocessing, os, sys, threading
import multitask

def use(p, kind):
    if kind == "pool":
        return p.map(abs, range(-5, 0), chunksize=1)
    return list(p.map(abs, range(-5, 0)))

if __name__ == "__main__":
    kind, how = sys.argv[1], sys.argv[2]
    ctx = multitask.get_context("fork")
    p = ctx.Pool(2) if kind == "pool" else multitask.ProcessPoolExecutor(2, mp_context=ctx)
    assert use(p, kind) == [5, 4, 3, 2, 1]
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:
            try:
                use(p, kind)
                print("child-used-the-parent-pool", flush=True)
            except multitask.ProcessError as exc:
                print("child-refused " + str(exc).split(";")[0], flush=True)
            sys.exit(0)   # through the interpreter's exit: atexit hooks, finalizers
        os.waitpid(pid, 0)
    else:   # a stdlib fork child that exits through Process._bootstrap (threading._shutdown)
        mgr = multiprocessing.get_context("fork").Manager()
        mgr.shutdown()
        mgr.join()
    out = []
    t = threading.Thread(target=lambda: out.append(use(p, kind)), daemon=True)
    t.start()
    t.join(30)
    print("parent-after " + repr(out), flush=True)
    if kind == "pool":
        p.close(); p.join()
    else:
        p.shutdown()
"""


@pytest.mark.parametrize("how", ["os.fork", "manager"])
@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_a_forked_child_leaves_the_parents_pool_alone(tmp_path, kind, how):
    # A child forked from a program with a pool (seed 003's os.fork(), or a stdlib fork
    # Manager/Process) has a copy of the pool.  Its exit ran that copy's finalizer, and the
    # executor's exit hook: they told the parent's workers and zygote to quit through the
    # pipes and rings they share, so the parent's pool broke (ProcessError) or its next
    # shutdown hung (CPython's test_ressources_gced_in_workers, 1 run in 5).  Now a forked
    # copy does nothing to the parent's workers, and using it in the child raises.
    import subprocess
    import sys

    script = tmp_path / "forked_child.py"
    script.write_text(_FORKED_CHILD_PROGRAM)
    out = subprocess.run([sys.executable, str(script), kind, how], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "parent-after [[5, 4, 3, 2, 1]]" in out.stdout, (out.stdout, out.stderr)
    if how == "os.fork":
        assert "child-refused this pool belongs to process" in out.stdout, out.stdout
