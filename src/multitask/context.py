"""Contexts: one per start method, and the module-level functions bound to the default one.

As in the stdlib, a context object carries a start method (``fork``, ``spawn``,
``forkserver``) and makes every primitive for it: ``ctx.Process``, ``ctx.Queue()``,
``ctx.Lock()``, ``ctx.Pool()``...  ``multitask.get_context(method)`` returns one;
``multitask.set_start_method`` chooses the default, which the module-level names
(``multitask.Queue()``, ``multitask.Process``...) use.

Differences from the stdlib:

* The default on Linux is ``fork`` on every Python version (3.14 moved the stdlib's to
  ``forkserver``, breaking module-level code without a ``__main__`` guard, gh-84559), so
  programs like the notes' run unchanged.  Choose ``spawn``/``forkserver`` explicitly for a
  parent with threads (gh-100228).
* ``cpu_count()`` honours the affinity mask and the cgroup CPU quota.
* ``ctx.Process`` names processes ``Process-N`` whatever the start method.
* Bad arguments raise at the call (``Semaphore(-1)``, ``Value("zz", 1)``...).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import reduction as _reduction
from typing import TYPE_CHECKING, Any, Literal, overload

from . import process
from ._core import _spawn

if TYPE_CHECKING:  # the factories' return types; imported on use at run time (import time)
    import logging
    from _ctypes import _CData
    from ctypes import Array as _CArray
    from ctypes import _SimpleCData, c_char
    from multiprocessing import synchronize as _mps
    from multiprocessing.process import BaseProcess
    from multiprocessing.sharedctypes import (
        Synchronized,
        SynchronizedArray,
        SynchronizedBase,
        SynchronizedString,
    )
    from types import ModuleType

    from . import queues, synchronize
    from .connection import Connection
    from .managers import SyncManager
    from .pool import Pool as _Pool
    from .sharedctypes import _CT, _T, _FloatCode, _IntCode, _LockLike

__all__ = [
    "Array", "Barrier", "BoundedSemaphore", "Condition", "Context", "DefaultContext", "Event",
    "ForkContext", "ForkServerContext", "JoinableQueue", "Lock", "Manager", "Pipe", "Pool",
    "Process", "Queue", "RLock", "RawArray", "RawValue", "Semaphore", "SimpleQueue",
    "SpawnContext", "Value", "active_children", "allow_connection_pickling", "cpu_count",
    "current_process", "freeze_support", "get_all_start_methods", "get_context", "get_logger",
    "get_start_method", "log_to_stderr", "parent_process", "set_executable",
    "set_forkserver_preload", "set_start_method",
]


class Context:
    """Makes processes and primitives for one start method.  Never blocks unless noted."""

    _name: str = ""
    Process: type[process.Process] = process.Process

    # -- processes ---------------------------------------------------------------------------

    @staticmethod
    def current_process() -> BaseProcess:
        """The process object of the calling process."""
        return process.current_process()

    @staticmethod
    def parent_process() -> BaseProcess | None:
        """The parent's process object, or ``None`` in the main process."""
        return process.parent_process()

    @staticmethod
    def active_children() -> list[BaseProcess]:
        """Live children of this process; reaps finished ones."""
        return process.active_children()

    @staticmethod
    def cpu_count() -> int:
        """CPUs this process may use: affinity mask and cgroup quota honoured (stdlib: host)."""
        return _spawn.cpu_count()

    # -- communication -----------------------------------------------------------------------

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:
        """Two connected :class:`multitask.connection.Connection` objects (see ``Pipe``)."""
        from .connection import Pipe

        return Pipe(duplex)

    # The primitives are made for self.get_context(): this context, or for the default context
    # the actual one (fixing the default start method, as the stdlib's BaseContext does).

    def Queue(self, maxsize: int = 0) -> queues.Queue[Any]:
        """A process-safe FIFO queue (``multitask.queues.Queue``)."""
        from .queues import Queue

        return Queue(maxsize, ctx=self.get_context())

    def SimpleQueue(self) -> queues.SimpleQueue[Any]:
        """An unbounded queue without a feeder thread (``multitask.queues.SimpleQueue``)."""
        from .queues import SimpleQueue

        return SimpleQueue(ctx=self.get_context())

    def JoinableQueue(self, maxsize: int = 0) -> queues.JoinableQueue[Any]:
        """A :meth:`Queue` with ``task_done``/``join`` (``multitask.queues.JoinableQueue``)."""
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self.get_context())

    def Pool(self, processes: int | None = None,
             initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = (),
             maxtasksperchild: int | None = None, **kwargs: Any) -> _Pool:
        """A worker pool using this context (``multitask.pool.Pool``; ``kwargs``: its
        keyword-only options, ``task_timeout=``, ``backend=``...)."""
        from .pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild,
                    context=self.get_context(), **kwargs)

    def Manager(self) -> SyncManager:
        """Start and return a :class:`multitask.managers.SyncManager` (a server process)."""
        from .managers import Manager

        return Manager(ctx=self.get_context())

    # -- synchronisation ---------------------------------------------------------------------

    def Lock(self) -> synchronize.Lock:
        """A non-recursive process-shared lock."""
        from .synchronize import Lock

        return Lock(ctx=self.get_context())

    def RLock(self) -> synchronize.RLock:
        """A recursive process-shared lock."""
        from .synchronize import RLock

        return RLock(ctx=self.get_context())

    def Semaphore(self, value: int = 1) -> synchronize.Semaphore:
        """A process-shared semaphore; ``ValueError`` if ``value`` is negative."""
        from .synchronize import Semaphore

        return Semaphore(value, ctx=self.get_context())

    def BoundedSemaphore(self, value: int = 1) -> synchronize.BoundedSemaphore:
        """A semaphore that refuses to be released above its initial value."""
        from .synchronize import BoundedSemaphore

        return BoundedSemaphore(value, ctx=self.get_context())

    def Condition(self, lock: _mps.Lock | _mps.RLock | None = None) -> synchronize.Condition:
        """A process-shared condition variable (over ``lock`` or a new ``RLock``)."""
        from .synchronize import Condition

        return Condition(lock, ctx=self.get_context())

    def Event(self) -> synchronize.Event:
        """A process-shared event."""
        from .synchronize import Event

        return Event(ctx=self.get_context())

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,
                timeout: float | None = None) -> synchronize.Barrier:
        """A process-shared barrier for ``parties`` processes."""
        from .synchronize import Barrier

        return Barrier(parties, action, timeout, ctx=self.get_context())

    # -- shared memory -----------------------------------------------------------------------

    @overload
    def RawValue(self, typecode_or_type: type[_CT], *args: Any) -> _CT: ...
    @overload
    def RawValue(self, typecode_or_type: str, *args: Any) -> Any: ...
    def RawValue(self, typecode_or_type: str | type[_CData], *args: Any) -> Any:
        """A ctypes object in shared memory, without a lock."""
        from .sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    @overload
    def RawArray(self, typecode_or_type: type[_CT],
                 size_or_initializer: int | Sequence[Any]) -> _CArray[_CT]: ...
    @overload
    def RawArray(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...
    def RawArray(self, typecode_or_type: str | type[_CData],
                 size_or_initializer: int | Sequence[Any]) -> Any:
        """A ctypes array in shared memory, without a lock."""
        from .sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    # Value and Array: the overloads of multitask.sharedctypes.Value/Array, without ctx.
    @overload
    def Value(self, typecode_or_type: type[_CT], *args: Any, lock: Literal[False]) -> _CT: ...
    @overload
    def Value(self, typecode_or_type: str, *args: Any, lock: Literal[False]) -> Any: ...
    @overload
    def Value(self, typecode_or_type: type[_SimpleCData[_T]], *args: Any,
              lock: Literal[True] | _LockLike = True) -> Synchronized[_T]: ...
    @overload
    def Value(self, typecode_or_type: type[_CT], *args: Any,
              lock: Literal[True] | _LockLike = True) -> SynchronizedBase[_CT]: ...
    @overload
    def Value(self, typecode_or_type: _IntCode, *args: Any,
              lock: Literal[True] | _LockLike = True) -> Synchronized[int]: ...
    @overload
    def Value(self, typecode_or_type: _FloatCode, *args: Any,
              lock: Literal[True] | _LockLike = True) -> Synchronized[float]: ...
    @overload
    def Value(self, typecode_or_type: Literal["c"], *args: Any,
              lock: Literal[True] | _LockLike = True) -> Synchronized[bytes]: ...
    @overload
    def Value(self, typecode_or_type: Literal["u"], *args: Any,
              lock: Literal[True] | _LockLike = True) -> Synchronized[str]: ...
    @overload
    def Value(self, typecode_or_type: str, *args: Any,
              lock: Literal[True] | _LockLike = True) -> Synchronized[Any]: ...
    @overload
    def Value(self, typecode_or_type: str | type[_CData], *args: Any,
              lock: bool | _LockLike = True) -> Any: ...
    def Value(self, typecode_or_type: str | type[_CData], *args: Any,
              lock: bool | _LockLike = True) -> Any:
        """A ctypes object in shared memory, synchronised by ``lock`` (see ``sharedctypes``)."""
        from .sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    @overload
    def Array(self, typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any], *,
              lock: Literal[False]) -> _CArray[_CT]: ...
    @overload
    def Array(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any], *,
              lock: Literal[False]) -> Any: ...
    @overload
    def Array(self, typecode_or_type: type[c_char] | Literal["c"],
              size_or_initializer: int | Sequence[Any], *,
              lock: Literal[True] | _LockLike = True) -> SynchronizedString: ...
    @overload
    def Array(self, typecode_or_type: type[_SimpleCData[_T]],
              size_or_initializer: int | Sequence[Any], *,
              lock: Literal[True] | _LockLike = True) -> SynchronizedArray[_T]: ...
    @overload
    def Array(self, typecode_or_type: type[_CData], size_or_initializer: int | Sequence[Any],
              *, lock: Literal[True] | _LockLike = True) -> SynchronizedArray[Any]: ...
    @overload
    def Array(self, typecode_or_type: _IntCode, size_or_initializer: int | Sequence[Any], *,
              lock: Literal[True] | _LockLike = True) -> SynchronizedArray[int]: ...
    @overload
    def Array(self, typecode_or_type: _FloatCode, size_or_initializer: int | Sequence[Any], *,
              lock: Literal[True] | _LockLike = True) -> SynchronizedArray[float]: ...
    @overload
    def Array(self, typecode_or_type: Literal["u"], size_or_initializer: int | Sequence[Any],
              *, lock: Literal[True] | _LockLike = True) -> SynchronizedArray[str]: ...
    @overload
    def Array(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any], *,
              lock: Literal[True] | _LockLike = True) -> SynchronizedArray[Any]: ...
    @overload
    def Array(self, typecode_or_type: str | type[_CData],
              size_or_initializer: int | Sequence[Any], *,
              lock: bool | _LockLike = True) -> Any: ...
    def Array(self, typecode_or_type: str | type[_CData],
              size_or_initializer: int | Sequence[Any], *, lock: bool | _LockLike = True) -> Any:
        """A ctypes array in shared memory, synchronised by ``lock`` (see ``sharedctypes``)."""
        from .sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self.get_context())

    # -- misc (same as the stdlib) -----------------------------------------------------------

    @staticmethod
    def freeze_support() -> None:
        """For frozen Windows executables; a no-op elsewhere (as the stdlib)."""
        if sys.platform == "win32" and getattr(sys, "frozen", False):  # pragma: no cover
            from multiprocessing.spawn import freeze_support

            freeze_support()

    @staticmethod
    def get_logger() -> logging.Logger:
        """The ``multiprocessing`` logger (shared with the stdlib)."""
        from multiprocessing import util  # imported on use: it imports subprocess (~2 ms)

        return util.get_logger()

    @staticmethod
    def log_to_stderr(level: int | str | None = None) -> logging.Logger:
        """Turn on logging of the ``multiprocessing`` logger to stderr."""
        from multiprocessing import util

        return util.log_to_stderr(level)

    @staticmethod
    def allow_connection_pickling() -> None:
        """Kept for compatibility: connections are always picklable for child processes."""
        from multiprocessing import connection  # noqa: F401  (registers the reducers)

        from . import connection as _conn  # noqa: F401

    @staticmethod
    def set_executable(executable: str | bytes | os.PathLike[str]) -> None:
        """Python interpreter used by ``spawn``/``forkserver`` children (a path: str, bytes or
        path-like, as in the stdlib)."""
        if not isinstance(executable, str | bytes | os.PathLike):
            raise TypeError(f"executable must be a path (str, bytes or os.PathLike), not "
                            f"{type(executable).__name__}")
        from multiprocessing.spawn import set_executable

        set_executable(os.fsdecode(executable))

    @staticmethod
    def set_forkserver_preload(module_names: Sequence[str]) -> None:
        """Modules the forkserver imports before forking children (a hint, as the stdlib)."""
        if isinstance(module_names, str) or not all(isinstance(m, str) for m in module_names):
            raise TypeError("module_names must be a list of module name strings")
        from multiprocessing.forkserver import set_forkserver_preload

        set_forkserver_preload(list(module_names))

    # -- start methods -----------------------------------------------------------------------

    @overload
    def get_context(self, method: None = None) -> Context: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str | None = None) -> Context: ...
    def get_context(self, method: str | None = None) -> Context:
        """The context for ``method`` (``None``: this one).  ``ValueError`` if unknown."""
        if method is None:
            return self
        return _concrete_context(method)

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool = False) -> str | None: ...
    def get_start_method(self, allow_none: bool = False) -> str | None:
        """This context's start method."""
        return self._name

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        raise ValueError("cannot set the start method of a concrete context; use "
                         "multitask.set_start_method() or get_context(method)")

    @staticmethod
    def get_all_start_methods() -> list[str]:
        """Start methods available here, the default first."""
        methods = ["fork", "spawn"]
        if _reduction.HAVE_SEND_HANDLE:
            methods.append("forkserver")
        return methods

    @property
    def reducer(self) -> ModuleType:
        """The pickling module used to send objects to children (the stdlib's reduction)."""
        return _reduction

    def __repr__(self) -> str:
        return f"<multitask context {self._name!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_concrete_context, (self._name,))


