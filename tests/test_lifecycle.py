"""No orphans, no zombies: kill -9 a parent, start children without joining, daemon exit, nice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import multitask
from multitask._core import _spawn
from multitask.connection import wait


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return []
        time.sleep(0.02)
    return [p for p in pids if not _gone(p)]


_PARENT = textwrap.dedent("""
    import os, sys, time
    import multitask as mp

    def sleeper(ready):
        ready.send(os.getpid())  # armed: the parent-death signal is set before run()
        ready.close()
        time.sleep(120)

    def grand(conn):
        # a child that starts its own child: the whole tree must go
        r, w = mp.Pipe()
        p = mp.Process(target=sleeper, args=(w,))
        p.start()
        conn.send(r.recv())
        time.sleep(120)

    if __name__ == "__main__":
        pids = []
        for method in ("fork", "spawn", "forkserver"):
            ctx = mp.get_context(method)
            for daemon in (False, True):
                r, w = mp.Pipe()
                p = ctx.Process(target=sleeper, args=(w,), daemon=daemon)
                p.start()
                pids.append(r.recv())
        r, w = mp.Pipe()
        g = mp.Process(target=grand, args=(w,))
        g.start()
        pids.append(g.pid)
        pids.append(r.recv())
        m = mp.Manager()
        pids.append(m._process.pid)
        EXTRA
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(120)
""")


def _run_parent(tmp_path, extra: str = "") -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "parent.py"  # a file, so spawn children can import its functions
    script.write_text(_PARENT.replace("EXTRA", extra))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None   # Popen made a pipe
    line = proc.stdout.readline()
    proc.stdout.close()
    assert line, "parent script failed to start its children"
    return proc, [int(x) for x in line.split()]


@pytest.mark.slow
def test_sigkill_parent_takes_every_child_along(tmp_path):
    proc, pids = _run_parent(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # before any assert: never leave the tree behind
    proc.wait(timeout=30)
    left = _wait_gone(pids, timeout=2.0)
    for p in left:  # do not leave them behind even on failure
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # 3 methods x (daemon, non-daemon) + a child and its own child + the manager server
    assert len(pids) == 9
    assert not left, f"children outlived their SIGKILLed parent: {left}"


@pytest.mark.slow
def test_sigkill_parent_with_pool_workers(tmp_path):
    extra = ("pool = mp.Pool(2)\n"
             "    pool.apply(os.getpid)\n"
             "    pids.extend(c.pid for c in mp.active_children() if c.pid not in pids)")
    proc, pids = _run_parent(tmp_path, extra)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    left = _wait_gone(pids, timeout=2.0)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"children outlived their SIGKILLed parent: {left}"


def _quick(code):
    os._exit(code)


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_children_reaped_without_join(method):
    ctx = multitask.get_context(method)
    procs = [ctx.Process(target=_quick, args=(i,)) for i in range(5)]
    for p in procs:
        p.start()
    pending = [p.sentinel for p in procs]
    while pending:  # wait for every child to exit, by event
        for s in wait(pending, timeout=30):
            pending.remove(s)
    # Nobody calls join()/is_alive(): the background reaper alone must collect every status.
    # (A sentinel can fire a moment before the child is waitable, so allow a short delay.)
    deadline = time.monotonic() + 5
    while any(p._popen.returncode is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(p._popen.returncode is not None for p in procs), "reaper missed a child"
    assert not [p.pid for p in procs if _is_zombie(p.pid)], "zombies left without join()"
    # the statuses were collected, not lost: exit codes stay readable
    assert [p.exitcode for p in procs] == [0, 1, 2, 3, 4]
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 1, 2, 3, 4]


def test_reaper_does_not_steal_foreign_children():
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
    p = multitask.Process(target=_quick, args=(0,))
    p.start()
    p.join()
    assert other.wait(timeout=30) == 7  # our reaper never called waitpid(-1)


def test_reaper_thread_stops_when_idle():
    p = multitask.Process(target=_quick, args=(0,))
    p.start()
    p.join()
    deadline = time.monotonic() + 5
    while _spawn.reaper_statistics()["thread_running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = _spawn.reaper_statistics()
    assert stats["watched"] == 0 and stats["thread_running"] is False


def test_daemon_children_terminated_at_normal_exit(tmp_path):
    code = textwrap.dedent("""
        import time
        import multitask as mp

        def sleeper():
            time.sleep(120)

        if __name__ == "__main__":
            for method in ("fork", "spawn"):
                p = mp.get_context(method).Process(target=sleeper, daemon=True)
                p.start()
                print(p.pid, flush=True)
    """)
    script = tmp_path / "daemons.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    pids = [int(x) for x in out.stdout.split()]
    assert len(pids) == 2
    assert not _wait_gone(pids, timeout=2.0)


def _report_nice(conn):
    conn.send(os.getpriority(os.PRIO_PROCESS, 0))
    conn.close()


def test_nice_applied(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_report_nice, args=(w,), nice=19)
    p.start()
    w.close()
    assert r.recv() == 19
    p.join()
    r.close()
    assert p.exitcode == 0
