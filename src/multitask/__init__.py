"""multitask: the ``multiprocessing`` API, fast and crash-proof.

``import multitask as mp`` runs programs written for the stdlib ``multiprocessing`` unchanged: every
name of ``multiprocessing.__all__`` is here with the same signature.  What differs (always a fix of
a known stdlib defect) is listed in README.md; the architecture is in docs/design.md.

Names are imported on first use (PEP 562), so ``import multitask`` stays cheap -- it matters for
workers started by ``spawn`` -- and NumPy or Ray are imported only by the names that need them.
``tests/test_exports.py`` guards this list against drift.
"""

import importlib as _importlib
import typing as _typing

from ._core._errors import (
    AuthenticationError,
    BufferTooShort,
    ClosedError,
    MultitaskError,
    ProcessError,
    RemoteError,
    SerializationError,
    TaskTimeoutError,
    TimeoutError,
    WorkerDiedError,
)

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    # processes and contexts (the stdlib names, bound to the default context)
    "Process": ".context",
    "current_process": ".context",
    "parent_process": ".context",
    "active_children": ".context",
    "cpu_count": ".context",
    "get_context": ".context",
    "set_start_method": ".context",
    "get_start_method": ".context",
    "get_all_start_methods": ".context",
    "freeze_support": ".context",
    "get_logger": ".context",
    "log_to_stderr": ".context",
    "set_executable": ".context",
    "set_forkserver_preload": ".context",
    "allow_connection_pickling": ".context",
    "reducer": ".context",
    # communication, shared state, synchronisation
    "Pipe": ".context",
    "Queue": ".context",
    "SimpleQueue": ".context",
    "JoinableQueue": ".context",
    "Value": ".context",
    "Array": ".context",
    "RawValue": ".context",
    "RawArray": ".context",
    "Lock": ".context",
    "RLock": ".context",
    "Semaphore": ".context",
    "BoundedSemaphore": ".context",
    "Event": ".context",
    "Condition": ".context",
    "Barrier": ".context",
    "Manager": ".context",
    # pools
    "Pool": ".context",
    "AsyncResult": ".pool",
    "PoolStatistics": ".pool",
    "WorkerStatistics": ".pool",
    # beyond the stdlib
    "shared_array": ".shared",
    "Pipeline": ".pipeline",
}

__all__ = sorted([
    "AuthenticationError",
    "BufferTooShort",
    "ClosedError",
    "MultitaskError",
    "ProcessError",
    "RemoteError",
    "SerializationError",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerDiedError",
    *_LAZY,
])

if _typing.TYPE_CHECKING:  # static names for type checkers and IDEs; at run time they load lazily
    from .context import (
        Array,
        Barrier,
        BoundedSemaphore,
        Condition,
        Event,
        JoinableQueue,
        Lock,
        Manager,
        Pipe,
        Pool,
        Process,
        Queue,
        RawArray,
        RawValue,
        RLock,
        Semaphore,
        SimpleQueue,
        Value,
        active_children,
        allow_connection_pickling,
        cpu_count,
        current_process,
        freeze_support,
        get_all_start_methods,
        get_context,
        get_logger,
        get_start_method,
        log_to_stderr,
        parent_process,
        reducer,
        set_executable,
        set_forkserver_preload,
        set_start_method,
    )
    from .pipeline import Pipeline
    from .pool import AsyncResult, PoolStatistics, WorkerStatistics
    from .shared import shared_array


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'multitask' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
