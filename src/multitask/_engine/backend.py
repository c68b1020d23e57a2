"""The backend contract: what a front end (Pool, and later the Executor) may ask of the thing
that owns the workers, and what every backend must do.

Backends are modules behind the :class:`Backend` interface, loaded by name (:func:`load_backend`)
so that optional extras (Ray) are only imported when asked for (the anyio ``_backends`` layout);
the implementations live in :mod:`multitask.backends`.

The contract:

* the front end creates :class:`~multitask._engine.jobs.Job` objects (giving each a
  :class:`~multitask._engine.jobs.JobOwner`: itself) and calls :meth:`Backend.submit` with each;
  the backend pulls tasks from jobs with ``job.next_task()`` when a worker has room, so chunk
  sizes adapt to what has been measured so far;
* the backend reports every task exactly once, through ``task.job.task_done(task, ok, value,
  started, finished, worker, pid)`` (or ``job.items_done`` for an item group) -- ``ok=False``
  with an exception as ``value`` for an error, a dead worker (:class:`~multitask.WorkerDiedError`)
  or a timeout (:class:`~multitask.TaskTimeoutError`); it never drops a task silently;
* it calls ``on_change()`` (given by the front end; cheap, never blocks) when something an
  observer cares about changed: a worker started, died, was replaced;
* ``close``/``join``/``terminate`` follow the stdlib Pool's meaning.
"""

from __future__ import annotations

import abc
import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jobs import Job, Task
    from .stats import WorkerStatistics

__all__ = ["BACKENDS", "Backend", "default_backend", "load_backend"]

BACKENDS: dict[str, str] = {
    "process": "multitask.backends.process",
    "thread": "multitask.backends.thread",
    "ray": "multitask.backends.ray",
}


