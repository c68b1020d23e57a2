"""Every thread's Python stack, on request, from any multitask process (``multitask ps --stacks``).

A program with a pool, each of its workers and the pool's zygote call :func:`install`: it
registers :func:`faulthandler.register` for :data:`SIGNAL` (SIGUSR2), writing into a FIFO that
only this process holds open.  The FIFO is made in ``/tmp`` under an unguessable name, opened
read-write and non-blocking, and unlinked at once: nothing is left on disk, even after a
SIGKILL, and a reader of the same user finds it as ``/proc/PID/fd/N`` (its link names it
``multitask-stacks-...``).  :func:`request` opens it there, sends the signal, and reads the dump.

Why faulthandler: its handler runs in C, at once, whatever the process is doing -- a worker deep in
a C extension, a thread blocked on a futex with the GIL released, a deadlocked interpreter --
where a Python-level handler would wait for the main thread to run bytecode (the case that
matters when something hangs).  Why a FIFO of our own: the dump must not go to the program's
stderr (a user's terminal or log), and the write end is non-blocking, so a dump nobody reads
fills at most the pipe buffer (64 KiB; further dumps are cut) and never blocks the process.

Not installed when ``MULTITASK_STACKS=0``, or when the program has its own SIGUSR2 handler (a
Python one: faulthandler would replace it).  A worker's initializer that installs a SIGUSR2
handler later replaces ours (its choice).  Linux only (``/proc``); elsewhere :func:`install`
does nothing and :func:`request` returns None.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time

SIGNAL = signal.SIGUSR2
_MARK = "multitask-stacks-"
_state: dict[str, int] = {}   # "pid": who installed, "fd": its FIFO


def install() -> bool:
    """Register the stack dump for this process (idempotent; a forked child starts without).

    True if a dump can now be requested.  Never raises: a process without it only loses the
    diagnostic.  Costs one mkfifo/open/unlink (~30 us).
    """
    pid = os.getpid()
    if _state.get("pid") == pid:
        return True
    if os.environ.get("MULTITASK_STACKS", "1") == "0" or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        if signal.getsignal(SIGNAL) not in (signal.SIG_DFL, None):
            return False   # the program's own handler
        import faulthandler

        fd = _make_fifo(pid)
        if fd < 0:
            return False
        faulthandler.register(SIGNAL, file=fd, all_threads=True, chain=False)
    except (OSError, ValueError, RuntimeError):
        return False
    _state["pid"] = pid
    _state["fd"] = fd
    return True


def _forget() -> None:
    """In a forked child: the parent's FIFO and registration are not its own.  (A pool's
    workers and zygote then call install(); any other child gets SIGUSR2's default back.)"""
    fd = _state.pop("fd", None)
    if fd is None:
        return
    owner = _state.pop("pid", None)
    import faulthandler

    faulthandler.unregister(SIGNAL)
    # Only if that fd is still our FIFO: the program may have closed it (CPython's test suite
    # closes fds) and the number may now be one of its pipes, which the child needs.
    try:
        if f"/tmp/{_MARK}{owner}-" in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
    except OSError:
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _make_fifo(pid: int) -> int:
    for _ in range(8):
        path = f"/tmp/{_MARK}{pid}-{os.urandom(6).hex()}"
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            continue
        except OSError:
            return -1
        try:
            # O_RDWR: opening neither blocks (no reader yet) nor gives EPIPE/SIGPIPE later
            return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.unlink(path)
    return -1


def _find(pid: int) -> str | None:
    """The /proc path of ``pid``'s stack FIFO, or None (not a multitask process, or gone)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return None
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if f"/tmp/{_MARK}{pid}-" in target:
            return f"{base}/{name}"
    return None


def request(pid: int, timeout: float = 3.0, quiet: float = 0.2) -> str | None:
    """Every thread's stack in process ``pid`` (faulthandler's format), or None if ``pid`` has
    no stack FIFO (not a multitask process, MULTITASK_STACKS=0, or exited).

    Blocks until the dump is complete: the first bytes come within ``timeout`` seconds, and it
    is complete when no more came for ``quiet`` seconds (faulthandler writes it in one go, in
    microseconds; there is no end marker to wait for).  Raises PermissionError for a process of
    another user.  Two requests for the same process at once may each get part of a dump.
    """
    path = _find(pid)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        while _read(fd):   # a dump nobody read (a signal sent by hand): not this one
            pass
        try:
            os.kill(pid, SIGNAL)
        except ProcessLookupError:
            return None
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        chunks: list[bytes] = []
        start = time.monotonic()
        deadline = start + timeout
        hard = deadline + 4 * quiet   # however the dump trickles in, the wait ends here
        while True:
            now = time.monotonic()
            wait = min(quiet if chunks else deadline - now, hard - now)
            if wait <= 0:
                break
            events = poller.poll(wait * 1000)
            if not events:
                break   # quiet for `quiet` seconds (or nothing by the deadline)
            data = _read(fd)
            if data:
                chunks.append(data)
            elif data == b"" or any(ev & (select.POLLHUP | select.POLLERR)
                                    for _, ev in events):
                # end of file: the process exited (no writer is left), after its dump or
                # before it; poll would report the hang-up at once, for ever
                break
        return b"".join(chunks).decode("utf-8", "replace") if chunks else ""
    finally:
        os.close(fd)


def _read(fd: int) -> bytes | None:
    """What the FIFO holds now: bytes, b"" at end of file (no writer), None if empty."""
    try:
        return os.read(fd, 1 << 16)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None
        raise
