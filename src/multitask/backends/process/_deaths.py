"""A worker's death and the pool's failures: the exact accounting of a dead worker's tasks
(done, failed with :class:`WorkerDiedError`, re-queued), its cause, a broken pool, quitting.

Functions of :class:`ProcessBackend` (its methods, gathered in ``_backend.py``); the
backend's state is declared there.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from ..._core import _serialize, _spawn
from ..._core._errors import (
    ProcessError,
    TaskTimeoutError,
    WorkerDiedError,
    death_cause,
    remote_traceback,
    signal_of,
)
from ..._engine.jobs import MODE_ITEMS, Redo, Task
from .._worker import EXCEPTION_MARK
from ._records import _INBOUND_CAPACITY, _remote_exception, _Sends, _Worker

if TYPE_CHECKING:
    from ._backend import ProcessBackend


def _on_death(self: ProcessBackend, idx: int, pid: int, exitcode: int, rss: int = 0,
              crash: str = "") -> None:
    """Settle a dead worker's tasks (see the module docstring); replace it."""
    # (task, index of the failed item or None, its timeout record or None): the errors are
    # built after the lock is released -- their messages run the arguments' __repr__.
    failed: list[tuple[Task, int | None, tuple[int, float, str] | None]] = []
    # item groups: (task, first item settled now, whether that item failed, timeout record)
    failed_items: list[tuple[Task, int, bool, tuple[int, float, str] | None]] = []
    discard: list[Any] = []
    with self._lock:
        if self._stopped:
            return   # released: every task was settled by terminate()
        w = self._workers[idx]
        # A worker that died before announcing itself is still the one of this slot: the
        # zygote runs one worker per slot at a time, and reports its exit only once.
        if w.pid != pid and not (w.pid is None and w.state == "starting"):
            return
        w.pid = pid
        fd = self._pidfds.pop(pid, -1)
        if fd >= 0:
            os.close(fd)
        slot_task, slot_start, slot_item = self._slots.get_item(idx)
        timed_out = self._timed_out.pop(pid, None)
        tasks = list(w.inflight)
        w.inflight.clear()
        running_ids = [t.id for t in tasks]
        cut = running_ids.index(slot_task) + 1 if slot_task in running_ids else 0
        rest: list[Task] = []
        for task in tasks[:cut]:
            timeout = timed_out if timed_out is not None and timed_out[0] == task.id \
                else None
            discard.append(task.wire)
            if task.job.mode == MODE_ITEMS and task.id == slot_task:
                # Each item is its own task: the one running fails; those after it were
                # never started and go to another worker.  (If the slot still names an item
                # already settled, the worker died between items: none fails.)
                running = slot_item >= task.done
                k = slot_item if running else task.done
                after = k + 1 if running else k
                if after < task.n:
                    rest.append(Task(task.job, task.start + after, task.data[after:],
                                     task.n - after))
                    with task.job._lock:
                        task.job.outstanding += 1
                failed_items.append((task, k, running, timeout))
                w.tasks_done += 1 if running else 0
                w.tasks_failed += 1 if running else 0
                continue
            failed.append((task, None, timeout))
            w.tasks_done += 1
            w.tasks_failed += 1
        # Tasks it never started go back to the front of the queue, for another worker --
        # but not one whose worker cancel_task stopped (it may have started: never re-run).
        redo = rest
        for task in tasks[cut:]:
            if task.id in self._cancelled:
                failed.append((task, None, None))
            else:
                redo.append(task)
        for task in tasks:
            self._cancelled.discard(task.id)
        if redo:
            self._pending.appendleft(Redo(redo))
        w.state = "dead"
        w.backlog.clear()   # messages for tasks just failed or re-queued
        w.ring.close()
        graceful = exitcode == 0 and not failed
        # A worker that dies before it is ready (in the initializer, or killed while it
        # starts) would only be replaced by one that dies the same way, for ever: a pool
        # that never runs a task.  Broken instead, as when the initializer raises.
        # (Before it is ready a worker exits only so: its own quit message comes later.)
        died_starting: BaseException | None = None
        if not w.ready and not self._terminated and self._broken is None:
            sig = signal_of(exitcode)
            how = f"killed by {sig.name}" if sig is not None else f"exit code {exitcode}"
            died_starting = ProcessError(
                f"a worker (pid {pid}) died while starting, before it could take a task "
                f"({how}); the pool's initializer is the usual cause")
        replace = not self._terminated and self._broken is None and not (
            self._closing and not self._pending and graceful) and not self._zygote_told \
            and died_starting is None
        if replace:
            self._replaced += 0 if graceful else 1
            fresh = _Worker(idx, self._new_ring(_INBOUND_CAPACITY), self.new_quota())
            fresh.tasks_done = 0
            self._workers[idx] = fresh
            try:
                self._cmd.send(("spawn", idx, fresh.ring))
            except OSError:
                fresh.state = "dead"
        sends = self._dispatch_locked()
        self._maybe_quit_locked(sends)
        all_dead = all(x.state == "dead" for x in self._workers)
    self._send(sends)
    for wire in discard:
        if wire is not None:
            _serialize.discard(wire)
    cause = self._cause(exitcode, crash) if failed or failed_items else ""
    for task, item, timeout in failed:
        exc = self._death_error(task, item, idx, pid, exitcode, rss, crash, cause, timeout)
        task.job.task_done(task, False, exc, slot_start, time.monotonic(), idx, pid)
    for task, first, running, timeout in failed_items:
        outcomes: list[tuple[bool, Any]] = []
        if running:
            outcomes.append((False, self._death_error(
                task, first, idx, pid, exitcode, rss,
                crash, cause, timeout)))
        task.done = task.n
        task.job.items_done(task, first, outcomes, slot_start, time.monotonic(), idx, pid,
                            True)
    self.notify_pool()
    if all_dead:
        self._all_exited.set()
    if died_starting is not None:
        self._break(died_starting)


