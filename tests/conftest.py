"""Shared fixtures: a leak check after every test, and the start methods to parametrise over.

After each test we wait (bounded) for the test's children to go away and then assert that it
left behind no child processes, no zombies, no threads, no new shared-memory segments in /dev/shm
and no new file descriptors.  Long-lived helper processes the stdlib starts once per session
(resource tracker, forkserver) are not the test's children and are ignored; so are the few
per-process singleton threads of multitask listed by name in ``_SINGLETON_THREADS``.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import threading
import time
import traceback

import psutil
import pytest

# First, while this process has no other thread: the program's fork helper is forked by this
# import (see src/multitask/_core/_forkhelper.py), before any test runs and is leak-checked.
import multitask

START_METHODS = ["fork", "spawn", "forkserver"]

# stdlib singletons that live for the whole session, started on first use by whichever test
_SESSION_HELPERS = ("resource_tracker", "forkserver", "semaphore_tracker",
                    "multitask/_core/_shm.py")   # the shared-memory reaper (one per family)


# Threads that live once per process, for the rest of its life, started by whichever test first
# needs them.  Matched by exact name; anything else a test leaves running is a leak.
_SINGLETON_THREADS = {
    # multitask.monitor.registry: the publisher of this program's entry for `multitask ps`; one
    # per process, started by the first registered pool or process, runs until exit (atexit).
    "multitask-registry",
    # multitask.monitor._hook: the one-shot hand-over to that publisher; sleeps FIRST_DELAY on
    # purpose (a program that ends sooner never loads the registry), then loads it and exits.
    "multitask-registry-start",
}


def _is_session_helper(proc: psutil.Process) -> bool:
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    return any(h in cmd for h in _SESSION_HELPERS)


def _children() -> list[psutil.Process]:
    """The session's descendants, and those of its fork helper (_core/_forkhelper.py), which
    forks the zygote of a pool made while a test runs threads: the helper is not our child
    (a double fork), but what it forks for us is ours to account for."""
    me = psutil.Process()
    roots = [me]
    from multitask._core import _forkhelper

    helper = _forkhelper.get()
    if helper is not None:
        try:
            roots.append(psutil.Process(helper.pid))
        except (psutil.NoSuchProcess, _forkhelper.HelperError):
            pass
    out: list[psutil.Process] = []
    for root in roots:
        try:
            kids = root.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        out.extend(k for k in kids if not _is_session_helper(k))
    return out


def _shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _fds() -> set[int]:
    # listdir opens a descriptor of its own to read the directory; it is listed but closed by
    # the time we look, so keep only descriptors that are still open.
    out = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue
        out.add(fd)
    return out


def _new_threads(before: set[threading.Thread], deadline: float) -> list[threading.Thread]:
    """Threads alive now that were not before the test, other than the allowed singletons.

    A thread that is finishing (a pool's result thread after ``close()``/``join()``, a reaper
    whose last child was reaped) gets until ``deadline`` to end: we join it, so the wait ends
    the moment it exits -- no polling.
    """
    left: list[threading.Thread] = []
    for t in threading.enumerate():
        if t in before or t is threading.current_thread() or t.name in _SINGLETON_THREADS:
            continue
        if isinstance(t, threading._DummyThread):   # a foreign (non-threading) thread
            if t.ident in sys._current_frames():
                left.append(t)
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            left.append(t)
    return left


def _describe_threads(threads: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    out = []
    for t in threads:
        frame = frames.get(t.ident) if t.ident is not None else None
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no frame)\n"
        out.append(f"thread {t.name!r} (ident {t.ident}, daemon={t.daemon}):\n{stack}")
    return "\n".join(out)


@pytest.fixture(autouse=True)
def leak_check(request):
    """Fail the test if it leaks a process, zombie, thread, /dev/shm segment or file
    descriptor."""
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    threads_before = set(threading.enumerate())
    shm_before = _shm()
    fds_before = _fds()
    yield
    deadline = time.monotonic() + 10.0
    # Children may legitimately take a moment to exit after a test's last join/close.
    while True:
        kids = _children()
        if not kids or time.monotonic() > deadline:
            break
        psutil.wait_procs(kids, timeout=0.2)
    # Anything still here is reaped by us so the next test starts clean, then reported.
    leftover = [(k.pid, _safe_status(k), _safe_cmd(k)) for k in kids]
    for k in kids:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
    multiprocessing.active_children()
    assert not leftover, f"test left child processes behind: {leftover}"
    # Threads after processes: a thread waiting on a child ends once the child has gone.
    threads = _new_threads(threads_before, time.monotonic() + 5.0)
    assert not threads, f"test left threads running:\n{_describe_threads(threads)}"
    while True:
        new_shm = {n for n in _shm() - shm_before if n.startswith(("mt-", "psm_", "mt_"))}
        if not new_shm or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not new_shm, f"test leaked shared-memory segments: {sorted(new_shm)}"
    # fds: allow the session helpers' pipes (opened lazily by the first user) to stay.
    collected = False
    while True:
        new_fds = {fd for fd in _fds() - fds_before if not _is_helper_fd(fd)}
        if not new_fds or time.monotonic() > deadline:
            break
        if not collected:
            # An fd held only by unreachable objects (a reference cycle) is released by the
            # next collection: not a leak.  One collection, as CPython's own tests do before
            # they count resources.  (test_managers: `list(proxy)` ends with the manager's
            # IndexError, which the stdlib's BaseProxy._callmethod raises from its local
            # `result` -- exception -> traceback -> frame -> (f_back) the test's frame and its
            # proxies, connections and Popen.  Where no collection ran in between, as in the
            # 3.12 matrix, the leak check waited 10 s and failed.)
            gc.collect()
            collected = True
            continue
        time.sleep(0.05)
    assert not new_fds, f"test leaked file descriptors: {_describe_fds(new_fds)}"


def _is_helper_fd(fd: int) -> bool:
    from multiprocessing import forkserver, resource_tracker

    rt = getattr(resource_tracker._resource_tracker, "_fd", None)
    fs = forkserver._forkserver
    fs_fds = {getattr(fs, "_forkserver_alive_fd", None)}
    # the stack-dump FIFO (one per process, for good); the shared-memory reaper's pipe (one per
    # family of processes)
    from multitask._core import _forkhelper, _shm, _stacks

    helper = _forkhelper.get()   # the fork helper's socket and alive pipe (one per program)
    helper_fds = set() if helper is None else {helper._sock.fileno(), helper._alive_w}
    return (fd == rt or fd in fs_fds or fd == _stacks._state.get("fd") or fd == _shm._wfd
            or fd in helper_fds)


def _describe_fds(fds: set[int]) -> list[tuple[int, str]]:
    out = []
    for fd in sorted(fds):
        try:
            out.append((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            out.append((fd, "?"))
    return out


def _safe_status(p: psutil.Process) -> str:
    try:
        return p.status()
    except psutil.Error:
        return "?"


def _safe_cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:120]
    except psutil.Error:
        return "?"


def pytest_configure(config):
    config.addinivalue_line("markers", "no_leak_check: skip the per-test leak check")
    config.addinivalue_line("markers", "slow: a test that takes several seconds")
    config.addinivalue_line("markers", "ray: needs a Ray cluster; run in a pytest process of its "
                            "own (`make test` does), since a Ray driver must not be forked")


@pytest.fixture(params=START_METHODS)
def start_method(request) -> str:
    """Parametrise a test over every start method."""
    return request.param


@pytest.fixture
def ctx(start_method):
    """A multitask context for each start method."""

    return multitask.get_context(start_method)

