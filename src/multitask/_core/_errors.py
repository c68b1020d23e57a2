"""The one exception hierarchy of multitask.

Every error multitask raises on purpose derives from :class:`MultitaskError`.  Where the stdlib
``multiprocessing`` has an exception of the same meaning, ours *also* derives from it, so code
written against ``multiprocessing`` keeps catching what it caught before (``except
multiprocessing.TimeoutError`` still works after ``import multitask as mp``)::

    MultitaskError
    ├── ProcessError                (also multiprocessing.ProcessError)
    │   ├── BufferTooShort          (also multiprocessing.BufferTooShort)
    │   ├── AuthenticationError     (also multiprocessing.AuthenticationError)
    │   ├── TimeoutError            (also multiprocessing.TimeoutError and builtins.TimeoutError)
    │   │   └── TaskTimeoutError    a task ran past its ``task_timeout``; its worker was replaced
    │   └── WorkerDiedError         the worker running a task died (.cause, .task, .rss_peak,
    │                               .pid, .exitcode, .signal); also
    │                               concurrent.futures.process.BrokenProcessPool (see below)
    ├── RemoteError                 a task raised; carries the worker's formatted traceback
    ├── SerializationError          an argument/result/exception could not be (un)pickled
    │                               (also pickle.PicklingError)
    └── ClosedError                 "you closed it": the object was closed/terminated by its
                                    owner (also ValueError, which the stdlib raises there)

``WorkerDiedError`` also derives from ``concurrent.futures.process.BrokenProcessPool`` (and so
``BrokenExecutor``), so that ``except BrokenProcessPool`` code keeps working with
``multitask.ProcessPoolExecutor``.  Importing that stdlib module costs ~13 ms (it loads much of
``multiprocessing``), too much for ``import multitask`` in every spawned worker, so the base is
added when the module is loaded anyway: at the first ``WorkerDiedError`` made once a program
imported it (:func:`adopt_broken_process_pool`), or when a program takes ``BrokenProcessPool``
from :mod:`multitask.futures`.  A program can only name ``BrokenProcessPool`` in an ``except``
after importing it, so every ``except BrokenProcessPool`` sees the base.  :mod:`multitask.futures`
itself does not import it either (~11 ms of an executor's start-up, E4): it makes the error a
``concurrent.futures.BrokenExecutor`` at once (:func:`adopt_broken_executor`), which the first
adoption then narrows to ``BrokenProcessPool``.

"You closed it" (:class:`ClosedError`) is kept apart from "it broke" (:class:`WorkerDiedError`,
:class:`SerializationError`).  All of them pickle and unpickle with their attributes, because they
cross process boundaries.
"""

from __future__ import annotations

import builtins
import multiprocessing
import pickle
import signal as _signal
import sys
from typing import Any

__all__ = [
    "AuthenticationError",
    "BufferTooShort",
    "ClosedError",
    "MultitaskError",
    "ProcessError",
    "RemoteError",
    "remote_traceback",
    "SerializationError",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerDiedError",
]


class MultitaskError(Exception):
    """Root of every exception multitask raises deliberately."""


class ProcessError(MultitaskError, multiprocessing.ProcessError):
    """A process-level failure (the stdlib's ``ProcessError``)."""


class BufferTooShort(ProcessError, multiprocessing.BufferTooShort):
    """``Connection.recv_bytes_into`` was given a buffer smaller than the message."""


class AuthenticationError(ProcessError, multiprocessing.AuthenticationError):
    """A connection (e.g. to a Manager) failed the HMAC challenge."""


class TimeoutError(ProcessError, multiprocessing.TimeoutError, builtins.TimeoutError):
    """A blocking call ran out of time (``AsyncResult.get(timeout)``, ``Queue.get(timeout)``...).

    Unlike the stdlib's, it is also a builtin :class:`TimeoutError`, so ``except TimeoutError``
    catches it without importing anything.
    """


