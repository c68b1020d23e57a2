"""procinfo: the STAT letter `ps` would print, and the other facts, for real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from multitask.monitor.procinfo import CpuSampler, ProcInfo, proc_info, state_letter

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
SPINNER = [sys.executable, "-c", "while True: pass"]


def _wait_state(pid: int, letter: str, timeout: float = 10.0) -> ProcInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = proc_info(pid)
        assert info is not None
        if info.state.startswith(letter) or time.monotonic() > deadline:
            return info
        time.sleep(0.02)


@pytest.fixture
def child():
    procs: list[subprocess.Popen] = []

    def start(argv=SLEEPER, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_sleeping_child_is_S(child):
    p = child()
    info = _wait_state(p.pid, "S")
    assert info.state[0] == "S", info
    assert info.status == "sleeping"
    assert info.pid == p.pid
    assert info.ppid == os.getpid()
    assert info.rss is not None and info.rss > 1_000_000
    assert info.nice == 0
    assert info.threads == 1
    assert "time.sleep(60)" in info.command
    assert info.cpu_percent is not None and 0 <= info.cpu_percent <= 100
    assert state_letter(p.pid) == "S"
    assert info.as_dict()["state"] == info.state


def test_stopped_child_is_T(child):
    p = child()
    _wait_state(p.pid, "S")
    os.kill(p.pid, signal.SIGSTOP)
    info = _wait_state(p.pid, "T")
    assert info.state[0] == "T", info
    assert info.status == "stopped"
    os.kill(p.pid, signal.SIGCONT)
    assert _wait_state(p.pid, "S").state[0] == "S"


def test_zombie_child_is_Z(child):
    p = child([sys.executable, "-c", "pass"])
    info = _wait_state(p.pid, "Z")  # exited, not yet waited for: a zombie, as in seed 003
    assert info.state[0] == "Z", info
    assert info.status == "zombie"
    assert info.command.endswith("<defunct>")
    assert info.ppid == os.getpid()
    p.wait()
    assert proc_info(p.pid) is None
    assert state_letter(p.pid) is None


def test_running_child_is_R_and_sampled_cpu(child):
    p = child(SPINNER)
    info = _wait_state(p.pid, "R")
    assert info.state[0] == "R", info
    sampler = CpuSampler()
    first = proc_info(p.pid, sampler=sampler)
    assert first is not None and first.cpu_percent is None  # first sighting
    time.sleep(0.5)
    second = proc_info(p.pid, sampler=sampler)
    assert second is not None
    cpu = second.cpu_percent
    assert cpu is not None and cpu > 20, cpu  # it spins (the machine is shared: not ~100)
    sampler.prune()
    sampler.prune()
    assert sampler._procs == {}  # not asked about since the last prune: forgotten


def test_nice_child_has_N_modifier(child):
    p = child(SLEEPER, preexec_fn=lambda: os.nice(5))
    info = _wait_state(p.pid, "S")
    assert info.nice == 5
    assert "N" in info.state[1:], info


def test_session_leader_and_threads_modifiers(child):
    p = child([sys.executable, "-c",
               "import threading, time; threading.Thread(target=time.sleep, args=(60,),"
               " daemon=True).start(); time.sleep(60)"], start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        info = proc_info(p.pid)
        assert info is not None
        if info.threads == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert info.threads == 2
    assert "s" in info.state[1:] and "l" in info.state[1:], info


def test_missing_pid_is_none():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert proc_info(dead.pid) is None
    assert state_letter(dead.pid) is None


def test_own_process():
    info = proc_info(os.getpid())
    assert info is not None
    assert info.state[0] == "R"  # we are on a CPU while we read our own state
    assert info.ppid == os.getppid()