def _cause(self: ProcessBackend, exitcode: int, crash: str) -> str:
    """WorkerDiedError.cause of a death: the exit status, the kernel's OOM-kill count
    (read by the watcher at start, again here for a SIGKILL), the worker's crash report."""
    cause = death_cause(exitcode)
    if crash.startswith(EXCEPTION_MARK):
        return "exception"
    if exitcode == -signal.SIGKILL:
        before, now = self._oom_kills, _spawn.oom_kills()
        self._oom_kills = now
        if 0 <= before < now:
            return "oom"
    return cause


def _death_error(self: ProcessBackend, task: Task, item: int | None, idx: int, pid: int,
                 exitcode: int, rss: int, crash: str, cause: str,
                 timeout: tuple[int, float, str] | None) -> BaseException:
    """The error of a task that was running when its worker died (never under _lock)."""
    what = task.describe(item)
    if timeout is not None:
        _, limit, stack = timeout
        exc: BaseException = TaskTimeoutError(
            f"{what} ran longer than its task_timeout of {limit} s; its worker (pid {pid}) "
            f"was stopped and replaced" + ("; its stack then is attached" if stack else ""),
            timeout=limit, pid=pid)
        if stack:
            exc.__cause__ = remote_traceback(
                f"the worker's stack when its task_timeout ran out:\n{stack}")
        return exc
    exc = WorkerDiedError(pid=pid, exitcode=exitcode, cause=cause, task=what,
                          rss_peak=rss or None, worker=idx)
    if crash:
        exc.__cause__ = remote_traceback(crash.removeprefix(EXCEPTION_MARK))
    return exc


def _on_initializer_failed(self: ProcessBackend, body: memoryview) -> None:
    try:
        cause = _remote_exception(body)
    except BaseException as exc:
        cause = exc
    err = ProcessError(f"the pool's initializer failed in a worker: "
                       f"{type(cause).__name__}: {cause}")
    err.__cause__ = cause
    self._break(err)


def _on_zygote_lost(self: ProcessBackend) -> None:
    if self._terminated or self._all_exited.is_set() or self._zygote_told:
        return
    self._break(ProcessError("the pool's worker manager (zygote) died unexpectedly; "
                             "the pool cannot start workers any more"))


def _break(self: ProcessBackend, err: BaseException) -> None:
    """The pool cannot go on: fail every task, current and future, with ``err``."""
    with self._lock:
        if self._broken is not None:
            return
        self._broken = err
        jobs = list(self._pending) + self._starved
        self._pending.clear()
        self._starved.clear()
    for job in jobs:
        job.fail_all(err)
    self.terminate(_reason=err)


def _maybe_quit_locked(self: ProcessBackend, sends: _Sends) -> None:
    """After close(): tell idle workers to exit once nothing is left to do."""
    if not self._closing or self._pending or self._starved:
        return
    for w in self._workers:
        if w.state in ("starting", "running") and not w.inflight and not w.quitting:
            w.quitting = True
            w.backlog.append(b"Q")
            sends.flush.append(w)
    if not self._zygote_told and all(
            w.state == "dead" or (w.state == "running" and w.quitting and not w.inflight)
            for w in self._workers):
        # Every worker is on its way out with nothing left to run: no replacement can be
        # needed any more, so the zygote may go as soon as it has reaped and reported them
        # (overlapping its exit with theirs, instead of waiting for join()'s "exit").
        self._zygote_told = True
        try:
            self._cmd.send(("exit",))
        except OSError:
            pass
