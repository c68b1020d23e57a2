"""Low-level process-lifecycle helpers: parent-death signal, child settings, CPU count, reaping.

This module is part of ``multitask._core``: it imports nothing from the rest of the package
except :mod:`multitask._core._errors`.  Everything here is usable from any child process
(``Process`` children, pool workers, the manager server).

What it fixes compared to the stdlib ``multiprocessing``:

* **Orphans** (CPython gh-80180): a stdlib child keeps running when its parent is SIGKILLed.
  :func:`set_parent_death_signal` makes the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) or a
  watcher thread (elsewhere) kill the child as soon as its parent dies.
* **Zombies** (seed 003): the stdlib reaps a finished child only when someone calls ``join()``,
  ``is_alive()``, ``active_children()`` or starts another process.  :func:`reap_in_background`
  registers a started child with a lazily started daemon thread that waits for it to exit and
  collects its exit status at once, so no zombie stays behind and ``exitcode`` stays readable.
* **cpu_count in containers**: :func:`cpu_count` honours the affinity mask and the cgroup CPU
  quota; ``os.cpu_count()`` reports the host's CPUs.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

__all__ = [
    "adopt_identity",
    "apply_child_settings",
    "cpu_count",
    "parent_death_signal_supported",
    "reap_in_background",
    "reaper_statistics",
    "set_parent_death_signal",
    "validate_cpu_affinity",
    "validate_nice",
]



# --------------------------------------------------------------------------------------------
# Identity of a child not started by multiprocessing.Process
# --------------------------------------------------------------------------------------------

def adopt_identity(name: str, parent_name: str, parent_pid: int,
                   parent_sentinel: int | None, *, after_fork: bool) -> None:
    """Make ``multiprocessing.current_process()`` in this (forked) child a daemonic process
    called ``name`` whose ``parent_process()`` is ``parent_pid``, as ``Process._bootstrap``
    does for the stdlib's children.  ``parent_sentinel``: an fd that hits EOF when the parent
    dies (``parent_process().is_alive()``).

    ``after_fork``: also do the rest of the stdlib's child start-up -- stdin to ``/dev/null``,
    the native thread id, and ``multiprocessing.util``'s after-fork hooks (objects such as the
    stdlib's locks reset themselves there).  Those hooks are run only if ``multiprocessing.util``
    is already imported: if it is not, nothing registered one, and importing it costs ~2 ms.
    Never blocks.
    """
    import itertools
    from multiprocessing import process as mpp

    mpp._process_counter = itertools.count(1)  # type: ignore[attr-defined]
    mpp._children = set()  # type: ignore[attr-defined]
    me = mpp.BaseProcess(name=name, daemon=True)
    mpp._current_process = me  # type: ignore[attr-defined]
    mpp._parent_process = mpp._ParentProcess(  # type: ignore[attr-defined]
        parent_name, parent_pid, parent_sentinel)
    if not after_fork:
        return
    if sys.stdin is not None:
        try:
            sys.stdin.close()
            sys.stdin = open(os.devnull)  # noqa: SIM115 -- replaces stdin for the process
        except (OSError, ValueError):
            pass
    threading.main_thread()._set_native_id()  # type: ignore[attr-defined]
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util._finalizer_registry.clear()
        util._run_after_forkers()


# --------------------------------------------------------------------------------------------
# Parent-death signal
# --------------------------------------------------------------------------------------------

def _load_prctl() -> Any:
    """``prctl(PR_SET_PDEATHSIG, sig)`` (from the ring's C module: no ctypes import on the path of
    every pool's start), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    from . import _ringbuf

    return _ringbuf._set_pdeathsig


_prctl = _load_prctl()


def parent_death_signal_supported() -> bool:
    """True where the kernel itself delivers the parent-death signal (Linux ``prctl``)."""
    return _prctl is not None


def set_parent_death_signal(expected_ppid: int, sig: int = signal.SIGKILL, *,
                            sentinel: int | None = None, method: str | None = None) -> None:
    """Arrange for the calling process to receive ``sig`` when its parent dies.

    Call it in a child, first thing.  ``expected_ppid`` is the pid of the parent the child must
    not outlive.  Never blocks; if the parent is *already* dead (it died between ``fork`` and
    this call -- the classic race), the kernel will never send the signal, so the process sends
    it to itself at once (running its handler, if ``sig`` has one) and exits with ``os._exit``
    (status ``128 + sig``) if it is still alive after that (at once for SIGKILL).

    Mechanisms, in order of preference (``method`` forces one, for tests):

    ``"prctl"``  Linux ``prctl(PR_SET_PDEATHSIG, sig)``, then the re-check of ``os.getppid()``.
        **Caveat**: the kernel fires the signal when the *thread* that forked this process
        exits, not when the parent process exits.  A child forked from a short-lived thread of
        the parent is killed when that thread ends.  Fork children from a long-lived thread
        (``multitask.Process.start`` uses ``"prctl"`` only when started from the main thread
        and passes ``sentinel`` otherwise).
    ``"sentinel"``  a daemon thread blocked in ``select`` on ``sentinel``, a pipe end inherited
        from the parent whose other end only the parent holds; EOF means the parent is gone.
    ``"pidfd"`` / ``"kqueue"``  a daemon thread waiting on a pidfd (Linux >= 5.3) or a kqueue
        ``NOTE_EXIT`` event (BSD/macOS) for ``expected_ppid``.
    ``"poll"``  last resort: a daemon thread checking ``os.getppid()`` twice a second.

    A watcher thread sends ``sig`` to its own process (``os.kill``), so a handled signal behaves
    as it would with ``prctl``.

    Raises :class:`ValueError` for an invalid signal number or pid, :class:`OSError` if
    ``prctl`` itself fails.  The stdlib has no equivalent.
    """
    if not isinstance(expected_ppid, int) or isinstance(expected_ppid, bool) or expected_ppid <= 0:
        raise ValueError(f"expected_ppid must be a positive pid, got {expected_ppid!r}")
    sig = int(sig)
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid signal number {sig}")
    prctl = _prctl
    if method is None:
        if prctl is not None:
            method = "prctl"
        elif sentinel is not None:
            method = "sentinel"
        elif hasattr(os, "pidfd_open"):
            method = "pidfd"
        elif hasattr(select, "kqueue"):
            method = "kqueue"
        else:
            method = "poll"

    if method == "prctl":
        if prctl is None:
            raise OSError("prctl(PR_SET_PDEATHSIG) is not available on this platform")
        prctl(sig)  # raises OSError itself
        # The race: the parent may have died before prctl took effect; we were then re-parented
        # (to init or a subreaper) and the kernel will never send the signal.
        if os.getppid() != expected_ppid:
            _orphaned(sig)
        return

    if os.getppid() != expected_ppid:
        _orphaned(sig)
    if method == "sentinel":
        if sentinel is None:
            raise ValueError("method='sentinel' needs a sentinel file descriptor")
        fd = os.dup(sentinel)
        target: Any = _watch_sentinel
        args: tuple[Any, ...] = (fd, sig)
    elif method == "pidfd":
        try:
            fd = os.pidfd_open(expected_ppid)  # type: ignore[attr-defined,unused-ignore]
        except ProcessLookupError:
            _orphaned(sig)
        target = _watch_sentinel
        args = (fd, sig)
    elif method == "kqueue":
        target = _watch_kqueue
        args = (expected_ppid, sig)
    elif method == "poll":
        target = _watch_poll
        args = (expected_ppid, sig)
    else:
        raise ValueError(f"unknown parent-death method {method!r}")
    threading.Thread(target=target, args=args, name="multitask-parent-watch",
                     daemon=True).start()


def _orphaned(sig: int) -> None:
    """The parent died before the death signal was armed: deliver it now, as the kernel would
    have (a handler runs inside ``os.kill``), then exit if the process survived it."""
    if sig != signal.SIGKILL:
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def _die(sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), sig)
    if sig == signal.SIGKILL:  # pragma: no cover - not reached, SIGKILL is not deliverable late
        os._exit(128 + sig)


