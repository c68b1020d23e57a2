"""Jobs and tasks: how one Pool call is cut into tasks and how their results come back.

A *job* is one call (``apply_async``, ``map``, ``imap``...).  A *task* is the unit a worker runs and
the unit that fails together: one ``apply`` call, or one chunk of a map.  Backends pull tasks from a
job with :meth:`Job.next_task` when a worker has room, so a chunk's size is decided at dispatch time
from what has been measured so far, and report each task exactly once with :meth:`Job.task_done`.

Automatic chunk size (``chunksize=None``): *guided self-scheduling* -- each chunk takes
``remaining / (4 * workers)`` items, so early chunks are large (little overhead) and the last ones
small (no worker idles at the end while another finishes a big chunk), bounded below so that a
chunk of very cheap items still takes ~0.2 ms of work (amortising the per-chunk cost) once the item
time has been measured.  Inputs of unknown length (generators given to ``imap``) are read by a
feeder thread, bounded so that memory stays flat, and chunked by measured item time (~2 ms of work
per chunk, starting at 1 item and doubling until measured).  The stdlib instead cuts
``len/(4*workers)`` chunks up front and reads a generator to its end at once.
"""

from __future__ import annotations

import abc
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from .codes import MODE_CALL, MODE_ITEMS, MODE_MAP, MODE_STARMAP

__all__ = ["MODE_CALL", "MODE_ITEMS", "MODE_MAP", "MODE_STARMAP", "ApplyJob", "Job", "JobOwner",
           "MapJob", "Redo", "Task", "materialize", "qualname"]


class JobOwner(Protocol):
    """What a job reports to the front end that made it (a Pool, an Executor).

    Called by backend threads and the feeder thread, never under a backend's lock; each call is
    cheap and must not block (counters, the timeline, a monitor notification).
    """

    def task_finished(self, job: Job, task: Task, ok: bool, started: float, finished: float,
                      worker: int, pid: int | None) -> None:
        """A whole task ended (before its outcome is delivered to the result object)."""

    def items_finished(self, job: Job, task: Task, n: int, failed: int, started: float,
                       finished: float, worker: int, pid: int | None) -> None:
        """``n`` items of an item group ended, ``failed`` of them in an exception."""

    def count_submitted(self, n: int) -> None:
        """The feeder read ``n`` more items of a lazily fed input."""

    def wake_backend(self) -> None:
        """A lazily fed job has tasks ready again: the backend should dispatch."""

_task_ids = itertools.count(1)

# Range slices up to this length travel as lists (cheaper to pickle); longer ones stay ranges
# (a few bytes on the wire however long).
_SMALL_RANGE = 256

# Chunks of cheap items should still take this long, so per-chunk overhead stays small.
_MIN_CHUNK_SECONDS = 0.0002
# Chunks of an input of unknown length aim at this much work.
_LAZY_CHUNK_SECONDS = 0.002
# Item groups (chunksize 1): cheap items travel together, up to this much measured work...
_GROUP_SECONDS = 0.0002
# ... and at most this many.
_MAX_GROUP = 64


