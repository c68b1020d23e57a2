"""Process pools: the stdlib ``multiprocessing.Pool`` API, made crash-proof and fast.

The front end's part of one task (the same for every backend)::

    pool.apply_async(f, args)                         [caller's thread]
      -> check the arguments; ApplyJob (multitask._engine.jobs) + AsyncResult (_results)
      -> backend.prepare(job): a backend that pickles does it now (unpicklable args raise here)
      -> backend.submit(job)                           [the backend runs the task: see its module]
    backend thread (or the caller blocked in get(), where the backend lets it lead)
      -> job.task_done(task, ok, value, ...) once per task
           -> Pool.task_finished (counters, timeline, monitor)  [the job's JobOwner]
           -> AsyncResult._set -> get() returns / raises; callbacks run here

What happens between ``submit`` and ``task_done`` -- rings, the zygote, a dead worker's tasks --
is drawn once, where the code is: ``multitask/backends/process/__init__.py`` (the thread and
Ray backends have their own, shorter, in their modules).

Because a backend always knows which worker holds which task, a dead worker can never make a
call hang, which is the stdlib's oldest Pool bug (gh-66587).  ``map`` cuts its input into chunks
(a chunk is one task) with guided self-scheduling; see ``multitask._engine.jobs``.
"""

from typing import TYPE_CHECKING, Any

from .._engine.results import ApplyResult, AsyncResult, IMapIterator, MapResult
from ._pool import Pool, ThreadPool

if TYPE_CHECKING:
    from .._engine.stats import PoolStatistics, TaskInfo, WorkerStatistics

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "MapResult",
    "Pool",
    "PoolStatistics",
    "TaskInfo",
    "ThreadPool",
    "WorkerStatistics",
]


def __getattr__(name: str) -> Any:
    # The statistics dataclasses are imported when first named: dataclasses costs ~10 ms of
    # every program's first Pool() otherwise.
    if name in ("PoolStatistics", "TaskInfo", "WorkerStatistics"):
        from .._engine import stats as _stats

        return getattr(_stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