def _watch_sentinel(fd: int, sig: int) -> None:
    # select() returns when the fd is readable: EOF on a pipe (every writer gone) or a pidfd
    # signalling that the process exited.
    while True:
        try:
            select.select([fd], [], [])
        except InterruptedError:  # pragma: no cover - PEP 475 retries, belt and braces
            continue
        except OSError:
            return  # fd closed under us (the process is shutting down)
        break
    _die(sig)


def _watch_kqueue(ppid: int, sig: int) -> None:  # pragma: no cover - BSD/macOS only
    kq = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
    ev = select.kevent(ppid, filter=select.KQ_FILTER_PROC,  # type: ignore[attr-defined,unused-ignore]
                       flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,  # type: ignore[attr-defined,unused-ignore]
                       fflags=select.KQ_NOTE_EXIT)  # type: ignore[attr-defined,unused-ignore]
    try:
        kq.control([ev], 1, None)
    except ProcessLookupError:
        pass
    _die(sig)


def _watch_poll(ppid: int, sig: int) -> None:
    # No event source for "my parent died" on this platform: check twice a second.
    stop = threading.Event()
    while os.getppid() == ppid:
        stop.wait(0.5)
    _die(sig)


# --------------------------------------------------------------------------------------------
# nice / CPU affinity
# --------------------------------------------------------------------------------------------

