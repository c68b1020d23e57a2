"""Settling results: the reader of the result ring (the caller leading in ``get()``, else the
result thread), each message settled in ring order, results delivered to their jobs.

Functions of :class:`ProcessBackend` (its methods, gathered in ``_backend.py``); the
backend's state is declared there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._core import _interrupts, _serialize
from ..._core._errors import ClosedError, ProcessError, SerializationError
from ..._engine.codes import ST_OK, ST_UNSERIALIZABLE
from ..._engine.jobs import MODE_ITEMS, Task
from ..._engine.log import logger
from .._worker import BATCH_HDR, FUNC_HDR, ITEM_ALL, RECYCLE, RES_HDR, STARTED
from ._records import _DIED, _MAIN_THREAD, _remote_exception, _Sends, _Worker

if TYPE_CHECKING:
    from ._backend import ProcessBackend


def _result_loop(self: ProcessBackend) -> None:
    """The follower: reads the result ring whenever no blocked caller leads (see lead())."""
    ring = self._outbound
    while True:
        try:
            msgs = ring._follow_get(256)
        except ClosedError:
            return
        try:
            stop = self._pump(msgs)
        finally:
            ring._follow_done()
        if stop:
            return


def lead(self: ProcessBackend, until: Callable[[], bool], deadline: float | None) -> bool:
    """Read the result ring in the calling thread until ``until()`` or ``deadline``.

    The leader/follower scheme (the C side is the ring's reader gate): a caller blocked in
    ``get()``/``next()`` takes the results out of the ring itself, so its own result needs
    no hand-off from the result thread -- a futex wake-up plus a GIL transfer, 20-100 us
    each on a loaded 2-core VM, and the bulk of a round trip.  It settles every message it
    takes, in ring order, exactly as the result thread would (other callers' results too),
    and stops as soon as ``until()`` holds.  If the result thread is in the middle of a
    batch, waits for it to hand over (it does not read on while a caller waits to lead).
    Returns False at once if another caller leads: the caller then waits on its result,
    which that leader delivers.
    """
    ring = self._outbound
    if self._settler == threading.get_ident() and not until():
        # A callback (run by the thread settling results) waits for a result: that result
        # could only be delivered by this very thread, which is busy in the callback.  The
        # stdlib hangs here (its result handler blocks); say so instead.
        raise ProcessError(
            "a callback waited for a result of its own pool (get(), wait() or next() "
            "inside a callback or error_callback): results are delivered by the thread "
            "running the callback, so it would wait for ever; take the result elsewhere "
            "(callbacks must not block, as in the stdlib)")
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    # Everything from the acquire on is inside try: a Ctrl-C between a successful acquire
    # and the try would leave the gate held forever (_lead_release is a no-op unless this
    # thread leads).
    try:
        # If the result thread is settling a batch, it hands the gate over when done.
        if self._stopped or not ring._lead_acquire(wait):
            return False
        self._leader = threading.get_ident()
        if self._leader == _MAIN_THREAD:
            _interrupts.install()
        while not until():
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            # Interruptible while it waits; once it has taken messages, a Ctrl-C is held
            # back until they are all settled (see _core._interrupts).
            msgs = ring._lead_get(256, timeout)
            if not msgs:
                break
            try:
                end = self._pump(msgs)
            finally:
                _interrupts.end()
            if end:
                # the result thread's end marker: leave it to the result thread
                ring.put(b"E", None)
                break
    except ClosedError:
        pass   # the pool shut down while we waited: the caller finds its result settled
    finally:
        # The gate first, in one C call: a Ctrl-C raised in this finally (CPython checks
        # after every call, e.g. threading.get_ident()) would skip what follows it, and a
        # gate left held makes the result thread sleep while every other caller waits.
        ring._lead_release()
        if self._leader == threading.get_ident():
            self._leader = None
    return True


def kick(self: ProcessBackend) -> None:
    leader = self._leader
    if leader is not None and leader != threading.get_ident():
        try:
            self._outbound.put(b"W", 0)
        except ClosedError:
            pass


def _pump(self: ProcessBackend, msgs: list[Any]) -> bool:
    """Settle messages from the result ring, in order.  True when the end marker came.

    Only ever one thread at a time (the reader gate's holder): ``_settler`` names it, so
    that a callback it runs cannot wait on a result only it could deliver (see lead)."""
    self._settler = threading.get_ident()
    try:
        return self._settle_msgs(msgs)
    finally:
        self._settler = None


def _settle_msgs(self: ProcessBackend, msgs: list[Any]) -> bool:
    results: list[memoryview] = []
    for msg in msgs:
        kind = msg[0:1]
        if kind == b"R":
            results.append(memoryview(msg))
            continue
        # Anything else is settled in order, after the results that came before it.
        if results:
            self._on_results(results)
            results = []
        if kind == b"D":
            _, idx, pid, code, rss = _DIED.unpack_from(msg, 0)
            crash = bytes(memoryview(msg)[_DIED.size:]).decode("utf-8", "replace")
            self._on_death(idx, pid, code, rss, crash)
        elif kind == b"S" or kind == b"P":
            _, idx, pid = STARTED.unpack_from(msg, 0)
            with self._lock:
                w = self._workers[idx]
                if kind == b"S" and w.pid in (None, pid):
                    w.ready = True
                timed = False
                if w.state == "starting":   # from the worker or the zygote, first wins
                    w.pid = pid
                    w.state = "running"
                    timed = any(t.job.timeout is not None for t in w.inflight)
            if timed:   # deadlines of tasks queued before it started can now be enforced
                self.poke_watcher()
            if pid not in self._pidfds:
                # Often before the watcher has read the zygote's report of the start:
                # a join() right after close() needs the pidfd (see _exit_fds).
                self._watch_pid(pid)
            self.notify_pool()
        elif kind == b"M":   # max_memory_per_child: it exits after this, send it no more
            _, idx, pid, _rss = RECYCLE.unpack_from(msg, 0)
            with self._lock:
                w = self._workers[idx]
                if w.pid == pid:
                    w.quitting = True
                    self._memory_recycled += 1
        elif kind == b"I":
            self._on_initializer_failed(memoryview(msg)[FUNC_HDR.size:])
        elif kind == b"Z":
            self._on_zygote_lost()
        elif kind == b"E":   # end of the result thread (join/terminate)
            return True
        # b"W": a leader's wake-up (kick); nothing to settle
    if results:
        self._on_results(results)
    return False


def _on_results(self: ProcessBackend, views: list[memoryview]) -> None:
    """Settle a batch of result messages: bookkeeping under the lock, delivery after."""
    sends = _Sends()
    done: list[tuple[Task, int, memoryview, float, float, int, int | None]] = []
    # item groups: [task, first item, [(status, body)], t0, t1, worker, pid, last]
    items: list[list[Any]] = []
    fn_seconds = self._fn_seconds
    with self._lock:
        for view in views:
            _, count, idx = BATCH_HDR.unpack_from(view, 0)
            off = BATCH_HDR.size
            w = self._workers[idx]
            inflight = w.inflight
            for _ in range(count):
                task_id, status, item, n, t0, t1 = RES_HDR.unpack_from(view, off)
                off += RES_HDR.size
                body = view[off:off + n]
                off += n
                # Results come back in the order tasks were sent to this worker, which
                # is the order of inflight (see _flush).
                if ((not inflight or inflight[0].id != task_id)
                        and not self._out_of_order_locked(w, task_id)):
                    continue   # a task already settled (terminate raced with it)
                task = inflight[0]
                key = id(task.job.fn)
                if task.job.mode == MODE_ITEMS:
                    first = task.done
                    if item == ITEM_ALL:       # the group could not start at all
                        cnt = task.n - first
                    elif item == first:
                        cnt = 1
                    else:
                        continue               # settled already (defensive)
                    task.done = first + cnt
                    last = task.done >= task.n
                    recs = [(status, body)] * cnt
                    prev = items[-1] if items else None
                    if prev is not None and prev[0] is task:
                        prev[2].extend(recs)
                        prev[4] = t1
                        prev[7] = last
                    else:
                        items.append([task, first, recs, t0, t1, idx, w.pid, last])
                    w.tasks_done += cnt
                    if status != ST_OK:
                        w.tasks_failed += cnt
                    if last:
                        inflight.popleft()
                        w.queued = max(0.0, w.queued - task.est)
                    per_item = t1 - t0
                else:
                    task = inflight.popleft()
                    w.queued = max(0.0, w.queued - task.est)
                    done.append((task, status, body, t0, t1, idx, w.pid))
                    w.tasks_done += 1
                    if status != ST_OK:
                        w.tasks_failed += 1
                    per_item = (t1 - t0) / max(1, task.n)
                old = fn_seconds.get(key)
                fn_seconds[key] = per_item if old is None else 0.7 * old + 0.3 * per_item
            if w.backlog:   # its ring was full: it has taken some of it by now
                sends.flush.append(w)
        dispatched = self._dispatch_locked()
        sends.flush.extend(dispatched.flush)
        sends.failures = dispatched.failures
        sends.poke = dispatched.poke
        self._maybe_quit_locked(sends)
    self._send(sends)
    for task, status, body, t0, t1, idx, pid in done:
        ok, value = self._decode(task, status, body)
        task.wire = None
        task.job.task_done(task, ok, value, t0, t1, idx, pid)
    for task, first, recs, t0, t1, idx, pid, last in items:
        outcomes = [self._decode(task, status, body) for status, body in recs]
        if last:
            task.wire = None
        task.job.items_done(task, first, outcomes, t0, t1, idx, pid, last)


def _out_of_order_locked(self: ProcessBackend, w: _Worker, task_id: int) -> bool:
    """A result that is not for the head of ``w.inflight``: True if it is for a task further
    on (settled then, never dropped), False if for none (settled already by terminate).

    Cannot happen while sends keep the order of inflight (see _flush); if a future change
    breaks that, the result is still delivered and the breach is logged, not hung on.
    """
    for k, task in enumerate(w.inflight):
        if task.id == task_id:
            del w.inflight[k]
            w.inflight.appendleft(task)
            if not self._order_breach_logged:
                self._order_breach_logged = True
                logger.error("multitask: worker %d answered task %d out of order (an "
                             "internal error, please report it); it is settled anyway",
                             w.idx, task_id)
            return True
    return False


def _decode(self: ProcessBackend, task: Task, status: int, body: Any) -> tuple[bool, Any]:
    """A result record's outcome: (True, value) or (False, exception); never raises."""
    try:
        if status == ST_OK:
            return True, _serialize.loads(body)
        return False, _remote_exception(body, status == ST_UNSERIALIZABLE)
    except BaseException as exc:
        err = SerializationError(
            f"the result of {task.job.function_name} could not be unpickled in the "
            f"parent: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return False, err
