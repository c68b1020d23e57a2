"""The Pool's behaviour, written once and run on every backend (process, thread, ray).

The ray cases run against one real local Ray cluster per test session (see ``ray_cluster``);
they are skipped only when ``ray`` is not installed.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import multitask as mp
from multitask import ClosedError
from multitask._core import _errors

# The stdlib's multiprocessing.pool.RemoteTraceback, which typeshed does not declare (the
# module's lazy __getattr__ is typed object): Any, to use it in isinstance.
RemoteTraceback: Any = _errors.RemoteTraceback

# Ray-backed cases carry the "ray" marker: `make test` runs them in a pytest process of their own
# (a Ray driver's threads and signal handlers must not be inherited by forked test children).
BACKENDS = ["process", "thread", pytest.param("ray", marks=pytest.mark.ray)]
ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# one Ray cluster for the session
# ---------------------------------------------------------------------------------------------
#
# The cluster is started with ``ray start --head`` (the way a real cluster is run), not with
# ``ray.init()`` inside pytest: ``ray start`` returns once its daemons (gcs_server, raylet...)
# are up, and they are then not children of the test process, so the per-test leak check keeps
# its full strength.  The driver (this process) connects with ``ray.init(address=...)``.  At
# the end exactly the processes of this cluster (found by its private temp dir) are killed by
# pid.

_cluster: dict[str, object] = {}
_cluster_users = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def acquire_ray_cluster() -> str:
    """Start (once) a 2-CPU local Ray cluster and connect this process; returns its address."""
    global _cluster_users
    import ray

    if not _cluster:
        # A private test cluster on loopback: Ray's token authentication (on by default since
        # 2.5x) only gets in the way of connecting the driver and the subprocess programs.
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        tmp = tempfile.mkdtemp(prefix="mtray-", dir="/tmp")
        port = _free_port()
        ray_bin = Path(sys.executable).with_name("ray")
        subprocess.run(
            [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={tmp}",
             "--disable-usage-stats"],
            check=True, capture_output=True, timeout=120)
        address = f"127.0.0.1:{port}"
        ray.init(address=address, log_to_driver=False)
        _cluster.update(address=address, tmp=tmp)
        # The driver opens its long-lived connections and threads on first use: do that now,
        # not inside the first test (whose leak check would count them).
        ray.get(ray.put(bytes(2 << 20)))   # and its object-store client
        with mp.Pool(2, backend="ray") as warm:
            assert warm.map(abs, range(-4, 4)) == [4, 3, 2, 1, 0, 1, 2, 3]
    _cluster_users += 1
    return str(_cluster["address"])


def release_ray_cluster() -> None:
    global _cluster_users
    _cluster_users -= 1
    if _cluster_users > 0 or not _cluster:
        return
    import psutil
    import ray

    ray.shutdown()
    tmp = str(_cluster["tmp"])
    ours = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(tmp in part for part in (proc.info["cmdline"] or [])):
                ours.append(proc)
        except psutil.Error:
            continue
    victims = set(ours)
    for proc in ours:
        try:
            victims.update(proc.children(recursive=True))
        except psutil.Error:
            pass
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(victims), timeout=10)
    _cluster.clear()


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's Ray cluster address (started on first use, stopped at the end)."""
    pytest.importorskip("ray")
    address = acquire_ray_cluster()
    yield address
    release_ray_cluster()


# Session scope: set up before the per-test leak check takes its snapshot, so the Ray driver's
# long-lived connections (made once) are not counted as a test's leaked descriptors.
@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


@pytest.fixture
def pool(backend):
    p = mp.Pool(2, backend=backend)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


# ---------------------------------------------------------------------------------------------
# task functions (module level, so every backend can import them by name)
# ---------------------------------------------------------------------------------------------

def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def fail(x):
    raise ValueError(f"bad {x}")


def fail_on_three(x):
    if x == 3:
        raise KeyError(x)
    return x


def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


def whoami(_=None):
    """A token unique to the worker (process or thread) running it: idents get reused.

    (Kept on the thread object, not in a module global or a ``threading.local``: the Ray
    backend sends this test module by value, module globals included.)
    """
    me = threading.current_thread()
    token = getattr(me, "mt_test_token", None)
    if token is None:
        token = me.mt_test_token = f"{os.getpid()}-{uuid.uuid4().hex}"  # type: ignore[attr-defined]
    return token