class ForkContext(Context):
    """Children are ``os.fork()`` copies of the parent (the default on Linux)."""

    _name = "fork"
    Process = process.ForkProcess


class SpawnContext(Context):
    """Children are fresh interpreters that import the main module."""

    _name = "spawn"
    Process = process.SpawnProcess


class ForkServerContext(Context):
    """Children are forked by a single-threaded server process started on first use."""

    _name = "forkserver"
    Process = process.ForkServerProcess


_concrete_contexts: dict[str, Context] = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}


@overload
def _concrete_context(method: Literal["fork"]) -> ForkContext: ...
@overload
def _concrete_context(method: Literal["spawn"]) -> SpawnContext: ...
@overload
def _concrete_context(method: Literal["forkserver"]) -> ForkServerContext: ...
@overload
def _concrete_context(method: str) -> Context: ...
def _concrete_context(method: str) -> Context:
    if not isinstance(method, str):
        raise TypeError(f"start method must be a string, not {type(method).__name__}")
    try:
        ctx = _concrete_contexts[method]
    except KeyError:
        raise ValueError(f"unknown start method {method!r}; choose one of "
                         f"{Context.get_all_start_methods()}") from None
    if method not in Context.get_all_start_methods():  # pragma: no cover
        raise ValueError(f"start method {method!r} is not available on this platform")
    return ctx


