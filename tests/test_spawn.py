"""multitask._core._spawn: parent-death signal, child settings, cpu_count, the reaper."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from multitask._core import _spawn

# -- parent-death signal ------------------------------------------------------------------------

_TREE = textwrap.dedent("""
    import os, sys, time
    from multitask._core._spawn import set_parent_death_signal
    method = sys.argv[1]
    r, w = os.pipe()          # the sentinel: only the parent keeps w open
    ready_r, ready_w = os.pipe()
    me = os.getpid()          # captured before fork: getppid() in the child may already be 1
    pid = os.fork()
    if pid == 0:
        os.close(w)
        set_parent_death_signal(me, sentinel=r, method=method)
        os.write(ready_w, b"x")
        time.sleep(120)
        os._exit(0)
    os.close(r)
    os.read(ready_r, 1)       # the child is armed
    print(pid, flush=True)
    time.sleep(120)
""")


def _gone(pid):
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("method", ["prctl", "sentinel", "pidfd", "poll"])
def test_child_dies_with_parent(method):
    if method == "prctl" and not _spawn.parent_death_signal_supported():
        pytest.skip("no prctl")
    if method == "pidfd" and not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd")
    parent = subprocess.Popen([sys.executable, "-c", _TREE, method], stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None   # Popen made a pipe
    child = int(parent.stdout.readline())
    parent.stdout.close()
    assert not _gone(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 2.0
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not _gone(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail(f"child outlived its parent with method={method}")


@pytest.mark.parametrize("method", ["prctl", "sentinel", "pidfd", "poll"])
def test_parent_already_dead_exits_at_once(method):
    # the race: expected_ppid is not our parent any more -> exit immediately, 128 + signal
    code = textwrap.dedent(f"""
        import os
        from multitask._core._spawn import set_parent_death_signal
        r, w = os.pipe()
        set_parent_death_signal(os.getppid() + 100000, sentinel=r, method={method!r})
        print("not reached")
    """)
    if method == "prctl" and not _spawn.parent_death_signal_supported():
        pytest.skip("no prctl")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 128 + signal.SIGKILL
    assert "not reached" not in out.stdout


@pytest.mark.parametrize(
    ("args", "kwargs", "exc"),
    [((0,), {}, ValueError), ((-5,), {}, ValueError), (("1",), {}, ValueError),
     ((1,), {"sig": 12345}, ValueError), ((1,), {"method": "nope"}, ValueError),
     ((1,), {"method": "sentinel"}, ValueError)],
)
def test_parent_death_signal_bad_input(args, kwargs, exc, monkeypatch):
    monkeypatch.setattr(os, "getppid", lambda: 1)
    with pytest.raises(exc):
        _spawn.set_parent_death_signal(*args, **kwargs)


# -- nice / affinity ---------------------------------------------------------------------------

def _in_child(fn):
    """Run fn() in a forked child; return its exit status (0 = assertions held)."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_apply_child_settings_sets_absolute_nice_and_affinity():
    def check():
        base = os.getpriority(os.PRIO_PROCESS, 0)
        want = min(19, base + 3)
        _spawn.apply_child_settings(nice=want, cpu_affinity=[0])
        assert os.getpriority(os.PRIO_PROCESS, 0) == want
        _spawn.apply_child_settings(nice=want)  # absolute, not an increment
        assert os.getpriority(os.PRIO_PROCESS, 0) == want
        assert os.sched_getaffinity(0) == {0}

    assert _in_child(check) == 0


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [({"nice": 20}, ValueError), ({"nice": -21}, ValueError), ({"nice": "5"}, TypeError),
     ({"nice": True}, TypeError), ({"cpu_affinity": []}, ValueError),
     ({"cpu_affinity": [-1]}, ValueError), ({"cpu_affinity": [0.5]}, TypeError),
     ({"cpu_affinity": 3}, TypeError)],
)
def test_apply_child_settings_bad_values(kwargs, exc):
    with pytest.raises(exc):
        _spawn.apply_child_settings(**kwargs)


