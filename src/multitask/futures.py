"""``concurrent.futures`` on multitask's engine: a ProcessPoolExecutor that does not break.

``from multitask.futures import ProcessPoolExecutor`` (or ``multitask.ProcessPoolExecutor``) is
the stdlib's ``concurrent.futures.ProcessPoolExecutor`` with Python 3.14's API on 3.10-3.13
(``terminate_workers()``, ``kill_workers()``, ``map(buffersize=)``), on the same backends as
:class:`multitask.Pool` (``backend="process" | "thread" | "ray"``, ``$MULTITASK_BACKEND``).  The
rest of ``concurrent.futures`` is re-exported, so the module can replace the import whole:
``ThreadPoolExecutor``, ``Future``, ``wait``, ``as_completed``, the constants and exceptions.

What differs from the stdlib (each a fix of a reported defect):

* **A dead worker does not break the executor.**  The stdlib fails every pending future and
  every later ``submit`` with ``BrokenProcessPool`` when one worker dies (OOM, segfault,
  ``os._exit``).  Here exactly the future(s) that worker was running fail, with
  :class:`multitask.WorkerDiedError` -- which also derives from ``BrokenProcessPool``, so
  ``except BrokenProcessPool`` still catches it -- and the worker is replaced.
* ``task_timeout=`` (the executor's, or per call with :meth:`submit_with` and ``map``): an
  overdue task fails with :class:`multitask.TaskTimeoutError` and its worker is replaced (the
  stdlib's ``result(timeout)`` only stops *waiting*).
* ``cancel_running=True``: ``Future.cancel()`` also stops a running task (its worker is killed
  and replaced).  Workers then hold one task at a time (no prefetch), which costs throughput for
  tiny tasks.  The stdlib's ``cancel()`` of a running future returns False, as it does here
  without the option (and on the thread and Ray backends, which cannot stop a running task).
* ``shutdown(timeout=)``: waits at most that long, then stops the workers.
* ``map(progress=True)``; ``map`` with the default ``chunksize=1`` sends cheap items in groups
  that keep per-item results (the stdlib pays a round trip per item).
* Functions and arguments travel by cloudpickle where plain pickle cannot: lambdas and closures
  work with every start method.  An argument or a result that cannot be pickled (or
  unpickled) fails that future with :class:`multitask.SerializationError` (a
  ``PicklingError``), and the executor runs on: the stdlib breaks the whole executor with
  ``BrokenProcessPool`` when a result cannot be unpickled or a worker exits while unpickling.
* ``max_tasks_per_child`` works with every start method, fork included (the stdlib refuses fork
  and switches to spawn).
* A failed initializer breaks the executor as in the stdlib (``BrokenProcessPool``), but the
  error says why, with the initializer's exception as ``__cause__``.

Data flow of a ``submit``: ``submit(fn, *args)`` makes a :class:`Future` and an ``ApplyJob``
(``multitask._engine.jobs``) whose result is that future; the backend pickles the arguments
(``prepare``), and when a worker has room takes the task -- claiming the future, which then runs,
or is skipped if it was cancelled meanwhile -- and reports its outcome once, setting the future.
A thread blocked in ``result()`` reads the pool's results itself while it waits (the process
backend's leader/follower scheme), so a round trip costs no thread switch.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import concurrent.futures._base as _base
import itertools
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    InvalidStateError,
    as_completed,
    wait,
)
from concurrent.futures import TimeoutError as TimeoutError  # builtins.TimeoutError on 3.11+
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._core import _errors
from ._core._errors import ClosedError, ProcessError, SerializationError, WorkerDiedError
from ._engine.backend import Backend, default_backend
from ._engine.frontend import (
    DEFAULT,
    FrontEnd,
    FutureResult,
    check_callable,
    check_timeout_value,
)
from ._engine.jobs import MODE_ITEMS, MODE_MAP, ApplyJob, MapJob

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor as ThreadPoolExecutor
    from concurrent.futures.process import BrokenProcessPool as BrokenProcessPool

# concurrent.futures.process (BrokenProcessPool, _RemoteTraceback) costs ~11 ms to import
# (multiprocessing.connection and queues), a third of an executor's start-up (E4): it is
# imported where it is needed -- a broken executor, a task's error, a program that takes
# BrokenProcessPool from here (module __getattr__).  Until then a dead worker's error is a
# BrokenExecutor, which it narrows to BrokenProcessPool (see _core/_errors.py).
_errors.adopt_broken_executor()


def _process_module() -> Any:
    import concurrent.futures.process as cfp

    _errors.adopt_broken_process_pool()
    return cfp


def __getattr__(name: str) -> Any:
    if name == "BrokenProcessPool":
        value = _process_module().BrokenProcessPool
    elif name == "ThreadPoolExecutor":
        # re-exported on first use, as concurrent.futures itself does: its module (and the
        # queue module it needs) is ~4 ms of a process executor's start-up
        from concurrent.futures import ThreadPoolExecutor as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "BrokenProcessPool",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

P = ParamSpec("P")
T = TypeVar("T")

_executor_numbers = itertools.count(1)
_SETTLED = frozenset({_base.FINISHED, _base.CANCELLED, _base.CANCELLED_AND_NOTIFIED})


class Future(concurrent.futures.Future[T]):
    """A ``concurrent.futures.Future`` (``as_completed``, ``wait``, ``asyncio.wrap_future`` and
    ``loop.run_in_executor`` take it) made by :class:`ProcessPoolExecutor`.

    Differences: ``result()``/``exception()`` let the waiting thread read the executor's
    results itself (faster; see the module docstring), and with the executor's
    ``cancel_running=True`` :meth:`cancel` also stops a running task.
    """

    def __init__(self) -> None:
        super().__init__()
        self._mt_job: ApplyJob | None = None   # while the task may still run

    def cancel(self) -> bool:
        """Cancel the call: True if it will never deliver a result.

        Pending (no worker took it yet): cancelled, never runs -- as in the stdlib.  Running:
        False, as in the stdlib, unless the executor has ``cancel_running=True`` and its backend
        can stop the task; then its worker is killed (and replaced) and this returns True.
        Never blocks on workers.
        """
        if super().cancel():
            self._mt_job = None
            return True
        job = self._mt_job
        if job is None or job.handed is None or not getattr(job.owner, "_cancel_running", False):
            return False
        backend: Backend = job.owner._backend   # type: ignore[attr-defined]
        # Under the future's condition, so that the outcome of the killed task (reported by the
        # backend's thread, through set_exception, which takes the same condition) cannot land
        # between the kill and the cancellation.  Lock order: condition, then the backend's
        # lock inside cancel_task; the backend takes a future's condition under its own lock
        # only to claim a pending future (_claim), never this one, which is running.
        with self._condition:
            if self._state != _base.RUNNING or not backend.cancel_task(job.handed):
                return False
            self._state = _base.CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._mt_job = None
        self._invoke_callbacks()   # type: ignore[attr-defined]
        return True

    def _mt_settled(self) -> bool:
        # without the lock (read while leading, after every batch of results): a stale False
        # only means one more look; result() itself then takes the lock
        return self._state in _SETTLED

    def _mt_lead(self, timeout: float | None) -> float | None:
        """Read results in this thread until done or ``timeout``; the time left."""
        job = self._mt_job
        if job is None or self._state in _SETTLED:
            return timeout
        timeout = check_timeout_value("timeout", timeout) if timeout is not None else None
        deadline = None if timeout is None else time.monotonic() + timeout
        if job.owner._lead(self._mt_settled, deadline) and deadline is not None:  # type: ignore[attr-defined]
            return max(0.0, deadline - time.monotonic())
        return timeout

    def result(self, timeout: float | None = None) -> T:
        """As ``concurrent.futures.Future.result``: the result, or raises the task's exception
        (with the worker's traceback as ``__cause__``), ``CancelledError`` or ``TimeoutError``."""
        if timeout is not None and timeout <= 0:
            return super().result(timeout)
        return super().result(self._mt_lead(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if timeout is not None and timeout <= 0:
            return super().exception(timeout)
        return super().exception(self._mt_lead(timeout))

    def set_result(self, result: T) -> None:
        super().set_result(result)
        self._mt_job = None

    def set_exception(self, exception: BaseException | None) -> None:
        super().set_exception(exception)
        self._mt_job = None


class _ExecutorResult(FutureResult):
    """The result a job completes: a :class:`Future`, and a broken executor's error as
    ``BrokenProcessPool`` (what ``concurrent.futures`` code expects).  It also leaves the
    executor's set of futures no worker took (for ``shutdown(cancel_futures=True)``) once a
    worker takes it or it is settled."""

    __slots__ = ("pending",)

    def __init__(self, future: Future[Any], pending: set[Future[Any]]) -> None:
        super().__init__(future)
        self.pending = pending

    def _claim(self) -> bool:
        self.pending.discard(self.future)   # (taken, or cancelled: never run either way)
        return super()._claim()

    def _set(self, ok: bool, value: Any) -> None:
        self.pending.discard(self.future)
        if not ok:
            value = _as_broken(value)
        super()._set(ok, value)


def _as_broken(exc: Any) -> Any:
    """The pool-level failures (initializer failed, worker manager lost) as BrokenProcessPool;
    a task's own error, a dead worker (already a BrokenProcessPool) or a timeout as they are.
    The worker's traceback (``__cause__``) as the executor's type, ``_RemoteTraceback``."""
    if type(exc) is ProcessError:
        broken = _process_module().BrokenProcessPool(str(exc))
        broken.__cause__ = exc
        return broken
    cause = getattr(exc, "__cause__", None)
    # multitask's worker tracebacks are multiprocessing.pool's class, loaded with the first
    # one made (_errors.remote_traceback): not loaded, no cause can be one
    pool_module = sys.modules.get("multiprocessing.pool")
    if cause is not None and pool_module is not None and isinstance(
            cause, pool_module.RemoteTraceback):
        exc.__cause__ = _process_module()._RemoteTraceback(cause.tb)   # users' tests check it
    return exc


class _LoggedInitializer:
    """The executor's ``initializer``, which logs its exception in the worker as the stdlib's
    executor does (``CRITICAL`` "Exception in initializer:" on the ``concurrent.futures``
    logger, with the traceback) before it propagates -- programs (and CPython's tests) route
    that logger, e.g. into a queue, to see why an executor broke.  Picklable by reference; the
    wrapped function travels as the engine sends any initializer."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., object]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> object:
        try:
            return self.fn(*args)
        except BaseException:
            import logging

            logging.getLogger("concurrent.futures").critical(
                "Exception in initializer:", exc_info=True)
            raise

    def __reduce__(self) -> tuple[Any, ...]:
        return (_LoggedInitializer, (self.fn,))


class _Star:
    """``fn(*args)`` for ``map`` over several iterables (one picklable object per call)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        # messages and the timeline name the user's function, not this adapter
        self.__module__ = getattr(fn, "__module__", None) or "?"
        self.__qualname__ = getattr(fn, "__qualname__", None) or type(fn).__name__

    def __call__(self, args: tuple[Any, ...]) -> Any:
        return self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return _Star, (self.fn,)


_live: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()


def _join_at_exit() -> None:
    """As the stdlib's: at interpreter exit, work already submitted is finished first, and a
    ``submit()`` from an ``atexit`` callback raises (this runs before those: it is registered
    where the stdlib's executor registers its own, ``threading._register_atexit``)."""
    for executor in list(_live):
        if executor._backend.forked_copy():
            continue   # a forked child's copy of the parent's executor (Backend.forked_copy)
        try:
            executor.shutdown(wait=True)
        except Exception:   # exiting: nothing may stop the others from being joined
            pass


_register_at_exit = getattr(threading, "_register_atexit", atexit.register)
_register_at_exit(_join_at_exit)


def _finalize_executor(backend: Backend, state: list[str]) -> None:
    """The executor object is gone: its workers finish what was submitted, then exit (the
    stdlib's behaviour for a dropped executor).  Never blocks: a thread of its own joins them
    (the backend's threads end with that join)."""
    if state[0] != "running":
        return
    state[0] = "shutdown"
    backend.close()
    if sys.is_finalizing():
        return
    try:
        threading.Thread(target=backend.join, name="multitask-executor-exit",
                         daemon=True).start()
    except RuntimeError:   # no thread to be had (interpreter exiting): the exit joins it
        pass


def _resolve_context(mp_context: Any) -> Any:
    """A multitask context for ``mp_context``: None (the default), one of multitask's, or one of
    the stdlib's (``multiprocessing.get_context("spawn")``), by its start method."""
    from .context import Context, get_context

    if mp_context is None:
        return get_context()
    if isinstance(mp_context, Context):
        return mp_context
    import multiprocessing.context

    if isinstance(mp_context, multiprocessing.context.BaseContext):
        return get_context(mp_context.get_start_method())
    raise TypeError("mp_context must be a multiprocessing or multitask context, not "
                    f"{type(mp_context).__name__}")


class ProcessPoolExecutor(FrontEnd, Executor):
    """``concurrent.futures.ProcessPoolExecutor`` on multitask's engine (see the module
    docstring for what differs).

    ``ProcessPoolExecutor(max_workers=None, mp_context=None, initializer=None, initargs=(), *,
    max_tasks_per_child=None, task_timeout=None, cancel_running=False, backend=None, name=None,
    nice=None, cpu_affinity=None, max_memory_per_child=None)``

    ``max_workers`` defaults to :func:`multitask.cpu_count` (affinity and cgroup aware; the
    stdlib's is ``os.process_cpu_count()``).  Starting the workers happens here (the stdlib
    starts them on the first submit), so a bad option or an unusable start method raises now.
    """

    kind = "executor"

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), *, max_tasks_per_child: int | None = None,
                 task_timeout: float | None = None, cancel_running: bool = False,
                 backend: str | None = None, name: str | None = None, nice: int | None = None,
                 cpu_affinity: Iterable[int] | None = None,
                 max_memory_per_child: int | None = None) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        context = _resolve_context(mp_context)
        backend_name = (backend or default_backend()).lower() if isinstance(
            backend, str | None) else backend
        options: dict[str, Any] = {}
        if cancel_running and backend_name == "process":
            options["prefetch"] = False   # a task a worker holds is then the one it runs
        from .monitor import _hook

        self._cancel_running = bool(cancel_running)
        self._shutdown_lock = threading.Lock()
        self._futures: set[Future[Any]] = set()      # submitted, no worker took them yet
        self._maps: weakref.WeakSet[MapJob] = weakref.WeakSet()
        super().__init__(
            processes=max_workers,
            initializer=_LoggedInitializer(initializer) if callable(initializer) else initializer,
            initargs=initargs,
            maxtasksperchild=max_tasks_per_child, context=context, task_timeout=task_timeout,
            backend=backend, nice=nice, cpu_affinity=cpu_affinity,
            name=name or f"ProcessPoolExecutor-{next(_executor_numbers)}",
            notify=_hook.notify, max_memory_per_child=max_memory_per_child,
            backend_options=options, maxtasksperchild_name="max_tasks_per_child")
        self._finalizer = weakref.finalize(self, _finalize_executor, self._backend,
                                           self._state_box)
        self._finalizer.atexit = False   # at exit _join_at_exit finishes the work instead
        _live.add(self)
        _hook.register_pool(self, deferred=True)
        self._backend.when_running(_hook.start_pending)

    # -- submitting ---------------------------------------------------------------------------
    def submit(self, fn: Callable[P, T], /, *args: P.args,
               **kwargs: P.kwargs) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; returns a :class:`Future` at once.

        Never blocks on workers.  Raises ``RuntimeError`` after :meth:`shutdown` (as the
        stdlib), ``BrokenProcessPool`` if the executor is broken (its initializer failed) and
        ``TypeError`` if ``fn`` is not callable.  The arguments are pickled here; if one cannot
        be, the future fails with :class:`multitask.SerializationError` (a ``PicklingError``).
        """
        return self._submit(fn, args, kwargs, DEFAULT)

    def submit_with(self, fn: Callable[..., T], args: Iterable[Any] = (),
                    kwargs: dict[str, Any] | None = None, *,
                    task_timeout: float | None = DEFAULT) -> Future[T]:
        """:meth:`submit` with options of its own (they cannot be keywords of ``submit``, whose
        keywords are ``fn``'s): ``task_timeout`` -- seconds the task may run before its worker
        is stopped and the future fails with :class:`multitask.TaskTimeoutError` (default: the
        executor's)."""
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        return self._submit(fn, tuple(args), kwargs, task_timeout)

    def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any],
                task_timeout: Any) -> Future[T]:
        self._check_open()
        check_callable(fn, "fn")
        fut: Future[T] = Future()
        job = ApplyJob(self, fn, args, kwargs, _ExecutorResult(fut, self._futures),
                       timeout=self._timeout_for(task_timeout))
        fut._mt_job = job
        try:
            self._backend.prepare(job)   # pickles the arguments (in this thread)
        except SerializationError as exc:
            # concurrent.futures' contract: every outcome of a scheduled call is its future's
            # (asyncio's run_in_executor awaits it); the executor runs on.  (Pool raises here.)
            fut.set_running_or_notify_cancel()
            fut.set_exception(exc)
            return fut
        self._futures.add(fut)   # (set.add/discard are atomic; shutdown copies it under
        self._count(1)           # _shutdown_lock, and a racing submit is refused there)
        self._backend.submit(job)
        return fut

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None, progress: bool | str = False,
            task_timeout: float | None = DEFAULT) -> Generator[T, None, None]:
        """``map(fn, *iterables)`` computed by the workers: an iterator over the results, in
        order.  As the stdlib's (3.14): the inputs are read now, unless ``buffersize`` is given
        (then at most that many results are computed ahead of the consumer); ``next()`` raises
        ``TimeoutError`` once ``timeout`` seconds from this call passed, and a call's exception
        where its result would be; closing the iterator early cancels what has not started.

        ``chunksize`` items travel as one task (a failing item fails its chunk, as in the
        stdlib); with 1, cheap items still travel in groups, each keeping its own result.
        ``progress``: a progress bar (see ``Pool.map``).  ``task_timeout``: per task.
        """
        from ._engine.progress import ProgressBar, check_progress
        from ._engine.results import IMapIterator

        self._check_open()
        check_callable(fn, "fn")
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int, not {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = check_progress(progress)
        task_limit = self._timeout_for(task_timeout)
        target: Callable[..., Any] = fn if len(iterables) == 1 else _Star(fn)
        inputs: Iterable[Any] = iterables[0] if len(iterables) == 1 else zip(*iterables)  # noqa: B905 (shortest, as map)
        items: Any
        if buffersize is None:
            items = list(inputs)     # as the stdlib: the inputs are read now
            total: int | None = len(items)
        else:
            items = iter(inputs)
            total = None
        result: IMapIterator[T] = IMapIterator(True, self)
        name = getattr(fn, "__name__", None) or type(fn).__name__
        bar = ProgressBar(name, total, progress) if progress else None
        mode = MODE_ITEMS if chunksize == 1 and self._backend.item_groups else MODE_MAP
        job = MapJob(self, target, mode, items, result, chunksize=chunksize,
                     workers=self._processes, timeout=task_limit, progress=bar,
                     window=buffersize, item_seconds=self._backend.item_seconds_hint(fn))
        if total is not None:
            result._set_length(total)
            self._count(total)
        if total != 0:
            with self._shutdown_lock:
                self._maps.add(job)
            job.start_feeding()
            self._backend.submit(job)
        return _results_in_order(result, job, deadline)

    # -- shutting down ------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 timeout: float | None = None) -> None:
        """No more submits; workers exit once the submitted work is done.

        ``wait``: block until they have (``timeout``: at most that many seconds, then the
        workers are stopped and what has not finished fails).  ``cancel_futures``: cancel every
        future no worker has taken yet (and the rest of every ``map``).  Calling it again is
        harmless.
        """
        timeout = check_timeout_value("timeout", timeout)
        with self._shutdown_lock:
            pending = list(self._futures) if cancel_futures else []
            maps = list(self._maps) if cancel_futures else []
            was_running = self._state == "running"
            if was_running:
                self._state = "shutdown"
        for fut in pending:
            concurrent.futures.Future.cancel(fut)   # only those no worker took (as the stdlib)
        for job in maps:
            job.fail_all(CancelledError())
        if was_running:
            self._backend.close()
            self._notify()
        if wait:
            if not self._backend.join(timeout):
                self._stop_workers("shutdown(timeout=) ran out")
            self._finished()

    def terminate_workers(self) -> None:
        """Python 3.14's: cancel what has not started, stop every worker now (SIGTERM's
        equivalent; multitask kills, see :meth:`kill_workers`), fail what was running, and shut
        down.  Never hangs."""
        self._force("terminate_workers()")

    def kill_workers(self) -> None:
        """Python 3.14's: as :meth:`terminate_workers`, with SIGKILL."""
        self._force("kill_workers()")

    def _force(self, what: str) -> None:
        self.shutdown(wait=False, cancel_futures=True)
        self._stop_workers(what)
        self._finished()

    def _stop_workers(self, why: str) -> None:
        # Running futures fail with a BrokenProcessPool, as the stdlib's do when their worker is
        # terminated under them; multitask's WorkerDiedError is one (once adopted: here).
        _process_module()
        self._state = "terminated"
        self._backend.terminate(_reason=WorkerDiedError(
            f"the executor's workers were stopped: {why}", cause="signal"))

    def _finished(self) -> None:
        _live.discard(self)
        from .monitor import _hook

        _hook.unregister(self)

    def __enter__(self) -> ProcessPoolExecutor:
        return self   # as the stdlib's: a broken or shut-down executor says so at submit()

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        return (f"<multitask.ProcessPoolExecutor name={self.name!r} state={self._state} "
                f"max_workers={self._processes} backend={self._backend.name}>")

    @property
    def _max_workers(self) -> int:
        """The stdlib's attribute (read by programs and CPython's tests)."""
        return self._processes

    @property
    def _broken(self) -> str | bool:
        """The stdlib's attribute: False, or why the executor cannot run anything more."""
        broken = self._backend.broken
        return False if broken is None else str(broken)

    # -- internals ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        broken = self._backend.broken
        if broken is not None:
            err = _process_module().BrokenProcessPool(
                f"A child process terminated abruptly, the process pool is not usable "
                f"anymore: {broken}")
            raise err from broken
        if self._state != "running":
            raise RuntimeError("cannot schedule new futures after shutdown")
        if sys.is_finalizing():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def _results_in_order(result: Any, job: MapJob,
                      deadline: float | None) -> Generator[Any, None, None]:
    """The generator ``Executor.map`` returns (see there).  Results are taken a chunk at a
    time (the timeout is checked per chunk, as the stdlib checks it per chunk future) and
    popped as they are yielded: nothing keeps a result alive once handed out (bpo-14406)."""
    run: collections.deque[Any] = collections.deque()
    try:
        while True:
            try:
                if deadline is None:
                    run.extend(result.next_run())
                else:
                    run.extend(result.next_run(max(0.0, deadline - time.monotonic())))
            except StopIteration:
                return
            except _errors.TimeoutError as exc:
                # next() ran out of the map's time (a task's own errors, TaskTimeoutError
                # included, come out as they are); 3.10's futures TimeoutError is not builtins'
                if type(exc) is not _errors.TimeoutError or deadline is None \
                        or time.monotonic() < deadline:
                    raise
                raise TimeoutError() from None
            except ClosedError as exc:    # the executor's workers were stopped under it
                raise CancelledError(str(exc)) from exc
            if job.windowed:
                while run:
                    job.consumed(1)     # buffersize: one more may be read per one handed out
                    yield run.popleft()
            while run:
                yield run.popleft()
    finally:
        job.cancel()    # closed early: what no worker took is never run