def validate_nice(nice: object) -> int | None:
    """Return ``nice`` as an int in -20..19 (or ``None``); raise TypeError/ValueError otherwise."""
    if nice is None:
        return None
    if not isinstance(nice, int) or isinstance(nice, bool):
        raise TypeError("nice must be an int between -20 and 19 or None, "
                        f"not {type(nice).__name__}")
    if not -20 <= nice <= 19:
        raise ValueError(f"nice must be between -20 (highest priority) and 19 (lowest), got {nice}")
    return nice


def validate_cpu_affinity(cpu_affinity: object) -> frozenset[int] | None:
    """Return ``cpu_affinity`` as a non-empty frozenset of CPU numbers (or ``None``).

    Raises :class:`TypeError` for a non-iterable or non-int entries, :class:`ValueError` for an
    empty set or a CPU number that does not exist on this machine.
    """
    if cpu_affinity is None:
        return None
    if isinstance(cpu_affinity, (str, bytes)) or not isinstance(cpu_affinity, Iterable):
        raise TypeError("cpu_affinity must be an iterable of CPU numbers, e.g. [0, 1], "
                        f"not {type(cpu_affinity).__name__}")
    cpus = list(cpu_affinity)
    for c in cpus:
        if not isinstance(c, int) or isinstance(c, bool):
            raise TypeError(f"cpu_affinity entries must be ints, got {c!r}")
    if not cpus:
        raise ValueError("cpu_affinity must name at least one CPU")
    ncpu = os.cpu_count() or 1
    bad = [c for c in cpus if c < 0 or c >= ncpu]
    if bad:
        raise ValueError(f"cpu_affinity names CPUs {bad} that do not exist "
                         f"(this machine has CPUs 0..{ncpu - 1})")
    return frozenset(cpus)


def apply_child_settings(nice: int | None = None,
                         cpu_affinity: Iterable[int] | None = None) -> None:
    """Apply scheduling settings to the calling process.

    ``nice`` is the *absolute* niceness to set (-20..19, like ``psutil.Process.nice(value)``),
    not the increment ``os.nice`` takes.  ``cpu_affinity`` is the set of CPUs the process may
    run on (``os.sched_setaffinity``).  Never blocks.

    Raises :class:`TypeError`/:class:`ValueError` for bad values, :class:`PermissionError` when
    lowering niceness below the current value without the privilege (``CAP_SYS_NICE`` or
    ``RLIMIT_NICE``), :class:`OSError` for other failures, and :class:`NotImplementedError`
    for ``cpu_affinity`` on a platform without ``sched_setaffinity``.
    """
    nice = validate_nice(nice)
    cpus = validate_cpu_affinity(cpu_affinity)
    if nice is not None:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if nice != current:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except PermissionError as exc:
                raise PermissionError(
                    exc.errno, f"cannot set nice to {nice} (current {current}): raising a "
                    "process's priority needs root/CAP_SYS_NICE or a higher RLIMIT_NICE") from None
    if cpus is not None:
        if not hasattr(os, "sched_setaffinity"):
            raise NotImplementedError("cpu_affinity is not supported on this platform")
        os.sched_setaffinity(0, cpus)


