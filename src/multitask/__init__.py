"""multitask: the ``multiprocessing`` API, fast and crash-proof.

``import multitask as mp`` runs programs written for the stdlib ``multiprocessing`` unchanged.
See README.md for the differences from the stdlib and docs/design.md for the architecture.
"""

from __future__ import annotations

import importlib
from typing import Any

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

# Public name -> module that defines it (DEVELOPMENT: resolved lazily while modules land).
_LAZY: dict[str, str] = {
    "Process": ".context",
    "current_process": ".context",
    "parent_process": ".context",
    "active_children": ".context",
    "cpu_count": ".context",
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
    "Pool": ".context",
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
    "AsyncResult": ".pool",
    "PoolStatistics": ".pool",
    "WorkerStatistics": ".pool",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'multitask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
