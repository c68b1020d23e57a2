"""Submitting: jobs into the pending queue, dispatch to the worker with the least estimated
work queued, the messages put into its ring (functions cached per worker).

Functions of :class:`ProcessBackend` (its methods, gathered in ``_backend.py``); the
backend's state is declared there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..._core import _serialize
from ..._core._errors import ClosedError
from ..._engine.jobs import MODE_CALL, MODE_ITEMS, Job, Redo, Task
from .._worker import FUNC_HDR
from ._records import (
    _MAX_PREFETCH,
    _PREFETCH_SECONDS,
    _UNKNOWN_SECONDS,
    _as_serialization_error,
    _Batch,
    _Deferred,
    _queued,
    _Sends,
    _Worker,
)

if TYPE_CHECKING:
    from ._backend import ProcessBackend


def submit(self: ProcessBackend, job: Job) -> None:
    self.refuse_forked_copy()
    self._funcs.prime(job.fn)   # user code (pickling the function): not under the lock
    with self._lock:
        if self._broken is not None:
            raise self._broken
        self._pending.append(job)
        sends = self._dispatch_locked()
    self._send(sends)


def prepare(self: ProcessBackend, job: Job) -> None:
    task = getattr(job, "task", None)
    if task is not None and task.wire is None:
        try:
            task.wire = _serialize.dumps(task.data, self._spill_prefix, self._arena)
        except BaseException as exc:
            raise _as_serialization_error(
                exc, f"the arguments of {job.function_name}") from exc


def wake(self: ProcessBackend) -> None:
    with self._lock:
        if self._starved:
            self._pending.extend(self._starved)
            self._starved.clear()
        sends = self._dispatch_locked()
    self._send(sends)


def _has_room(self: ProcessBackend, w: _Worker) -> bool:
    """Prefetch policy: an idle worker always has room; a busy one only while the work
    queued on it is known to be short (about ``_PREFETCH_SECONDS``).  Cheap tasks thus travel
    in batches, while tasks of unknown or long duration wait in the pool's queue for
    whichever worker frees up first -- never behind a slow task (head-of-line blocking)."""
    n = len(w.inflight)
    if w.quota is not None and w.quota <= 0:
        return False
    if not self._prefetch:
        return n == 0
    if n == 0 or (w.queued < _PREFETCH_SECONDS and n < _MAX_PREFETCH):
        return True
    # A map's chunks are sized by guided self-scheduling (shrinking towards the end), so one
    # queued behind the running one costs no balance but saves the worker a round trip
    # through the parent between chunks (the stdlib queues them all up front).
    return n == 1 and self._next_is_chunk() and w.inflight[0].job.mode != MODE_CALL


def _next_is_chunk(self: ProcessBackend) -> bool:
    head = self._pending[0] if self._pending else None
    return isinstance(head, Job) and head.mode != MODE_CALL


def _estimate(self: ProcessBackend, task: Task) -> float:
    """Expected seconds of work: measured for this call, else for this function."""
    job = task.job
    per_item = job.item_seconds or self._fn_seconds.get(id(job.fn), 0.0)
    return per_item * task.n if per_item > 0 else _UNKNOWN_SECONDS


def _dispatch_locked(self: ProcessBackend) -> _Sends:
    """Hand pending tasks to workers with room (under ``_lock``).

    Each task goes to the live worker with the least estimated work queued.  Nothing that can
    block or run user code happens here: the messages are returned and put into the rings by
    :meth:`_send` after the lock is released; a call's arguments were serialized before
    (``prepare``), a map's chunk is serialized by ``_flush`` (its items' ``__reduce__`` is user
    code), and the functions were primed by ``submit``.
    """
    sends = _Sends()
    if not self._pending or self._terminated:
        return sends
    live = [w for w in self._workers
            if w.state in ("starting", "running") and not w.quitting and self._has_room(w)]
    batches: dict[int, _Batch] = {}
    now = time.monotonic()
    while self._pending and live:
        w = min(live, key=_queued) if len(live) > 1 else live[0]
        source = self._pending[0]
        task = source.next_task()
        if task is None:
            self._pending.popleft()
            if not source.exhausted:
                self._starved.append(source)
            continue
        job = task.job
        batch = batches.get(w.idx)
        if batch is None:
            batch = batches[w.idx] = _Batch(w)
        try:
            fid, fmsgs = self._function_locked(job.fn, w)
        except BaseException as exc:
            sends.failures.append((task, _as_serialization_error(
                exc, f"the function {job.function_name}")))
            continue
        # (a chunk's input, task.wire None here, is serialized by _flush, after the lock)
        batch.add(task, fid, job.mode, fmsgs)
        task.worker = w.idx
        task.dispatched = now
        task.est = self._estimate(task)
        w.queued += task.est
        w.inflight.append(task)
        if job.timeout is not None and now + job.timeout < self._watch_at:
            self._watch_at = now + job.timeout
            sends.poke = True
        if w.quota is not None:
            w.quota -= 1
            if w.quota <= 0:
                w.quitting = True          # maxtasksperchild: exit after these
                batch.quit = True
        if not self._has_room(w) or w.quitting:
            live.remove(w)
    for batch in batches.values():
        batch.worker.backlog.extend(batch.finish())
        sends.flush.append(batch.worker)
    return sends


def _send(self: ProcessBackend, sends: _Sends) -> None:
    """Put dispatched messages into the rings and report failures; never under ``_lock``.

    Never blocks: what does not fit into a worker's ring stays in its backlog (see _flush).
    """
    if sends.flush:
        for w in sends.flush if len(sends.flush) == 1 else dict.fromkeys(sends.flush):
            self._flush(w)
    for task, exc in sends.failures:
        task.job.task_done(task, False, exc, 0.0, 0.0, -1, None)
    if sends.poke:
        self.poke_watcher()


def _flush(self: ProcessBackend, w: _Worker) -> None:
    """Move worker ``w``'s backlog into its ring, in order, without ever waiting for room.

    Dispatch decides under ``_lock`` (which tasks, in which order: ``w.inflight``) and
    appends the messages to ``w.backlog`` there; the copy into the ring happens here, after
    ``_lock`` is released.  Several threads dispatch (a caller's submit, the reader of the
    results, the watcher after a death), so the puts are serialized by ``w.send_lock`` and
    each flush takes *everything* queued so far: the ring receives the messages in the
    order of ``inflight``, which is what the worker's results are matched against.  (Before,
    each dispatcher put its own batch after releasing ``_lock``; two of them could overtake
    each other, the worker then answered in another order than ``inflight``, and those
    results were dropped as stale: a lost result and a hung ``get()``, issue #16.)

    The put does not wait (timeout 0): whatever does not fit stays at the front of the
    backlog and is flushed when this worker's next result is settled -- a worker whose
    ring is full has tasks to run, so a result is coming.  The thread reading results thus
    never blocks on a worker's ring.  ``send_lock`` is held across that non-blocking put and
    the serialization of a map chunk's input (a ``_Deferred`` in the backlog), so a thread
    waiting for it waits for a memcpy and that user code, never for a worker -- and only
    threads sending to this worker wait: the dispatch lock is free meanwhile (#20).  A chunk
    that cannot be serialized leaves inflight (``_unsent``).
    """
    # No _lock here: dispatchers append to the deque's right end under _lock, and only
    # the holder of send_lock takes from its left end (deque's append, popleft and
    # extendleft are atomic), so the order holds without a second _lock round per send.
    backlog = w.backlog
    unsent: list[tuple[Task, BaseException]] = []
    with w.send_lock:
        while backlog:
            msgs = []
            while backlog:
                msg = backlog.popleft()
                if type(msg) is _Deferred:
                    # A map's chunk: its items' __reduce__ (user code) runs here, not under
                    # _lock; still in w.inflight's order, since send_lock is held.
                    task = msg.task
                    try:
                        if task.wire is None:
                            task.wire = _serialize.dumps(task.data, self._spill_prefix,
                                                         self._arena)
                    except BaseException as exc:
                        unsent.append((task, exc))
                        continue
                    msg = msg.message(task.wire)
                msgs.append(msg)
            try:
                n = w.ring.put_many(msgs, 0)
            except ClosedError:
                break   # the worker died meanwhile; its death settles these tasks
            if n < len(msgs):
                # ahead of anything appended meanwhile (that came later in inflight)
                backlog.extendleft(reversed(msgs[n:]))
                break
    if unsent:
        self._unsent(w, unsent)


def _unsent(self: ProcessBackend, w: _Worker, unsent: list[tuple[Task, BaseException]]) -> None:
    """Tasks whose input could not be serialized when ``_flush`` sent them: out of the worker's
    inflight (it never got them); a group of items goes back one item per task, so that only
    the item that cannot cross fails, else the call fails -- never the pool."""
    failures: list[tuple[Task, BaseException]] = []
    with self._lock:
        for task, exc in unsent:
            try:
                w.inflight.remove(task)
            except ValueError:
                continue   # the worker died meanwhile: its death re-queued the task
            w.queued = max(0.0, w.queued - task.est)
            job = task.job
            if job.mode == MODE_ITEMS and task.n > 1:
                singles = [Task(job, task.start + i, [x], 1) for i, x in enumerate(task.data)]
                with job._lock:
                    job.outstanding += len(singles) - 1
                self._pending.appendleft(Redo(singles))
            else:
                failures.append((task, _as_serialization_error(
                    exc, f"the arguments of {job.function_name}")))
        sends = self._dispatch_locked()
    sends.failures.extend(failures)
    self._send(sends)


def _function_locked(self: ProcessBackend, fn: Any, w: _Worker) -> tuple[int, list[bytes]]:
    """The function's id, and the messages worker ``w`` needs before using it."""
    fid, data, evicted = self._funcs.entry(fn)
    msgs: list[bytes] = []
    for old_key, old_id in evicted:
        self._fn_seconds.pop(old_key, None)
        for other in self._workers:
            other.funcs.discard(old_id)
            other.forget.append(old_id)
    if w.forget:
        msgs.extend(FUNC_HDR.pack(b"X", old) for old in w.forget)
        w.forget.clear()
    if fid not in w.funcs:
        w.funcs.add(fid)
        msgs.append(FUNC_HDR.pack(b"F", fid) + data)
    return fid, msgs