def check_nice_allowed(nice: int | None) -> None:
    """Raise :class:`PermissionError` now if setting ``nice`` in a child would be refused.

    Lets ``Process.start()`` fail in the parent, at the call that caused it, instead of the child
    dying with a traceback.  Lowering niceness needs root, ``CAP_SYS_NICE`` or ``RLIMIT_NICE``.
    """
    if nice is None:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice >= current or os.geteuid() == 0:
        return
    try:
        import resource
        soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, AttributeError, OSError):  # pragma: no cover - non-Linux
        return
    if soft == resource.RLIM_INFINITY or nice >= 20 - soft:
        return
    # Last word from the kernel (CAP_SYS_NICE without root): probe on a throwaway thread id is
    # not possible, so we trust RLIMIT_NICE and uid as the common cases.
    raise PermissionError(f"cannot start a process with nice={nice}: this process has nice "
                          f"{current} and lacks the privilege to raise priority "
                          "(needs root/CAP_SYS_NICE or RLIMIT_NICE)")


# --------------------------------------------------------------------------------------------
# cpu_count
# --------------------------------------------------------------------------------------------

def _read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _cgroup_quota(root: str) -> float | None:
    """CPUs allowed by the cgroup quota under ``root`` (v2 ``cpu.max`` or v1 CFS), or None."""
    # os.path, not pathlib: pathlib's import (~5-15 ms) would land in every first Pool().
    join = os.path.join
    try:
        fields = _read_text(join(root, "cpu.max")).split()
    except OSError:
        fields = []
    if fields:
        if fields[0] != "max":
            try:
                quota = int(fields[0])
                period = int(fields[1]) if len(fields) > 1 else 100_000
            except ValueError:
                return None
            if quota > 0 and period > 0:
                return quota / period
        return None
    for v1dir in (join(root, "cpu"), join(root, "cpu,cpuacct"), join(root, "cpuacct,cpu"), root):
        try:
            quota = int(_read_text(join(v1dir, "cpu.cfs_quota_us")).strip())
            period = int(_read_text(join(v1dir, "cpu.cfs_period_us")).strip())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
        return None
    return None