class DefaultContext(Context):
    """The context behind the module-level names; its start method can be set once."""

    Process = process.Process

    def __init__(self, context: Context) -> None:
        self._default_context = context
        self._actual_context: Context | None = None

    @overload
    def get_context(self, method: None = None) -> Context: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str | None = None) -> Context: ...
    def get_context(self, method: str | None = None) -> Context:
        """The context for ``method``; with ``None`` the default (fixing it, as the stdlib)."""
        if method is None:
            if self._actual_context is None:
                self._actual_context = self._default_context
            return self._actual_context
        return _concrete_context(method)

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Choose the default start method.

        Raises ``RuntimeError`` if it was already chosen or used (a process started) and
        ``force`` is false, ``ValueError`` for an unknown method -- as the stdlib.
        """
        if self._actual_context is not None and not force:
            raise RuntimeError("the start method has already been set (or used); pass "
                               "force=True to change it, or use get_context(method)")
        if method is None and force:
            self._actual_context = None
            return
        if method is None:
            raise ValueError("method must be a start method name, e.g. 'spawn'")
        self._actual_context = self.get_context(method)

    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool = False) -> str | None: ...
    def get_start_method(self, allow_none: bool = False) -> str | None:
        """The default start method; with ``allow_none`` ``None`` if not chosen yet."""
        if self._actual_context is None:
            if allow_none:
                return None
            self._actual_context = self._default_context
        return self._actual_context._name

    # The primitives are Context's methods, made for get_context(): the actual context.  Pipe
    # fixes the start method too (as it always has here; the stdlib's does not).
    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:
        return self.get_context().Pipe(duplex)

    def __repr__(self) -> str:
        return f"<multitask default context ({self.get_start_method(allow_none=True)!r})>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_get_default_context, ())


def _get_default_context() -> DefaultContext:
    return _default_context


# fork is the default on Linux (module-level code without a __main__ guard works, seed 004).
_default_context = DefaultContext(_concrete_contexts["fork"])


def _force_start_method(method: str) -> None:
    """In a child: make the default the parent's method (the stdlib does the same)."""
    _default_context._actual_context = _concrete_contexts[method]