class TaskTimeoutError(TimeoutError):
    """A task exceeded its ``task_timeout``; the worker running it was stopped and replaced."""

    def __init__(self, message: str = "task timed out", *, timeout: float | None = None,
                 pid: int | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, {"timeout": self.timeout, "pid": self.pid}))


def signal_of(exitcode: int | None) -> _signal.Signals | None:
    """The signal a ``Process.exitcode`` says killed the process (negative code), else None."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return _signal.Signals(-exitcode)
    except ValueError:
        return None


# Signals of a crash in the process itself (faulthandler catches these and dumps the stack).
_CRASH_SIGNALS = frozenset({"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"})
_CAUSES = ("oom", "segfault", "signal", "exit", "exception", "unknown")


def death_cause(exitcode: int | None) -> str:
    """The cause a bare exit status tells (``"oom"`` and ``"exception"`` need more evidence:
    the kernel's OOM counter, the worker's crash report)."""
    sig = signal_of(exitcode)
    if sig is not None:
        return "segfault" if sig.name in _CRASH_SIGNALS else "signal"
    if exitcode is None or exitcode == 255:
        return "unknown"
    return "exit"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class WorkerDiedError(ProcessError):
    """The worker process running a task died before returning its result.

    Attributes (all may be None where unknown; the Ray backend knows fewer):

    * ``pid``, ``worker`` (the pool's slot index), ``exitcode`` (``Process.exitcode``
      conventions: negative signal number when killed by a signal), ``signal`` (the
      :class:`signal.Signals` member that killed it);
    * ``cause``: ``"oom"`` (SIGKILLed while the kernel's OOM-kill count rose: out of memory),
      ``"segfault"`` (SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT: a crash, usually in native code; the
      worker's Python stack at the crash is this error's ``__cause__``), ``"signal"`` (killed by
      another signal from outside the pool, e.g. ``kill -9``), ``"exit"`` (``os._exit`` or native
      code exiting), ``"exception"`` (the worker's own loop failed; its traceback is the
      ``__cause__``), ``"unknown"`` (its exit status was taken by an ``os.wait()`` elsewhere);
    * ``task``: the function and a bounded ``repr`` of the arguments it was running;
    * ``rss_peak``: the worker's peak resident memory in bytes (from ``wait4``).

    The message says all of it in one line.
    """

    def __init__(self, message: str | None = None, *, pid: int | None = None,
                 exitcode: int | None = None, cause: str | None = None,
                 task: str | None = None, rss_peak: int | None = None,
                 worker: int | None = None) -> None:
        if not _adopted and "concurrent.futures.process" in sys.modules:
            adopt_broken_process_pool()
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal_of(exitcode)
        self.cause = cause or death_cause(exitcode)
        self.task = task
        self.rss_peak = rss_peak
        self.worker = worker
        if message is None:
            message = self._describe()
        super().__init__(message)

    def _describe(self) -> str:
        sig = self.signal.name if self.signal is not None else None
        how = {
            "oom": f"was killed by the kernel's OOM killer ({sig or 'SIGKILL'}: out of memory)",
            "segfault": f"crashed ({sig}, usually a fault in native code; its stack at the "
                        f"crash is attached)",
            "signal": f"was killed by {sig} from outside the pool",
            "exit": f"exited with code {self.exitcode} (os._exit or native code)",
            "exception": "stopped: its worker loop raised (traceback attached)",
        }.get(self.cause, "died (its exit status was taken by another os.wait())")
        who = "worker" if self.worker is None else f"worker {self.worker}"
        text = f"{who} (pid {self.pid}) {how}"
        if self.task:
            text += f" while running {self.task}"
        if self.rss_peak:
            text += f"; peak RSS {_human_bytes(self.rss_peak)}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, {
            "pid": self.pid, "exitcode": self.exitcode, "cause": self.cause,
            "task": self.task, "rss_peak": self.rss_peak, "worker": self.worker}))


def remote_traceback(tb: str) -> BaseException:
    """A worker's formatted traceback as an exception, attached as ``__cause__`` of the error
    re-raised in the parent: the stdlib's ``multiprocessing.pool.RemoteTraceback`` itself
    (``.tb``; ``str()`` is the text), so code -- and CPython's own test suite -- that checks
    ``type(exc.__cause__) is multiprocessing.pool.RemoteTraceback`` works unchanged.  Imported on
    the first failure (~11 ms of modules a pool that never fails should not load).
    ``multitask._core._errors.RemoteTraceback`` names the same class."""
    from multiprocessing.pool import RemoteTraceback as cls  # type: ignore[attr-defined]

    exc: BaseException = cls(tb)
    return exc


def __getattr__(name: str) -> object:
    if name == "RemoteTraceback":   # the stdlib's class, loaded on first use (see above)
        from multiprocessing.pool import RemoteTraceback  # type: ignore[attr-defined]

        return RemoteTraceback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RemoteError(MultitaskError):
    """A task raised an exception that could not be re-created in the parent as itself.

    Normally the task's own exception is re-raised (with :class:`RemoteTraceback` as its
    ``__cause__``); this wrapper is used only when the original cannot cross the process boundary.
    ``type_name`` names the original exception type, ``remote_traceback`` is its traceback text.
    """

    def __init__(self, message: str, *, type_name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args,
                           {"type_name": self.type_name,
                            "remote_traceback": self.remote_traceback}))


class SerializationError(MultitaskError, pickle.PicklingError):
    """An argument, result or exception could not be pickled or unpickled.

    Raised on the one task concerned (never a hang); the message describes the original object and
    the pickling error.
    """


class ClosedError(MultitaskError, ValueError):
    """The object was closed (or its pool terminated) by its owner, so it cannot be used.

    Also a :class:`ValueError`, which is what the stdlib raises for a closed queue or pool.
    """


def _rebuild(cls: type[BaseException], args: tuple[Any, ...],
             attrs: dict[str, Any]) -> BaseException:
    """Unpickle helper: re-create an exception without calling ``__init__`` with kwargs."""
    exc = cls.__new__(cls)
    exc.args = args
    for key, value in attrs.items():
        setattr(exc, key, value)
    if isinstance(exc, WorkerDiedError):
        exc.signal = None
        if exc.exitcode is not None and exc.exitcode < 0:
            try:
                exc.signal = _signal.Signals(-exc.exitcode)
            except ValueError:
                pass
    return exc


_adopted = False


def adopt_broken_executor() -> None:
    """Make :class:`WorkerDiedError` a ``concurrent.futures.BrokenExecutor`` (cheap: that
    module is loaded by whoever calls this), until :func:`adopt_broken_process_pool` replaces
    the base with its subclass ``BrokenProcessPool``."""
    from concurrent.futures import BrokenExecutor

    if not issubclass(WorkerDiedError, BrokenExecutor):
        WorkerDiedError.__bases__ = (*WorkerDiedError.__bases__, BrokenExecutor)


def adopt_broken_process_pool() -> None:
    """Make :class:`WorkerDiedError` a ``concurrent.futures.process.BrokenProcessPool`` too
    (imports that module; see the module docstring for why this is not done at import)."""
    global _adopted
    if _adopted:
        return
    from concurrent.futures import BrokenExecutor
    from concurrent.futures.process import BrokenProcessPool

    if not issubclass(WorkerDiedError, BrokenProcessPool):
        # BrokenExecutor (adopt_broken_executor) gives way to its subclass: both in the bases
        # would be an inconsistent MRO
        bases = tuple(b for b in WorkerDiedError.__bases__ if b is not BrokenExecutor)
        WorkerDiedError.__bases__ = (*bases, BrokenProcessPool)
    _adopted = True