class _NoLock:
    """A context manager that does nothing: an apply job has one task, handed out under the
    backend's lock and reported once, so it needs no lock of its own."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK: Any = _NoLock()


class Task:
    """One unit of work, as the backend sees it."""

    __slots__ = ("data", "dispatched", "done", "est", "id", "job", "n", "start", "wire",
                 "worker")

    def __init__(self, job: Job, start: int, data: Any, n: int) -> None:
        self.job = job
        self.id = next(_task_ids)
        self.start = start          # index of the first item in the job's input
        self.data = data
        self.n = n                  # number of items (1 for MODE_CALL)
        self.worker = -1            # index of the worker holding it, set by the backend
        self.dispatched = 0.0       # time.monotonic() when handed to a worker
        self.wire: Any = None       # backend-private: the bytes sent, kept for re-dispatch/clean-up
        self.est = 0.0              # backend-private: estimated seconds of work
        self.done = 0               # items settled so far (item groups settle item by item)

    def describe(self, item: int | None = None) -> str:
        """The call this task makes, for error messages: ``fn(1, 'a', key=...)``, bounded
        (reprlib: long strings, containers and reprs are cut).  ``item``: the index within
        the task's items of the one meant (an item group).  Runs the arguments' ``__repr__``:
        never call it under a lock."""
        import reprlib

        r = reprlib.Repr()
        r.maxstring = r.maxother = 60
        r.maxlevel = 2
        name = self.job.function_name
        try:
            if self.job.mode == MODE_CALL:
                args, kwargs = self.data
                parts = [r.repr(a) for a in args]
                parts += [f"{k}={r.repr(v)}" for k, v in kwargs.items()]
                text = f"{name}({', '.join(parts)})"
            elif item is not None or self.n == 1:
                k = 0 if item is None else item
                x = self.data[k]
                args = ", ".join(r.repr(a) for a in x) if self.job.mode == MODE_STARMAP \
                    else r.repr(x)
                text = f"{name}({args}) [item {self.start + k}]"
            else:
                text = (f"{name} on items {self.start}..{self.start + self.n - 1} "
                        f"(first: {r.repr(self.data[0])})")
        except Exception as exc:   # a broken __repr__ must not hide the death
            text = f"{name}(<arguments not shown: {type(exc).__name__}>)"
        return text if len(text) <= 300 else text[:297] + "..."


class Job(abc.ABC):
    """One call of a front end (a Pool method, an Executor submit/map).  Thread-safe: tasks are
    pulled by backend threads, fed by a feeder thread."""

    def __init__(self, owner: JobOwner, fn: Callable[..., Any], mode: int, result: Any, *,
                 timeout: float | None, progress: Any = None) -> None:
        self.owner = owner
        self.fn = fn
        self.mode = mode
        self.result = result          # AsyncResult / MapResult / IMapIterator / Future adapter
        self.timeout = timeout
        self.progress = progress
        self.cancelled = False
        self.exhausted = False        # no more tasks will ever come from next_task()
        self.outstanding = 0          # tasks handed out and not yet reported
        self.item_seconds = 0.0       # measured seconds per item (EWMA), 0 until measured
        self.created = time.monotonic()   # when the call was made: the timeline's "submitted"
        self._name: str | None = None
        self._lock = _NO_LOCK if type(self) is ApplyJob else threading.Lock()

    @property
    def function_name(self) -> str:
        """``module.qualname`` of the function (computed on first use, then kept)."""
        name = self._name
        if name is None:
            name = self._name = qualname(self.fn)
        return name

    # -- supplying tasks (backend threads) --------------------------------------------------
    @abc.abstractmethod
    def next_task(self) -> Task | None:
        """The next task, or None if none is ready now (check ``exhausted`` for 'never')."""

    def cancel(self) -> None:
        """Stop handing out tasks (the result already failed or the pool terminated)."""
        self.cancelled = True
        self.exhausted = True

    # -- completion (backend threads) -------------------------------------------------------
    def task_done(self, task: Task, ok: bool, value: Any, started: float, finished: float,
                  worker: int, pid: int | None) -> None:
        """Report one task's outcome.  ``value``: result (ok) or exception (not ok)."""
        if self.mode == MODE_ITEMS:
            # An item group failed as a whole (terminated, lost its worker, could not be sent):
            # every item not yet settled gets the error, each at its own position.
            first = task.done
            task.done = task.n
            self.items_done(task, first, [(ok, value)] * (task.n - first), started, finished,
                            worker, pid, True)
            return
        with self._lock:
            self.outstanding -= 1
        if ok:
            self._measure(finished - started, task.n)
        self.owner.task_finished(self, task, ok, started, finished, worker, pid)
        keep_going = self._deliver(task, ok, value)
        if not keep_going:
            self.cancel()
        if self.progress is not None:
            self.progress.advance(task.n)

    def _measure(self, seconds: float, n: int) -> None:
        """Fold ``n`` items run in ``seconds`` into the per-item estimate (EWMA)."""
        if n and seconds > 0:
            per_item = seconds / n
            self.item_seconds = (per_item if self.item_seconds == 0.0
                                 else 0.7 * self.item_seconds + 0.3 * per_item)

    def items_done(self, task: Task, first: int, outcomes: list[tuple[bool, Any]],
                   started: float, finished: float, worker: int, pid: int | None,
                   last: bool) -> None:
        """Report the outcomes of items ``first, first+1, ...`` of an item group (each item its
        own task).  ``last``: the group is finished (no more items of it will be reported)."""
        n = len(outcomes)
        if last:
            with self._lock:
                self.outstanding -= 1
        failed = sum(1 for ok, _ in outcomes if not ok)
        if not failed:
            self._measure(finished - started, n)
        self.owner.items_finished(self, task, n, failed, started, finished, worker, pid)
        # Consecutive successes are delivered as one chunk; each failure on its own.
        start = task.start + first
        run: list[Any] = []
        keep_going = True
        for ok, value in outcomes:
            if ok:
                run.append(value)
                continue
            if run:
                self.result._deliver(start, True, run, len(run))
                start += len(run)
                run = []
            keep_going = bool(self.result._deliver(start, False, value, 1)) and keep_going
            start += 1
        if run:
            self.result._deliver(start, True, run, len(run))
        if not keep_going:
            self.cancel()
        if self.progress is not None and n:
            self.progress.advance(n)

    @abc.abstractmethod
    def _deliver(self, task: Task, ok: bool, value: Any) -> bool:
        """Hand one task's outcome to the result object; False if the job has now failed."""

    def fail_all(self, exc: BaseException) -> None:
        """Fail the whole job (pool terminated, serialization of its input failed...)."""
        self.cancel()
        self._fail(exc)

    @abc.abstractmethod
    def _fail(self, exc: BaseException) -> None:
        """Fail the result object with ``exc`` (tasks still out will report and be ignored)."""

    @property
    def done(self) -> bool:
        return self.exhausted and self.outstanding == 0


