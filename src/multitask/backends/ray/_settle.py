"""Results: the result thread takes Ray's completion events, settles calls in each actor's
order, handles a lost actor (its running task fails, the one queued behind it is re-sent),
deadlines and unborn actors.

Functions of :class:`RayBackend` (its methods, gathered in ``_backend.py``); the backend's
state is declared there.
"""

from __future__ import annotations

import queue as _queue
import time
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions
import ray.util.queue

from ..._core._errors import (
    ProcessError,
    SerializationError,
    TaskTimeoutError,
    WorkerDiedError,
    remote_traceback,
)
from ..._engine.codes import ST_OK
from ..._engine.jobs import Redo, Task
from ..._engine.log import logger
from ._actor import _remote_exception
from ._records import _START_GRACE, _Actor, _Call, _first_line, _kill

if TYPE_CHECKING:
    from ._backend import RayBackend


def _result_loop(self: RayBackend) -> None:
    while True:
        try:
            ev = self._events.get(timeout=self._next_deadline())
        except _queue.Empty:
            continue
        kind = ev[0]
        try:
            if kind == "done":
                self._on_done(ev[1], ev[2], ev[3])
            elif kind == "setup":
                self._on_setup(ev[1], ev[2])
            elif kind == "alive":
                if ev[2].exception() is None:
                    ev[1].alive = True      # a death shows in setup's outcome instead
            elif kind == "stop":
                return
        except BaseException:  # the result thread must survive anything
            logger.exception("multitask: the Ray result thread hit an error")


def _on_setup(self: RayBackend, a: _Actor, fut: Any) -> None:
    try:
        pid, host, err = fut.result()
    except ray.exceptions.RayActorError as exc:
        with self._lock:
            ours = a.state == "starting" and self._actors[a.idx] is a
        if ours:
            # It died in its initializer (os._exit, a crash): replacing it would loop.
            err = ProcessError(f"a Ray actor of the pool died while starting (in the "
                               f"initializer?): {_first_line(exc)}")
            err.__cause__ = exc
            self._break(err)
        return
    except BaseException as exc:
        self._break(ProcessError(f"a Ray actor of the pool could not start: {exc}"))
        return
    if err is not None:
        cause = _remote_exception(err)
        perr = ProcessError(f"the pool's initializer failed in a Ray actor: "
                            f"{type(cause).__name__}: {cause}")
        perr.__cause__ = cause
        self._break(perr)
        return
    with self._lock:
        a.pid, a.host = pid, host
        if a.state == "starting":
            a.state = "running"
            if a.inflight:   # its first task starts now, not when it was sent
                a.inflight[0].started = time.monotonic()
    self.notify_pool()


def _on_done(self: RayBackend, a: _Actor, call: _Call, fut: Any) -> None:
    try:
        status, value, t0, t1 = fut.result()
        outcome: tuple[str, Any] = ("ok" if status == ST_OK else "raised", (value, t0, t1))
    except ray.exceptions.RayActorError as exc:
        outcome = ("died", exc)
    except ray.exceptions.RayTaskError as exc:
        # Our run() catches the task's own exceptions, so this is Ray failing to
        # (de)serialize the arguments or the result.
        err = SerializationError(
            f"Ray could not serialize the arguments or the result of "
            f"{call.task.job.function_name}: {exc.cause!r}")
        err.__cause__ = remote_traceback(getattr(exc, "traceback_str", "") or str(exc))
        outcome = ("error", err)
    except BaseException as exc:   # ObjectLostError, OutOfMemoryError...: fail the task
        outcome = ("error", exc)
    settled: list[tuple[Task, bool, Any, float, float]] = []
    with self._lock:
        if call.settled:
            return     # already failed (timeout, terminate); late outcome is discarded
        call.outcome = outcome
        now = time.monotonic()
        died: BaseException | None = None
        # Settle in the actor's order: an actor runs its calls one by one, so the first
        # call that saw the death is the one it was running.
        while a.inflight and a.inflight[0].outcome is not None:
            c = a.inflight.popleft()
            c.settled = True
            kind, payload = c.outcome  # type: ignore[misc]
            a.tasks_done += 1
            if kind == "died":
                a.tasks_failed += 1
                died = WorkerDiedError(
                    f"the Ray actor (pid {a.pid} on {a.host or '?'}) running "
                    f"{c.task.job.function_name} died: {_first_line(payload)}", pid=a.pid)
                died.__cause__ = payload
                settled.append((c.task, False, died, c.started, now))
                break
            if kind == "error":
                a.tasks_failed += 1
                settled.append((c.task, False, payload, c.started, now))
            else:
                value, t0, t1 = payload
                ok = kind == "ok"
                if not ok:
                    a.tasks_failed += 1
                    value = _remote_exception(value)
                # Actor clocks are not ours (other nodes): place the run by its duration.
                started = max(c.started, now - (t1 - t0))
                settled.append((c.task, ok, value, started, now))
                if ok and c.task.n:
                    per = (t1 - t0) / c.task.n
                    old = self._fn_seconds.get(c.fid, 0.0)
                    self._fn_seconds[c.fid] = per if old == 0.0 else 0.7 * old + 0.3 * per
            if a.inflight:
                a.inflight[0].started = now   # the next call starts now
        if died is not None:
            self._lose_actor_locked(a)
        elif a.quota is not None and a.quota <= 0 and not a.inflight:
            self._retire_locked(a)          # maxtasksperchild: a fresh actor
        failures = self._dispatch_locked()
        self._check_drained_locked()
    self._report(failures)
    for task, ok, value, started, finished in settled:
        task.job.task_done(task, ok, value, started, finished, a.idx, a.pid)
    self.notify_pool()