# Module-level names, bound to the default context.
Process = process.Process
current_process = _default_context.current_process
parent_process = _default_context.parent_process
active_children = _default_context.active_children
cpu_count = _default_context.cpu_count
Pipe = _default_context.Pipe
Queue = _default_context.Queue
SimpleQueue = _default_context.SimpleQueue
JoinableQueue = _default_context.JoinableQueue
Pool = _default_context.Pool
Manager = _default_context.Manager
Lock = _default_context.Lock
RLock = _default_context.RLock
Semaphore = _default_context.Semaphore
BoundedSemaphore = _default_context.BoundedSemaphore
Condition = _default_context.Condition
Event = _default_context.Event
Barrier = _default_context.Barrier
Value = _default_context.Value
Array = _default_context.Array
RawValue = _default_context.RawValue
RawArray = _default_context.RawArray
freeze_support = _default_context.freeze_support
get_logger = _default_context.get_logger
log_to_stderr = _default_context.log_to_stderr
allow_connection_pickling = _default_context.allow_connection_pickling
set_executable = _default_context.set_executable
set_forkserver_preload = _default_context.set_forkserver_preload
get_context = _default_context.get_context
set_start_method = _default_context.set_start_method
get_start_method = _default_context.get_start_method
get_all_start_methods = _default_context.get_all_start_methods

# The stdlib exposes its pickling-support module as ``multiprocessing.reducer``.
reducer = _default_context.reducer