class ApplyJob(Job):
    """``apply``/``apply_async``/``submit``: one task."""

    def __init__(self, owner: JobOwner, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any],
                 result: Any, *, timeout: float | None) -> None:
        super().__init__(owner, fn, MODE_CALL, result, timeout=timeout)
        self.task: Task | None = Task(self, 0, (args, kwargs), 1)
        #: the task once a worker has it (for Backend.cancel_task)
        self.handed: Task | None = None
        # A result that can be withdrawn (a concurrent.futures.Future) is claimed when a worker
        # takes its task: a future cancelled before that never runs (its claim fails).
        self._claim: Callable[[], bool] | None = getattr(result, "_claim", None)

    def next_task(self) -> Task | None:
        with self._lock:
            task, self.task = self.task, None
            self.exhausted = True
            if task is None:
                return None
            if self._claim is not None and not self._claim():
                # cancelled while it waited: withdrawn, never run (not counted as submitted)
                self.owner.count_submitted(-1)
                return None
            self.outstanding += 1
            self.handed = task
        return task

    def _deliver(self, task: Task, ok: bool, value: Any) -> bool:
        self.handed = None   # (job -> task -> job: a cycle that would keep the owner alive)
        self.result._set(ok, value)
        return True

    def _fail(self, exc: BaseException) -> None:
        self.handed = None
        self.result._set(False, exc)


