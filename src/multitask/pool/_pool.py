"""The Pool front end: the stdlib API, results, progress, statistics.  See ``multitask.pool``."""

from __future__ import annotations

import itertools
import os
import sys
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .._engine.backend import Backend
from .._engine.frontend import (
    DEFAULT,
    FrontEnd,
    FutureResult,
    check_callable,
    check_chunksize,
    check_timeout_value,
)
from .._engine.jobs import (
    MODE_ITEMS,
    MODE_MAP,
    MODE_STARMAP,
    ApplyJob,
    Job,
    MapJob,
    Task,
    materialize,
)
from .._engine.progress import ProgressBar, check_progress
from .._engine.results import AsyncResult, IMapIterator, MapResult

if TYPE_CHECKING:
    import concurrent.futures

P = ParamSpec("P")
T = TypeVar("T")

_DEFAULT: Any = DEFAULT          # "use the pool's task_timeout"
_pool_numbers = itertools.count(1)
_check_callable = check_callable
_check_chunksize = check_chunksize
_check_timeout_value = check_timeout_value


class Pool(FrontEnd):
    """A pool of worker processes with the stdlib ``multiprocessing.Pool`` API.

    ``Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None,
    *, task_timeout=None, backend=None, nice=None, cpu_affinity=None, name=None)``

    ``processes`` defaults to :func:`multitask.cpu_count` (which, unlike the stdlib's, honours the
    CPU affinity mask and the cgroup quota of a container).  Differences from the stdlib, all
    fixes of its known defects:

    * a worker that dies mid-task (SIGKILL, ``os._exit``, segfault, OOM) fails exactly its task
      with :class:`multitask.WorkerDiedError` within a second and is replaced (the stdlib hangs
      forever, gh-66587);
    * ``task_timeout`` (here or per call): an overdue task raises
      :class:`multitask.TaskTimeoutError`, its worker is replaced;
    * an exception or result that cannot be pickled or unpickled fails that task only, with
      :class:`multitask.SerializationError` (the stdlib hangs, gh-79492 / gh-103061);
    * a failure nobody retrieved is logged on the ``"multitask"`` logger (the stdlib drops it);
    * a task's exception is re-raised with the worker's traceback as its ``__cause__``;
    * lambdas, closures and ``__main__`` functions work with every start method (cloudpickle);
    * one Ctrl-C stops a blocked ``map`` with one ``KeyboardInterrupt`` (workers ignore SIGINT);
    * after ``terminate()``, results not yet ready raise :class:`multitask.ClosedError` instead of
      blocking forever; ``initializer`` failing fails the pool's tasks with
      :class:`multitask.ProcessError` instead of restarting workers in a loop.

    Beyond the stdlib: :meth:`submit` (``concurrent.futures.Future``), awaitable results,
    ``progress=True`` on the map family, :meth:`statistics`, :meth:`timeline`, ``nice`` and
    ``cpu_affinity`` for the workers, and ``backend="process" | "thread" | "ray"``.
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 maxtasksperchild: int | None = None, context: Any = None, *,
                 task_timeout: float | None = None, backend: str | None = None,
                 nice: int | None = None, cpu_affinity: Iterable[int] | None = None,
                 name: str | None = None, max_memory_per_child: int | None = None,
                 maxtasksperchild_jitter: float = 0.0, **backend_options: Any) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        if context is None:
            from ..context import get_context

            context = get_context()
        self._unretrieved: weakref.WeakSet[Any] = weakref.WeakSet()
        super().__init__(
            processes=processes, initializer=initializer, initargs=initargs,
            maxtasksperchild=maxtasksperchild, context=context, task_timeout=task_timeout,
            backend=backend, nice=nice, cpu_affinity=cpu_affinity,
            name=name or f"Pool-{next(_pool_numbers)}", notify=_registry_notifier(),
            max_memory_per_child=max_memory_per_child,
            maxtasksperchild_jitter=maxtasksperchild_jitter, backend_options=backend_options)
        # A pool dropped or left running at exit is terminated, never left with live workers;
        # dropped while running, it also says so, as the stdlib's does (ResourceWarning).
        self._finalizer = weakref.finalize(self, _finalize_pool, self._backend, self.name,
                                           self._state_box)
        # Published for `multitask ps` once the backend runs, from its thread where it has one.
        _registry_register(self)
        self._backend.when_running(_registry_start_pending)

    # -- the stdlib API ---------------------------------------------------------------------
    def apply(self, func: Callable[..., T], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None, *, task_timeout: Any = _DEFAULT) -> T:
        """Run ``func(*args, **kwds)`` in a worker and return its result; blocks until done."""
        return self.apply_async(func, args, kwds, task_timeout=task_timeout).get()

    def apply_async(self, func: Callable[..., T], args: Iterable[Any] = (),
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[T], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None, *,
                    task_timeout: Any = _DEFAULT) -> AsyncResult[T]:
        """Start ``func(*args, **kwds)`` in a worker; returns an :class:`AsyncResult` at once.

        Never blocks on workers.  The arguments are pickled here, so an argument that cannot be
        pickled raises :class:`multitask.SerializationError` from this call (the stdlib fails
        later, in a thread).  Raises :class:`multitask.ClosedError` (a ValueError) if the pool is
        closed.  ``callback``/``error_callback`` run in the thread that settles the result: the
        pool's result thread, or a caller blocked in ``get()``/``next()`` on this pool (which
        reads results itself); if one raises, the error is logged and the pool goes on.
        """
        self._check_running()
        _check_callable(func)
        if kwds is None:
            kwds = {}
        elif not isinstance(kwds, dict):
            raise TypeError(f"kwds must be a dict, not {type(kwds).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        if error_callback is not None and not callable(error_callback):
            raise TypeError("error_callback must be callable")
        result: AsyncResult[T] = AsyncResult(self, callback, error_callback)
        self._submit_apply(func, tuple(args), kwds, result, task_timeout)
        return result

    def map(self, func: Callable[[Any], T], iterable: Iterable[Any],
            chunksize: int | None = None, *, progress: bool | str = False,
            task_timeout: Any = _DEFAULT) -> list[T]:
        """``list(map(func, iterable))`` computed by the workers; blocks until all are done.

        Raises the first task's exception (with the worker traceback as ``__cause__``).
        """
        return self._map_async(func, iterable, MODE_MAP, chunksize, None, None, progress,
                               task_timeout).get()

    def map_async(self, func: Callable[[Any], T], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callable[[list[T]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None, *,
                  progress: bool | str = False, task_timeout: Any = _DEFAULT) -> MapResult:
        """Like :meth:`map` but returns a :class:`MapResult` at once."""
        return self._map_async(func, iterable, MODE_MAP, chunksize, callback, error_callback,
                               progress, task_timeout)

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: bool | str = False,
                task_timeout: Any = _DEFAULT) -> list[T]:
        """Like :meth:`map` but ``func(*args)`` for each argument tuple."""
        return self._map_async(func, iterable, MODE_STARMAP, chunksize, None, None, progress,
                               task_timeout).get()

    def starmap_async(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[T]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None, *,
                      progress: bool | str = False, task_timeout: Any = _DEFAULT) -> MapResult:
        """Like :meth:`starmap` but returns a :class:`MapResult` at once."""
        return self._map_async(func, iterable, MODE_STARMAP, chunksize, callback,
                               error_callback, progress, task_timeout)

    def imap(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = 1,
             *, progress: bool | str = False, task_timeout: Any = _DEFAULT) -> IMapIterator[T]:
        """An iterator over ``func(x)`` for each input, in input order, as results arrive.

        ``chunksize`` defaults to 1 as in the stdlib (tasks still travel in batches, so this is
        fast); ``None`` chooses adaptively.  A generator input is read lazily by a feeder thread
        with a bounded buffer (the stdlib reads it to the end at once).
        """
        return self._imap(func, iterable, chunksize, True, progress, task_timeout)

    def imap_unordered(self, func: Callable[[Any], T], iterable: Iterable[Any],
                       chunksize: int | None = 1, *, progress: bool | str = False,
                       task_timeout: Any = _DEFAULT) -> IMapIterator[T]:
        """Like :meth:`imap` but yields results in the order they complete."""
        return self._imap(func, iterable, chunksize, False, progress, task_timeout)

    def close(self) -> None:
        """Accept no more tasks; workers exit once the accepted ones are done.  Never blocks."""
        if self._state == "running":
            self._state = "closed"
            self._backend.close()
            self._notify()

    def join(self) -> None:
        """Wait for the workers to exit; call :meth:`close` or :meth:`terminate` first.

        Raises ValueError if the pool is still running (as the stdlib does).  Logs failures
        that were never retrieved.
        """
        if self._state == "running":
            raise ValueError("Pool is still running")
        self._backend.join()
        self._report_unretrieved("pool joined")
        _registry_unregister(self)

    def terminate(self) -> None:
        """Stop the workers now.  Results not ready raise :class:`multitask.ClosedError`.

        Never hangs: workers are SIGKILLed and every wait inside is bounded.
        """
        self._state = "terminated"
        self._backend.terminate()
        self._report_unretrieved("pool terminated")
        _registry_unregister(self)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __repr__(self) -> str:
        return (f"<multitask.Pool name={self.name!r} state={self._state} "
                f"processes={self._processes} backend={self._backend.name}>")

    # -- beyond the stdlib ------------------------------------------------------------------
    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """Start ``fn(*args, **kwargs)``; returns a ``concurrent.futures.Future`` at once.

        The future can be cancelled until a worker takes it (it then never runs); it works with
        ``concurrent.futures.wait``/``as_completed`` and ``asyncio.wrap_future``.
        """
        import concurrent.futures  # only submit() needs it (imported lazily: start-up time)

        self._check_running()
        _check_callable(fn)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit_apply(fn, args, kwargs, FutureResult(fut), _DEFAULT)
        return fut

    def timeline(self, path: str | os.PathLike[str] | None = None) -> Any:
        """The recorded tasks (the last 100 000): when each was submitted, sent to its worker,
        started, finished and settled, by which worker and pid.

        Without ``path``: the records (:class:`multitask.monitor.timeline.TaskRecord`; see
        :func:`multitask.monitor.timeline.analyze` for where the time went).  With a path
        ending in ``.json``: a Chrome-trace / Perfetto file (open it in ui.perfetto.dev or
        chrome://tracing); any other path: a self-contained HTML page (a Gantt row per worker,
        the split of each task into queue wait, send, run and receive, stragglers, a chunk-size
        suggestion, utilisation, queue wait).  Returns the path written.
        """
        from pathlib import Path

        from ..monitor.timeline import TaskRecord, render_timeline, write_chrome_trace

        records = [TaskRecord(*r) for r in self.timeline_records()]
        if path is None:
            return records
        title = f"multitask timeline: {self.name}"
        if str(path).endswith(".json"):
            return write_chrome_trace(records, Path(path), title=title)
        return render_timeline(records, Path(path), title=title)

    @property
    def processes(self) -> int:
        return self._processes

    # -- internals --------------------------------------------------------------------------
    def _submit_apply(self, func: Callable[..., Any], args: tuple[Any, ...],
                      kwds: dict[str, Any], result: Any,
                      task_timeout: Any) -> None:
        job = ApplyJob(self, func, args, kwds, result, timeout=self._timeout_for(task_timeout))
        self._backend.prepare(job)   # serializes now: bad arguments raise at this call
        with self._counts_lock:
            self._submitted += 1
        self._backend.submit(job)

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any], mode: int,
                   chunksize: Any, callback: Any, error_callback: Any, progress: Any,
                   task_timeout: Any) -> MapResult:
        self._check_running()
        _check_callable(func)
        chunksize = _check_chunksize(chunksize)
        progress = check_progress(progress)
        timeout = self._timeout_for(task_timeout)
        if timeout is not None and chunksize is None:
            chunksize = 1       # a timeout is per task: keep tasks to one item unless asked
        items = materialize(iterable)
        result = MapResult(self, len(items), callback, error_callback)
        if len(items) == 0:
            return result
        bar = ProgressBar(_describe(func), len(items), progress) if progress else None
        job = MapJob(self, func, mode, items, result, chunksize=chunksize,
                     workers=self._processes, timeout=timeout, progress=bar,
                     item_seconds=self._backend.item_seconds_hint(func))
        with self._counts_lock:
            self._submitted += len(items)
        self._backend.submit(job)
        return result

    def _imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Any,
              ordered: bool, progress: Any, task_timeout: Any) -> IMapIterator[Any]:
        self._check_running()
        _check_callable(func)
        chunksize = _check_chunksize(chunksize)
        progress = check_progress(progress)
        timeout = self._timeout_for(task_timeout)
        if not isinstance(iterable, Iterable):
            raise TypeError(f"{type(iterable).__name__!r} object is not iterable")
        items: Any = iterable if isinstance(iterable, (list, tuple, range)) else iter(iterable)
        result: IMapIterator[Any] = IMapIterator(ordered, self)
        total = len(items) if isinstance(items, (list, tuple, range)) else None
        bar = ProgressBar(_describe(func), total, progress) if progress else None
        # chunksize 1: every item is its own task.  Backends that can, send cheap items in
        # groups that keep per-item outcomes (MODE_ITEMS; see _engine/jobs.py MapJob._chunk_size).
        mode = MODE_ITEMS if chunksize == 1 and self._backend.item_groups else MODE_MAP
        job = MapJob(self, func, mode, items, result, chunksize=chunksize,
                     workers=self._processes, timeout=timeout, progress=bar,
                     item_seconds=self._backend.item_seconds_hint(func))
        if total is not None:
            result._set_length(total)
            with self._counts_lock:
                self._submitted += total
        if total != 0:
            job.start_feeding()
            self._backend.submit(job)
        return result

    def task_finished(self, job: Job, task: Task, ok: bool, started: float, finished: float,
                      worker: int, pid: int | None) -> None:
        """Called once per task by the backend (before the result is delivered)."""
        super().task_finished(job, task, ok, started, finished, worker, pid)
        if not ok and isinstance(job.result, AsyncResult):
            self._unretrieved.add(job.result)

    def _report_unretrieved(self, when: str) -> None:
        for result in list(self._unretrieved):
            result._report_unretrieved(when)
        self._unretrieved.clear()


def _finalize_pool(backend: Backend, name: str, state: list[str]) -> None:
    """The pool object is gone (or the interpreter exits): terminate its workers."""
    try:
        if state[0] == "running" and not sys.is_finalizing():
            import warnings

            # the stdlib's wording, which programs and CPython's tests filter on
            warnings.warn(f"unclosed running multiprocessing pool {name!r} (multitask)",
                          ResourceWarning, stacklevel=2)
    finally:
        # under -W error::ResourceWarning the warning raises: the workers must go all the same
        backend.terminate()


def _describe(func: Any) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def _registry_notifier() -> Callable[[], None]:
    from ..monitor import _hook

    return _hook.notify


def _registry_unregister(pool: Pool) -> None:
    from ..monitor import _hook

    _hook.unregister(pool)


def _registry_register(pool: Pool) -> None:
    from ..monitor import _hook  # never raises: observability must not break the computation

    _hook.register_pool(pool, deferred=True)   # handed over by _registry_start_pending


def _registry_start_pending() -> None:
    from ..monitor import _hook

    _hook.start_pending()


class ThreadPool(Pool):
    """``multiprocessing.pool.ThreadPool``: a Pool of threads, for I/O-bound work.

    ``ThreadPool(processes=None, initializer=None, initargs=(), **options)`` is
    ``Pool(..., backend="thread")``: the same API and promises as the process Pool (errors are
    never swallowed, ``task_timeout``, statistics, ``multitask ps``), with nothing pickled --
    arguments and results are passed by reference.  ``options`` are Pool's keyword options
    (``task_timeout``, ``maxtasksperchild``, ``name``...).  See :mod:`multitask.backends.thread`
    for how threads differ from processes (a timed-out thread is abandoned, not killed).
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), **options: Any) -> None:
        if "backend" in options:
            raise TypeError("ThreadPool always uses the thread backend")
        super().__init__(processes, initializer, initargs, backend="thread", **options)
