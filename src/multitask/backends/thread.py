"""The thread backend: the Pool API on threads of this process (``Pool(backend="thread")``).

For I/O-bound work (downloads, database calls, subprocesses): the GIL lesson of the notes, with
the same front end as the process backend -- ``apply``/``map``/``imap``/``submit``, callbacks,
progress bars, statistics -- and the same results and errors.

Data flow of one task::

    caller thread                         worker thread i (one per ``processes``)
    -------------                         ---------------------------------------
    apply_async(f, args)
      Job -> _pending; notify one idle  -> takes job.next_task() under the lock
                                           slot i := task, started
                                           runs f (no pickling: objects are shared)
                                           slot i := None
                                           job.task_done(...) -> AsyncResult._set, callbacks

Differences from the process backend, all because threads share one interpreter:

* nothing is pickled: arguments and results are passed by reference (a task that mutates its
  argument mutates the caller's object), and lambdas/closures always work;
* ``initializer`` runs once in each worker thread (again in a thread replacing one after
  ``maxtasksperchild`` tasks); globals it sets are the process's globals, shared by all threads --
  use :class:`threading.local` for per-thread state;
* callbacks run in the worker thread that finished the task (the process backend runs them in its
  result thread); a raising callback is logged and the pool goes on;
* statistics report ``pid = os.getpid()`` for every worker; the worker threads are named
  ``mt-thread-<pool>-<index>`` (``threading.enumerate()`` and ``py-spy`` show them);
* **timeouts**: a thread cannot be killed.  When a task runs past its ``task_timeout`` its result
  raises :class:`multitask.TaskTimeoutError` at the deadline (within ~10 ms) and the slot gets a
  fresh thread at once, so the pool keeps its full size and goes on; the overdue thread is
  *abandoned*: it keeps running the task to its end (it cannot be interrupted -- a ``time.sleep``,
  a blocking read or a C call holds it) and its eventual result or exception is discarded, after
  which the thread exits.  An abandoned thread that never returns stays alive (a daemon thread,
  so it does not block interpreter exit) and is listed by ``statistics().workers_replaced``;
* a worker cannot die on its own: ``os._exit`` or a segfault in a task ends the whole process,
  so :class:`multitask.WorkerDiedError` is never raised by this backend;
* ``terminate()`` fails every unfinished task with :class:`multitask.ClosedError` at once and
  abandons the threads still running tasks (their results are discarded); ``join()`` then waits
  only for the idle threads, so it never hangs on a stuck task.

``nice`` and ``cpu_affinity`` are per-process settings and would change the caller's own process:
the thread backend rejects them with ValueError.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import traceback
from typing import Any

from .._core._errors import ClosedError, ProcessError, TaskTimeoutError, remote_traceback
from .._engine.backend import Backend
from .._engine.jobs import MODE_CALL, MODE_MAP, Job, Task
from .._engine.log import logger
from .._engine.stats import TaskInfo, WorkerStatistics

# Overdue tasks are noticed this long after their deadline at most (the watcher sleeps until the
# next deadline exactly; this only covers clock granularity and scheduling).
_TIMEOUT_SLACK = 0.002


class _Slot:
    """One worker thread.  A slot index survives replacement; a _Slot object does not."""

    __slots__ = (
        "abandoned",
        "created",
        "idx",
        "quota",
        "started",
        "state",
        "task",
        "tasks_done",
        "tasks_failed",
        "thread",
    )

    def __init__(self, idx: int, quota: int | None) -> None:
        self.idx = idx
        self.thread: threading.Thread | None = None
        self.task: Task | None = None
        self.started = 0.0               # time.monotonic() when the current task started
        self.state = "starting"          # starting | idle | busy | dead
        self.tasks_done = 0
        self.tasks_failed = 0
        self.created = time.time()
        self.quota = quota               # tasks left before recycling (maxtasksperchild)
        self.abandoned = False           # timed out or terminated: discard its result, exit


class ThreadBackend(Backend):
    """Worker threads pulling tasks from a shared pending queue.  See the module docstring."""

    name = "thread"

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.nice is not None or self.cpu_affinity is not None:
            raise ValueError("nice and cpu_affinity apply to worker processes; the thread "
                             "backend runs in the caller's process and cannot set them")
        if self.max_memory_per_child is not None:
            raise ValueError("max_memory_per_child applies to worker processes; the thread "
                             "backend's workers share the caller's memory")
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)     # workers wait here for tasks
        self._exited = threading.Condition(self._lock)   # join waits here
        self._pending: collections.deque[Job] = collections.deque()
        self._starved: list[Job] = []
        self._closing = False
        self._terminated = False
        self._broken: BaseException | None = None
        self._replaced = 0
        self._abandoned: list[_Slot] = []
        self._prefix = f"mt-thread-{id(self):x}"
        self._slots = [_Slot(i, self.new_quota()) for i in range(self.processes)]
        self._watch_cond = threading.Condition(self._lock)
        self._watcher: threading.Thread | None = None
        with self._lock:
            for slot in self._slots:
                self._launch_locked(slot)

    def _launch_locked(self, slot: _Slot) -> None:
        # Not named "multitask-*": the process backend treats those threads as holding no
        # lock across a fork, and these run user code.
        t = threading.Thread(target=self._worker_main, args=(slot,), daemon=True,
                             name=f"{self._prefix}-{slot.idx}")
        slot.thread = t
        t.start()

    # -- submitting --------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if self._terminated:
                raise ClosedError("Pool not running (it is terminated)")
            self._pending.append(job)
            self._work.notify()
            if job.timeout is not None:
                self._ensure_watcher_locked()

    def wake(self) -> None:
        with self._lock:
            if self._starved:
                self._pending.extend(self._starved)
                self._starved.clear()
                self._work.notify_all()

    def _next_task_locked(self) -> Task | None:
        while self._pending:
            source = self._pending[0]
            task = source.next_task()
            if task is not None:
                return task
            self._pending.popleft()
            if not source.exhausted:
                self._starved.append(source)
        return None

    def _idle_forever_locked(self) -> bool:
        return self._closing and not self._pending and not self._starved

    # -- the worker thread -------------------------------------------------------------------
    def _worker_main(self, slot: _Slot) -> None:
        if self.initializer is not None:
            try:
                self.initializer(*self.initargs)
            except BaseException as exc:
                self._initializer_failed(slot, exc)
                return
        with self._lock:
            if slot.state == "starting":
                slot.state = "idle"
        while True:
            with self._lock:
                while True:
                    if slot.abandoned or self._terminated:
                        self._slot_exit_locked(slot)
                        return
                    if slot.quota is not None and slot.quota <= 0:
                        self._recycle_locked(slot)
                        return
                    task = self._next_task_locked()
                    if task is not None:
                        break
                    if self._idle_forever_locked():
                        self._slot_exit_locked(slot)
                        return
                    self._work.wait()
                slot.task = task
                slot.state = "busy"
                slot.started = started = time.monotonic()
                task.worker = slot.idx
                task.dispatched = started
                if slot.quota is not None:
                    slot.quota -= 1
                if task.job.timeout is not None:
                    self._watch_cond.notify()
            ok, value = _run(task)
            finished = time.monotonic()
            with self._lock:
                if slot.abandoned:
                    # Timed out (already reported) or terminated: discard, and leave.
                    self._slot_exit_locked(slot)
                    return
                slot.task = None
                slot.state = "idle"
                slot.tasks_done += 1
                if not ok:
                    slot.tasks_failed += 1
            try:
                task.job.task_done(task, ok, value, started, finished, slot.idx, os.getpid())
            except BaseException:  # never lose the worker thread to a reporting error
                logger.exception("multitask: reporting a task's result failed")
            del value, task
            self.notify_pool()

    def _slot_exit_locked(self, slot: _Slot) -> None:
        if not slot.abandoned:
            slot.state = "dead"
        slot.task = None
        if slot in self._abandoned:
            self._abandoned.remove(slot)
        self._exited.notify_all()
        self._watch_cond.notify_all()   # the watcher ends once every worker has

    def _recycle_locked(self, slot: _Slot) -> None:
        """maxtasksperchild: this thread ends; a fresh one (initializer again) takes the slot."""
        slot.state = "dead"
        fresh = _Slot(slot.idx, self.new_quota())
        self._slots[slot.idx] = fresh
        self._launch_locked(fresh)

    def _initializer_failed(self, slot: _Slot, exc: BaseException) -> None:
        exc.__cause__ = remote_traceback(_format(exc))
        err = ProcessError(f"the pool's initializer failed in a worker thread: "
                           f"{type(exc).__name__}: {exc}")
        err.__cause__ = exc
        with self._lock:
            slot.state = "dead"
            self._exited.notify_all()
            if self._broken is not None:
                return
            self._broken = err
        self.terminate(_reason=err)

    # -- timeouts ----------------------------------------------------------------------------
    def _ensure_watcher_locked(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_loop, daemon=True,
                                             name=f"{self._prefix}-watcher")
            self._watcher.start()

    def _watch_loop(self) -> None:
        while True:
            expired: list[tuple[_Slot, Task, float]] = []
            with self._lock:
                if self._terminated or (self._closing and all(
                        s.state == "dead" for s in self._slots)):
                    return
                now = time.monotonic()
                soonest: float | None = None
                for slot in self._slots:
                    task = slot.task
                    if task is None or task.job.timeout is None or slot.abandoned:
                        continue
                    deadline = slot.started + task.job.timeout
                    if now >= deadline:
                        expired.append((slot, task, task.job.timeout))
                    elif soonest is None or deadline < soonest:
                        soonest = deadline
                # the overdue threads' stacks, for the errors (before they move on)
                stacks = [_stack_of(slot.thread) for slot, _task, _limit in expired]
                for slot, _task, _limit in expired:
                    self._abandon_locked(slot, replace=True)
                if not expired:
                    wait = None if soonest is None else soonest - now + _TIMEOUT_SLACK
                    self._watch_cond.wait(wait)
            now = time.monotonic()
            for (slot, task, limit), stack in zip(expired, stacks, strict=True):
                exc = TaskTimeoutError(
                    f"{task.describe()} ran longer than its task_timeout of {limit} s; "
                    f"a thread cannot be stopped, so it was abandoned (its result will be "
                    f"discarded) and replaced; its stack then is attached", timeout=limit,
                    pid=os.getpid())
                if stack:
                    exc.__cause__ = remote_traceback(
                        f"the worker thread's stack when its task_timeout ran out:\n{stack}")
                task.job.task_done(task, False, exc, slot.started, now, slot.idx, os.getpid())
            if expired:
                self.notify_pool()

    def _abandon_locked(self, slot: _Slot, *, replace: bool) -> None:
        slot.abandoned = True
        slot.state = "dead"
        self._abandoned.append(slot)
        self._exited.notify_all()
        if replace and not self._terminated:
            self._replaced += 1
            fresh = _Slot(slot.idx, self.new_quota())
            fresh.tasks_done = slot.tasks_done + 1
            fresh.tasks_failed = slot.tasks_failed + 1
            self._slots[slot.idx] = fresh
            self._launch_locked(fresh)

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._work.notify_all()
            self._watch_cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every (non-abandoned) worker thread has exited."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while any(s.state != "dead" for s in self._slots):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # Bounded waits: a wake-up lost to a thread dying oddly cannot hang join.
                self._exited.wait(0.5 if left is None else min(left, 0.5))
            # Abandoned threads (stuck in a task at terminate) are not waited for.
            threads = [s.thread for s in self._slots
                       if s.thread is not None and not s.abandoned]
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return True

    def terminate(self, _reason: BaseException | None = None) -> None:
        with self._lock:
            first = not self._terminated
            self._terminated = True
            jobs = list(self._pending) + list(self._starved)
            self._pending.clear()
            self._starved.clear()
            stranded: list[tuple[_Slot, Task]] = []
            for slot in self._slots:
                if slot.task is not None and not slot.abandoned:
                    stranded.append((slot, slot.task))
                    self._abandon_locked(slot, replace=False)
                elif not slot.abandoned:
                    slot.state = "dead" if slot.thread is None else slot.state
            self._work.notify_all()
            self._watch_cond.notify_all()
        if not first:
            return
        err = _reason or ClosedError("the pool was terminated before this task finished")
        for job in jobs:
            job.fail_all(err)
        now = time.monotonic()
        for slot, task in stranded:
            task.job.task_done(task, False, err, slot.started, now, slot.idx, os.getpid())
        self.notify_pool()

    # -- introspection -----------------------------------------------------------------------
    def worker_statistics(self) -> tuple[WorkerStatistics, ...]:
        now = time.monotonic()
        pid = os.getpid()
        out = []
        with self._lock:
            for s in self._slots:
                current = None
                if s.task is not None:
                    t = s.task
                    current = TaskInfo(t.id, t.job.function_name, s.started,
                                       max(0.0, now - s.started), t.n)
                out.append(WorkerStatistics(s.idx, pid, s.state, s.tasks_done, s.tasks_failed,
                                            current, s.created))
        return tuple(out)

    def abandoned_threads(self) -> int:
        """Threads abandoned at a timeout or terminate that are still running their task."""
        with self._lock:
            return len(self._abandoned)


def _run(task: Task) -> tuple[bool, Any]:
    """Run one task; (True, result) or (False, exception with the traceback as __cause__)."""
    job = task.job
    fn = job.fn
    try:
        if job.mode == MODE_CALL:
            args, kwargs = task.data
            return True, fn(*args, **kwargs)
        if job.mode == MODE_MAP:
            return True, list(map(fn, task.data))
        return True, [fn(*a) for a in task.data]
    except BaseException as exc:
        # Same shape as the process backend: the worker-side traceback as __cause__ (the
        # original chain is kept in that text).
        exc.__cause__ = remote_traceback(_format(exc))
        return False, exc


def _stack_of(thread: threading.Thread | None) -> str:
    """A running thread's stack, most recent call last (traceback's format); "" if gone."""
    import sys

    frame = sys._current_frames().get(thread.ident) if thread is not None and \
        thread.ident is not None else None
    if frame is None:
        return ""
    return "".join(traceback.format_stack(frame))


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


BACKEND = ThreadBackend
