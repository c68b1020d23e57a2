"""What every front end shares: one backend, its options checked, and the bookkeeping of jobs.

``multitask.Pool`` (the stdlib Pool API) and ``multitask.ProcessPoolExecutor`` (the
``concurrent.futures`` API) are two front ends on the same engine: each is a :class:`FrontEnd`,
which

* checks the options both APIs share and raises at the call that passed a bad one;
* loads the backend by name (``backend=``, ``$MULTITASK_BACKEND``) and starts it;
* is the :class:`~.jobs.JobOwner` of every job it submits: counts items (submitted, completed,
  failed), records each finished task for :meth:`timeline_records`, and passes a change on to
  ``notify`` (the monitor registry's hot-path call);
* answers :meth:`statistics` for ``multitask ps`` and the program.

The data flow of one call::

    front end method ──► Job (jobs.py) ──► backend.submit(job)
                                              │ workers pull tasks: job.next_task()
    result object ◄── job.task_done() ◄───────┘ (once per task, from a backend thread or a
                         └► FrontEnd.task_finished: counters, timeline, notify

Nothing here knows which API is on top; the front ends add their result objects, their method
names and their shutdown semantics.
"""

from __future__ import annotations

import collections
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._core import _spawn, _stacks
from .._core._errors import ClosedError
from .backend import Backend, load_backend
from .jobs import Job, Task, qualname

if TYPE_CHECKING:
    import concurrent.futures

    from .stats import PoolStatistics

__all__ = ["DEFAULT", "FrontEnd", "FutureResult", "check_callable", "check_chunksize",
           "check_timeout_value", "own_copy"]

#: "use the front end's own task_timeout"
DEFAULT: Any = object()
#: task records kept for timeline()
TIMELINE_MAX = 100_000
#: callables the timeline keeps as they are (their name is read later)
_NAMED_ON_READ = (types.FunctionType, types.BuiltinFunctionType, type)


def check_callable(func: Any, what: str = "func") -> None:
    if not callable(func):
        raise TypeError(f"{what} must be callable, not {type(func).__name__}")