def cpu_count(cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int:
    """The number of CPUs this process can actually use; never below 1; never blocks.

    The minimum of the affinity mask (``os.sched_getaffinity``, e.g. ``taskset``) and the cgroup
    CPU quota rounded up (cgroup v2 ``cpu.max``; v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``),
    read under ``cgroup_root``.  The stdlib's ``multiprocessing.cpu_count()`` returns the host's
    CPU count, which oversubscribes containers (a 2-CPU container on a 64-core host gets 64
    workers).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota(os.fspath(cgroup_root))
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


# --------------------------------------------------------------------------------------------
# OOM kills (issue #19: saying why a worker died)
# --------------------------------------------------------------------------------------------

def _cgroup_file(controller: str, name: str, root: str) -> str | None:
    """``name`` in this process's cgroup (``controller`` "" = v2), or None.  /proc/self/cgroup
    may name the path from a root above the mount (a container's namespace): the longest
    suffix of it that exists under the mount is ours."""
    try:
        lines = _read_text("/proc/self/cgroup").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or (parts[1] != controller and controller not in
                               parts[1].split(",")):
            continue
        base = root if not controller else os.path.join(root, controller)
        comps = [c for c in parts[2].split("/") if c]
        for k in range(len(comps) + 1):
            path = os.path.join(base, *comps[k:], name)
            if os.path.exists(path):
                return path
    return None


def _counter(path: str | None, key: str) -> int:
    if path is None:
        return 0
    try:
        for line in _read_text(path).splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0] == key:
                return int(fields[1])
    except (OSError, ValueError):
        pass
    return 0


def oom_kills(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """A count that rises whenever the kernel's OOM killer kills a process that could be one of
    ours: the kills in this process's memory cgroup (v2 ``memory.events``, v1
    ``memory.oom_control``) plus the system-wide ``oom_kill`` of ``/proc/vmstat``.  Compared
    before and after a worker's SIGKILL, a rise says the OOM killer did it.  0 where none of
    these can be read; never raises."""
    return (_counter("/proc/vmstat", "oom_kill")
            + _counter(_cgroup_file("", "memory.events", cgroup_root), "oom_kill")
            + _counter(_cgroup_file("memory", "memory.oom_control", cgroup_root), "oom_kill"))


# --------------------------------------------------------------------------------------------
# Reaper
# --------------------------------------------------------------------------------------------

class _Pollable(Protocol):
    pid: int
    returncode: int | None

    def poll(self, flag: int = ...) -> int | None: ...


class _Reaper:
    """Collects the exit status of registered children as soon as they exit.

    Design: a daemon thread waits (``select``) on one fd per live child -- a pidfd where the
    kernel has them (readable exactly when the child has exited, so ``waitpid(pid, WNOHANG)``
    cannot miss), else a dup of the child's sentinel -- plus a wake-up pipe.  When a child's fd
    is ready the thread calls that child's ``Popen.poll()`` (``waitpid(pid, WNOHANG)`` for that
    one pid: never ``waitpid(-1)``, so children multitask did not start keep their statuses for
    their owner).  The Popen serialises ``poll`` with its own lock so ``join()`` racing the
    reaper never sees ``ECHILD`` and a missing ``returncode``.

    The thread starts when the first child is registered and exits (closing its pipe) when none
    is left, so an idle program has no extra thread and no extra fds.  The registry lock is only
    held for dict updates, never across a blocking call; ``os.register_at_fork`` resets the
    whole state in a forked child, where the thread does not exist.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, _Pollable] = {}  # fd owned by us -> popen
        # The popen the thread is polling outside the lock right now: discard() waits for it to
        # be let go, so that once join()/close() returns nothing of ours refers to the popen
        # (the stdlib's Popen is then collectable at once, and its Finalize with it).
        self._busy: _Pollable | None = None
        self._idle = threading.Condition(self._lock)
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self.reaped = 0

    def _before_fork(self) -> None:
        # Hold the lock across fork(): the thread closes fds under it (releasing the GIL inside
        # os.close), and a fork in the middle would give the child a stale fd number -- one the
        # parent may already have reused for the very pipe the new child needs (it then closed
        # the Popen's pipe and the child died with status 1 before run()).
        self._lock.acquire()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _reinit_in_child(self) -> None:
        # after os.fork(): the thread is gone; the fds are copies we must not keep (consistent,
        # because the lock was held across the fork).
        for fd in [*self._entries, self._wake_r, self._wake_w]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.__init__()  # type: ignore[misc]

    def add(self, popen: _Pollable, sentinel: int | None) -> None:
        fd = -1
        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(popen.pid)  # type: ignore[attr-defined,unused-ignore]
            except OSError:
                fd = -1
        if fd < 0:
            if sentinel is None:
                return
            fd = os.dup(sentinel)
        os.set_inheritable(fd, False)
        with self._lock:
            self._entries[fd] = popen
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_w, False)
                self._thread = threading.Thread(target=self._run, name="multitask-reaper",
                                                daemon=True)
                self._thread.start()
            else:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"\0")

    def discard(self, popen: _Pollable) -> None:
        """Stop watching ``popen`` (after ``join``/``close``); the thread notices on wake-up.

        Blocks while the reaper thread is polling this very popen (one ``waitpid(WNOHANG)``),
        never longer; must not be called with the popen's own lock held.
        """
        with self._lock:
            if threading.current_thread() is not self._thread:
                while self._busy is popen:
                    self._idle.wait()
            for fd, p in list(self._entries.items()):
                if p is popen:
                    del self._entries[fd]
                    os.close(fd)
            if self._thread is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        retry_delay = 0.0
        while True:
            with self._lock:
                if not self._entries:
                    os.close(self._wake_r)
                    os.close(self._wake_w)
                    self._wake_r = self._wake_w = -1
                    self._thread = None
                    return
                fds = [*self._entries, self._wake_r]
                wake_r = self._wake_r
            try:
                ready, _, _ = select.select(fds, [], [], retry_delay or None)
            except (OSError, ValueError):
                # an fd was discarded (closed) between the snapshot and select: rebuild
                continue
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(wake_r, 4096)
            retry_delay = 0.0
            with self._lock:
                todo = [fd for fd in ready if fd in self._entries]
            for fd in todo:
                with self._lock:
                    popen = self._entries.get(fd)
                    if popen is None:   # discarded meanwhile
                        continue
                    self._busy = popen
                try:
                    code = popen.poll()
                finally:
                    with self._lock:
                        self._busy = None
                        self._idle.notify_all()
                if code is None and popen.returncode is None:
                    # A sentinel (not pidfd) can hit EOF a moment before the child becomes
                    # waitable; retry soon.  A pidfd is exact, so None there means someone else
                    # (os.wait(), waitpid(-1)) took the status: nothing left to collect.
                    if _is_pidfd(fd) and select.select([fd], [], [], 0)[0]:
                        self._drop(fd, popen)
                    else:
                        retry_delay = 0.05
                    continue
                self.reaped += 1
                self._drop(fd, popen)
            # No reference to a popen may outlive its turn (see _busy): select() may block
            # for as long as other children live.
            popen = None

    def _drop(self, fd: int, popen: _Pollable) -> None:
        # compare the popen too: ``discard`` may have closed fd and ``add`` reused its number
        with self._lock:
            if self._entries.get(fd) is popen:
                del self._entries[fd]
                os.close(fd)

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {"watched": len(self._entries), "reaped": self.reaped,
                    "thread_running": self._thread is not None}


