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

# "from m import X as X": an explicit re-export, which type checkers (mypy --strict, pyright)
# require here since they cannot evaluate __all__ below.
from ._core._errors import AuthenticationError as AuthenticationError
from ._core._errors import BufferTooShort as BufferTooShort
from ._core._errors import ClosedError as ClosedError
from ._core._errors import MultitaskError as MultitaskError
from ._core._errors import ProcessError as ProcessError
from ._core._errors import RemoteError as RemoteError
from ._core._errors import SerializationError as SerializationError
from ._core._errors import TaskTimeoutError as TaskTimeoutError
from ._core._errors import TimeoutError as TimeoutError
from ._core._errors import WorkerDiedError as WorkerDiedError

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
    "ProcessPoolExecutor": ".futures",
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
    from .context import Array as Array
    from .context import Barrier as Barrier
    from .context import BoundedSemaphore as BoundedSemaphore
    from .context import Condition as Condition
    from .context import Event as Event
    from .context import JoinableQueue as JoinableQueue
    from .context import Lock as Lock
    from .context import Manager as Manager
    from .context import Pipe as Pipe
    from .context import Pool as Pool
    from .context import Process as Process
    from .context import Queue as Queue
    from .context import RawArray as RawArray
    from .context import RawValue as RawValue
    from .context import RLock as RLock
    from .context import Semaphore as Semaphore
    from .context import SimpleQueue as SimpleQueue
    from .context import Value as Value
    from .context import active_children as active_children
    from .context import allow_connection_pickling as allow_connection_pickling
    from .context import cpu_count as cpu_count
    from .context import current_process as current_process
    from .context import freeze_support as freeze_support
    from .context import get_all_start_methods as get_all_start_methods
    from .context import get_context as get_context
    from .context import get_logger as get_logger
    from .context import get_start_method as get_start_method
    from .context import log_to_stderr as log_to_stderr
    from .context import parent_process as parent_process
    from .context import reducer as reducer
    from .context import set_executable as set_executable
    from .context import set_forkserver_preload as set_forkserver_preload
    from .context import set_start_method as set_start_method
    from .futures import ProcessPoolExecutor as ProcessPoolExecutor
    from .pipeline import Pipeline as Pipeline
    from .pool import AsyncResult as AsyncResult
    from .pool import PoolStatistics as PoolStatistics
    from .pool import WorkerStatistics as WorkerStatistics
    from .shared import shared_array as shared_array


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'multitask' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# The program's fork helper (issue #21): a copy of this program taken now, while it may still
# have no other thread, from which a Pool created after threads have started forks its
# zygote -- safely, and without the forkserver's new interpreter.  See _core/_forkhelper.py.
def _start_fork_helper() -> None:
    from ._core import _forkhelper

    # warm: what a zygote and its workers import (the pool's own process imports the rest),
    # and cloudpickle, which unpickles the functions that __main__ defines after this import
    _forkhelper.start_at_import(warm=(
        "multitask.backends._worker", "multitask.backends._slots", "multitask._core._channel",
        "multitask._core._spawn", "multitask._core._stacks", "resource", "cloudpickle"))


_start_fork_helper()
