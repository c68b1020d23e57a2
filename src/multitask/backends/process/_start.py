"""Starting a pool: the zygote (forked here, from the program's fork helper, or through
spawn/forkserver), the first worker forked directly, the rings and the two threads.

Functions of :class:`ProcessBackend` (its methods, gathered in ``_backend.py``); the
backend's state is declared there.
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..._core import _forkhelper, _mainfn, _spawn
from ..._core._arena import Arena
from ..._core._channel import Channel, ForkedChild, channel_pair, flush_std_streams
from ..._core._forkhelper import HelperArgumentsError, HelperError, fd_arg
from ..._core._ring import Ring, new_group
from ..._engine.functions import FunctionCache
from .._slots import Slots
from .._worker import (
    become_worker,
    new_crash_report,
    read_crash_report,
    reap_status,
    zygote_from_helper,
    zygote_main,
)
from ._records import (
    _DIED,
    _EXIT_UNKNOWN,
    _FUNC_CACHE,
    _INBOUND_CAPACITY,
    _OUTBOUND_CAPACITY,
    _dumps_function,
    _publish_zygote,
    _Worker,
)

if TYPE_CHECKING:
    from ._backend import ProcessBackend


def start(self: ProcessBackend) -> None:
    self._lock = threading.Lock()
    self._pending = collections.deque()
    self._starved = []
    self._closing = False
    self._zygote_told = False   # the zygote was told to exit once its workers have
    self._zygote_detached = False   # left to the background reaper (see _stop)
    self._winding_down = False      # join() let the threads end early (see join)
    self._terminated = False
    self._stopped = False
    # front-end callbacks the watcher runs once it runs (when_running); None after
    self._when_running = []
    self._broken = None
    self._replaced = 0
    self._order_breach_logged = False
    self._memory_recycled = 0   # workers that exited past max_memory_per_child
    # seconds per item, EWMA per function (by id; the function is kept alive by _funcs)
    self._fn_seconds = {}
    # pid -> (task id, timeout, its stack when it overran: TaskTimeoutError's __cause__)
    self._timed_out = {}
    # ids of tasks whose worker cancel_task stopped: failed (withdrawn), never re-run
    self._cancelled = set()
    self._prefetch = bool(self.options.get("prefetch", True))
    self._crash_fds = {}   # pid -> crash report of a worker forked here
    self._oom_kills = -1   # the kernel's OOM-kill count, read by the watcher (see _cause)
    self._watch_at = float("inf")   # when the watcher will next look at deadlines
    self._all_exited = threading.Event()
    self._join_lock = threading.Lock()
    # pid -> pidfd of a live worker (Linux): join() after close() waits on these directly
    # instead of on the zygote's reports (see _exit_fds).
    self._pidfds = {}
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
    self._leader = None     # thread ident of the caller reading results (lead)
    self._settler = None    # thread ident settling a batch of results (_pump)
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
    self._direct = {}   # pid -> slot of the workers forked here (ours)
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


def _start_from_helper(self: ProcessBackend, helper: Any, parent_name: str, prefix: str) -> str:
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


def _zygote_args(self: ProcessBackend, first: list[_Worker], parent_name: str,
                 prefix: str) -> tuple[Any, ...]:
    """zygote_main's arguments after its three pipe ends; ``first``: the workers it forks
    at once."""
    return (self._outbound, self._slots, self.initializer, self.initargs, self.nice,
            self.cpu_affinity, os.getpid(), self._group,
            [(w.idx, w.ring) for w in first], parent_name, prefix)


def _fork_first_worker(self: ProcessBackend, alive_r: Channel, parent_name: str, prefix: str,
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


def _kill_worker(self: ProcessBackend, pid: int) -> None:
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


def _reap_direct(self: ProcessBackend, pid: int) -> None:
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


def _post_death(self: ProcessBackend, idx: int, pid: int, code: int, rss: int, crash: str) -> None:
    """Watcher: a D message into the result ring, behind everything the worker flushed."""
    self._outbound.put(_DIED.pack(b"D", idx, pid, code, rss) + crash.encode("utf-8"), None)


def _new_ring(self: ProcessBackend, capacity: int) -> Ring:
    return Ring(capacity, group=self._group)
