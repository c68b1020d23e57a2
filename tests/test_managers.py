"""Manager(): proxies, local-only authenticated server, pool workers, parent-death signal."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import multitask
from multitask.managers import SyncManager


@pytest.fixture
def manager(ctx):
    with ctx.Manager() as m:
        yield m


def _fill(q, d, lst, ns, n):
    for i in range(n):
        q.put(i)
    d["pid"] = os.getpid()
    lst.append("child")
    ns.x = 42


def test_proxies_between_processes(ctx, manager):
    q = manager.Queue()
    d = manager.dict()
    lst = manager.list([1])
    ns = manager.Namespace()
    p = ctx.Process(target=_fill, args=(q, d, lst, ns, 3))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    assert [q.get(timeout=10) for _ in range(3)] == [0, 1, 2]
    assert d["pid"] == p.pid
    assert list(lst) == [1, "child"]
    assert ns.x == 42


def test_other_proxies(manager):
    v = manager.Value("i", 5)
    v.value += 1
    assert v.value == 6
    a = manager.Array("i", [1, 2, 3])
    assert list(a) == [1, 2, 3]
    for make in (manager.Lock, manager.RLock, manager.Semaphore, manager.BoundedSemaphore):
        lock = make()
        assert lock.acquire()
        lock.release()
    e = manager.Event()
    e.set()
    assert e.wait(1)
    c = manager.Condition()
    with c:
        c.notify_all()
    b = manager.Barrier(1)
    assert b.wait(5) == 0
    q = manager.Queue(1)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.05)
    jq = manager.JoinableQueue()
    jq.put(1)
    jq.get()
    jq.task_done()
    jq.join()
    del q, jq
    import gc

    # A remote exception (queue.Full above) sits in a reference cycle inside the stdlib's
    # BaseProxy._callmethod (the frame's `result` local is the raised exception), so the
    # proxy -- and its connection to the server -- is only freed by the cycle collector.
    gc.collect()


def _worker_put(q, i):
    q.put(i * i)
    return i


def test_manager_queue_to_pool_workers(start_method):
    # seed 004: Manager().Queue() is how pool workers talk to the parent
    with multitask.get_context(start_method).Manager() as m:
        q = m.Queue()
        with multiprocessing.get_context(start_method).Pool(2) as pool:
            results = [pool.apply_async(_worker_put, (q, i)) for i in range(5)]
            assert sorted(r.get(timeout=60) for r in results) == list(range(5))
        assert sorted(q.get(timeout=10) for _ in range(5)) == [0, 1, 4, 9, 16]


def test_server_is_local_and_authenticated(manager):
    address = manager.address
    assert isinstance(address, str)  # a Unix socket path, not a TCP port
    from multiprocessing.managers import SyncManager as StdSyncManager

    intruder = StdSyncManager(address=address, authkey=b"wrong key")
    with pytest.raises(multiprocessing.AuthenticationError):
        intruder.connect()
    del intruder
    import gc

    gc.collect()  # the stdlib's connect() leaves the rejected socket to the collector
    with pytest.raises(multitask.AuthenticationError):
        SyncManager(address=address, authkey=b"wrong key").connect()


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [({"address": ("0.0.0.0", 0)}, ValueError), ({"address": 5}, TypeError),
     ({"authkey": "str"}, TypeError), ({"serializer": "json"}, ValueError)],
)
def test_manager_bad_construction(kwargs, exc):
    with pytest.raises(exc):
        SyncManager(**kwargs)


def test_loopback_tcp_allowed():
    with SyncManager(address=("127.0.0.1", 0)) as m:
        assert isinstance(m.address, tuple) and m.address[0] == "127.0.0.1"
        assert m.dict(a=1)["a"] == 1


@pytest.mark.parametrize(
    ("call", "exc"),
    [(lambda m: m.Queue(maxsize="x"), TypeError), (lambda m: m.Queue(-1), ValueError),
     (lambda m: m.Semaphore(-1), ValueError), (lambda m: m.Barrier(0), ValueError),
     (lambda m: m.Array("zz", [1]), TypeError), (lambda m: m.Value(5, 1), TypeError)],
)
def test_proxy_bad_input_raises_at_the_call(manager, call, exc):
    with pytest.raises(exc):
        call(manager)


def test_manager_server_dies_with_its_parent(tmp_path):
    script = tmp_path / "mgr.py"
    script.write_text(textwrap.dedent("""
        import time
        import multitask as mp
        if __name__ == "__main__":
            m = mp.Manager()
            print(m._process.pid, flush=True)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None   # Popen made a pipe
    server = int(proc.stdout.readline())
    proc.stdout.close()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 2
    gone = False
    while time.monotonic() < deadline and not gone:
        try:
            gone = psutil.Process(server).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        if not gone:
            time.sleep(0.02)
    if not gone:
        os.kill(server, signal.SIGKILL)
    assert gone, "the manager server outlived its SIGKILLed parent"


def test_python_314_proxy_additions_on_every_version():
    """ListProxy.clear/copy, DictProxy |, |=, fromkeys, reversed, and SyncManager.set (3.14)."""
    import multitask as mt

    with mt.Manager() as m:
        # Typed by managers.py's declarations (tests/test_typing.py checks them), not Any.
        lst = m.list([1, 2])
        assert lst.copy() == [1, 2]
        lst.clear()
        assert len(lst) == 0
        d = m.dict(a=1)
        assert d | {"b": 2} == {"a": 1, "b": 2} and {"z": 0} | d == {"z": 0, "a": 1}
        d |= {"c": 3}
        assert d.copy() == {"a": 1, "c": 3} and list(reversed(d)) == ["c", "a"]
        assert d.fromkeys(["x", "y"], 0) == {"x": 0, "y": 0}
        s = m.set([1, 2])
        s.add(3)
        s |= {4}
        s -= {1}
        s ^= {4, 5}
        assert sorted(s) == [2, 3, 5] and 2 in s and len(s) == 3
        assert s & {2, 9} == {2} and s.issubset({2, 3, 5, 7})
        s &= {2, 3}
        assert sorted(s) == [2, 3]
