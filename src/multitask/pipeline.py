"""``multitask.Pipeline``: stages of workers connected by bounded queues.

The notes' crawler has the shape *fetch -> process -> store -> show*.  A :class:`Pipeline` runs
each step as a **stage** with its own workers: threads for I/O-bound steps (the GIL is released
while a thread waits on the network or disk), processes for CPU-bound steps (each process has its
own GIL, so two processes really use two cores)::

    pipe = (Pipeline()
            .stage(fetch, workers=8, kind="thread")               # I/O: threads
            .stage(parse, workers=2, kind="process", ordered=False) # CPU: processes
            .stage(store, workers=1, kind="thread", on_error="skip"))
    for row in pipe.run(urls):        # results come out as they are ready
        print(row)
    rows = pipe.run_all(urls)         # or: drain to completion

Data flow of one item
---------------------
::

    source ──feeder thread──▶ in-queue[0] ──▶ stage-0 worker runs fn(item) ──▶ out-queue[0]
            (parent)           (bounded)       (process or thread)              │
                                                                                 ▼
    caller ◀── results ◀── router[n-1] ◀── ... ◀── in-queue[1] ◀──── router[0] (parent thread)

1. The **feeder** thread (in the calling process) pulls items from the source, numbers them
   0, 1, 2, ... and puts them, in batches of ``batch_size``, on the first stage's in-queue.
2. A **worker** of stage *i* takes a batch, calls the stage's function on each item and puts the
   results (or the exception with its formatted traceback) on the stage's out-queue.  Process
   workers receive and return each item pickled on its own (cloudpickle when plain pickle fails),
   so one unpicklable value fails that item only.
3. The stage's **router** thread (in the calling process) takes results off the out-queue,
   counts them, applies the stage's error policy, puts them back in input order when the stage
   is ``ordered``, renumbers them and forwards them to stage *i + 1* — or, after the last
   stage, to the caller's iterator.
4. **Backpressure**: every stage has a *capacity* of ``maxsize + workers * batch_size`` items.  An
   item counts against it from the moment it is put on the stage's in-queue until the stage's
   router has handed it on (to the next stage, or to the caller, who "takes" it when the
   iterator yields it).  Whoever wants to put an item into a full stage blocks, so a slow stage
   stops the ones before it and, finally, the feeder stops pulling from the source: memory stays
   bounded whatever the speed of each stage.
5. **End of input**: when the source is exhausted the feeder sends one stop marker per worker;
   each worker answers with a "done" marker after its last result.  When a router has seen every
   worker of its stage say "done", it stops the next stage the same way.  Every item is thus
   accounted for exactly once: as an output, as a collected error (``on_error="skip"``) or as the
   exception that stopped the run (``on_error="raise"``).
6. **Failure and Ctrl-C**: the first failure that stops the run (an item's exception under
   ``on_error="raise"``, a worker process that died, an exception from the source) sets a stop
   flag and wakes every thread of the run where it waits (a marker in each router's out-queue
   and each thread worker's in-queue, a notification of every stage's capacity); the caller's
   iterator raises the failure; process workers are terminated (then killed), the queues are
   closed (which wakes a thread blocked putting into one) and the threads are joined.  Nothing
   polls: every wait is on a queue, a condition or the workers' sentinels.
7. **Worker death**: a **watcher** thread waits on the sentinels of every worker process.  When
   one exits it puts ``("exited", index, exitcode)`` on that stage's out-queue, *behind*
   everything the worker put there (a put is complete when it returns: the queue has no feeder
   thread).  The router reads it in order: a worker that said "done" before exiting ended
   normally; any other exit is :class:`~multitask.WorkerDiedError`.
   Ctrl-C in the caller raises :class:`KeyboardInterrupt` out of the iterator and shuts down the
   same way; worker processes ignore SIGINT so a Ctrl-C prints one traceback, not one per worker.

What differs from a hand-made ``multiprocessing`` pipeline: a worker process killed by a signal
(OOM killer, SIGKILL, segfault) raises :class:`~multitask.WorkerDiedError` in the caller within a
fraction of a second instead of hanging the run, and an exception keeps the worker's traceback as
its ``__cause__``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import cloudpickle

from . import context as _mt_context
from ._core._errors import (
    ClosedError,
    SerializationError,
    WorkerDiedError,
    remote_traceback,
)
from ._engine import envelope

__all__ = ["ItemError", "Pipeline", "StageStatistics"]

logger = logging.getLogger("multitask")

Kind = Literal["process", "thread"]
OnError = Literal["raise", "skip"]

# How long shutdown waits for a worker process to exit after SIGTERM before SIGKILL.
_TERM_GRACE = 2.0

_STOP = None  # the marker a worker reads as "no more input"
_WAKE = "wake"  # put on a router's out-queue when the run stops: look at the stop flag


# --------------------------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemError:
    """One item that failed in a stage with ``on_error="skip"`` (see :attr:`Pipeline.errors`).

    ``item`` is the input the stage's function was called with (``None`` if it could not be
    brought back from the worker), ``exception`` the exception it raised, with the worker's
    traceback as its ``__cause__``; ``traceback`` is that traceback as text.
    """

    stage: str
    item: Any
    exception: BaseException
    traceback: str


@dataclass(frozen=True)
class StageStatistics:
    """A snapshot of one stage, returned by :meth:`Pipeline.statistics`.

    ``items_in`` items were handed to the stage, ``items_out`` came out of it successfully,
    ``items_failed`` raised.  ``in_flight`` items are inside the stage right now (queued, being
    processed, or waiting to be put back in order); it never exceeds ``capacity``
    (= ``maxsize + workers * batch_size``), and ``max_in_flight`` is the highest it has been.
    ``queued`` is the in-queue's length (approximate, as ``Queue.qsize()`` is).
    """

    name: str
    kind: str
    workers: int
    ordered: bool
    on_error: str
    maxsize: int
    batch_size: int
    capacity: int
    items_in: int
    items_out: int
    items_failed: int
    in_flight: int
    max_in_flight: int
    queued: int
    pids: tuple[int, ...]
    alive: int


# --------------------------------------------------------------------------------------------
# Process/queue factory
# --------------------------------------------------------------------------------------------


class _Factory:
    """Makes the ``Process`` and ``Queue`` objects of process stages.

    ``method`` is a start method's name (or None for the default), whose multitask context
    (``multitask.context``: multitask's ``Process`` and shared-memory ``Queue``) is used, or a
    context object the caller passed, used as it is.  There is no fallback to the stdlib's
    classes: a multitask module that fails to import is an error, not a slower pipeline.
    """

    def __init__(self, method: Any) -> None:
        self._ctx: Any
        if method is not None and not isinstance(method, str):  # a context object
            self._ctx = method
        else:
            self._ctx = _mt_context.get_context(method)

    def Process(self, **kwargs: Any) -> Any:
        return self._ctx.Process(**kwargs)

    def Queue(self, maxsize: int = 0) -> Any:
        return self._ctx.Queue(maxsize)


# --------------------------------------------------------------------------------------------
# Serialization of items, results and exceptions for process stages
# --------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle (lambdas, closures, ``__main__`` objects)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        try:
            data: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
            return data
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle {type(obj).__qualname__} object {_short_repr(obj)}: {exc}"
            ) from exc


def _short_repr(obj: Any, limit: int = 120) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pack_exception(exc: BaseException) -> bytes:
    """The engine's error envelope (``multitask._engine.envelope``), with this module's codec."""
    return envelope.pack(exc, _dumps)


def _unpack_exception(info: bytes) -> tuple[BaseException, str]:
    """The exception and the worker's formatted traceback."""
    exc = envelope.unpack(info, pickle.loads)
    cause = exc.__cause__
    return exc, str(getattr(cause, "tb", "") or "")


# Result tuples, after decoding, as the router sees them:
#   (seq, True, value, None, "")            success
#   (seq, False, item, exception, tb_text)  failure
_Result = tuple[int, bool, Any, BaseException | None, str]


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM this worker if its parent dies, so a killed caller leaves no orphans."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _process_worker(fn_blob: bytes, in_q: Any, out_q: Any, index: int, ppid: int) -> None:
    """Loop of a process-stage worker: batches in, per-item pickled results out, then "done"."""
    # The caller handles Ctrl-C and stops us; without this every worker would print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Under forkserver our parent is the fork server, whose death signal would not help.
    if os.getppid() == ppid:
        _set_parent_death_signal()
        if os.getppid() != ppid:  # the caller died before prctl took effect
            os._exit(1)
    fn = pickle.loads(fn_blob)
    while True:
        batch = in_q.get()
        if batch is _STOP:
            break
        out: list[tuple[int, bool, Any]] = []
        for seq, item_blob in pickle.loads(batch):
            try:
                value = fn(pickle.loads(item_blob))
                out.append((seq, True, _dumps(value)))
            except BaseException as exc:
                out.append((seq, False, (item_blob, _pack_exception(exc))))
        out_q.put(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    out_q.put(("done", index))
    # Flush the queue's buffer before exiting so "done" is never lost.
    out_q.close()
    out_q.join_thread()


def _thread_worker(fn: Callable[[Any], Any], in_q: queue.Queue[Any], out_q: queue.Queue[Any],
                   index: int, stop: threading.Event) -> None:
    """Loop of a thread-stage worker: same protocol as the process worker, without pickling.

    Blocks in ``in_q.get()``; a stopped run wakes it with a ``_STOP`` marker (see
    ``_StageRun.wake``).
    """
    while not stop.is_set():
        batch = in_q.get()
        if batch is _STOP:
            break
        out: list[_Result] = []
        for seq, item in batch:
            try:
                out.append((seq, True, fn(item), None, ""))
            except BaseException as exc:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                if exc.__cause__ is None:
                    exc.__cause__ = remote_traceback(tb)
                out.append((seq, False, item, exc, tb))
            if stop.is_set():
                return
        out_q.put(out)
    out_q.put(("done", index))


# --------------------------------------------------------------------------------------------
# Run-time pieces
# --------------------------------------------------------------------------------------------


class _Capacity:
    """A counting limit on the items inside a stage; ``acquire`` blocks while it is full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.high = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event) -> bool:
        """Block until ``n`` more items fit; return False (acquiring nothing) if ``stop`` is set.

        A run that stops sets ``stop`` and then calls :meth:`wake`, so the wait needs no timeout.
        """
        with self._cond:
            while self.used + n > self.limit:
                if stop.is_set():
                    return False
                self._cond.wait()
            if stop.is_set():
                return False
            self.used += n
            self.high = max(self.high, self.used)
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every thread waiting in :meth:`acquire` (to look at the stop flag)."""
        with self._cond:
            self._cond.notify_all()


@dataclass
class _StageSpec:
    fn: Callable[[Any], Any]
    name: str
    workers: int
    kind: Kind
    ordered: bool
    on_error: OnError
    maxsize: int
    batch_size: int

    @property
    def capacity(self) -> int:
        return self.maxsize + self.workers * self.batch_size


class _StageRun:
    """The live state of one stage during one run."""

    def __init__(self, spec: _StageSpec, ctx: Any, stop: threading.Event) -> None:
        self.spec = spec
        self.stop = stop
        self.capacity = _Capacity(spec.capacity)
        self.items_in = 0
        self.items_out = 0
        self.items_failed = 0
        self.next_seq = 0  # numbering of the items handed to this stage
        # Failures found in the caller's process (an item that cannot be pickled for the worker)
        # are handed to this stage's router here, so they take their place in the order.
        self.local: collections.deque[_Result] = collections.deque()
        self.processes: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.done: set[int] = set()
        self.pids: tuple[int, ...] = ()
        self.closed = False  # set when the run's shutdown has joined and closed everything
        qsize = spec.capacity + spec.workers  # room for every item plus the stop markers
        if spec.kind == "process":
            self.in_q: Any = ctx.Queue(qsize)
            self.out_q: Any = ctx.Queue()
            fn_blob = cloudpickle.dumps(spec.fn, protocol=pickle.HIGHEST_PROTOCOL)
            for i in range(spec.workers):
                self.processes.append(ctx.Process(
                    target=_process_worker,
                    args=(fn_blob, self.in_q, self.out_q, i, os.getpid()),
                    name=f"{spec.name}-{i}", daemon=True))
        else:
            # Unbounded: the capacity already limits the items, and wake() must never block.
            self.in_q = queue.Queue()
            self.out_q = queue.Queue()
            for i in range(spec.workers):
                self.threads.append(threading.Thread(
                    target=_thread_worker, args=(spec.fn, self.in_q, self.out_q, i, stop),
                    name=f"{spec.name}-{i}", daemon=True))

    # -- feeding ---------------------------------------------------------------------------

    def _put(self, msg: Any) -> bool:
        """Put on the in-queue; False if the run stopped.

        The in-queue has room for every item the capacity admits plus the stop markers, so this
        blocks only while a process stage's queue is full by bytes (large items); a stopped run
        closes that queue, which ends the wait with ClosedError.
        """
        if self.stop.is_set():
            return False
        try:
            self.in_q.put(msg)
        except ClosedError:
            return False
        return True

    def wake(self) -> None:
        """Wake this stage's waiting threads after the run's stop flag was set: the feeder or
        router waiting for capacity, the router blocked on the out-queue, thread workers
        blocked on the in-queue.  Never blocks."""
        self.capacity.wake()
        with contextlib.suppress(queue.Full, ClosedError, ValueError, OSError):
            self.out_q.put_nowait(_WAKE)   # full: the router is not waiting on it
        if self.spec.kind == "thread":
            for _ in self.threads:
                self.in_q.put_nowait(_STOP)

    def give(self, items: list[Any]) -> bool:
        """Hand ``items`` to this stage; blocks while it is full.  False if the run stopped.

        The caller must already hold ``len(items)`` of this stage's capacity.
        """
        numbered = list(enumerate(items, self.next_seq))
        self.next_seq += len(items)
        self.items_in += len(items)
        if self.spec.kind == "thread":
            return self._put(numbered)
        encoded: list[tuple[int, bytes]] = []
        for seq, item in numbered:
            try:
                encoded.append((seq, _dumps(item)))
            except SerializationError as exc:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                self.local.append((seq, False, item, exc, tb))
        if not encoded:
            return True
        return self._put(pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL))

    def finish_input(self) -> bool:
        """Tell every worker there is no more input (after all items)."""
        return all(self._put(_STOP) for _ in range(self.spec.workers))

    # -- results ---------------------------------------------------------------------------

    def decode(self, msg: Any) -> list[_Result]:
        if self.spec.kind == "thread":
            return list(msg)
        out: list[_Result] = []
        for seq, ok, payload in pickle.loads(msg):
            if ok:
                try:
                    out.append((seq, True, pickle.loads(payload), None, ""))
                except Exception as exc:
                    err = SerializationError(f"cannot unpickle the result of stage "
                                             f"{self.spec.name!r}: {exc}")
                    out.append((seq, False, None, err, traceback.format_exc()))
                continue
            item_blob, info = payload
            error, tb = _unpack_exception(info)
            try:
                item = pickle.loads(item_blob)
            except Exception:
                item = None
            out.append((seq, False, item, error, tb))
        return out

    def died(self, index: int, code: int | None) -> WorkerDiedError:
        proc = self.processes[index]
        err = WorkerDiedError(pid=proc.pid, exitcode=code)
        err.args = (f"{err.args[0]} in pipeline stage {self.spec.name!r}",)
        return err

    def statistics(self) -> StageStatistics:
        spec = self.spec
        try:
            queued = 0 if self.closed else int(self.in_q.qsize())
        except (NotImplementedError, OSError, ValueError):
            queued = -1
        if self.closed:
            alive = 0
        elif spec.kind == "process":
            alive = sum(1 for p in self.processes if p.exitcode is None and p.pid is not None)
        else:
            alive = sum(1 for t in self.threads if t.is_alive())
        return StageStatistics(
            name=spec.name, kind=spec.kind, workers=spec.workers, ordered=spec.ordered,
            on_error=spec.on_error, maxsize=spec.maxsize, batch_size=spec.batch_size,
            capacity=spec.capacity, items_in=self.items_in, items_out=self.items_out,
            items_failed=self.items_failed, in_flight=self.capacity.used,
            max_in_flight=self.capacity.high, queued=queued, pids=self.pids, alive=alive)


class _Failed:
    """Marker put on the results queue when the run stopped on a failure."""


_END = "end"


class _Watcher:
    """Waits on the sentinels of a run's worker processes and reports each exit to its stage's
    router, as ``("exited", index, exitcode)`` on the stage's out-queue (see the module
    docstring, "Worker death").  A pipe wakes it when the run shuts down."""

    def __init__(self, stages: list[_StageRun]) -> None:
        self._stages = stages
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="pipeline-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        from multiprocessing.connection import wait

        waiting = {p.sentinel: (st, i, p) for st in self._stages
                   for i, p in enumerate(st.processes) if p.pid is not None}
        while waiting:
            ready = wait([*waiting, self._wake_r])
            if self._wake_r in ready:
                return
            for sentinel in ready:
                st, i, proc = waiting.pop(sentinel)
                proc.join(5.0)   # the sentinel fired: the exit code is there (or at once)
                with contextlib.suppress(ClosedError, ValueError, OSError):
                    st.out_q.put(("exited", i, proc.exitcode))

    def stop(self) -> None:
        """Wake the thread, join it and release the pipe (the workers are gone by now)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread.ident is not None:
            self._thread.join(10.0)
        os.close(self._wake_r)
        os.close(self._wake_w)


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


class Pipeline:
    """Stages of workers connected by bounded queues.

    Build it with :meth:`stage` (chainable), then run it with :meth:`run` (an iterator),
    :meth:`run_all` (a list) or ``for out in pipeline`` (when a ``source`` was given here).

    ``progress``: ``None`` (default) shows a live per-stage progress display on stderr only when
    stderr is a terminal; ``True`` always shows it; ``False`` never.  ``context`` is a start-method
    name or a context object for process stages (default: multitask's default context).

    One pipeline runs one source at a time; it can be run again once a run has ended.
    Not thread-safe: iterate a run from one thread.
    """

    def __init__(self, source: Iterable[Any] | None = None, *, progress: bool | None = None,
                 context: Any = None, name: str = "pipeline") -> None:
        self._source = source
        self._progress_flag = progress
        self._context = context
        self.name = name
        self._specs: list[_StageSpec] = []
        self._stages: list[_StageRun] = []
        self._running = False
        #: Items that failed in ``on_error="skip"`` stages during the last run, as
        #: :class:`ItemError` records, in the order the failures were seen.
        self.errors: list[ItemError] = []

    # -- building ---------------------------------------------------------------------------

    def stage(self, fn: Callable[[Any], Any], *, workers: int = 1, kind: Kind = "process",
              ordered: bool = True, on_error: OnError = "raise", maxsize: int | None = None,
              batch_size: int = 1, name: str | None = None) -> Pipeline:
        """Append a stage that calls ``fn(item)`` for every item and passes on its return value.

        ``workers`` processes (``kind="process"``, for CPU-bound work; ``fn`` may be a lambda or
        closure, it is sent with cloudpickle) or threads (``kind="thread"``, for I/O-bound work;
        no pickling at all).  ``ordered=True`` emits results in the order the items came in
        (a slow item then holds back the ones after it); ``ordered=False`` emits them as soon as
        they are ready.  ``on_error="raise"`` stops the whole run at the first item that raises
        and raises that exception from the iterator; ``on_error="skip"`` records the item in
        :attr:`errors` and goes on.  A worker *process* that dies stops the run with
        :class:`~multitask.WorkerDiedError` under either policy (its items cannot be accounted
        for).  ``maxsize`` (default ``2 * workers * batch_size``) bounds the items waiting in the
        stage's in-queue; at most ``maxsize + workers * batch_size`` items are inside the stage
        at any time.  Items travel to the workers ``batch_size`` at a time (larger batches cost
        less per item for small, fast items).  Returns ``self``.

        Raises :class:`ValueError` / :class:`TypeError` for bad arguments, and
        :class:`RuntimeError` while the pipeline is running.
        """
        if self._running:
            raise RuntimeError("cannot add a stage to a running pipeline")
        if not callable(fn):
            raise TypeError(f"stage function must be callable, not {type(fn).__name__}")
        if kind not in ("process", "thread"):
            raise ValueError(f"kind must be 'process' or 'thread', not {kind!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        for label, value in (("workers", workers), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label} must be an int >= 1, not {value!r}")
        if maxsize is None:
            maxsize = 2 * workers * batch_size
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, not {maxsize!r}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
            if name == "<lambda>" or any(s.name == name for s in self._specs):
                name = f"{name}#{len(self._specs)}"
        self._specs.append(_StageSpec(fn=fn, name=name, workers=workers, kind=kind,
                                      ordered=bool(ordered), on_error=on_error,
                                      maxsize=maxsize, batch_size=batch_size))
        return self

    # -- running ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        """Run over the ``source`` given to the constructor (see :meth:`run`)."""
        return self.run()

    def run_all(self, source: Iterable[Any] | None = None) -> list[Any]:
        """Run to completion and return every output as a list (blocks until the end).

        Raises what :meth:`run` raises.
        """
        return list(self.run(source))

    def run(self, source: Iterable[Any] | None = None) -> Generator[Any, None, None]:
        """Feed ``source`` (default: the constructor's) through the stages; yield the outputs.

        Nothing starts until the first ``next()``.  ``next()`` blocks until an output is ready.
        It raises the first failing item's exception (``on_error="raise"`` stages), with the
        worker's traceback as ``__cause__``; :class:`~multitask.WorkerDiedError` when a worker
        process dies; whatever the source's iterator raised; and :class:`KeyboardInterrupt` on
        Ctrl-C.  In every case — and when the caller stops iterating early (``break``,
        ``close()``) — all workers are stopped and joined before the exception propagates.
        Raises :class:`ValueError` if the pipeline has no stage, :class:`TypeError` if there is
        no source, :class:`RuntimeError` if the pipeline is already running.
        """
        if not self._specs:
            raise ValueError("a pipeline needs at least one stage")
        if source is None:
            source = self._source
        if source is None:
            raise TypeError("no source: pass one to run() or to Pipeline(source)")
        if self._running:
            raise RuntimeError("this pipeline is already running")
        return self._run(source)

    def statistics(self) -> list[StageStatistics]:
        """Per-stage counters of the current (or last) run; empty before the first run."""
        return [s.statistics() for s in self._stages]

    # -- the machinery -----------------------------------------------------------------------

    def _run(self, source: Iterable[Any]) -> Generator[Any, None, None]:
        self._running = True
        self.errors = []
        stop = threading.Event()
        results: queue.Queue[Any] = queue.Queue()
        failure: list[BaseException] = []
        lock = threading.Lock()

        stages: list[_StageRun] = []

        def halt() -> None:
            """Set the stop flag, then wake every thread of the run where it waits."""
            stop.set()
            for st in stages:
                st.wake()

        def fail(exc: BaseException) -> None:
            with lock:
                if failure:
                    return
                failure.append(exc)
            halt()
            results.put(_Failed)

        threads: list[threading.Thread] = []
        watcher: _Watcher | None = None
        progress: Any = None
        completed = False
        try:
            ctx = _Factory(self._context) if any(
                s.kind == "process" for s in self._specs) else None
            for spec in self._specs:
                stages.append(_StageRun(spec, ctx, stop))
            self._stages = stages
            # Processes first: forking after our own threads exist would copy their locks.
            for st in stages:
                for proc in st.processes:
                    proc.start()
                st.pids = tuple(proc.pid for proc in st.processes)
            for st in stages:
                for t in st.threads:
                    t.start()
            if any(st.processes for st in stages):
                watcher = _Watcher(stages)
            threads.append(threading.Thread(
                target=self._feeder, args=(iter(source), stages[0], stop, fail),
                name=f"{self.name}-feeder", daemon=True))
            for i, st in enumerate(stages):
                nxt = stages[i + 1] if i + 1 < len(stages) else None
                threads.append(threading.Thread(
                    target=self._router, args=(st, nxt, results, stop, fail),
                    name=f"{self.name}-router-{st.spec.name}", daemon=True))
            for t in threads:
                t.start()
            if watcher is not None:
                watcher.start()
            progress = self._start_progress(source, stages, stop)
            last = stages[-1]
            while True:
                msg = results.get()   # fail() and the last router always put something
                if msg is _Failed:
                    raise failure[0]
                if msg == _END:
                    break
                for value in msg:
                    last.capacity.release(1)
                    yield value
            completed = True
        finally:
            if not completed:
                halt()
            self._shutdown(stages, threads, watcher, aborted=not completed)
            if progress is not None:
                progress.refresh()
                progress.stop()
            self._running = False

    def _feeder(self, it: Iterator[Any], first: _StageRun, stop: threading.Event,
                fail: Callable[[BaseException], None]) -> None:
        size = min(first.spec.batch_size, first.spec.capacity)
        try:
            while not stop.is_set():
                batch: list[Any] = []
                for item in it:
                    batch.append(item)
                    if len(batch) >= size:
                        break
                if not batch:
                    break
                if not first.capacity.acquire(len(batch), stop):
                    return
                if not first.give(batch):
                    return
            if not stop.is_set():
                first.finish_input()
        except BaseException as exc:  # the source raised: stop the run with its exception
            fail(exc)

    def _router(self, st: _StageRun, nxt: _StageRun | None, results: queue.Queue[Any],
                stop: threading.Event, fail: Callable[[BaseException], None]) -> None:
        try:
            self._route(st, nxt, results, stop, fail)
        except ClosedError:
            if not stop.is_set():   # closed under us only by the shutdown of a stopped run
                raise
        except BaseException as exc:  # a bug here must stop the run, not hang it
            logger.exception("pipeline router for stage %r failed", st.spec.name)
            fail(exc)

    def _route(self, st: _StageRun, nxt: _StageRun | None, results: queue.Queue[Any],
               stop: threading.Event, fail: Callable[[BaseException], None]) -> None:
        spec = st.spec
        pending: dict[int, _Result] = {}  # reorder buffer (ordered stages)
        next_out = 0
        out_batch = nxt.spec.batch_size if nxt is not None else 256
        while not stop.is_set():
            # Blocks until a worker's results, its "done", its exit (from the watcher) or the
            # stopped run's wake-up marker; then takes what else is ready, so that small items
            # travel on in batches.
            msgs: list[Any] = [st.out_q.get()]
            try:
                while len(msgs) < out_batch:
                    msgs.append(st.out_q.get_nowait())
            except queue.Empty:
                pass
            got: list[_Result] = []
            for msg in msgs:
                if isinstance(msg, tuple) and msg[:1] == ("done",):
                    st.done.add(msg[1])
                elif isinstance(msg, tuple) and msg[:1] == ("exited",):
                    # behind everything the worker put: "done" came first if it ended normally
                    if msg[1] not in st.done:
                        fail(st.died(msg[1], msg[2]))
                        return
                elif isinstance(msg, str):   # _WAKE: the run stopped (checked by the loop)
                    continue
                else:
                    got.extend(st.decode(msg))
            while st.local:
                got.append(st.local.popleft())
            ready: list[_Result]
            if spec.ordered:
                for r in got:
                    pending[r[0]] = r
                ready = []
                while next_out in pending:
                    ready.append(pending.pop(next_out))
                    next_out += 1
            else:
                ready = got
            values: list[Any] = []
            for _seq, ok, value, exc, tb in ready:
                if ok:
                    values.append(value)
                    continue
                st.items_failed += 1
                assert exc is not None
                if spec.on_error == "raise":
                    if hasattr(exc, "add_note"):
                        exc.add_note(f"(raised in pipeline stage {spec.name!r} by item "
                                     f"{_short_repr(value)})")
                    fail(exc)
                    return
                self.errors.append(ItemError(stage=spec.name, item=value, exception=exc,
                                             traceback=tb))
                st.capacity.release(1)
            if values and not self._forward(st, nxt, values, results, stop):
                return
            if len(st.done) == spec.workers and not st.local:
                break
        if stop.is_set():
            return
        if pending:  # every worker said "done", so every seq must have arrived
            fail(RuntimeError(f"pipeline stage {spec.name!r} lost items {sorted(pending)[:10]}"))
            return
        if nxt is None:
            results.put(_END)
        else:
            nxt.finish_input()

    def _forward(self, st: _StageRun, nxt: _StageRun | None, values: list[Any],
                 results: queue.Queue[Any], stop: threading.Event) -> bool:
        """Hand successful outputs of ``st`` on; blocks while the next stage is full."""
        st.items_out += len(values)
        if nxt is None:
            # Capacity of the last stage is released by the caller's iterator as it yields.
            results.put(values)
            return True
        size = min(nxt.spec.batch_size, nxt.spec.capacity)
        for start in range(0, len(values), size):
            chunk = values[start:start + size]
            if not nxt.capacity.acquire(len(chunk), stop):
                return False
            if not nxt.give(chunk):
                return False
            # Released only once handed on, so an item always counts against some stage.
            st.capacity.release(len(chunk))
        return True

    def _shutdown(self, stages: list[_StageRun], threads: list[threading.Thread],
                  watcher: _Watcher | None, aborted: bool) -> None:
        """Stop and join every worker and thread of a run; close its queues.  Never hangs."""
        procs = [p for st in stages for p in st.processes if p.pid is not None]
        if aborted:
            for p in procs:
                with contextlib.suppress(Exception):
                    p.terminate()
        deadline = time.monotonic() + (_TERM_GRACE if aborted else 10.0)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.exitcode is None:  # ignored SIGTERM or stuck: no orphans
                with contextlib.suppress(Exception):
                    p.kill()
                p.join(5.0)
        if watcher is not None:
            watcher.stop()
        if aborted:
            # A feeder or router may be blocked putting into a process stage's queue that is
            # full by bytes; its workers are gone, so closing the queue is what ends that wait.
            for st in stages:
                if st.spec.kind == "process":
                    for q in (st.in_q, st.out_q):
                        with contextlib.suppress(Exception):
                            q.cancel_join_thread()
                            q.close()
        workers = [t for st in stages for t in st.threads]
        for t in threads + workers:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()) if aborted else 10.0)
        stuck = [t.name for t in threads + workers if t.is_alive()]
        if stuck:
            logger.warning("pipeline threads still running a call at shutdown "
                           "(they stop after it returns): %s", stuck)
        for st in stages:
            st.closed = True
            if st.spec.kind != "process":
                continue
            for q in (st.in_q, st.out_q):
                with contextlib.suppress(Exception):
                    if aborted:
                        q.cancel_join_thread()
                    q.close()
                    q.join_thread()
        for p in procs:
            with contextlib.suppress(Exception):
                p.close()

    def _start_progress(self, source: Iterable[Any], stages: list[_StageRun],
                        stop: threading.Event) -> Any:
        show = self._progress_flag
        if show is None:
            show = sys.stderr.isatty()
        if not show:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        try:
            total: int | None = len(source)  # type: ignore[arg-type]
        except TypeError:
            total = None
        progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<14}"),
            BarColumn(),
            TextColumn("{task.completed:>7.0f} out"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("in flight {task.fields[flight]:>4}"),
            TextColumn("{task.fields[workers]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True), transient=False, refresh_per_second=8)
        ids = [progress.add_task("", total=total, stage=st.spec.name, failed=0, flight=0,
                                 kind=st.spec.kind,
                                 workers=f"{st.spec.workers} {st.spec.kind}"
                                         f"{'es' if st.spec.kind == 'process' else 's'}")
               for st in stages]

        def update() -> None:
            for st, tid in zip(stages, ids, strict=True):
                progress.update(tid, completed=st.items_out, failed=st.items_failed,
                                flight=st.capacity.used)

        class _Live:
            def __init__(self) -> None:
                self.done = threading.Event()
                self.thread = threading.Thread(target=self._loop, daemon=True,
                                               name="pipeline-progress")

            def _loop(self) -> None:
                while not self.done.wait(0.1):
                    update()

            def refresh(self) -> None:
                update()

            def stop(self) -> None:
                self.done.set()
                self.thread.join()
                update()
                progress.stop()

        live = _Live()
        progress.start()
        live.thread.start()
        return live
