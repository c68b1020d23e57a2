"""multitask.Process: the stdlib behaviour, for every start method, plus the clear errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time

import pytest

import multitask
from multitask import ClosedError, ProcessError
from multitask.connection import wait


def _exit_with(code):
    sys.exit(code)


def _sleep(seconds):
    time.sleep(seconds)


def _report_identity(conn, expected_parent):
    me = multitask.current_process()
    parent = multitask.parent_process()
    assert parent is not None
    conn.send((me.name, me.pid == os.getpid(), parent.pid == expected_parent,
               multiprocessing.current_process() is me, os.getpriority(os.PRIO_PROCESS, 0)))
    conn.close()


def _add(conn, a, b, *, c=0):
    conn.send(a + b + c)
    conn.close()


class Squarer(multitask.Process):
    def __init__(self, conn, x):
        super().__init__()
        self.conn = conn
        self.x = x

    def run(self):
        self.conn.send(self.x * self.x)
        self.conn.close()


def _started(ctx, target, *args, **kwargs):
    p = ctx.Process(target=target, args=args, **kwargs)
    p.start()
    return p


def test_run_target_with_args_and_kwargs(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_add, args=(w, 1, 2), kwargs={"c": 3})
    p.start()
    w.close()
    assert r.recv() == 6
    p.join()
    r.close()
    assert p.exitcode == 0
    assert not p.is_alive()


@pytest.mark.parametrize("code", [0, 3])
def test_exitcode_from_sys_exit(ctx, code):
    p = _started(ctx, _exit_with, code)
    p.join(timeout=30)
    assert p.exitcode == code


def test_exitcode_negative_signal_when_killed(ctx):
    p = _started(ctx, _sleep, 60)
    assert p.is_alive()
    p.kill()
    p.join(timeout=30)
    assert p.exitcode == -signal.SIGKILL
    q = _started(ctx, _sleep, 60)
    q.terminate()
    q.join(timeout=30)
    assert q.exitcode == -signal.SIGTERM


def test_join_timeout_returns_while_alive(ctx):
    p = _started(ctx, _sleep, 60)
    t0 = time.monotonic()
    p.join(timeout=0.2)
    assert time.monotonic() - t0 < 5
    assert p.is_alive() and p.exitcode is None
    p.kill()
    p.join()


def test_identity_in_child(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_report_identity, args=(w, os.getpid()))
    p.start()
    w.close()
    name, pid_ok, parent_ok, same_as_stdlib, _nice = r.recv()
    p.join()
    r.close()
    assert name == p.name
    assert pid_ok and parent_ok and same_as_stdlib


def test_default_names(ctx):
    p = ctx.Process(target=_sleep, args=(0,))
    assert p.name.startswith("Process-")
    assert int(p.name.split("-")[1]) >= 1
    r, w = ctx.Pipe(duplex=False)
    s = Squarer(w, 7)
    assert s.name.startswith("Squarer-")
    named = ctx.Process(target=_sleep, args=(0,), name="worker")
    assert named.name == "worker"
    r.close()
    w.close()


def test_subclass_run(start_method):
    # a subclass of the module-level Process uses the default context; run it per method
    ctx = multitask.get_context(start_method)
    r, w = ctx.Pipe(duplex=False)

    s = Squarer(w, 9)
    s._start_method = start_method  # pin this instance to the method under test
    s.start()
    w.close()
    assert r.recv() == 81
    s.join()
    r.close()
    assert s.exitcode == 0


def test_pid_sentinel_and_active_children(ctx):
    p = _started(ctx, _sleep, 60)
    assert isinstance(p.pid, int) and p.pid > 0
    assert isinstance(p.sentinel, int)
    assert p in multitask.active_children()
    assert p in multiprocessing.active_children()  # the stdlib sees our children too
    p.kill()
    assert wait([p.sentinel], timeout=30)
    p.join()
    assert p not in multitask.active_children()


def test_current_and_parent_process_in_main():
    assert multitask.current_process() is multiprocessing.current_process()
    assert multitask.parent_process() is None
    assert multitask.current_process().is_alive()


def test_daemon_flag(ctx):
    p = ctx.Process(target=_sleep, args=(0,), daemon=True)
    assert p.daemon is True
    p.daemon = False
    assert p.daemon is False
    p.start()
    with pytest.raises(ProcessError, match="already started"):
        p.daemon = True
    p.join()


def test_start_twice_is_a_clear_error(ctx):
    p = _started(ctx, _sleep, 0)
    with pytest.raises(ProcessError, match="start a process twice"):
        p.start()
    p.join()
    with pytest.raises(ProcessError, match="twice"):
        p.start()


def test_closed_process_raises_closed_error(ctx):
    p = _started(ctx, _sleep, 0)
    p.join()
    p.close()
    for use in (p.start, p.join, p.is_alive, p.terminate, p.kill,
                lambda: p.pid, lambda: p.exitcode, lambda: p.sentinel, lambda: p.state):
        with pytest.raises(ClosedError, match="closed"):
            use()
    with pytest.raises(ValueError):  # ClosedError is a ValueError, as the stdlib raises
        p.join()
    p.close()  # closing twice is fine


def test_close_while_running_refused(ctx):
    p = _started(ctx, _sleep, 60)
    with pytest.raises(ValueError, match="still running"):
        p.close()
    p.kill()
    p.join()
    p.close()


def test_use_before_start_is_a_clear_error():
    p = multitask.Process(target=_sleep, args=(0,))
    with pytest.raises(ProcessError, match="never started"):
        p.join()
    with pytest.raises(ProcessError, match="never started"):
        p.terminate()
    assert p.is_alive() is False
    assert p.exitcode is None and p.pid is None
    assert p.state is None and p.cpu_percent() is None


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"target": 42}, TypeError, "callable"),
        ({"args": 5}, TypeError, "args must be a tuple"),
        ({"args": "abc"}, TypeError, "args must be a tuple"),
        ({"kwargs": [1]}, TypeError, "kwargs must be a dict"),
        ({"name": 3}, TypeError, "name must be a string"),
        ({"daemon": "yes"}, TypeError, "daemon"),
        ({"group": "g"}, ValueError, "group"),
        ({"nice": 40}, ValueError, "between -20"),
        ({"nice": 1.5}, TypeError, "nice"),
        ({"cpu_affinity": []}, ValueError, "at least one CPU"),
        ({"cpu_affinity": [10_000]}, ValueError, "do not exist"),
        ({"cpu_affinity": "0"}, TypeError, "iterable"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        multitask.Process(**kwargs)


def test_bad_join_timeout(ctx):
    p = _started(ctx, _sleep, 0)
    with pytest.raises(TypeError, match="timeout"):
        p.join("1")
    p.join()


def test_nice_applied_in_child(ctx):
    r, w = ctx.Pipe(duplex=False)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    target_nice = min(19, base + 5)
    p = ctx.Process(target=_report_identity, args=(w, os.getpid()), nice=target_nice)
    assert p.nice == target_nice
    p.start()
    w.close()
    *_, nice = r.recv()
    p.join()
    r.close()
    assert nice == target_nice


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity API")
def test_cpu_affinity_applied(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_send_affinity, args=(w,), cpu_affinity=[0])
    p.start()
    w.close()
    assert r.recv() == {0}
    p.join()
    r.close()


def _send_affinity(conn):
    conn.send(os.sched_getaffinity(0))
    conn.close()


def test_raising_priority_without_privilege_fails_at_start():
    if os.geteuid() == 0:
        pytest.skip("root may raise priority")
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY or soft >= 40:
        pytest.skip("RLIMIT_NICE allows raising priority")
    p = multitask.Process(target=_sleep, args=(0,), nice=-20)
    with pytest.raises(PermissionError, match="nice=-20"):
        p.start()


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_state_and_cpu_percent(ctx):
    sleeper = _started(ctx, _sleep, 60)
    spinner = _started(ctx, _spin, 60)
    assert sleeper.state in {"S", "R", "D"}
    assert spinner.cpu_percent() is not None  # first call primes psutil
    assert spinner.cpu_percent(interval=0.3) > 10.0
    deadline = time.monotonic() + 10
    while sleeper.state != "S" and time.monotonic() < deadline:  # spawn children start busy
        time.sleep(0.05)
    assert sleeper.state == "S"
    for p in (sleeper, spinner):
        p.kill()
        p.join()
        assert p.state is None and p.cpu_percent() is None


def test_default_start_method_is_fork_on_linux():
    assert multitask.get_start_method() == "fork"
    assert multitask.Process(target=_sleep, args=(0,))._start_method is None


def _wait_for_interrupt(q):
    import time

    try:
        q.put("ready")
        time.sleep(60)
    except KeyboardInterrupt:
        q.put("interrupted")


def test_interrupt_raises_keyboard_interrupt_in_the_child(ctx):
    """Process.interrupt() (Python 3.14) on every version: SIGINT, the child's finally runs."""
    q = ctx.Queue()
    p = ctx.Process(target=_wait_for_interrupt, args=(q,))
    p.start()
    assert q.get(timeout=30) == "ready"
    p.interrupt()
    assert q.get(timeout=30) == "interrupted"
    p.join(30)
    assert p.exitcode == 0
    p.interrupt()   # exited: a no-op


