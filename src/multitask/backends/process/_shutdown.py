"""Shutdown: close/join (waiting on the workers' exits), terminate, and releasing the rings,
pipes and threads.

Functions of :class:`ProcessBackend` (its methods, gathered in ``_backend.py``); the
backend's state is declared there.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from ..._core import _serialize, _spawn
from ..._core._channel import ForkedChild
from ..._core._errors import ClosedError
from ..._core._forkhelper import HelperChild
from ..._engine.jobs import Task
from ._records import _parent_pid_of, _publish_zygote, _Sends, _wait_all, _Worker

if TYPE_CHECKING:
    from ._backend import ProcessBackend


def close(self: ProcessBackend) -> None:
    if self.forked_copy():
        return   # a forked child's copy: the parent's workers are not its own
    sends = _Sends()
    with self._lock:
        self._closing = True
        self._maybe_quit_locked(sends)
    self._send(sends)


def join(self: ProcessBackend, timeout: float | None = None) -> bool:
    if self.forked_copy():
        return True   # nothing of this process's to wait for (see Backend.forked_copy)
    # One join at a time: a second one, concurrent or later, waits for the first and then
    # returns (the first consumed the workers' pidfds and ended the threads that would
    # report their exits: it would wait for ever -- a dropped executor's exit thread and
    # the interpreter's exit hook both join).
    if not self._join_lock.acquire(True, -1 if timeout is None else timeout):
        return False
    try:
        if self._stopped:
            return True
        left = None if timeout is None else max(0.0, timeout)
        return self._join_locked(left)
    finally:
        self._join_lock.release()


def _join_locked(self: ProcessBackend, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    fds = self._exit_fds()
    if fds is None and not self._exit_pids_known():
        # A join() right after Pool() and close(): a worker's start message can still be
        # in the result ring, unread.  Settled here, it gives the pid to wait on.
        self.lead(self._exit_pids_known, deadline)
        fds = self._exit_fds()
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic())
    if fds is None:
        if not self._all_exited.wait(timeout):
            return False
    else:
        if timeout is None:
            # Nothing is left for the threads to do (no task, no replacement, no
            # deadline): let them end while the workers exit, not after (P7).  Only
            # without a timeout: after a timed-out join() they must still be watching.
            self._winding_down = True
            try:
                self._outbound.put(b"E", None)
            except ClosedError:
                pass
            self.poke_watcher()
        try:
            if not _wait_all(fds, timeout):
                return False
        finally:
            for fd in fds:
                os.close(fd)
    self._stop()
    return True


def _watch_pid(self: ProcessBackend, pid: int) -> None:
    """Keep a pidfd for a new worker of the zygote's: as the zygote reports its start
    (watcher) or as the worker announces itself (whoever settles results), first wins."""
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        # gone already (its exit report follows), or no pidfds here: join() falls back to
        # the zygote's reports
        return
    # The fd pins the process it names: if that is not the zygote's child, the worker was
    # already reaped and its pid reused -- not ours to wait for.
    if _parent_pid_of(pid) != self._zygote.pid:
        os.close(fd)
        return
    with self._lock:
        if self._stopped or pid in self._pidfds:
            os.close(fd)
        else:
            self._pidfds[pid] = fd


def _quitting_locked(self: ProcessBackend) -> list[_Worker] | None:
    """After close(), when every live worker has been told to quit and has nothing left to
    run: those workers (ready or not: one still starting exits after its initializer,
    and its exit code would change nothing -- no task is left to fail).  Else None."""
    if (not self._closing or self._pending or self._starved or self._terminated
            or self._stopped):
        return None
    live = [w for w in self._workers if w.state != "dead"]
    return live if all(w.quitting and not w.inflight for w in live) else None


def _exit_pids_known(self: ProcessBackend) -> bool:
    """False while _exit_fds() waits only for a quitting worker's pid (see join)."""
    with self._lock:
        live = self._quitting_locked()
        return live is None or all(w.pid in self._pidfds for w in live)


