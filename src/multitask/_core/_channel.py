"""A one-way pipe of small pickled messages, and a forked child without ``multiprocessing``.

Part of ``multitask._core``: imports nothing from the rest of the package.

Why not ``multiprocessing.Pipe`` and ``multiprocessing.Process``: the pool talks to a *forked*
zygote (see ``backends/_worker.py``) through three pipes, and starting it through the stdlib
imports ``multiprocessing.connection`` (which imports ``tempfile`` and ``shutil``) and
``multiprocessing.util`` (which imports ``subprocess``): ~7 ms of a script's first ``Pool()``,
a third of the whole of the stdlib's own ``Pool(2)`` start-up (benchmark P7).  A forked child
needs none of it: its pipe ends are inherited, not pickled.  Zygotes made by ``spawn`` or a
forkserver still go through the stdlib, which knows how to hand them their fds.

:class:`Channel` frames each message as a 4-byte length and the pickle, written by one
``os.write``: messages up to ``PIPE_BUF`` (4 KiB; the zygote's are under 200 bytes) are atomic,
so several threads may ``send`` on one end without interleaving (a lock covers longer ones).
:class:`ForkedChild` is the subset of a ``multiprocessing`` ``Popen`` the pool uses: ``pid``,
``sentinel`` (a pidfd where the kernel has them: readable exactly when the child has exited,
whoever else holds its fds), ``poll``/``wait``/``kill``/``close``.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["Channel", "ForkedChild", "channel_pair", "flush_std_streams", "run_child"]

_LEN = struct.Struct("<I")


class Channel:
    """One end of a one-way message pipe (see the module docstring).

    ``recv`` blocks until a whole message is there (``EOFError`` once every write end is closed
    and the pipe drained); ``send`` blocks while the pipe is full; ``poll(timeout)`` waits up to
    ``timeout`` seconds for something to read.  Not picklable: only a forked child inherits it.
    """

    __slots__ = ("_fd", "_send_lock")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._send_lock = threading.Lock()

    def fileno(self) -> int:
        if self._fd < 0:
            raise OSError("channel is closed")
        return self._fd

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        buf = memoryview(_LEN.pack(len(data)) + data)
        with self._send_lock:
            while buf:
                buf = buf[os.write(self.fileno(), buf):]

    def recv(self) -> Any:
        (n,) = _LEN.unpack(self._read(_LEN.size))
        return pickle.loads(self._read(n))

    def _read(self, n: int) -> bytes:
        fd = self.fileno()
        chunks = []
        while n:
            chunk = os.read(fd, n)
            if not chunk:
                raise EOFError("the other end of the channel is closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def poll(self, timeout: float = 0.0) -> bool:
        return bool(select.select([self.fileno()], [], [], timeout)[0])

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def run_child(setup: Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]) -> NoReturn:
    """In a freshly forked child: ``target(*args)`` from ``setup()``, then ``os._exit`` with
    ``target``'s return value if it is an int, 0 for None, 1 if it (or ``setup``) raised
    (after printing the traceback), or ``SystemExit``'s code.  Never returns."""
    code = 1
    try:
        target, args = setup()
        result = target(*args)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def channel_pair() -> tuple[Channel, Channel]:
    """``(read_end, write_end)`` of a new one-way channel (fds not inherited by exec)."""
    r, w = os.pipe()
    return Channel(r), Channel(w)


def flush_std_streams() -> None:
    """Before a fork: output still buffered would be written twice, by us and by the child."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


class ForkedChild:
    """``target(*args)`` run in a child made by ``os.fork()``, which then ``os._exit``s.

    The child's exit code is ``target``'s return value if it is an int, 0 for None, 1 if it
    raised (after printing the traceback), or ``SystemExit``'s code.  ``poll`` is serialised by
    a lock, so a background reaper (``_spawn.reap_in_background``) and ``wait`` can race.
    Unlike ``multiprocessing.Process`` the child is not listed by ``active_children()`` and
    does not run the stdlib's process bootstrap: ``target`` sets up what it needs.
    ``close_in_child``: fds the child closes first (the parent's ends of its pipes).
    """

    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...], name: str,
                 close_in_child: tuple[int, ...] = ()) -> None:
        self.name = name
        self.returncode: int | None = None
        self._lock = threading.Lock()
        self._fd_r = self._fd_w = -1
        use_pidfd = hasattr(os, "pidfd_open")
        if not use_pidfd:  # pragma: no cover - Linux < 5.3 / other systems
            # EOF on this pipe once the child (and whatever inherited its end) has exited
            self._fd_r, self._fd_w = os.pipe()
        flush_std_streams()
        from ._spawn import fork_warning_for_foreign_threads

        with fork_warning_for_foreign_threads():
            pid = os.fork()
        if pid == 0:
            def setup() -> tuple[Callable[..., Any], tuple[Any, ...]]:
                for fd in (self._fd_r, *close_in_child):
                    if fd >= 0:
                        os.close(fd)
                return target, args

            run_child(setup)
        self.pid = pid
        if use_pidfd:
            self.sentinel = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
        else:  # pragma: no cover
            os.close(self._fd_w)
            self.sentinel = self._fd_r

    @property
    def exitcode(self) -> int | None:
        return self.poll()

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flag)
                except ChildProcessError:
                    return None   # someone else (os.wait(), the reaper) took the status
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, waiting up to ``timeout`` seconds (None: for ever) for the child."""
        if (self.returncode is None and self.sentinel >= 0
                and not select.select([self.sentinel], [], [], timeout)[0]):
            return None
        return self.poll()

    join = wait

    def kill(self) -> None:
        if self.returncode is not None or self.sentinel < 0:
            return
        try:
            if self._fd_r < 0:   # a pidfd: never signals a reused pid
                signal.pidfd_send_signal(self.sentinel, signal.SIGKILL)
            else:  # pragma: no cover
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Release the sentinel fd (the child may still be running; reaping is separate)."""
        fd, self.sentinel = self.sentinel, -1
        if fd >= 0:
            os.close(fd)
