"""The default backend: worker processes fed through shared-memory rings.

Data flow of one task, from ``backend.submit(job)`` (what comes before it is in
``multitask.pool``'s docstring; ``docs/design.md`` points here)::

    caller thread                     worker process              reader of the result ring
    -------------                     --------------              -------------------------
    apply_async(f, args)
      args serialized now (errors raise here)
      Job -> _pending; _dispatch():
        the live worker with the least estimated work queued
        [F msg once per worker], T msg --> worker's inbound ring
        task appended to worker.inflight       get_many() -> slot := task
                                               run f, serialize result
                                               R msg --> result ring --> _lead_get / _follow_get
                                                                           pop worker.inflight
                                                                           _dispatch() more
                                                                           job.task_done()
                                                                           -> AsyncResult._set

The reader of the result ring is the caller itself while it is blocked in ``get()``/``next()``
(the *leader*, see :meth:`ProcessBackend.lead`), else the *result thread* (the follower).  A
reader gate in the ring object decides who may take messages, so they are settled one batch at
a time, in ring order, by one thread; a caller's own result thus needs no thread hand-off.

The parent always knows which worker holds which task (``worker.inflight``, in the order they
were sent; results come back in that order).  When a worker dies, its zygote reports the exit
(or, for the first worker under fork -- forked by this process, see ``start`` -- its pidfd
fires and the watcher reaps it); the watcher thread posts a ``D`` message into the result ring
*after* everything the worker flushed, and the reader settles its inflight tasks exactly: tasks
whose result arrived are done; the task in the worker's slot -- the one it was running -- fails with
:class:`WorkerDiedError` (or :class:`TaskTimeoutError` if the watcher killed it for overrunning
``task_timeout``); tasks after it were never started and are given to another worker.  Then the
slot gets a fresh worker from the zygote.

Threads in the parent: the *result thread* (follows: reads when no caller leads, settles tasks,
dispatches) and the *watcher thread* (blocks in ``select`` on the zygote's reports and on its
own worker's pidfd, enforces timeouts).  Rings are polled briefly before a reader sleeps
(``Ring.spin_ns``), so a round trip costs no futex wake-up when both sides are quick.
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
import os
import pickle
import select
import selectors
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core import _forkhelper, _interrupts, _mainfn, _serialize, _spawn, _stacks
from .._core._arena import Arena
from .._core._channel import Channel, ForkedChild, channel_pair, flush_std_streams
from .._core._errors import (
    ClosedError,
    ProcessError,
    SerializationError,
    TaskTimeoutError,
    WorkerDiedError,
    death_cause,
    remote_traceback,
    signal_of,
)
from .._core._forkhelper import HelperArgumentsError, HelperChild, HelperError, fd_arg
from .._core._ring import Ring, new_group
from .._engine import envelope
from .._engine.backend import Backend
from .._engine.codes import ST_OK, ST_UNSERIALIZABLE
from .._engine.functions import FunctionCache
from .._engine.jobs import MODE_CALL, MODE_ITEMS, Job, Redo, Task
from .._engine.log import logger
from ..monitor import _hook
from ._slots import Slots

if TYPE_CHECKING:
    from .._engine.stats import WorkerStatistics

from ._worker import (
    BATCH_HDR,
    EXCEPTION_MARK,
    FUNC_HDR,
    ITEM_ALL,
    RECYCLE,
    RES_HDR,
    STARTED,
    TASK_HDR,
    become_worker,
    new_crash_report,
    read_crash_report,
    reap_status,
    zygote_from_helper,
    zygote_main,
)

_INBOUND_CAPACITY = 1 << 22     # bytes per worker ring (larger messages spill to their own segment)
_OUTBOUND_CAPACITY = 1 << 23
_MAX_BATCH = 64                 # tasks per inbound message
_PREFETCH_SECONDS = 0.002       # keep about this much work queued per worker
_UNKNOWN_SECONDS = 1.0          # a task not measured yet counts as long: no deep prefetch
_MAX_PREFETCH = 256
_FUNC_CACHE = 256               # distinct functions kept serialized / cached in workers
# b"D", worker idx, pid, exitcode, peak RSS (bytes), then the worker's crash report (utf-8)
_DIED = struct.Struct("<cxxxIiiQ")
_EXIT_UNKNOWN = 255   # a worker's exit status taken by someone else (os.wait() in the program)
_MAIN_THREAD = threading.main_thread().ident


class _Worker:
    """The parent's record of one worker slot (the slot index survives replacements)."""

    __slots__ = ("backlog", "forget", "funcs", "idx", "inflight", "pid", "queued", "quitting",
                 "quota", "ready", "ring", "send_lock", "started", "state", "tasks_done",
                 "tasks_failed")

    def __init__(self, idx: int, ring: Ring, quota: int | None) -> None:
        self.idx = idx
        self.pid: int | None = None
        self.ring = ring
        self.inflight: collections.deque[Task] = collections.deque()
        # Messages decided for this worker and not yet in its ring, in the order of inflight
        # (appended under the backend's _lock; put into the ring only by _flush, one thread at a
        # time under send_lock, so the ring's order is the order of inflight -- see _flush).
        self.backlog: collections.deque[bytes] = collections.deque()
        self.send_lock = threading.Lock()
        self.funcs: set[int] = set()     # function ids this worker has cached
        self.forget: list[int] = []      # ids it should drop (evicted from the parent's cache)
        self.state = "starting"
        self.ready = False          # its own b"S" came: past the initializer, taking tasks
        self.tasks_done = 0
        self.tasks_failed = 0
        self.started = time.time()
        self.quota = quota          # tasks it may still be sent (maxtasksperchild)
        self.queued = 0.0           # estimated seconds of work in inflight
        self.quitting = False