class MapJob(Job):
    """``map``/``imap``/``starmap`` and their async forms: many items, cut into chunks."""

    def __init__(self, owner: JobOwner, fn: Callable[..., Any], mode: int, items: Any,
                 result: Any, *, chunksize: int | None, workers: int, timeout: float | None,
                 progress: Any = None, window: int | None = None,
                 item_seconds: float = 0.0) -> None:
        super().__init__(owner, fn, mode, result, timeout=timeout, progress=progress)
        # seeded from the backend's measurements of this function (Backend.item_seconds_hint)
        self.item_seconds = item_seconds
        self.chunksize = chunksize
        self.workers = max(1, workers)
        self._next = 0
        self._feeder: _Feeder | None = None
        self._seq: Sequence[Any] | None
        if isinstance(items, Sequence):
            self._seq = items
            self.length: int | None = len(items)
            if self.length == 0:
                self.exhausted = True
        else:
            self._seq = None
            self.length = None
            self._feeder = _Feeder(self, iter(items), window)

    def start_feeding(self) -> None:
        if self._feeder is not None:
            self._feeder.start()

    @property
    def windowed(self) -> bool:
        """The input is read at most ``window`` items ahead of the consumer."""
        return self._feeder is not None and self._feeder.window is not None

    def consumed(self, n: int) -> None:
        """The consumer took ``n`` more results (a ``window``: the feeder may read on)."""
        if self._feeder is not None and self._feeder.window is not None:
            self._feeder.consume(n)

    def _chunk_size(self, remaining: int | None) -> int:
        if self.mode == MODE_ITEMS:
            # Item groups: one item until the function is measured, then as many cheap items
            # as take ~_GROUP_SECONDS (each still its own task: see the worker's run_items).
            if self.item_seconds <= 0:
                return 1
            return max(1, min(_MAX_GROUP, int(_GROUP_SECONDS / self.item_seconds)))
        if self.chunksize is not None:
            return self.chunksize
        if remaining is None:  # unknown length: by measured time, doubling until measured
            if self.item_seconds > 0:
                return max(1, min(4096, int(_LAZY_CHUNK_SECONDS / self.item_seconds)))
            return 1
        # remaining / (4 * workers): workers also hold one chunk queued behind the running one.
        # Not below length / (16 * workers): of unknown cost, the tail of shrinking chunks was
        # ~8 ln(length) messages (55 for 1 000 cheap items: slower than the stdlib's 8), and a
        # last chunk of 1/32 of the work still leaves no worker idle for long.
        guided = math.ceil(remaining / (4 * self.workers))
        if self.length:
            guided = max(guided, math.ceil(self.length / (16 * self.workers)))
        if self.item_seconds > 0:
            guided = max(guided, int(_MIN_CHUNK_SECONDS / self.item_seconds))
        return max(1, min(guided, remaining))

    def next_task(self) -> Task | None:
        with self._lock:
            if self.exhausted:
                return None
            if self._seq is not None:
                assert self.length is not None
                remaining = self.length - self._next
                size = min(self._chunk_size(remaining), remaining)
                start = self._next
                data = self._seq[start:start + size]
                if size <= _SMALL_RANGE and isinstance(data, range):
                    data = list(data)   # a short list pickles ~6x faster than a range
                self._next += size
                if self._next >= self.length:
                    self.exhausted = True
            else:
                assert self._feeder is not None
                size = self._chunk_size(None)
                got = self._feeder.take(size)
                if got is None:
                    return None
                start, data = got
                size = len(data)
                if self._feeder.finished_and_empty():
                    self.exhausted = True
            self.outstanding += 1
        return Task(self, start, data, size)

    def feeder_finished(self, total: int) -> None:
        with self._lock:
            self.length = total
            if self._feeder is not None and self._feeder.finished_and_empty():
                self.exhausted = True
        setter = getattr(self.result, "_set_length", None)
        if setter is not None:
            setter(total)

    def _deliver(self, task: Task, ok: bool, value: Any) -> bool:
        return bool(self.result._deliver(task.start, ok, value, task.n))

    def iterable_failed(self, exc: BaseException, total: int) -> bool:
        """The input iterator raised after yielding ``total`` items.  ``map``: the call fails
        with ``exc``.  ``imap``: as in the stdlib, the results of the complete chunks before the
        failure are delivered, then ``exc`` is raised at the start of the chunk it fell in (with
        ``chunksize=c``, position ``total - total % c``: the stdlib never forms that chunk), and
        the iteration ends there.  True if the items read so far are to be run."""
        if not hasattr(self.result, "_set_length"):   # MapResult: fails as a whole
            self.fail_all(exc)
            return False
        at = total - total % self.chunksize if self.chunksize else total
        self.result._stop(at, exc)   # after the first `at` items; later results are dropped
        return True

    def _fail(self, exc: BaseException) -> None:
        if not hasattr(self.result, "_set_length"):  # MapResult: fails as a whole
            self.result._set(False, exc)
            return
        # An imap iterator: the error is raised after every item already handed to a worker
        # (those are all reported), and iteration ends there.
        with self._lock:
            handed = self._next if self._feeder is None else self._feeder.base
        self.result._deliver(handed, False, exc, 0)
        self.result._set_length(handed)

    def cancel(self) -> None:
        super().cancel()
        if self._feeder is not None:
            self._feeder.stop()


