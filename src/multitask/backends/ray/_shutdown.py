"""Shutdown: close/join, terminate, and releasing a Ray runtime that a pool of ours started.

Functions of :class:`RayBackend` (its methods, gathered in ``_backend.py``); the backend's
state is declared there.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import ray
import ray.exceptions
import ray.util.queue

from ..._core._errors import ClosedError
from ._records import _DEATH_WAIT, _Actor, _await_exits, _Call, _kill, _OwnedRay

if TYPE_CHECKING:
    from ._backend import RayBackend


def close(self: RayBackend) -> None:
    if self.forked_copy():
        return   # a forked child's copy: the parent's workers are not its own
    with self._lock:
        self._closing = True
        self._check_drained_locked()


def join(self: RayBackend, timeout: float | None = None) -> bool:
    if self.forked_copy():
        return True   # nothing of this process's to wait for (see Backend.forked_copy)
    if not self._drained.wait(timeout):
        return False
    self._stop()
    return True


def terminate(self: RayBackend, _reason: BaseException | None = None) -> None:
    if self.forked_copy():
        return   # a forked child's copy: the parent's workers are not its own
    with self._lock:
        first = not self._terminated
        self._terminated = True
        jobs = list(self._pending) + list(self._starved)
        self._pending.clear()
        self._starved.clear()
        stranded: list[tuple[_Actor, _Call]] = []
        for a in self._actors:
            for c in a.inflight:
                c.settled = True
                stranded.append((a, c))
            a.inflight.clear()
            a.state = "dead"
        self._drained.set()
    if first:
        err = _reason or ClosedError("the pool was terminated before this task finished")
        for job in jobs:
            job.fail_all(err)
        now = time.monotonic()
        for a, c in stranded:
            c.task.job.task_done(c.task, False, err, c.started, now, a.idx, a.pid)
        self.notify_pool()
    if threading.current_thread() is not self._thread:
        self._stop()
    else:
        self._events.put(("stop",))


def _stop(self: RayBackend) -> None:
    """Kill the actors, end the result thread, release Ray.  Idempotent, bounded."""
    with self._lock:
        if self._released:
            return
        self._released = True
        self._terminated = True
        actors = list(self._actors)
    for a in actors:
        a.state = "dead"
        _kill(a.handle)
    _await_exits(actors, _DEATH_WAIT)
    self._events.put(("stop",))
    if threading.current_thread() is not self._thread:
        self._thread.join(10.0)
    self._release_ray()


def _release_ray(self: RayBackend) -> None:
    if not self._owns_ray:
        return
    self._owns_ray = False
    with _OwnedRay.lock:
        _OwnedRay.users -= 1
        if _OwnedRay.users == 0 and ray.is_initialized():
            ray.shutdown()