class _Sends:
    """Work decided under the lock, carried out after it is released."""

    __slots__ = ("failures", "flush", "poke")

    def __init__(self) -> None:
        self.flush: list[_Worker] = []   # workers given messages (in their backlog) to put
        self.failures: list[tuple[Task, BaseException]] = []
        self.poke = False    # a task with a timeout left: the watcher must recompute its wake-up


class _Batch:
    """The messages for one worker built during one dispatch round."""

    __slots__ = ("msgs", "parts", "quit", "worker")

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.msgs: list[bytes] = []
        self.parts: list[bytes] = []
        self.quit = False

    def add(self, task: Task, fid: int, mode: int, fmsgs: list[bytes]) -> None:
        if fmsgs:   # function definitions must precede the tasks that use them
            self._seal()
            self.msgs.extend(fmsgs)
        self.parts.append(TASK_HDR.pack(task.id, fid, mode, len(task.wire)))
        self.parts.append(task.wire)
        if len(self.parts) >= 2 * _MAX_BATCH:
            self._seal()

    def _seal(self) -> None:
        if self.parts:
            self.msgs.append(BATCH_HDR.pack(b"T", len(self.parts) // 2, 0)
                             + b"".join(self.parts))
            self.parts = []

    def finish(self) -> list[bytes]:
        self._seal()
        if self.quit:
            self.msgs.append(b"Q")
        return self.msgs


def _queued(w: _Worker) -> float:
    return w.queued


class ProcessBackend(Backend):
    name = "process"
    item_groups = True
    #: ``prefetch=False``: a worker holds one task at a time (none queued behind the running
    #: one), so a task a worker holds is running -- what cancel_task needs to stop a running
    #: task without stopping another (the Executor's ``cancel_running=True``).
    option_names = frozenset({"prefetch"})

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque[Job | Redo] = collections.deque()
        self._starved: list[Job | Redo] = []
        self._closing = False
        self._zygote_told = False   # the zygote was told to exit once its workers have
        self._zygote_detached = False   # left to the background reaper (see _stop)
        self._winding_down = False      # join() let the threads end early (see join)
        self._terminated = False
        self._stopped = False
        # front-end callbacks the watcher runs once it runs (when_running); None after
        self._when_running: list[Callable[[], None]] | None = []
        self._broken: BaseException | None = None
        self._replaced = 0
        self._order_breach_logged = False
        self._memory_recycled = 0   # workers that exited past max_memory_per_child
        # seconds per item, EWMA per function (by id; the function is kept alive by _funcs)
        self._fn_seconds: dict[int, float] = {}
        # pid -> (task id, timeout, its stack when it overran: TaskTimeoutError's __cause__)
        self._timed_out: dict[int, tuple[int, float, str]] = {}
        # ids of tasks whose worker cancel_task stopped: failed (withdrawn), never re-run
        self._cancelled: set[int] = set()
        self._prefetch = bool(self.options.get("prefetch", True))
        self._crash_fds: dict[int, int] = {}   # pid -> crash report of a worker forked here
        self._oom_kills = -1   # the kernel's OOM-kill count, read by the watcher (see _cause)
        self._watch_at = float("inf")   # when the watcher will next look at deadlines
        self._all_exited = threading.Event()
        self._join_lock = threading.Lock()
        # pid -> pidfd of a live worker (Linux): join() after close() waits on these directly
        # instead of on the zygote's reports (see _exit_fds).
        self._pidfds: dict[int, int] = {}
        method = self.context.get_start_method() if self.context is not None else "fork"
        # Forking a multi-threaded parent can deadlock the child on a lock another thread held
        # (gh-84559): the zygote is forked only when every other thread is one of multitask's
        # own (which hold no lock across a fork), and started through a forkserver otherwise.
        # With foreign threads the zygote is forked from the program's fork helper instead
        # (a copy taken at import, before any thread: _core/_forkhelper.py; issue #21), or,
        # where there is none (threads already ran at import), started through a forkserver.
        helper = None
        if method == "fork" and not _spawn.fork_is_safe():
            helper = _forkhelper.get()
            method = "helper" if helper is not None else "forkserver"
        # Forked zygote: untracked rings, all of one group.  No resource tracker is started for
        # the pool (a fork+exec of a new interpreter in every first Pool()); after a crash the
        # zygote sweeps the group's segments.  A zygote started by spawn or a forkserver could
        # die before it knows anything (its parent killed while it starts up): tracked rings.
        self._group = new_group() if method in ("fork", "helper") else None
        # A forked zygote (and every worker it forks) has __main__ as it is now: functions
        # bound there now can be sent by reference, not by value (cloudpickle costs ~25 ms to
        # import, in the parent and in every worker, for a script's first task).
        # Only the functions: a copy of every global would keep alive, for the pool's lifetime,
        # data the script rebinds or deletes after Pool() (a function already holds
        # __main__'s namespace, so keeping it costs nothing more).
        main = sys.modules.get("__main__")
        self._main_now = _mainfn.functions_now() if method == "fork" else {}
        if helper is not None and main is not None:
            # the helper's copy of __main__ has the functions bound when it was forked
            self._main_now = {k: v for k, v in helper.main_functions.items()
                              if vars(main).get(k) is v}
        # A partial, not a lambda over self: that would make the backend a reference cycle,
        # alive after shutdown until the next garbage collection -- and with it the pool's
        # initargs (a stdlib Queue's semaphores, which its resource tracker then calls leaked).
        self._funcs = FunctionCache(functools.partial(_dumps_function,
                                                      main_at_fork=self._main_now), _FUNC_CACHE)
        self._outbound = self._new_ring(_OUTBOUND_CAPACITY)
        self._leader: int | None = None     # thread ident of the caller reading results (lead)
        self._settler: int | None = None    # thread ident settling a batch of results (_pump)
        # Out-of-band segments of task arguments are named after the result ring, which lives as
        # long as the pool: whatever no worker consumed is swept when the pool's last user closes
        # it (a worker ring's prefix would be swept with that worker, under a re-queued task).
        self._spill_prefix = self._outbound.spill_prefix
        # Large task arguments (P5) go into reused segments: a worker's Lease hands each back
        # when the arrays unpickled from it are gone (see _core/_arena.py).
        self._arena = Arena(self._spill_prefix)
        self._slots = Slots(self.processes)
        self._workers = [_Worker(i, self._new_ring(_INBOUND_CAPACITY), self.new_quota())
                         for i in range(self.processes)]

        parent_name = multiprocessing.current_process().name
        worker_prefix = {"forkserver": "ForkServer", "helper": "Fork"}.get(
            method, method.capitalize())
        worker_prefix += "PoolWorker"
        self._direct: dict[int, int] = {}   # pid -> slot of the workers forked here (ours)
        self._zygote: Any
        if method == "helper":
            started = self._start_from_helper(helper, parent_name, worker_prefix)
            if started == "unsendable":
                # Arguments that pickle only while a child is spawned, or not at all, and a
                # forkserver refuses a fork context's locks: fork this threaded program, as
                # the stdlib does (and warns, on 3.12+).  Its workers then have every function
                # __main__ has now (in place: the function cache holds this dict).
                method = "fork"
                self._main_now.update(_mainfn.functions_now())
            elif started == "gone":
                method = "forkserver"
        if method == "fork":
            # Forked directly, with plain pipes: the stdlib's Process and Pipe would import
            # ~7 ms of modules a forked child does not need (see _core/_channel.py).
            alive_r, self._alive = channel_pair()
            cmd_r, self._cmd = channel_pair()
            self._report, report_w = channel_pair()
            # The first worker is forked here too, right after the zygote, while this process
            # has no thread of ours yet: the pool's first result then waits for one fork, not
            # for the zygote to start and fork in its turn (~2 ms of every Pool(), P7).  The
            # zygote forks the others meanwhile, on the other core, and every replacement.
            # The zygote goes first, while nothing else runs: a fork is several times slower
            # while earlier children fault in their copies of the memory, and forking every
            # worker here measured no faster (each fork also makes this process fault in its
            # own pages again).  Only from the main thread (PR_SET_PDEATHSIG follows the
            # thread that forks) and where pidfds tell this process of the worker's exit.
            direct = (threading.current_thread() is threading.main_thread()
                      and hasattr(os, "pidfd_open") and _spawn.parent_death_signal_supported())
            first = self._workers[1:] if direct else self._workers
            args = self._zygote_args(first, parent_name, worker_prefix)
            ours = (self._cmd, self._report, self._alive)
            self._zygote = ForkedChild(
                zygote_main, (cmd_r, report_w, alive_r, *args, True, self.max_memory_per_child),
                "multitask-zygote",
                close_in_child=tuple(c.fileno() for c in ours))
            if direct:
                self._fork_first_worker(alive_r, parent_name, worker_prefix,
                                        close_in_child=(*ours, cmd_r, report_w))
        elif method != "helper":   # spawn, forkserver
            args = self._zygote_args(self._workers, parent_name, worker_prefix)
            mpctx: Any = multiprocessing.get_context(method)
            cmd_r, self._cmd = mpctx.Pipe(duplex=False)
            self._report, report_w = mpctx.Pipe(duplex=False)
            alive_r, self._alive = mpctx.Pipe(duplex=False)
            self._zygote = mpctx.Process(
                target=zygote_main, name="multitask-zygote", daemon=True,
                args=(cmd_r, report_w, alive_r, *args, False, self.max_memory_per_child))
            self._zygote.start()
        _publish_zygote("register_process", self._zygote)
        if method != "helper":   # (_start_from_helper closed its own)
            cmd_r.close()
            report_w.close()
            alive_r.close()

        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._result_thread = threading.Thread(target=self._result_loop, daemon=True,
                                               name="multitask-results")
        self._watch_thread = threading.Thread(target=self._watch_loop, daemon=True,
                                              name="multitask-watcher")
        # Only the watcher is started here; it starts the result thread.  Thread.start() waits
        # until the new thread runs, and right after the forks both cores are busy with the
        # new workers: ~1 ms per thread on this 2-core machine, a tenth of P7.
        self._watch_thread.start()

    def _start_from_helper(self, helper: Any, parent_name: str, prefix: str) -> str:
        """Have the program's fork helper fork the zygote (plain pipes, as a forked one):
        "started"; "gone" if the helper has gone (the caller starts it through a forkserver),
        "unsendable" if the zygote's arguments (the initargs) cannot be sent to it."""
        alive_r, self._alive = channel_pair()
        cmd_r, self._cmd = channel_pair()
        self._report, report_w = channel_pair()
        ends = (alive_r, cmd_r, report_w)
        try:
            self._zygote = helper.fork(
                zygote_from_helper,
                (fd_arg(0), fd_arg(1), fd_arg(2),
                 *self._zygote_args(self._workers, parent_name, prefix),
                 True, self.max_memory_per_child),
                (cmd_r.fileno(), report_w.fileno(), alive_r.fileno()), "multitask-zygote")
        except HelperError as exc:
            for c in (self._alive, self._cmd, self._report):   # (ends: below)
                c.close()
            return "unsendable" if isinstance(exc, HelperArgumentsError) else "gone"
        finally:
            for c in ends:
                c.close()
        return "started"

    def _zygote_args(self, first: list[_Worker], parent_name: str,
                     prefix: str) -> tuple[Any, ...]:
        """zygote_main's arguments after its three pipe ends; ``first``: the workers it forks
        at once."""
        return (self._outbound, self._slots, self.initializer, self.initargs, self.nice,
                self.cpu_affinity, os.getpid(), self._group,
                [(w.idx, w.ring) for w in first], parent_name, prefix)

    def _fork_first_worker(self, alive_r: Channel, parent_name: str, prefix: str,
                           close_in_child: tuple[Channel, ...]) -> None:
        """Fork the first worker from this process (see start()); it is ours to reap."""
        me = os.getpid()
        w = self._workers[0]
        crash = new_crash_report()
        flush_std_streams()
        with _spawn.fork_warning_for_foreign_threads():
            pid = os.fork()
        if pid == 0:
            try:
                for chan in close_in_child:
                    chan.close()
                become_worker(w.idx, w.ring, self._outbound, self._slots, self.initializer,
                              self.initargs, f"{prefix}-{w.idx + 1}", parent_name, me,
                              alive_r.fileno(), me, after_fork=True, nice=self.nice,
                              cpu_affinity=self.cpu_affinity, crash_fd=crash,
                              max_rss=self.max_memory_per_child)
            finally:
                os._exit(1)
        if crash >= 0:
            self._crash_fds[pid] = crash
        w.pid = pid
        w.state = "running"
        self._direct[pid] = w.idx
        self._pidfds[pid] = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]

    def _kill_worker(self, pid: int) -> None:
        """SIGKILL a worker: ours directly (by pidfd: never a reused pid), else by the zygote."""
        with self._lock:
            fd = self._pidfds.get(pid, -1) if pid in self._direct else None
            if fd is not None:
                if fd >= 0:
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return
        try:
            self._cmd.send(("kill", pid, signal.SIGKILL))
        except OSError:
            pass

    def _reap_direct(self, pid: int) -> None:
        """Watcher: a worker forked here exited; collect its status and report its death."""
        try:
            _, code, rss = reap_status(pid, 0)   # it has exited (its pidfd said so): no wait
        except ChildProcessError:
            code, rss = _EXIT_UNKNOWN, 0   # someone else (os.wait()) took the status
        with self._lock:
            idx = self._direct.pop(pid, None)
            crash_fd = self._crash_fds.pop(pid, -1)
        crash = read_crash_report(crash_fd)
        if idx is not None:
            self._post_death(idx, pid, code, rss, crash)

    def _post_death(self, idx: int, pid: int, code: int, rss: int, crash: str) -> None:
        """Watcher: a D message into the result ring, behind everything the worker flushed."""
        self._outbound.put(_DIED.pack(b"D", idx, pid, code, rss) + crash.encode("utf-8"), None)

    def _new_ring(self, capacity: int) -> Ring:
        return Ring(capacity, group=self._group)

    # -- submitting --------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        self._funcs.prime(job.fn)   # user code (pickling the function): not under the lock
        with self._lock:
            if self._broken is not None:
                raise self._broken
            self._pending.append(job)
            sends = self._dispatch_locked()
        self._send(sends)

    def prepare(self, job: Job) -> None:
        task = getattr(job, "task", None)
        if task is not None and task.wire is None:
            try:
                task.wire = _serialize.dumps(task.data, self._spill_prefix, self._arena)
            except BaseException as exc:
                raise _as_serialization_error(
                    exc, f"the arguments of {job.function_name}") from exc

    def wake(self) -> None:
        with self._lock:
            if self._starved:
                self._pending.extend(self._starved)
                self._starved.clear()
            sends = self._dispatch_locked()
        self._send(sends)

    def _has_room(self, w: _Worker) -> bool:
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

    def _next_is_chunk(self) -> bool:
        head = self._pending[0] if self._pending else None
        return isinstance(head, Job) and head.mode != MODE_CALL

    def _estimate(self, task: Task) -> float:
        """Expected seconds of work: measured for this call, else for this function."""
        job = task.job
        per_item = job.item_seconds or self._fn_seconds.get(id(job.fn), 0.0)
        return per_item * task.n if per_item > 0 else _UNKNOWN_SECONDS

    def _dispatch_locked(self) -> _Sends:
        """Hand pending tasks to workers with room (under ``_lock``).

        Each task goes to the live worker with the least estimated work queued.  Nothing that can
        block or run user code happens here: the messages are returned and put into the rings by
        :meth:`_send` after the lock is released, and tasks whose input cannot be serialized are
        returned as failures to report then.
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
                if task.wire is None:
                    task.wire = _serialize.dumps(task.data, self._spill_prefix, self._arena)
            except BaseException as exc:
                if job.mode == MODE_ITEMS and task.n > 1:
                    # One item of the group cannot cross: send them one by one, so that only
                    # that item fails (each item is its own task).
                    singles = [Task(job, task.start + i, [x], 1) for i, x in enumerate(task.data)]
                    with job._lock:
                        job.outstanding += len(singles) - 1
                    self._pending.appendleft(Redo(singles))
                    continue
                # This task's input cannot cross to a worker: fail its call, not the pool.
                sends.failures.append((task, _as_serialization_error(
                    exc, f"the arguments of {job.function_name}")))
                continue
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

    def _send(self, sends: _Sends) -> None:
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

    def _flush(self, w: _Worker) -> None:
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
        never blocks on a worker's ring.  ``send_lock`` is held only across that non-blocking
        put, so a thread waiting for it waits for a bounded memcpy, never for a worker.
        """
        # No _lock here: dispatchers append to the deque's right end under _lock, and only
        # the holder of send_lock takes from its left end (deque's append, popleft and
        # extendleft are atomic), so the order holds without a second _lock round per send.
        backlog = w.backlog
        with w.send_lock:
            while backlog:
                msgs = []
                while backlog:
                    msgs.append(backlog.popleft())
                try:
                    n = w.ring.put_many(msgs, 0)
                except ClosedError:
                    return   # the worker died meanwhile; its death settles these tasks
                if n < len(msgs):
                    # ahead of anything appended meanwhile (that came later in inflight)
                    backlog.extendleft(reversed(msgs[n:]))
                    return

    def _function_locked(self, fn: Any, w: _Worker) -> tuple[int, list[bytes]]:
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

    # -- results -----------------------------------------------------------------------------
    def _result_loop(self) -> None:
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

    def lead(self, until: Callable[[], bool], deadline: float | None) -> bool:
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

    def kick(self) -> None:
        leader = self._leader
        if leader is not None and leader != threading.get_ident():
            try:
                self._outbound.put(b"W", 0)
            except ClosedError:
                pass

    def _pump(self, msgs: list[Any]) -> bool:
        """Settle messages from the result ring, in order.  True when the end marker came.

        Only ever one thread at a time (the reader gate's holder): ``_settler`` names it, so
        that a callback it runs cannot wait on a result only it could deliver (see lead)."""
        self._settler = threading.get_ident()
        try:
            return self._settle_msgs(msgs)
        finally:
            self._settler = None

    def _settle_msgs(self, msgs: list[Any]) -> bool:
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

    def _on_results(self, views: list[memoryview]) -> None:
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

    def _out_of_order_locked(self, w: _Worker, task_id: int) -> bool:
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

    def _decode(self, task: Task, status: int, body: Any) -> tuple[bool, Any]:
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

    def _on_death(self, idx: int, pid: int, exitcode: int, rss: int = 0,
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

    def _cause(self, exitcode: int, crash: str) -> str:
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

    def _death_error(self, task: Task, item: int | None, idx: int, pid: int, exitcode: int,
                     rss: int, crash: str, cause: str,
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

    def _on_initializer_failed(self, body: memoryview) -> None:
        try:
            cause = _remote_exception(body)
        except BaseException as exc:
            cause = exc
        err = ProcessError(f"the pool's initializer failed in a worker: "
                           f"{type(cause).__name__}: {cause}")
        err.__cause__ = cause
        self._break(err)

    def _on_zygote_lost(self) -> None:
        if self._terminated or self._all_exited.is_set() or self._zygote_told:
            return
        self._break(ProcessError("the pool's worker manager (zygote) died unexpectedly; "
                                 "the pool cannot start workers any more"))

    def _break(self, err: BaseException) -> None:
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

    def _maybe_quit_locked(self, sends: _Sends) -> None:
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

    # -- watcher -----------------------------------------------------------------------------
    def when_running(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` from the watcher thread once it runs (see Backend.when_running), or at
        once if it already has (or never will: the pool was stopped first)."""
        with self._lock:
            if self._when_running is not None and not self._stopped:
                self._when_running.append(fn)
                return
        fn()

    def _run_when_running(self) -> None:
        with self._lock:
            callbacks, self._when_running = self._when_running, None
        for fn in callbacks or ():
            fn()

    def _watch_loop(self) -> None:
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

    def _next_deadline(self) -> float | None:
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

    def item_seconds_hint(self, fn: Callable[..., Any]) -> float:
        return self._fn_seconds.get(id(fn), 0.0)

    def cancel_task(self, task: Task) -> bool:
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

    def _stack_then_kill(self, pid: int, task_id: int, limit: float) -> None:
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

    def poke_watcher(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        sends = _Sends()
        with self._lock:
            self._closing = True
            self._maybe_quit_locked(sends)
        self._send(sends)

    def join(self, timeout: float | None = None) -> bool:
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

    def _join_locked(self, timeout: float | None) -> bool:
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

    def _watch_pid(self, pid: int) -> None:
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

    def _quitting_locked(self) -> list[_Worker] | None:
        """After close(), when every live worker has been told to quit and has nothing left to
        run: those workers (ready or not: one still starting exits after its initializer,
        and its exit code would change nothing -- no task is left to fail).  Else None."""
        if (not self._closing or self._pending or self._starved or self._terminated
                or self._stopped):
            return None
        live = [w for w in self._workers if w.state != "dead"]
        return live if all(w.quitting and not w.inflight for w in live) else None

    def _exit_pids_known(self) -> bool:
        """False while _exit_fds() waits only for a quitting worker's pid (see join)."""
        with self._lock:
            live = self._quitting_locked()
            return live is None or all(w.pid in self._pidfds for w in live)

    def _exit_fds(self) -> list[int] | None:
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

    def terminate(self, _reason: BaseException | None = None) -> None:
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

    def _stop(self) -> None:
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

    def _release(self) -> None:
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

    # -- introspection -----------------------------------------------------------------------
    def worker_statistics(self) -> tuple[WorkerStatistics, ...]:
        from .._engine.stats import TaskInfo, WorkerStatistics

        now = time.monotonic()
        out = []
        with self._lock:
            for w in self._workers:
                current = None
                state = w.state
                if w.inflight and w.state == "running":
                    slot_task, start = self._slots.get(w.idx)
                    for t in w.inflight:
                        if t.id == slot_task:
                            current = TaskInfo(t.id, t.job.function_name, start,
                                               max(0.0, now - start), t.n)
                            break
                    state = "busy" if current is not None else "idle"
                elif w.state == "running":
                    state = "idle"
                out.append(WorkerStatistics(w.idx, w.pid, state, w.tasks_done, w.tasks_failed,
                                            current, w.started))
        return tuple(out)


def _publish_zygote(what: str, zygote: Any) -> None:
    """Label the zygote in ``multitask ps`` (workers' parent); never raises."""
    if what == "register_process":
        # deferred: the watcher starts the hand-over (see _watch_loop)
        _hook.register_process(zygote, role="zygote", name="multitask-zygote", deferred=True)
    else:
        _hook.unregister(zygote)


def _wait_all(fds: list[int], timeout: float | None) -> bool:
    """Wait until every fd is readable (a pidfd: that process exited); False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()     # not select(): fd numbers may be above FD_SETSIZE
    for fd in fds:
        poller.register(fd, select.POLLIN)
    left = len(fds)
    while left:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
        ready = poller.poll(wait)
        if not ready:
            return False
        for fd, _ in ready:
            poller.unregister(fd)
            left -= 1
    return True


def _parent_pid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    return int(stat[stat.rindex(b")") + 2:].split(None, 2)[1])


def _dumps_function(fn: Any, main_at_fork: dict[str, Any]) -> bytes:
    """Functions importable by name are sent by reference; the rest by value (cloudpickle).

    ``__main__`` functions go by value too -- a worker's ``__main__`` is a snapshot from when
    the pool started (or, under spawn, a re-import), so a function defined later would be
    missing -- unless ``main_at_fork`` (``__main__``'s names when a forked zygote was made)
    shows the worker has this very function under its name.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if "<" not in qualname and (module != "__main__" or main_at_fork.get(qualname) is fn):
        try:
            return pickle.dumps(fn, protocol=5)
        except Exception:
            pass
    try:
        if _mainfn.wants_stand_in(fn, main_at_fork):
            # by value, yet living in the worker's __main__: the globals an initializer sets
            # are the ones this function reads (_core/_mainfn.py)
            return pickle.dumps(_mainfn.MainFunction(fn), protocol=5)
        import cloudpickle  # only for functions that need it (start-up time)

        data: bytes = cloudpickle.dumps(fn, protocol=5)
        return data
    except Exception as exc:
        raise _as_serialization_error(exc, f"the function {module}.{qualname}") from exc


def _as_serialization_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, SerializationError):
        return exc
    err = SerializationError(f"{what} could not be pickled: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _remote_exception(body: Any, unserializable: bool = False) -> BaseException:
    """Re-create a task's exception in the parent (the engine's error envelope, see
    ``multitask._engine.envelope``): the original where it unpickles, else a RemoteError."""
    return envelope.unpack(body, _serialize.loads, unserializable=unserializable)


BACKEND = ProcessBackend