def _is_pidfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    except OSError:
        return False


_reaper = _Reaper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_reaper._before_fork,
                        after_in_parent=_reaper._after_fork_in_parent,
                        after_in_child=_reaper._reinit_in_child)


def fork_is_safe() -> bool:
    """True if every other live Python thread is a multitask thread (named ``multitask-*``):
    those hold no lock across a fork (their locks are taken around ``os.fork`` by
    ``register_at_fork`` hooks, or never while a fork can happen)."""
    me = threading.current_thread()
    return all(t is me or t.name.startswith("multitask-") for t in threading.enumerate())


@contextlib.contextmanager
def fork_warning_for_foreign_threads() -> Iterator[None]:
    """Around an ``os.fork()`` of multitask's: Python 3.12+ warns (``DeprecationWarning``,
    "This process is multi-threaded, use of fork() may lead to deadlocks") whenever the process
    has another thread.  When the only others are multitask's own (:func:`fork_is_safe`) the
    warning is wrong, and hidden: a program that would not warn with the stdlib alone does not
    warn because multitask runs a reaper thread.  With any other thread it is shown, as the
    stdlib shows it."""
    if sys.version_info < (3, 12) or not fork_is_safe():
        yield
        return
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"This process \(pid=\d+\) is multi-threaded",
                                category=DeprecationWarning)
        yield


def reap_in_background(popen: _Pollable, sentinel: int | None = None) -> None:
    """Have the background reaper collect ``popen``'s exit status as soon as the child exits.

    ``popen`` needs ``pid``, ``returncode`` and a thread-safe ``poll(flag)`` that calls
    ``waitpid(pid, flag)`` (multitask's Popen classes lock it).  ``sentinel`` is used only where
    pidfds are unavailable.  Never blocks (starts the reaper thread if needed).
    """
    _reaper.add(popen, sentinel)


def stop_reaping(popen: _Pollable) -> None:
    """Forget ``popen`` (it was joined or closed).  Never blocks for long."""
    _reaper.discard(popen)


def reaper_statistics() -> dict[str, Any]:
    """``{"watched": n, "reaped": n, "thread_running": bool}`` for this process's reaper."""
    return _reaper.statistics()
