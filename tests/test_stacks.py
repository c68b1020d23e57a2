"""Stack dumps on request (_core/_stacks.py, `multitask ps --stacks`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import multitask as mt
from multitask._core import _stacks


def parked_here(event_path):
    """A task that waits, recognisably, until the test lets it go."""
    import time

    while not os.path.exists(event_path):
        time.sleep(0.01)   # the worker's own loop; the test only reads its stack
    return os.getpid()


def test_own_process_dumps_every_thread():
    assert _stacks.install()
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="parked-thread")
    t.start()
    try:
        dump = _stacks.request(os.getpid())
    finally:
        release.set()
        t.join()
    assert dump is not None
    assert "test_own_process_dumps_every_thread" in dump
    assert dump.count("Thread 0x") + dump.count("Current thread 0x") >= 2


def test_busy_worker_shows_its_task(tmp_path, start_method):
    go = str(tmp_path / "go")
    with mt.get_context(start_method).Pool(1) as pool:
        r = pool.apply_async(parked_here, (go,))
        pid = None
        for _ in range(500):   # until the worker runs it (bounded)
            w = pool.statistics().workers[0]
            if w.state == "busy":
                pid = w.pid
                break
            r.wait(0.01)
        assert pid is not None
        dump = _stacks.request(pid)
        open(go, "w").close()
        assert r.get(timeout=30) == pid
    assert dump is not None and "parked_here" in dump, dump


def test_no_dump_for_unknown_process():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    assert child.stdin is not None   # Popen made a pipe
    try:
        assert _stacks.request(child.pid) is None
    finally:
        child.stdin.close()
        child.wait(10)


def test_programs_own_sigusr2_handler_is_kept():
    prog = textwrap.dedent("""
        import signal, multitask as mt
        from multitask._core import _stacks
        signal.signal(signal.SIGUSR2, lambda *a: print("mine", flush=True))
        with mt.Pool(1) as p:
            assert p.apply(abs, (-1,)) == 1
        print(_stacks.install(), flush=True)
        signal.raise_signal(signal.SIGUSR2)
    """)
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "mine"]


def test_ps_stacks_cli(tmp_path):
    prog = textwrap.dedent(f"""
        import sys, time, multitask as mt
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_stacks import parked_here
        with mt.Pool(1) as p:
            r = p.apply_async(parked_here, ({str(tmp_path / "go")!r},))
            print("ready", flush=True)
            r.get(timeout=60)
    """)
    child = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None   # Popen made a pipe
    try:
        assert child.stdout.readline().strip() == "ready"
        out = subprocess.run([sys.executable, "-m", "multitask", "ps", "--stacks", "--json",
                              "--pid", str(child.pid)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        procs = json.loads(out.stdout)
        by_pid = {p["pid"]: p for p in procs}
        assert child.pid in by_pid and "<module>" in by_pid[child.pid]["stacks"]
        assert any("parked_here" in p["stacks"] for p in procs), procs
    finally:
        (tmp_path / "go").touch()
        child.wait(60)
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        child.stdout.close()


def test_request_returns_when_the_process_exits_after_answering():
    """Once the dump has come, a process that exits (a worker recycled right after its task)
    leaves the FIFO without a writer: poll then says "hung up" at once, for ever.  request()
    spun there, and the pool's watcher with it -- no deaths reported, a stalled pool (found by
    the soak).  It must end at the hang-up."""
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from multitask._core import _stacks; "
         "_stacks.install(); print('ready', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None   # Popen made a pipes
    try:
        assert child.stdout.readline().strip() == "ready"
        timer = threading.Timer(0.1, child.stdin.close)   # it exits 0.1 s after the dump
        timer.start()
        t0 = time.monotonic()
        dump = _stacks.request(child.pid, timeout=3.0, quiet=1.5)
        took = time.monotonic() - t0
        timer.join()
        assert dump and "Current thread" in dump
        assert took < 1.4, took   # ended at the hang-up, before the quiet period
    finally:
        child.wait(10)
        child.stdout.close()