_INIT_VALUE = None


def set_init(value):
    global _INIT_VALUE
    _INIT_VALUE = value


def get_init(_=None):
    return _INIT_VALUE


# ---------------------------------------------------------------------------------------------
# results and order
# ---------------------------------------------------------------------------------------------

def test_apply_and_apply_async(pool):
    assert pool.apply(add, (1, 2), {"c": 3}) == 6
    results = [pool.apply_async(square, (i,)) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [i * i for i in range(20)]
    assert all(r.ready() and r.successful() for r in results)


def test_submit_returns_concurrent_future(pool):
    futs = [pool.submit(add, i, b=1) for i in range(10)]
    done, _ = concurrent.futures.wait(futs, timeout=30)
    assert len(done) == 10
    assert [f.result() for f in futs] == [i + 1 for i in range(10)]


@pytest.mark.parametrize("chunksize", [None, 1, 7])
def test_map_and_starmap_keep_order(pool, chunksize):
    assert pool.map(square, range(200), chunksize) == [i * i for i in range(200)]
    pairs = [(i, i + 1) for i in range(50)]
    assert pool.starmap(add, pairs, chunksize) == [2 * i + 1 for i in range(50)]
    assert pool.map(square, []) == []


def test_map_async_and_callback(pool):
    got: list[int] = []
    r = pool.map_async(square, range(30), callback=got.append)
    assert r.get(timeout=30) == [i * i for i in range(30)]
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [[i * i for i in range(30)]]


def test_imap_ordered_and_unordered(pool):
    assert list(pool.imap(square, range(100))) == [i * i for i in range(100)]
    assert list(pool.imap(square, (i for i in range(50)), chunksize=4)) == [
        i * i for i in range(50)]
    assert sorted(pool.imap_unordered(square, range(100))) == sorted(i * i for i in range(100))


def test_imap_unordered_yields_in_completion_order(pool):
    it = pool.imap_unordered(sleep_then, [], chunksize=1)
    assert list(it) == []
    it = pool.imap_unordered(square, range(3))
    assert sorted(it) == [0, 1, 4]
    slow_first = pool.starmap_async(sleep_then, [(0, 1.0)])
    fast = list(pool.imap_unordered(square, range(4)))
    assert sorted(fast) == [0, 1, 4, 9]
    assert not slow_first.ready()   # the fast ones did not wait for the slow one
    assert slow_first.get(timeout=30) == [0]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_exception_has_remote_traceback_cause(pool):
    with pytest.raises(ValueError, match="bad 5") as info:
        pool.apply(fail, (5,))
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "fail" in str(cause) and "bad 5" in str(cause)


def test_map_raises_first_error_and_pool_goes_on(pool):
    with pytest.raises(KeyError) as info:
        pool.map(fail_on_three, range(10), 1)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    it = pool.imap(fail_on_three, range(5))
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(KeyError):
        next(it)
    assert pool.apply(square, (4,)) == 16


def test_error_callback_and_raising_callback(pool, caplog):
    errors: list[BaseException] = []
    done = threading.Event()

    def on_error(exc):
        errors.append(exc)
        done.set()

    r = pool.apply_async(fail, (1,), error_callback=on_error)
    assert done.wait(30)
    assert isinstance(errors[0], ValueError)
    assert not r.successful()

    def bad_callback(_):
        raise RuntimeError("callback broke")

    with caplog.at_level("ERROR", logger="multitask"):
        r2 = pool.apply_async(square, (3,), callback=bad_callback)
        assert r2.get(timeout=30) == 9
        # the pool survives a raising callback
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
    assert any("callback" in rec.getMessage() for rec in caplog.records)


def test_submit_future_carries_exception(pool):
    fut = pool.submit(fail, 2)
    exc = fut.exception(timeout=30)
    assert isinstance(exc, ValueError)
    assert isinstance(exc.__cause__, RemoteTraceback)


# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------

def test_close_then_join_finishes_accepted_work(backend):
    p = mp.Pool(2, backend=backend)
    results = [p.apply_async(sleep_then, (i, 0.05)) for i in range(6)]
    p.close()
    with pytest.raises(ClosedError):
        p.apply_async(square, (1,))
    with pytest.raises(ValueError):
        p.map(square, [1])
    p.join()
    assert [r.get(timeout=0) for r in results] == list(range(6))


def test_join_while_running_raises(pool):
    with pytest.raises(ValueError):
        pool.join()


def test_terminate_fails_unfinished_with_closed_error(backend):
    p = mp.Pool(2, backend=backend)
    assert p.apply(square, (2,)) == 4
    slow = [p.apply_async(sleep_then, (i, 3.0)) for i in range(4)]
    time.sleep(0.3)
    t0 = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t0 < 5.0
    for r in slow:
        with pytest.raises(ClosedError):
            r.get(timeout=5)


def test_context_manager(backend):
    with mp.Pool(2, backend=backend) as p:
        assert p.map(square, range(5)) == [0, 1, 4, 9, 16]
    assert p.statistics().state == "terminated"
    with pytest.raises(ClosedError):
        p.apply(square, (1,))


def test_initializer_runs_in_workers(backend):
    with mp.Pool(2, initializer=set_init, initargs=("ready",), backend=backend) as p:
        assert set(p.map(get_init, range(8), 1)) == {"ready"}


def test_maxtasksperchild_recycles_workers(backend):
    with mp.Pool(1, maxtasksperchild=2, backend=backend) as p:
        ids = [p.apply(whoami) for _ in range(6)]
    # a fresh worker every 2 tasks: a new process (process, ray) or a new thread (thread)
    assert len(set(ids)) >= 3


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------

def test_statistics_shape(pool, backend):
    assert pool.map(square, range(40), 4) == [i * i for i in range(40)]
    stats = pool.statistics()
    assert stats.backend == backend
    assert stats.processes == 2 and len(stats.workers) == 2
    assert stats.state == "running"
    assert stats.submitted == 40 and stats.completed == 40 and stats.failed == 0
    assert stats.queued == 0 and stats.running == 0
    assert sorted(w.index for w in stats.workers) == [0, 1]
    deadline = time.monotonic() + 10
    # every worker up: a pid (process/Ray) and past "starting" (a thread's pid is known at once)
    while any(w.pid is None or w.state == "starting" for w in pool.statistics().workers):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stats = pool.statistics()
    assert all(isinstance(w.pid, int) and w.pid > 0 for w in stats.workers)
    if backend == "thread":
        assert {w.pid for w in stats.workers} == {os.getpid()}
    else:
        assert os.getpid() not in {w.pid for w in stats.workers}
    assert sum(w.tasks_done for w in stats.workers) == 10
    assert all(w.state in ("idle", "busy") for w in stats.workers)
    assert stats.as_dict()["backend"] == backend

    r = pool.apply_async(sleep_then, (1, 1.0))
    deadline = time.monotonic() + 10
    while True:
        busy = [w for w in pool.statistics().workers if w.current_task is not None]
        if busy or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert busy and busy[0].current_task.function.endswith("sleep_then")
    assert busy[0].state == "busy"
    assert r.get(timeout=30) == 1


# ---------------------------------------------------------------------------------------------
# MULTITASK_BACKEND chooses the backend of an unchanged program
# ---------------------------------------------------------------------------------------------

_PROGRAM = textwrap.dedent("""
    import multitask as mp

    def sq(x):
        return x * x

    if __name__ == "__main__":
        with mp.Pool(2) as pool:
            assert pool.map(sq, range(10)) == [x * x for x in range(10)]
            print("BACKEND", pool.statistics().backend)
""")


def test_env_var_chooses_backend(backend, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(_PROGRAM)
    env = {**os.environ, "MULTITASK_BACKEND": backend}
    if backend == "ray":
        env["RAY_ADDRESS"] = str(_cluster["address"])
    env.pop("PYTEST_CURRENT_TEST", None)
    out = subprocess.run([sys.executable, str(prog)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"BACKEND {backend}" in out.stdout