def test_apply_child_settings_permission_error_is_clear():
    if os.geteuid() == 0:
        pytest.skip("root may raise priority")

    def check():
        _spawn.apply_child_settings(nice=19)
        try:
            _spawn.apply_child_settings(nice=-20)
        except PermissionError as exc:
            assert "CAP_SYS_NICE" in str(exc)
        else:
            raise AssertionError("expected PermissionError")

    assert _in_child(check) == 0


# -- cpu_count ---------------------------------------------------------------------------------

def _affinity():
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "garbage\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "10000\n",
          "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1),
        ({}, None),
    ],
)
def test_cpu_count_honours_cgroup_quota(tmp_path, files, expected):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    n = _spawn.cpu_count(tmp_path)
    want = _affinity() if expected is None else min(_affinity(), expected)
    assert n == want
    assert n >= 1


def test_cpu_count_honours_affinity_mask(tmp_path):
    def check():
        os.sched_setaffinity(0, {0})
        assert _spawn.cpu_count(tmp_path) == 1

    assert _in_child(check) == 0


def test_cpu_count_big_quota_capped_by_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text(f"{1000 * 100000} 100000\n")
    assert _spawn.cpu_count(tmp_path) == _affinity()


def test_cpu_count_real_system():
    n = _spawn.cpu_count()
    assert 1 <= n <= (os.cpu_count() or 1)
    import multitask

    assert multitask.cpu_count() == n
    assert math.isfinite(n)


# -- reaper ------------------------------------------------------------------------------------

class _FakePopen:
    """A Popen for a raw os.fork() child, to test the reaper without multitask.Process."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None
        self.settled = threading.Event()  # set once returncode is stored

    def poll(self, flag=os.WNOHANG):
        if self.returncode is None:
            try:
                pid, sts = os.waitpid(self.pid, flag)
            except ChildProcessError:
                return None
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(sts)
                self.settled.set()
        return self.returncode


def test_reaper_collects_raw_child():
    pid = os.fork()
    if pid == 0:
        os._exit(5)
    popen = _FakePopen(pid)
    _spawn.reap_in_background(popen)
    assert popen.settled.wait(5)
    assert popen.returncode == 5


def test_reaper_gives_up_on_status_taken_by_someone_else():
    # os.wait() in user code (seed 003) takes the status first: the reaper must not spin
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(3)
    os.close(r)
    popen = _FakePopen(pid)
    _spawn.reap_in_background(popen)
    os.write(w, b"x")
    os.close(w)
    try:
        os.waitpid(pid, 0)  # usually wins: the reaper only reacts once the child has exited
    except ChildProcessError:
        # the reaper was first, fine too; its waitpid may have returned a moment before it
        # stores the code, so wait for the store rather than read returncode at once
        assert popen.settled.wait(5)
        assert popen.returncode == 3
    deadline = time.monotonic() + 5
    while _spawn.reaper_statistics()["watched"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _spawn.reaper_statistics()["watched"] == 0


def test_reaper_state_reset_in_forked_child():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    popen = _FakePopen(pid)
    _spawn.reap_in_background(popen)

    def check():
        stats = _spawn.reaper_statistics()
        assert stats == {"watched": 0, "reaped": 0, "thread_running": False}

    try:
        assert _in_child(check) == 0
    finally:
        os.write(w, b"x")
        os.close(w)
    deadline = time.monotonic() + 5
    while popen.returncode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert popen.returncode == 0


def _exit_at_once():
    return None


def test_fork_while_the_reaper_closes_its_pipe_gives_children_a_clean_start():
    # Regression: the reaper closes its wake-up pipe when its last child is reaped; a fork at
    # that instant used to hand the child stale fd numbers, which its at-fork reset then closed
    # -- by then they were the new Popen's own pipe, and the child exited 1 before run().
    import multitask

    ctx = multitask.get_context("fork")
    procs, codes = [], []
    for _ in range(150):
        p = ctx.Process(target=_exit_at_once)
        p.start()
        procs.append(p)
        if len(procs) > 2:   # let earlier children be reaped while we keep forking
            old = procs.pop(0)
            old.join(30)
            codes.append(old.exitcode)
    for p in procs:
        p.join(30)
        codes.append(p.exitcode)
    # every child ran its target and exited cleanly
    assert codes == [0] * 150