class Redo:
    """Tasks a dead worker never started, handed out again before anything else.

    A task source like a Job (``next_task``/``exhausted``/``fail_all``), but its tasks keep their
    own jobs.  Backends put one at the front of their pending queue when a worker dies.
    """

    def __init__(self, tasks: list[Task]) -> None:
        self._tasks = deque(tasks)
        self.exhausted = False

    def next_task(self) -> Task | None:
        if not self._tasks:
            self.exhausted = True
            return None
        task = self._tasks.popleft()
        self.exhausted = not self._tasks
        return task

    def fail_all(self, exc: BaseException) -> None:
        self.exhausted = True
        while self._tasks:
            task = self._tasks.popleft()
            task.job.task_done(task, False, exc, 0.0, 0.0, -1, None)


class _Feeder:
    """Reads a lazy input iterator in its own thread, keeping a bounded buffer of items.

    The user's generator runs here -- never in the backend's result thread, which must stay
    responsive -- and pauses when the buffer holds enough for every worker, so memory stays
    bounded however long the input is.
    """

    def __init__(self, job: MapJob, it: Iterator[Any], window: int | None = None) -> None:
        self.job = job
        self.it = it
        # ``window``: at most this many items read and not yet consumed (Executor.map's
        # buffersize); None: bounded by the buffer alone
        self.window = window
        self.consumed = 0
        self.buffer: deque[Any] = deque()
        self.base = 0                 # input index of buffer[0]
        self.total = 0                # items read so far
        self.finished = False
        self.error: BaseException | None = None
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="imap-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _high_water(self) -> int:
        return max(256, 4 * self.job.workers * self.job._chunk_size(None))

    def _run(self) -> None:
        try:
            for item in self.it:
                with self._cond:
                    while not self._stopped and (
                            len(self.buffer) >= self._high_water()
                            or (self.window is not None
                                and self.total - self.consumed >= self.window)):
                        self._cond.wait()
                    if self._stopped:
                        return
                    self.buffer.append(item)
                    self.total += 1
                    starving = len(self.buffer) == 1
                self.job.owner.count_submitted(1)
                if starving:
                    self.job.owner.wake_backend()
        except BaseException as exc:  # the user's iterator raised (see MapJob.iterable_failed)
            self.error = exc
        finally:
            with self._cond:
                self.finished = True
        if self.error is not None and not self.job.iterable_failed(self.error, self.total):
            return
        self.job.feeder_finished(self.total)
        self.job.owner.wake_backend()

    def take(self, size: int) -> tuple[int, list[Any]] | None:
        with self._cond:
            if not self.buffer:
                return None
            n = min(size, len(self.buffer))
            start = self.base
            data = [self.buffer.popleft() for _ in range(n)]
            self.base += n
            self._cond.notify()
        return start, data

    def consume(self, n: int) -> None:
        with self._cond:
            self.consumed += n
            self._cond.notify()

    def finished_and_empty(self) -> bool:
        return self.finished and not self.buffer

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def qualname(fn: Any) -> str:
    """``module.qualname`` of a callable, for messages and the timeline."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{name}"


def materialize(iterable: Iterable[Any]) -> Sequence[Any]:
    """map() semantics: a sized sequence as is (range stays a range), anything else as a list."""
    if isinstance(iterable, (list, tuple, range)):
        return iterable
    if isinstance(iterable, Sequence):
        return iterable
    return list(iterable)

