"""Submitting: jobs into the pending queue, dispatch to the least loaded actor (a second task
queued only behind a cheap one), functions sent once per actor.

Functions of :class:`RayBackend` (its methods, gathered in ``_backend.py``); the backend's
state is declared there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..._core._errors import ClosedError
from ..._engine.jobs import MODE_CALL, Job, Task
from ._records import (
    _HEAD_SLOW_AFTER,
    _PIPELINE_BELOW,
    _Actor,
    _Call,
    _check_picklable,
    _put_big,
    _serialization_error,
)

if TYPE_CHECKING:
    from ._backend import RayBackend


def prepare(self: RayBackend, job: Job) -> None:
    task = getattr(job, "task", None)
    if task is None or task.wire is not None:
        return
    try:
        task.data = _put_big(task.data, MODE_CALL)
        # Ray would report an unpicklable argument only at dispatch; check now so the call
        # that passed it raises (as with the process backend).
        _check_picklable(task.data)
    except BaseException as exc:
        raise _serialization_error(exc, f"the arguments of {job.function_name}") from exc
    task.wire = True     # prepared


def submit(self: RayBackend, job: Job) -> None:
    self.refuse_forked_copy()
    self._funcs.prime(job.fn)   # user code (pickling the function): not under the lock
    with self._lock:
        if self._broken is not None:
            raise self._broken
        if self._terminated:
            raise ClosedError("Pool not running (it is terminated)")
        self._drained.clear()
        self._pending.append(job)
        failures = self._dispatch_locked()
    self._report(failures)


def wake(self: RayBackend) -> None:
    with self._lock:
        if self._starved:
            self._pending.extend(self._starved)
            self._starved.clear()
        failures = self._dispatch_locked()
        self._check_drained_locked()
    self._report(failures)


def _room(self: RayBackend, a: _Actor, now: float) -> int:
    """How many tasks actor ``a`` may be sent now (0, 1 or 2)."""
    if a.state == "dead" or (a.quota is not None and a.quota <= 0):
        return 0
    n = len(a.inflight)
    if n == 0:
        return 1
    if n >= 2:
        return 0
    # A second task waits in the actor's queue behind the first, which hides the round
    # trip for cheap tasks but holds the second hostage if the first is slow.  So only
    # behind a task whose function has been measured to be cheap, and not overdue.
    head = a.inflight[0]
    est = self._fn_seconds.get(head.fid, 0.0) * max(1, head.task.n)
    if est <= 0.0 or est >= _PIPELINE_BELOW:
        return 0
    if now - head.started > max(_HEAD_SLOW_AFTER, 4 * est):
        return 0
    return 1


def _dispatch_locked(self: RayBackend) -> list[tuple[Task, BaseException]]:
    """Hand pending tasks to actors with room, least loaded first (under ``_lock``)."""
    failures: list[tuple[Task, BaseException]] = []
    if self._terminated:
        return failures
    now = time.monotonic()
    while self._pending:
        candidates = [a for a in self._actors if self._room(a, now) > 0]
        if not candidates:
            break
        a = min(candidates, key=lambda x: (len(x.inflight), x.state != "running"))
        task = self._take_locked()
        if task is None:
            break
        try:
            self._send_locked(a, task, now)
        except BaseException as exc:
            failures.append((task, _serialization_error(
                exc, f"the arguments of {task.job.function_name}")))
    return failures


def _take_locked(self: RayBackend) -> Task | None:
    while self._pending:
        source = self._pending[0]
        task = source.next_task()
        if task is not None:
            return task
        self._pending.popleft()
        if not source.exhausted and isinstance(source, Job):
            self._starved.append(source)
    return None


def _send_locked(self: RayBackend, a: _Actor, task: Task, now: float) -> None:
    job = task.job
    fid, fbytes = self._function_locked(job.fn)
    send = None if fid in a.funcs else fbytes
    if task.wire is None:     # map chunks: large arrays to the object store now
        task.data = _put_big(task.data, job.mode)
        task.wire = True
    ref = a.handle.run.remote(fid, send, job.mode, task.data)
    a.funcs.add(fid)
    task.worker = a.idx
    task.dispatched = now
    call = _Call(task, ref, fid, now)
    a.inflight.append(call)
    if a.quota is not None:
        a.quota -= 1
    events = self._events
    ref.future().add_done_callback(lambda f: events.put(("done", a, call, f)))
    if job.timeout is not None:
        events.put(("tick",))    # the result thread recomputes its next deadline


def _function_locked(self: RayBackend, fn: Any) -> tuple[int, bytes]:
    fid, data, evicted = self._funcs.entry(fn)
    for _, old_id in evicted:
        self._fn_seconds.pop(old_id, None)
        for a in self._actors:
            if old_id in a.funcs:
                a.funcs.discard(old_id)
                # after every call already submitted by this process (Ray keeps one
                # caller's calls to an actor in order), so none of them misses it
                a.handle.forget.remote(old_id)
    return fid, data


def _report(self: RayBackend, failures: list[tuple[Task, BaseException]]) -> None:
    for task, exc in failures:
        task.job.task_done(task, False, exc, 0.0, 0.0, -1, None)