def _exit_fds(self: ProcessBackend) -> list[int] | None:
    """After close(), when every live worker has been told to quit and has nothing left to
    run: copies of their pidfds, to wait on for their exits directly (the kernel's
    notice, not the zygote's report, which takes three hops more: ~0.3 ms of every
    close/join, P7).  None when that does not apply: join() waits on the reports."""
    with self._lock:
        live = self._quitting_locked()
        if live is None or not all(w.pid in self._pidfds for w in live):
            return None
        # copies: _on_death may close the originals while join() waits on them
        fds: list[int] = []
        try:
            for w in live:
                fds.append(os.dup(self._pidfds[w.pid]))  # type: ignore[index]
        except OSError:   # out of fds: the reports will do
            for fd in fds:
                os.close(fd)
            return None
        return fds


def terminate(self: ProcessBackend, _reason: BaseException | None = None) -> None:
    if self.forked_copy():
        return   # a forked child's copy: the parent's workers are not its own
    with self._lock:
        first = not self._terminated
        self._terminated = True
        jobs = list(self._pending) + self._starved
        self._pending.clear()
        self._starved.clear()
        stranded: list[Task] = []
        for w in self._workers:
            stranded.extend(w.inflight)
            w.inflight.clear()
            w.state = "dead"
    if first:
        err = _reason or ClosedError("the pool was terminated before this task finished")
        for job in jobs:
            job.fail_all(err)
        for task in stranded:
            if task.wire is not None:
                _serialize.discard(task.wire)
            task.job.task_done(task, False, err, 0.0, 0.0, task.worker, None)
        try:
            self._cmd.send(("killall",))
        except OSError:
            pass
        with self._lock:
            direct = list(self._direct)
        for pid in direct:
            self._kill_worker(pid)
        self._all_exited.set()
    # Not from a thread that is settling results (the result thread, the watcher, a caller
    # leading): _stop() joins the result thread and releases what that thread is using.
    if (threading.current_thread() not in (self._result_thread, self._watch_thread)
            and self._leader != threading.get_ident()):
        self._stop()


def _stop(self: ProcessBackend) -> None:
    """Let the zygote go, end both threads, release every resource.  Idempotent, bounded."""
    with self._lock:
        if self._stopped:
            return
        self._stopped = True
        graceful = not self._terminated
        self._terminated = True
        tell = graceful and not self._zygote_told
        self._zygote_told = True
    if tell:
        try:
            self._cmd.send(("exit",))
        except OSError:
            pass
    _publish_zygote("unregister", self._zygote)
    if graceful and isinstance(self._zygote, (ForkedChild, HelperChild)):
        # Its workers have exited and it was told to go: it follows them within a moment
        # (at once when _release closes its pipes) and the reaper collects it; join()
        # need not wait for its exit (~0.5 ms of every close/join, P7).  A zygote started
        # by the stdlib is joined: it is one of multiprocessing's active_children().
        # (a HelperChild is the helper's to reap)
        if isinstance(self._zygote, ForkedChild) and self._zygote.poll() is None:
            _spawn.reap_in_background(self._zygote, self._zygote.sentinel)
        self._zygote_detached = True
    else:
        self._zygote.join(10.0)
        if self._zygote.exitcode is None:
            self._zygote.kill()
            self._zygote.join(5.0)
    try:
        self._outbound.put(b"E", None)
    except ClosedError:
        pass
    self.poke_watcher()
    for t in (self._watch_thread, self._result_thread):   # the watcher starts the other
        if t.is_alive():
            t.join(10.0)
    with self._lock:
        # All exited (join) or killed (terminate), though join()'s pidfd path lets the
        # threads end before reading their exit reports: statistics() says so too.
        for w in self._workers:
            w.state = "dead"
    self._release()


def _release(self: ProcessBackend) -> None:
    self._arena.close()
    # Workers forked here that the watcher has not reaped: exited already (join), or
    # killed by terminate(); killed again in case neither, so the wait is bounded.
    with self._lock:
        direct = list(self._direct)
    for pid in direct:
        self._kill_worker(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    with self._lock:
        self._direct.clear()
        pidfds = list(self._pidfds.values())
        self._pidfds.clear()
        pidfds += self._crash_fds.values()   # crash reports of workers reaped here
        self._crash_fds.clear()
    for fd in pidfds:
        os.close(fd)
    for conn in (self._cmd, self._report, self._alive):
        try:
            conn.close()
        except OSError:
            pass
    for fd in (self._wake_r, self._wake_w):
        try:
            os.close(fd)
        except OSError:
            pass
    self._wake_r = self._wake_w = -1
    for w in self._workers:
        w.ring.close()
    self._outbound.close()
    self._slots.close()
    try:
        self._zygote.close()
    except ValueError:
        pass
