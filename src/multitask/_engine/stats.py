"""Frozen snapshots returned by ``Pool.statistics()`` (and published to ``multitask ps``/``top``).

They hold plain data only (ints, floats, strings), so they can be written to the monitor registry
as JSON and compared in tests.  A snapshot is taken under the pool's lock and never changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    """The task a worker is running right now."""

    task_id: int
    function: str          # qualified name of the function, e.g. "__main__.crunch"
    started: float         # time.monotonic() in the worker when it started (system-wide clock)
    running_for: float     # seconds, at the moment of the snapshot
    items: int = 1         # how many items the task carries (a map chunk carries several)


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker of a pool."""

    index: int                     # slot number in the pool, stable across replacements
    pid: int | None                # None while the slot's worker is being (re)started
    state: str                     # "starting" | "idle" | "busy" | "stopping" | "dead"
    tasks_done: int                # tasks this process completed (successes and task errors)
    tasks_failed: int              # of those, tasks that raised
    current_task: TaskInfo | None  # what it runs now, None when idle
    started: float                 # time.time() when this worker process started


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool: its workers and its task counters."""

    name: str
    backend: str                   # "process" | "thread" | "ray"
    state: str                     # "running" | "closed" | "terminated"
    processes: int                 # configured number of workers
    workers: tuple[WorkerStatistics, ...]
    submitted: int                 # tasks accepted (a map chunk counts as one task)
    completed: int                 # tasks whose result is known (success or failure)
    failed: int                    # tasks that ended in an exception of any kind
    queued: int                    # accepted but not yet handed to a worker
    running: int                   # handed to a worker and not yet finished
    workers_replaced: int          # workers that died or timed out and were replaced
    created: float = field(default=0.0)  # time.time() when the pool was created

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-ready), as published to the monitor registry."""
        return asdict(self)
