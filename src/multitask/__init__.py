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
_LAZY: dict[str, str] = {}

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