def _lose_actor_locked(self: RayBackend, a: _Actor, *, kill: bool = False) -> None:
    """The actor is gone: re-queue the calls it never started, put a new actor in its slot."""
    a.state = "dead"
    redo = [c.task for c in a.inflight]
    for c in a.inflight:
        c.settled = True
    a.inflight.clear()
    if kill:
        _kill(a.handle)
    if redo:
        self._pending.appendleft(Redo(redo))
    if not self._terminated and self._broken is None:
        self._replaced += 1
        self._actors[a.idx] = self._new_actor_locked(a.idx)


def _retire_locked(self: RayBackend, a: _Actor) -> None:
    a.state = "dead"
    _kill(a.handle)
    if not self._terminated and self._broken is None:
        fresh = self._new_actor_locked(a.idx)
        self._actors[a.idx] = fresh


def _check_drained_locked(self: RayBackend) -> None:
    if (not self._starved and all(src.exhausted for src in self._pending)
            and all(not a.inflight for a in self._actors)):
        self._drained.set()


def _next_deadline(self: RayBackend) -> float | None:
    """Kill actors whose running task overran, replace actors Ray never created; return
    seconds until the next check."""
    now = time.monotonic()
    soonest: float | None = None
    expired: list[tuple[_Actor, _Call, float]] = []
    stalled: list[_Actor] = []
    with self._lock:
        if self._terminated:
            return None
        self._watch_starts = False
        for a in self._actors:
            if a.state != "starting" or a.alive:
                continue
            # Ray sometimes never creates an actor asked for right after others were
            # killed (seen on this 2-core machine: "starting" for ever, its calls with it).
            self._watch_starts = True
            deadline = a.born + _START_GRACE
            if now >= deadline:
                stalled.append(a)
            elif soonest is None or deadline < soonest:
                soonest = deadline
        for a in stalled:
            logger.warning("multitask: Ray did not create a pool actor within %g s; "
                           "replacing it", _START_GRACE)
            self._lose_actor_locked(a, kill=True)
        for a in self._actors:
            if not a.inflight or a.state == "dead":
                continue
            head = a.inflight[0]
            limit = head.task.job.timeout
            if limit is None:
                continue
            deadline = head.started + limit
            if now >= deadline:
                expired.append((a, head, limit))
            elif soonest is None or deadline < soonest:
                soonest = deadline
        settled = []
        for a, head, limit in expired:
            a.inflight.popleft()
            head.settled = True
            a.tasks_done += 1
            a.tasks_failed += 1
            exc = TaskTimeoutError(
                f"{head.task.job.function_name} ran longer than its task_timeout of "
                f"{limit} s; its Ray actor (pid {a.pid}) was killed and replaced",
                timeout=limit, pid=a.pid)
            settled.append((a, head.task, exc, head.started))
            self._lose_actor_locked(a, kill=True)
        failures = self._dispatch_locked() if expired or stalled else []
    self._report(failures)
    for a, task, exc, started in settled:
        task.job.task_done(task, False, exc, started, now, a.idx, a.pid)
    if settled:
        self.notify_pool()
    if settled or stalled:
        return 0.0    # look again at once: the replacements' start deadlines count now
    if soonest is None:
        return None
    return max(0.0, soonest - time.monotonic()) + 0.001


def _break(self: RayBackend, err: BaseException) -> None:
    """The pool cannot go on (initializer failed): fail everything with ``err``."""
    with self._lock:
        if self._broken is not None:
            return
        self._broken = err
    self.terminate(_reason=err)