def test_a_joined_process_is_collectable_at_once(ctx):
    """Nothing of multitask's keeps a joined Process's popen alive (the background reaper used
    to hold it until its thread came round): the stdlib's Finalize of the popen then runs at
    once, which CPython's test_finalize checks.  Repeated: the window was a thread switch."""
    import gc
    import weakref

    for _ in range(20):
        p = ctx.Process(target=os.getpid)
        p.start()
        p.join()
        ref = weakref.ref(p._popen)
        del p
        gc.collect()
        assert ref() is None, gc.get_referrers(ref())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the warning is new in Python 3.12")
def test_fork_warns_about_threads_only_when_they_are_not_ours():
    """3.12+ warns at fork() when the process has threads.  multitask's own (the reaper that a
    first child starts) must not make a program warn that would not with the stdlib; a thread
    of the program's must still warn, as with the stdlib."""
    import threading
    import warnings

    ctx = multitask.get_context("fork")
    first = _started(ctx, _sleep, 60)          # the reaper thread now runs
    stop = threading.Event()
    user = threading.Thread(target=stop.wait, name="user-thread")
    try:
        assert any(t.name == "multitask-reaper" for t in threading.enumerate())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p = ctx.Process(target=os.getpid)
            p.start()
            p.join()
        assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
        user.start()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p = ctx.Process(target=os.getpid)
            p.start()
            p.join()
        assert [w for w in caught if "multi-threaded" in str(w.message)]
    finally:
        stop.set()
        if user.is_alive():
            user.join()
        first.kill()
        first.join()
