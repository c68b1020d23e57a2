"""Ray-backend specifics, against the session's real local Ray cluster.

Actor death and timeouts (the pool goes on), initializer globals of an unchanged ``__main__``
program, load balancing, streaming imap, NumPy through the object store, queues across actors,
and a local Ray started and stopped by the pool itself.  The shared behaviour is in
test_backends_common.py (whose cluster fixture this module reuses).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from test_backends_common import acquire_ray_cluster, release_ray_cluster  # noqa: E402

import multitask as mp  # noqa: E402
from multitask import ProcessError, TaskTimeoutError, WorkerDiedError  # noqa: E402


@pytest.fixture(scope="session")
def cluster():
    address = acquire_ray_cluster()
    yield address
    release_ray_cluster()


@pytest.fixture
def pool(cluster):
    p = mp.Pool(2, backend="ray")
    try:
        yield p
    finally:
        p.terminate()
        p.join()


def die_if(x):
    if x == "die":
        os._exit(7)
    return x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def square(x):
    return x * x


def pid(_=None):
    return os.getpid()


def array_facts(a):
    return float(a.sum()), bool(a.flags.writeable), a.shape


def fill_queue(q, n):
    for i in range(n):
        q.put(i)
    return n


def bad_init():
    raise RuntimeError("no config here")


def test_actor_death_fails_exactly_that_task_and_pool_goes_on(pool):
    before = set(pool.map(pid, range(4), 1))
    ok = [pool.apply_async(nap, (0.05,)) for _ in range(4)]
    t0 = time.monotonic()
    with pytest.raises(WorkerDiedError) as info:
        pool.apply(die_if, ("die",))
    assert time.monotonic() - t0 < 5
    assert info.value.pid in before
    assert [r.get(timeout=30) for r in ok] == [0.05] * 4
    assert pool.map(die_if, range(10)) == list(range(10))
    stats = pool.statistics()
    assert stats.workers_replaced == 1
    # a map whose chunk kills its actor fails with WorkerDiedError too, and nothing hangs
    with pytest.raises(WorkerDiedError):
        pool.map(die_if, [1, 2, "die", 4], 1)
    assert pool.apply(square, (6,)) == 36


def test_task_timeout_kills_and_replaces_the_actor(pool):
    first = set(pool.map(pid, range(4), 1))
    t0 = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        pool.apply(nap, (30,), task_timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert info.value.pid in first
    assert pool.apply(square, (3,)) == 9
    assert pool.statistics().workers_replaced == 1


def test_load_balancing_slow_task_does_not_hold_others(pool):
    pool.map(square, range(10))            # actors up, cheap function measured
    slow = pool.apply_async(nap, (3.0,))
    time.sleep(0.2)
    t0 = time.monotonic()
    fast = [pool.apply_async(nap, (0.01,)) for _ in range(20)]
    assert [r.get(timeout=30) for r in fast] == [0.01] * 20
    # all 20 ran on the free actor while the other was busy: nothing waited for the slow one
    assert time.monotonic() - t0 < 2.0
    assert not slow.ready()
    assert slow.get(timeout=30) == 3.0


def test_imap_streams_results_as_they_finish(pool):
    it = pool.imap(nap, [0.05, 2.0, 0.05, 0.05], chunksize=1)
    t0 = time.monotonic()
    assert it.next(timeout=10) == 0.05
    assert time.monotonic() - t0 < 1.5            # before the slow one finished
    assert list(it) == [2.0, 0.05, 0.05]
    un = pool.imap_unordered(nap, [2.0, 0.05, 0.05], chunksize=1)
    t1 = time.monotonic()
    assert un.next(timeout=10) == 0.05
    assert time.monotonic() - t1 < 1.5
    assert sorted([*un]) == [0.05, 2.0]


def test_numpy_arguments_travel_through_the_object_store(pool):
    np = pytest.importorskip("numpy")
    big = np.ones((512, 1024))                    # 4 MiB: put into the object store once
    total, writeable, shape = pool.apply(array_facts, (big,))
    assert total == big.size and shape == big.shape
    assert writeable is False                     # a zero-copy view of the object store
    # the same array many times in one starmap is put once and read by every task
    out = pool.starmap(lambda a, k: float(a[0, 0]) * k, [(big, k) for k in range(6)])
    assert out == [float(k) for k in range(6)]
    small = np.arange(10)
    assert pool.apply(array_facts, (small,))[0] == 45.0


def test_ring_queue_works_between_driver_and_actors(pool):
    q = mp.Queue()
    try:
        assert pool.apply(fill_queue, (q, 50)) == 50
        assert [q.get(timeout=10) for _ in range(50)] == list(range(50))
    finally:
        q.close()


def test_ray_queue_method_set(pool):
    from multitask.backends.ray import RayQueue

    q = RayQueue(maxsize=5)
    try:
        assert pool.apply(fill_queue, (q, 5)) == 5
        assert q.full() and q.qsize() == 5
        with pytest.raises(__import__("queue").Full):
            q.put_nowait(99)
        assert q.get_many(3, timeout=5) == [0, 1, 2]
        assert [q.get(timeout=5), q.get_nowait()] == [3, 4]
        assert q.empty()
        with pytest.raises(__import__("queue").Empty):
            q.get(timeout=0.1)
        q.put_many([7, 8])
        assert q.get_many(10, timeout=5) == [7, 8]
    finally:
        q.close()
    with pytest.raises(mp.ClosedError):
        q.get()


def test_initializer_failure_breaks_the_pool(cluster):
    p = mp.Pool(1, initializer=bad_init, backend="ray")
    try:
        r = p.apply_async(square, (2,))
        with pytest.raises(ProcessError) as info:
            r.get(timeout=30)
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(ProcessError):
            p.apply_async(square, (3,))
    finally:
        p.terminate()
        p.join()


def test_too_many_actors_for_the_cluster_is_an_error(cluster):
    with pytest.raises(ValueError, match="CPUs"):
        mp.Pool(16, backend="ray")


def test_an_actor_ray_never_creates_is_replaced_not_waited_for(cluster, monkeypatch):
    # An actor that needs a resource no node has is never created: the start watchdog kills
    # and replaces it (warning each time) instead of letting its queued call wait for ever, and
    # stopping the pool does not wait for it either.
    from multitask.backends.ray import _settle  # where the watchdog reads it

    monkeypatch.setattr(_settle, "_START_GRACE", 0.5)
    replaced = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "did not create" in record.getMessage():
                replaced.set()

    watch = Watch(logging.WARNING)
    logging.getLogger("multitask").addHandler(watch)
    pool = mp.Pool(1, backend="ray", ray_actor_options={"resources": {"no-such-node": 1}})
    try:
        r = pool.apply_async(square, (3,))
        assert not r.ready()
        assert replaced.wait(30)
        # ... and so is the replacement, which Ray cannot create either
        replaced.clear()
        assert replaced.wait(30)
        assert pool.statistics().workers_replaced >= 2
    finally:
        logging.getLogger("multitask").removeHandler(watch)
        t0 = time.monotonic()
        pool.terminate()
        pool.join()
        assert time.monotonic() - t0 < 15
    with pytest.raises(mp.ClosedError):
        r.get(timeout=5)


_MAIN_PROGRAM = textwrap.dedent("""
    import os
    import multitask as mp

    CONFIG = None

    def init(value):
        global CONFIG
        CONFIG = value

    def read(x):
        return CONFIG, helper(x)

    def helper(x):
        return x + 1

    if __name__ == "__main__":
        with mp.Pool(2, initializer=init, initargs=("from-init",)) as pool:
            out = pool.map(read, range(6), 1)
            assert out == [("from-init", x + 1) for x in range(6)], out
            stats = pool.statistics()
            assert os.getpid() not in {w.pid for w in stats.workers}
            print("OK", stats.backend)
