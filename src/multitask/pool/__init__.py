"""Process pools: the stdlib ``multiprocessing.Pool`` API, made crash-proof and fast.

Data flow of one task (process backend; the thread and Ray backends keep the same front end)::

    pool.apply_async(f, args)                       [caller's thread]
      -> ApplyJob + AsyncResult; args serialized now (an unpicklable argument raises here)
      -> backend.submit(job): the job joins the pending queue; workers with room get tasks
         at once -- the pending table is each worker's ``inflight`` deque (task id -> job)
      -> task message into that worker's inbound ring (shared memory, no feeder thread)
    worker process                                  [forked by the pool's zygote]
      -> takes the message, writes "running task N since t" into its slot, runs f
      -> result (or exception + traceback) into the pool's outbound ring
    the caller blocked in get()/next(), else the result thread      [parent]
      -> pops the task from the worker's inflight deque (results come back in send order)
      -> hands that worker more tasks, then completes the AsyncResult (callbacks run here)
    watcher thread                                  [parent]
      -> the zygote reports a worker's exit; a "died" message follows that worker's results
         in the outbound ring, so the result thread fails exactly the task(s) it was running
         (WorkerDiedError / TaskTimeoutError) and re-queues the ones it never started

Because the parent always knows which worker holds which task, a dead worker can never make a
call hang, which is the stdlib's oldest Pool bug (gh-66587).  ``map`` cuts its input into chunks
(a chunk is one task) with guided self-scheduling; see ``multitask._engine.jobs``.
"""

from typing import TYPE_CHECKING, Any

from ._pool import Pool, ThreadPool
from ._results import ApplyResult, AsyncResult, IMapIterator, MapResult

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
