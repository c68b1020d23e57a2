"""The watcher thread: the zygote's reports and pidfds of exits, task deadlines
(``task_timeout``), cancelling a running task, deferred front-end callbacks.

Functions of :class:`ProcessBackend` (its methods, gathered in ``_backend.py``); the
backend's state is declared there.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._core import _spawn, _stacks
from ..._core._errors import ProcessError
from ..._engine.jobs import Task
from ...monitor import _hook
from .._worker import STARTED

if TYPE_CHECKING:
    from ._backend import ProcessBackend


def when_running(self: ProcessBackend, fn: Callable[[], None]) -> None:
    """Run ``fn`` from the watcher thread once it runs (see Backend.when_running), or at
    once if it already has (or never will: the pool was stopped first)."""
    with self._lock:
        if self._when_running is not None and not self._stopped:
            self._when_running.append(fn)
            return
    fn()


def _run_when_running(self: ProcessBackend) -> None:
    with self._lock:
        callbacks, self._when_running = self._when_running, None
    for fn in callbacks or ():
        fn()


def _watch_loop(self: ProcessBackend) -> None:
    # _stop() joins this thread before the result thread, so once it has, the result
    # thread was either started here or never will be.
    with self._lock:
        begin = not self._stopped
    if not begin:
        self._run_when_running()   # stopped first: nothing runs, but nothing is dropped
    if begin:
        try:
            self._result_thread.start()
        except RuntimeError as exc:   # "can't start new thread": no results without it
            self._break(ProcessError(f"could not start the pool's result thread: {exc}"))
        # The zygote's registration for `multitask ps` is queued (start() made it before
        # starting this thread); the pool's own, made after start(), joins the queue
        # while the hand-over thread waits (see monitor/_hook.py).
        _hook.start_pending()
        self._run_when_running()
        # The baseline a SIGKILLed worker's cause is judged against (see _cause); here,
        # not in start(): ~0.1 ms of file reads, off the path of the pool's first result.
        self._oom_kills = _spawn.oom_kills()
    sel = selectors.DefaultSelector()
    sel.register(self._report, selectors.EVENT_READ, "report")
    sel.register(self._zygote.sentinel, selectors.EVENT_READ, "zygote")
    sel.register(self._wake_r, selectors.EVENT_READ, "wake")
    with self._lock:
        for pid in self._direct:
            sel.register(self._pidfds[pid], selectors.EVENT_READ, pid)
    zygote_gone = False
    try:
        while True:
            timeout = self._next_deadline()
            for key, _ in sel.select(timeout):
                if key.data == "report":
                    try:
                        msg = self._report.recv()
                    except (EOFError, OSError):
                        sel.unregister(self._report)
                        continue
                    if msg[0] == "started":
                        self._watch_pid(msg[2])
                        self._outbound.put(STARTED.pack(b"P", msg[1], msg[2]), None)
                    elif msg[0] == "exited":
                        self._post_death(*msg[1:])
                elif key.data == "zygote":
                    sel.unregister(self._zygote.sentinel)
                    zygote_gone = True
                    # Let the zygote's last reports through before declaring it lost.
                    while self._report.poll(0):
                        try:
                            msg = self._report.recv()
                        except (EOFError, OSError):
                            break
                        if msg[0] == "exited":
                            self._post_death(*msg[1:])
                    self._outbound.put(b"Z", None)
                elif key.data == "wake":
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                else:   # a worker forked here exited
                    sel.unregister(key.fd)
                    self._reap_direct(key.data)
            if self._winding_down or (
                    self._terminated and (zygote_gone or self._zygote_detached)):
                return
    finally:
        sel.close()


def _next_deadline(self: ProcessBackend) -> float | None:
    """Kill workers whose running task overran; return seconds until the next check."""
    if self._terminated:
        return 0.05
    now = time.monotonic()
    soonest: float | None = None
    kills: list[tuple[int, int, float]] = []
    with self._lock:
        for w in self._workers:
            if not w.inflight or w.pid is None or w.state != "running":
                continue
            slot_task, start = self._slots.get(w.idx)
            for task in w.inflight:
                limit = task.job.timeout
                if limit is None:
                    if task.id == slot_task:
                        break
                    continue
                if task.id == slot_task:
                    deadline = start + limit
                    if now >= deadline and w.pid not in self._timed_out:
                        kills.append((w.pid, task.id, limit))
                    elif soonest is None or deadline < soonest:
                        soonest = deadline
                    break
                # Not started yet: it cannot expire before dispatch + limit; look again then.
                deadline = task.dispatched + limit
                if soonest is None or deadline < soonest:
                    soonest = deadline
        for pid, task_id, limit in kills:
            self._timed_out[pid] = (task_id, limit, "")
        self._watch_at = float("inf") if soonest is None else soonest
    for pid, task_id, limit in kills:
        # What it was doing goes into the TaskTimeoutError (its __cause__): a faulthandler
        # dump, taken before the kill -- in a thread of its own, because it can take up to
        # ~0.7 s (a worker that does not answer) and the watcher must go on reporting
        # deaths meanwhile (a watcher blocked here stalled a recycling pool: soak).
        try:
            threading.Thread(target=self._stack_then_kill, args=(pid, task_id, limit),
                             name="multitask-timeout", daemon=True).start()
        except RuntimeError:   # no thread to be had: kill without the stack
            self._kill_worker(pid)
    if soonest is None:
        return None
    return max(0.0, soonest - time.monotonic()) + 0.001


def item_seconds_hint(self: ProcessBackend, fn: Callable[..., Any]) -> float:
    return self._fn_seconds.get(id(fn), 0.0)


def cancel_task(self: ProcessBackend, task: Task) -> bool:
    """Stop ``task`` by killing its worker (replaced as after any death), if the task is the
    one that worker runs or will run next -- never one queued behind another task (that
    would stop the other); with ``prefetch=False`` a worker holds only one.  The task is
    then failed with WorkerDiedError, never re-run."""
    with self._lock:
        if self._terminated or task.worker < 0:
            return False
        w = self._workers[task.worker]
        if w.pid is None or w.state != "running" or not w.inflight:
            return False
        slot_task, _ = self._slots.get(w.idx)
        if w.inflight[0] is not task and slot_task != task.id:
            return False   # done, or queued behind the task its worker runs
        self._cancelled.add(task.id)
        pid = w.pid
    self._kill_worker(pid)
    return True


def _stack_then_kill(self: ProcessBackend, pid: int, task_id: int, limit: float) -> None:
    """A timed-out worker: its stack for the TaskTimeoutError, then SIGKILL.  Bounded
    (_stacks.request ends by its deadline, or when the worker exits)."""
    stack = ""
    try:
        stack = _stacks.request(pid, timeout=0.5, quiet=0.05) or ""
    except OSError:
        pass
    if stack:
        with self._lock:
            if pid in self._timed_out:
                self._timed_out[pid] = (task_id, limit, stack)
    self._kill_worker(pid)


def poke_watcher(self: ProcessBackend) -> None:
    try:
        os.write(self._wake_w, b"x")
    except (BlockingIOError, OSError):
        pass
