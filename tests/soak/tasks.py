"""The functions the soak's workers run (importable by name under every start method).

Each task appends its token to the run's execution log before it works, with one ``O_APPEND``
write (atomic for a short line), so the driver can check afterwards that no task ran twice and
that every task that succeeded ran.
"""

from __future__ import annotations

import os
import threading
import time

_fds: dict[str, int] = {}
_lock = threading.Lock()   # the thread backend's workers share _fds


def _log(path: str, token: int) -> None:
    fd = _fds.get(path)
    if fd is None:
        with _lock:
            fd = _fds.get(path)
            if fd is None:
                fd = _fds[path] = os.open(
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.write(fd, b"%d\n" % token)


def work(arg: tuple[str, int, float, int]) -> tuple[int, bytes]:
    """(log path, token, seconds to sleep, result size) -> (token, result bytes)."""
    path, token, seconds, size = arg
    _log(path, token)
    if seconds > 0:
        time.sleep(seconds)
    return token, b"r" * size


def work2(path: str, token: int, seconds: float = 0.0, size: int = 0) -> tuple[int, bytes]:
    """work() with its arguments spread (apply_async, starmap, submit)."""
    return work((path, token, seconds, size))


def fast(token: int) -> tuple[int, bytes]:
    """Issue #16's kind of task: instant, tiny result, no execution log (the log's write would
    slow the flood down and hide the races it is meant to provoke; values and delivery are
    still checked)."""
    return token, b""


def overrun(path: str, token: int, seconds: float) -> int:
    """Runs past the pool's task_timeout: must fail with TaskTimeoutError."""
    _log(path, token)
    time.sleep(seconds)
    return token


def close_logs() -> None:
    with _lock:
        for fd in _fds.values():
            os.close(fd)
        _fds.clear()