""")


def test_unchanged_main_program_with_initializer_globals(cluster, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(_MAIN_PROGRAM)
    env = {**os.environ, "MULTITASK_BACKEND": "ray", "RAY_ADDRESS": cluster}
    out = subprocess.run([sys.executable, str(prog)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK ray" in out.stdout


_LOCAL_PROGRAM = textwrap.dedent("""
    import ray
    import multitask as mp

    def sq(x):
        return x * x

    if __name__ == "__main__":
        assert not ray.is_initialized()
        with mp.Pool(1, backend="ray") as pool:
            assert ray.is_initialized()
            assert pool.map(sq, range(5)) == [0, 1, 4, 9, 16]
        assert not ray.is_initialized(), "the pool that started Ray must shut it down"
        print("LOCAL OK")
""")


@pytest.mark.slow
def test_pool_starts_and_stops_a_local_ray(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(_LOCAL_PROGRAM)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    out = subprocess.run([sys.executable, str(prog)], env=env, capture_output=True, text=True,
                         timeout=150, cwd=tmp_path, start_new_session=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOCAL OK" in out.stdout


def test_the_function_cache_is_bounded(pool):
    """Ray's function cache used to keep every function a pool was ever given, in the driver
    and in every actor; now it evicts (and the actors forget) past _FUNC_CACHE."""
    from multitask.backends.ray import _records as ray_backend

    limit = ray_backend._FUNC_CACHE
    fns = [(lambda k: lambda x: x * k)(i) for i in range(limit + 20)]
    results = [pool.apply_async(fn, (3,)) for fn in fns]
    assert [r.get(timeout=120) for r in results] == [3 * i for i in range(limit + 20)]
    assert len(pool._backend._funcs) <= limit


def test_the_executor_runs_on_ray_and_survives_an_actor_death(cluster):
    # issue #18: the executor sits on the backend interface, so Ray serves it unchanged
    import concurrent.futures

    with mp.ProcessPoolExecutor(2, backend="ray") as ex:
        assert ex.statistics().backend == "ray"
        assert ex.submit(square, 7).result(timeout=120) == 49
        assert list(ex.map(square, range(20))) == [x * x for x in range(20)]
        dead = ex.submit(die_if, "die")
        with pytest.raises(WorkerDiedError):
            dead.result(timeout=120)
        assert isinstance(dead.exception(), concurrent.futures.process.BrokenProcessPool)
        assert ex.submit(square, 8).result(timeout=120) == 64
        # Ray cannot stop a running call from here: cancel() of a running future is refused
        slow = ex.submit(nap, 1.0)
        deadline = time.monotonic() + 60
        while not slow.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not slow.cancel()
        assert slow.result(timeout=120) == 1.0