def check_timeout_value(name: str, value: Any) -> float | None:
    """A timeout in seconds (positive) or None; TypeError/ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return float(value)


def check_chunksize(chunksize: Any) -> int | None:
    if chunksize is None:
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be a positive int or None, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, not {chunksize}")
    return chunksize


class FrontEnd:
    """The shared half of Pool and ProcessPoolExecutor (see the module docstring).

    ``processes`` is the number of workers (None: :func:`multitask.cpu_count`); ``context`` a
    resolved multitask context; ``kind`` names the API in messages ("Pool", "executor").
    Raises TypeError/ValueError for a bad option, ImportError for a backend whose extra is not
    installed, and whatever the backend's ``start()`` raises.
    """

    kind = "Pool"

    def __init__(self, *, processes: int | None, initializer: Callable[..., object] | None,
                 initargs: Iterable[Any], maxtasksperchild: int | None, context: Any,
                 task_timeout: float | None, backend: str | None, nice: int | None,
                 cpu_affinity: Iterable[int] | None, name: str, notify: Callable[[], None],
                 max_memory_per_child: int | None = None,
                 maxtasksperchild_jitter: float = 0.0,
                 backend_options: dict[str, Any] | None = None,
                 maxtasksperchild_name: str = "maxtasksperchild") -> None:
        if processes is None:
            processes = _spawn.cpu_count()
        if isinstance(processes, bool) or not isinstance(processes, int):
            raise TypeError(f"processes must be an int, not {type(processes).__name__}")
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None:
            if isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int):
                raise TypeError(f"{maxtasksperchild_name} must be a positive int or None")
            if maxtasksperchild < 1:
                raise ValueError(f"{maxtasksperchild_name} must be a positive int or None")
        if max_memory_per_child is not None and (
                isinstance(max_memory_per_child, bool)
                or not isinstance(max_memory_per_child, int)):
            raise TypeError("max_memory_per_child must be a number of bytes (int) or None")
        if max_memory_per_child is not None and max_memory_per_child < 1 << 20:
            raise ValueError("max_memory_per_child is in bytes and must be at least 1 MiB "
                             f"(a Python worker alone uses ~10 MiB), not {max_memory_per_child}")
        if isinstance(maxtasksperchild_jitter, bool) or not isinstance(
                maxtasksperchild_jitter, int | float):
            raise TypeError("maxtasksperchild_jitter must be a number between 0 and 1")
        if not 0 <= maxtasksperchild_jitter < 1:
            raise ValueError("maxtasksperchild_jitter must be >= 0 and < 1 (the largest share "
                             f"of maxtasksperchild a worker may restart early), not "
                             f"{maxtasksperchild_jitter}")
        self._task_timeout = check_timeout_value("task_timeout", task_timeout)
        nice = _spawn.validate_nice(nice)
        _spawn.check_nice_allowed(nice)
        affinity = _spawn.validate_cpu_affinity(cpu_affinity)
        backend_cls = load_backend(backend)

        self._processes = processes
        self.name = name
        self._state_box = ["running"]   # shared with the finalizer, which must not hold self
        self._created = time.time()
        self._counts_lock = threading.Lock()
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._timeline: collections.deque[tuple[Any, ...]] = collections.deque(
            maxlen=TIMELINE_MAX)
        self._notify = notify
        self._backend: Backend = backend_cls(
            processes=processes, initializer=initializer, initargs=tuple(initargs),
            maxtasksperchild=maxtasksperchild, context=context, task_timeout=self._task_timeout,
            nice=nice, cpu_affinity=affinity,
            options=dict(backend_options or {}), on_change=notify,
            max_memory_per_child=max_memory_per_child,
            maxtasksperchild_jitter=float(maxtasksperchild_jitter))
        _stacks.install()   # `multitask ps --stacks` (once per process; never raises)
        self._backend.start()
        # Blocked callers read results themselves where the backend allows it (see lead()).
        self._lead = self._backend.lead
        self._kick = self._backend.kick

    @property
    def _state(self) -> str:
        return self._state_box[0]

    @_state.setter
    def _state(self, value: str) -> None:
        self._state_box[0] = value

    def _check_running(self) -> None:
        if self._state != "running":
            raise ClosedError(f"{self.kind} not running (it is {self._state})")

    def _timeout_for(self, task_timeout: Any) -> float | None:
        if task_timeout is DEFAULT:
            return self._task_timeout
        return check_timeout_value("task_timeout", task_timeout)

    def _count(self, n: int) -> None:
        with self._counts_lock:
            self._submitted += n

    # -- JobOwner (called by backend and feeder threads; cheap, never blocks) -----------------
    def task_finished(self, job: Job, task: Task, ok: bool, started: float, finished: float,
                      worker: int, pid: int | None) -> None:
        """Called once per task by the backend (before the result is delivered)."""
        self.items_finished(job, task, task.n, 0 if ok else task.n, started, finished, worker,
                            pid)

    def items_finished(self, job: Job, task: Task, n: int, failed: int, started: float,
                       finished: float, worker: int, pid: int | None) -> None:
        """``n`` items of ``task`` finished, ``failed`` of them failed (a whole task, or part of
        an item group): counters, the timeline, the registry."""
        with self._counts_lock:
            self._completed += n
            self._failed += failed
        # A plain function is kept and named when the timeline is read (off this hot path);
        # any other callable by its name, so that a record does not keep a bound method's
        # object or a partial's arguments alive.
        fn = job.fn
        label = fn if type(fn) in _NAMED_ON_READ else job.function_name
        now = time.monotonic()
        self._timeline.append((task.id, worker, pid or 0, label, job.created,
                               started or task.dispatched, finished or now, not failed, n,
                               task.dispatched, now))
        self._notify()

    def count_submitted(self, n: int) -> None:
        """Items of a lazily fed input are counted as the feeder reads them; a job withdrawn
        before it ran (a cancelled future) counts ``-n``."""
        with self._counts_lock:
            self._submitted += n

    def wake_backend(self) -> None:
        self._backend.wake()

    # -- observation ----------------------------------------------------------------------------
    def statistics(self) -> PoolStatistics:
        """A frozen snapshot: every worker's pid, state and current task, and task counters.

        Counters are in *items*: a map over 1000 inputs counts 1000.
        """
        from .stats import PoolStatistics  # dataclasses: imported when first asked for

        workers = self._backend.worker_statistics()
        running = sum(w.current_task.items for w in workers if w.current_task is not None)
        with self._counts_lock:
            submitted, completed, failed = self._submitted, self._completed, self._failed
        return PoolStatistics(
            name=self.name, backend=self._backend.name, state=self._state,
            processes=self._processes, workers=workers, submitted=submitted,
            completed=completed, failed=failed,
            queued=max(0, submitted - completed - running), running=running,
            workers_replaced=self._backend.workers_replaced, created=self._created)

    def timeline_records(self) -> list[tuple[Any, ...]]:
        """The task records (see ``Pool.timeline``), oldest first, the function as its
        ``module.qualname``."""
        return [r if type(r[3]) is str else (*r[:3], qualname(r[3]), *r[4:])
                for r in list(self._timeline)]


class FutureResult:
    """Adapts a ``concurrent.futures.Future`` to the result interface jobs complete."""

    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future

    def _claim(self) -> bool:
        """A worker takes the task (under the backend's lock; never blocks): the future is
        running now, or False if it was cancelled before (the task is then never run)."""
        try:
            return self.future.set_running_or_notify_cancel()
        except RuntimeError:   # already settled by someone else: nothing to run it for
            return False

    def _set(self, ok: bool, value: Any) -> None:
        fut = self.future
        # The state is read without the future's lock (each acquisition is ~0.3 us of a
        # ~25 us round trip): a stale read is caught below, where the lock is taken.
        state = fut._state
        if state != "RUNNING":
            if state != "PENDING":
                return   # settled or cancelled
            # a future terminate() fails before it ran is claimed here
            try:
                if not fut.set_running_or_notify_cancel():
                    return
            except RuntimeError:
                return
        try:
            if ok:
                fut.set_result(value)
            else:
                # Future.result() re-raises the object as it is: each future gets its own
                # (terminate() fails many with one; see AsyncResult._set).
                fut.set_exception(own_copy(value))
        except Exception as exc:   # InvalidStateError: settled meanwhile (cancel_running);
            # named, not imported: concurrent.futures costs ~12 ms to import (Pool start-up)
            if type(exc).__name__ != "InvalidStateError":
                raise


def own_copy(exc: BaseException) -> BaseException:
    """``exc`` the first time it is handed out, a shallow copy (same cause, context and
    original traceback) every time after."""
    try:
        if not getattr(exc, "_mt_handed_out", False):
            exc._mt_handed_out = True   # type: ignore[attr-defined]
            exc._mt_tb = exc.__traceback__   # type: ignore[attr-defined]
            return exc
        import copy

        dup = copy.copy(exc)
    except Exception:   # an exception type that cannot be copied (or takes no attribute)
        return exc
    dup.__cause__, dup.__context__ = exc.__cause__, exc.__context__
    dup.__suppress_context__ = exc.__suppress_context__
    return dup.with_traceback(getattr(exc, "_mt_tb", exc.__traceback__))