class Backend(abc.ABC):
    """The worker side of a front end (a Pool).  One instance per Pool.

    ``on_change``: called (cheap, never blocks, never raises) when a worker starts, dies or is
    replaced, so that an observer (the monitor registry) can publish a new snapshot.
    ``options``: the backend's own keyword options (``Pool(**options)``); a backend raises
    ``TypeError`` for one it does not know.
    """

    #: the name used in ``Pool(backend=...)``
    name: str = ""
    #: the backend's own keyword options (any other raises TypeError)
    option_names: frozenset[str] = frozenset()

    def __init__(self, *, processes: int, initializer: Callable[..., Any] | None,
                 initargs: tuple[Any, ...], maxtasksperchild: int | None, context: Any,
                 task_timeout: float | None, nice: int | None,
                 cpu_affinity: Any, options: dict[str, Any],
                 max_memory_per_child: int | None = None,
                 maxtasksperchild_jitter: float = 0.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.processes = processes
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasksperchild = maxtasksperchild
        self.context = context
        self.task_timeout = task_timeout
        self.nice = nice
        self.cpu_affinity = cpu_affinity
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            raise TypeError(f"unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))} (the {self.name} backend takes "
                            f"{sorted(self.option_names) or 'no options of its own'})")
        self.options = options
        self.max_memory_per_child = max_memory_per_child
        self.maxtasksperchild_jitter = maxtasksperchild_jitter
        self.on_change = on_change
        self.owner_pid = os.getpid()

    def forked_copy(self) -> bool:
        """True in a child forked from the process that made this backend (``os.fork()``, a
        stdlib fork ``Process`` or ``Manager``).  The child's copy shares the parent's pipes
        and rings, so it must not act on the parent's workers: close/join/terminate do
        nothing there, and submitting raises.  (A child's exit ran its copy's finalizer and
        the executor's exit hook, which shut the *parent's* pool down, or hung it.)"""
        return os.getpid() != self.owner_pid

    def refuse_forked_copy(self) -> None:
        """Raise :class:`multitask.ProcessError` in a forked child (see ``forked_copy``)."""
        if self.forked_copy():
            from .._core._errors import ProcessError

            raise ProcessError(f"this pool belongs to process {self.owner_pid}; a child forked "
                               f"from it cannot use it (make a pool in the child)")

    def new_quota(self) -> int | None:
        """Tasks a new worker may run (``maxtasksperchild``), cut by a random share of at most
        ``maxtasksperchild_jitter`` so that workers started together do not all restart
        together (each restart is a fork and an initializer; all at once, a stall)."""
        n = self.maxtasksperchild
        if n is None or self.maxtasksperchild_jitter <= 0:
            return n
        import random

        return max(1, n - random.randint(0, int(n * self.maxtasksperchild_jitter)))

    @abc.abstractmethod
    def start(self) -> None:
        """Start the workers.  Raises if they cannot be started."""

    def prepare(self, job: Job) -> None:
        """Called in the submitting thread before ``submit`` for apply-style jobs.

        A backend that must serialize arguments does it here, so that an argument that cannot be
        sent raises :class:`multitask.SerializationError` from the call that passed it.
        """
        return None

    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Accept a job; its tasks are pulled with ``job.next_task()`` as workers have room.

        Never blocks on workers.  Called by any thread of the parent.
        """

    @abc.abstractmethod
    def wake(self) -> None:
        """A job that had no task ready (its input is fed lazily) has some now: dispatch."""

    @abc.abstractmethod
    def close(self) -> None:
        """No new jobs will come; workers exit once every accepted task is done."""

    @abc.abstractmethod
    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to exit after close()/terminate(); True if they did."""

    @abc.abstractmethod
    def terminate(self, _reason: BaseException | None = None) -> None:
        """Stop the workers now; tasks not finished are failed with ``_reason`` (default: a
        ClosedError).  Never hangs."""

    #: the error that broke the backend (its workers cannot run tasks any more), or None
    _broken: BaseException | None = None

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    @abc.abstractmethod
    def worker_statistics(self) -> tuple[WorkerStatistics, ...]:
        """A snapshot of every worker slot."""

    #: workers that died or timed out and were replaced (backends increment it)
    _replaced: int = 0

    #: True if the backend runs MODE_ITEMS tasks (groups of items with per-item outcomes)
    item_groups: bool = False


    @property
    def workers_replaced(self) -> int:
        return self._replaced

    def when_running(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (cheap; never raises) once the workers are running -- from a thread of
        the backend's own where it has one, so that a front end's background set-up (the
        monitor's registration starts a thread) does not delay the call that made the pool.
        This default calls it at once, in the calling thread."""
        fn()

    def cancel_task(self, task: Task) -> bool:
        """Stop ``task``, which a worker holds, by stopping that worker (it is replaced); the
        task is then reported failed as usual (its result is withdrawn by the caller first).
        True if it will be stopped; False if this backend cannot stop a running task, or the
        task is not (or no longer) the one its worker runs or is about to run.  Never blocks."""
        return False

    def item_seconds_hint(self, fn: Callable[..., Any]) -> float:
        """Seconds per item this backend measured for ``fn`` in earlier calls (0.0: none), so
        that a new map of a function already seen is chunked by its cost from the start."""
        return 0.0

    def lead(self, until: Callable[[], bool], deadline: float | None) -> bool:
        """Let the calling thread read results itself until ``until()`` is true or the
        monotonic ``deadline`` passes.  Returns False at once if this backend (or this moment)
        does not allow it -- the caller then waits on its result as usual.  The process backend
        overrides it (leader/follower, see its module docstring)."""
        return False

    def kick(self) -> None:
        """A result was completed outside the result-reading path: wake a thread that
        :meth:`lead` has blocked reading results, so it re-checks what it waits for.  Backends
        that never let callers lead have nobody to wake."""
        return None

    def notify_pool(self) -> None:
        """Something observers care about changed (a worker started, died...): call the front
        end's ``on_change``.  Cheap; never blocks."""
        if self.on_change is not None:
            self.on_change()


def default_backend() -> str:
    """The backend used when ``Pool(backend=None)``: ``$MULTITASK_BACKEND`` or ``"process"``."""
    return os.environ.get("MULTITASK_BACKEND", "").strip().lower() or "process"


def load_backend(name: str | None) -> type[Backend]:
    """Import the backend module for ``name`` and return its Backend class.

    Raises ValueError for an unknown name and ImportError (with the extra to install) when the
    backend's optional dependency is missing.
    """
    if name is None:
        name = default_backend()
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, not {type(name).__name__}")
    module_name = BACKENDS.get(name.lower())
    if module_name is None:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module = importlib.import_module(module_name)
    cls: type[Backend] = module.BACKEND
    return cls
