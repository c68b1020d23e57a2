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
    │   └── WorkerDiedError         the worker running a task died (.pid, .exitcode, .signal)
    ├── RemoteError                 a task raised; carries the worker's formatted traceback
    ├── SerializationError          an argument/result/exception could not be (un)pickled
    │                               (also pickle.PicklingError)
    └── ClosedError                 "you closed it": the object was closed/terminated by its
                                    owner (also ValueError, which the stdlib raises there)

"You closed it" (:class:`ClosedError`) is kept apart from "it broke" (:class:`WorkerDiedError`,
:class:`SerializationError`).  All of them pickle and unpickle with their attributes, because they
cross process boundaries.
"""

from __future__ import annotations

import builtins
import multiprocessing
import pickle
import signal as _signal

__all__ = [
    "AuthenticationError",
    "BufferTooShort",
    "ClosedError",
    "MultitaskError",
    "ProcessError",
    "RemoteError",
    "RemoteTraceback",
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

    def __reduce__(self):
        return (_rebuild, (type(self), self.args, {"timeout": self.timeout, "pid": self.pid}))


def signal_of(exitcode: int | None) -> _signal.Signals | None:
    """The signal a ``Process.exitcode`` says killed the process (negative code), else None."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return _signal.Signals(-exitcode)
    except ValueError:
        return None


class WorkerDiedError(ProcessError):
    """The worker process running a task died before returning its result.

    ``pid`` is the worker's pid, ``exitcode`` follows ``Process.exitcode`` conventions (negative
    signal number when killed by a signal), ``signal`` is the :class:`signal.Signals` member that
    killed it, or ``None`` if it exited by itself (``os._exit``, ``sys.exit`` in native code...).
    """

    def __init__(self, message: str | None = None, *, pid: int | None = None,
                 exitcode: int | None = None) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal_of(exitcode)
        if message is None:
            how = (f"killed by {self.signal.name}" if self.signal is not None
                   else f"exited with code {exitcode}")
            message = f"worker process {pid} died while running the task ({how})"
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild, (type(self), self.args, {"pid": self.pid, "exitcode": self.exitcode}))


class RemoteTraceback(Exception):
    """Holds a worker's formatted traceback; attached as ``__cause__`` of a re-raised error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb


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

    def __reduce__(self):
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


def _rebuild(cls: type[BaseException], args: tuple, attrs: dict) -> BaseException:
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
