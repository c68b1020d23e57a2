"""What runs in the child processes of the process backend: the zygote and the worker loop.

The zygote
----------
A Pool starts one *zygote* process (by the pool's start method), and the zygote forks every worker,
the first ones and every replacement.  The zygote is single-threaded and does nothing but fork,
reap and report, so a replacement worker is never forked from a multi-threaded process (the pool's
parent has a result thread and a watcher thread, and the user's program may have more: forking it
could deadlock on a lock some other thread held -- CPython gh-84559, gh-100228).  Under ``spawn``
the zygote also makes replacements cheap: they are forks of a warm interpreter, not new ones.

The zygote forks the *first* workers before anything else, from rings it is given as arguments
(inherited under ``fork``: nothing to send, pickle or attach); later workers are asked for on the
command pipe.  The parent meanwhile starts its threads: on two cores the two overlap.

Zygote protocol (multiprocessing Connections):
    (arguments)        the first workers' (idx, inbound_ring) pairs
    parent -> zygote   ("spawn", idx, inbound_ring)  |  ("kill", pid, signum)  |  ("killall",)
                       | ("exit",)
    zygote -> parent   ("started", idx, pid)  |  ("exited", idx, pid, exitcode)
The zygote watches an "alive" pipe whose write end only the parent holds, and gets SIGUSR1 from
the kernel when the parent dies (PR_SET_PDEATHSIG); either way (even if the parent was SIGKILLed)
it kills its workers, unlinks every shared-memory segment of the pool's rings still in /dev/shm
(they are untracked: this is their crash clean-up) and exits.  It ignores SIGINT, SIGTERM and
SIGHUP, which reach the whole process group, so that it outlives the pool's process.  Workers get
SIGKILL as their parent-death signal from the zygote (single-threaded, so the thread caveat of
PR_SET_PDEATHSIG cannot bite).

The worker loop
---------------
Inbound messages (parent -> this worker's ring)::

    b"T" + u16 count + pad, then per task: u64 task_id, u32 func_id, u8 mode, 3 pad, u32 len,
         followed by ``len`` bytes of the task's data, serialized by ``_serialize.dumps``
    b"F" + pad + u32 func_id + cloudpickled function      (cached until b"X")
    b"X" + pad + u32 func_id                               (forget a cached function)
    b"Q"                                                   (exit)

Outbound messages (all workers -> the pool's shared result ring)::

    b"R" + u16 count + u32 worker index, then per result: u64 task_id, u8 status, 3 pad,
         u32 len, f64 started, f64 finished, followed by ``len`` bytes
         status 0: the value (serialized); 1: the task raised -- a plain pickle of (serialized
         exception or None, traceback text, type name, message); 2: the result could not be
         serialized -- same shape
    b"S" + pad + u32 worker index + i32 pid: the worker is up and ready -- its initializer
         has run (sent before anything else; the parent's watcher posts the same record as
         b"P" from the zygote's "started" report, which only tells the pid)
    b"I" + pad + u32 worker index + serialized error info: the initializer raised
    b"M" + pad + u32 worker index + i32 pid + u64 RSS: past ``max_memory_per_child`` after the
         task just reported; it exits now (the parent sends it nothing more)
    b"D" (posted by the parent's watcher, never by a worker): a worker exited -- index, pid,
         exit code, peak RSS, then its crash report (faulthandler's dump of a fatal signal, or
         the traceback of its loop), which the process that forked it read from a memfd

Before running a task the worker writes its id and start time into its slot (``_slots``), and it
commits each result to the outbound ring as soon as the task ends.  So when a worker dies, every
task it finished has been reported and the one in its slot is the only one it was running: the
parent fails exactly that task.  (Committing costs no system call unless the parent is asleep
waiting for results; the parent drains many results per wake-up.)
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import shared
from .._core import _serialize
from .._core._errors import ClosedError, SerializationError
from .._engine import envelope
from .._engine.codes import (
    MODE_CALL,
    MODE_ITEMS,
    MODE_MAP,
    ST_OK,
    ST_RAISED,
    ST_UNSERIALIZABLE,
)

TASK_HDR = struct.Struct("<QIB3xI")      # task_id, func_id, mode, len
RES_HDR = struct.Struct("<QBxHIdd")      # task_id, status, item, len, started, finished
BATCH_HDR = struct.Struct("<cxHI")       # kind, count, worker index / func id
FUNC_HDR = struct.Struct("<c3xI")        # kind, func id
STARTED = struct.Struct("<cxxxIi")       # b"S", worker index, pid
RECYCLE = struct.Struct("<cxxxIiQ")      # b"M", worker index, pid, RSS: past max_memory_per_child

ITEM_ALL = 0xFFFF   # item index of a record that fails every item of its group



def error_info(exc: BaseException, what: str | None = None) -> bytes:
    """Serialize an exception for the parent: the engine's error envelope, with the process
    backend's codec (pickle 5, out-of-band buffers in shared memory, cloudpickle fallback)."""
    return envelope.pack(exc, _serialize.dumps, what)


# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------

def _memory_check(limit: int | None) -> Callable[[], int] | None:
    """max_memory_per_child: a function returning this process's RSS if above ``limit``, else
    0 (one pread of /proc/self/statm, ~2 us); None without a limit."""
    if not limit:
        return None
    fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    page = os.sysconf("SC_PAGE_SIZE")

    def over() -> int:
        rss = int(os.pread(fd, 128, 0).split()[1]) * page
        return rss if rss > limit else 0

    return over


def worker_main(idx: int, inbound: Any, outbound: Any, slots: Any, initializer: Any,
                initargs: tuple[Any, ...], max_rss: int | None = None) -> None:
    """Run tasks from ``inbound`` until a quit message; never returns normally (os._exit).

    ``max_rss`` (``max_memory_per_child``): after a task whose result is sent, a worker above
    it says so (an ``M`` message: the parent sends it nothing more) and exits; the parent
    re-queues what it had not started and a fresh worker takes the slot."""
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            report = FUNC_HDR.pack(b"I", idx) + error_info(exc)
            # Flush first (a stdlib Queue the initializer logged into, as CPython's tests do),
            # so the parent breaks the pool only once that is delivered -- the stdlib's order,
            # where the pool breaks when the exited worker's sentinel fires.
            _run_exit_finalizers()
            outbound.put(report, None)
            os._exit(3)
    funcs: dict[int, Any] = {}
    func_errors: dict[int, BaseException] = {}
    pack_res = RES_HDR.pack
    unpack_task = TASK_HDR.unpack_from
    loads = _serialize.loads
    prefix = outbound.spill_prefix

    def dumps(obj: Any) -> bytes:
        return _serialize.dumps(obj, prefix)

    monotonic = time.monotonic
    slot_set = slots.set

    put = outbound.put
    head = BATCH_HDR.pack(b"R", 1, idx)
    dropped = shared.defer_releases()   # shared_array segments of arguments: unmapped after put
    release_dropped = shared.release_deferred

    def prepare(func_id: int, data: Any) -> tuple[Any, Any]:
        """The task's function and its unpickled arguments; SerializationError if either is
        missing or cannot be rebuilt here."""
        fn = funcs.get(func_id)
        if fn is None:
            raise func_errors.get(func_id) or SerializationError(
                f"function #{func_id} was not sent to this worker")
        try:
            return fn, loads(data)
        except BaseException as exc:
            raise SerializationError(
                f"the task's arguments could not be unpickled in the worker: "
                f"{type(exc).__name__}: {exc}") from exc

    def encode(value: Any) -> tuple[int, bytes]:
        """A task's return value as (status, record body): pickled, or why it could not be."""
        try:
            return ST_OK, dumps(value)
        except BaseException as exc:
            return ST_UNSERIALIZABLE, error_info(
                exc, f"the result of the task could not be pickled: {type(exc).__name__}: {exc}")

    def run_items(task_id: int, func_id: int, data: Any) -> None:
        # Each item is its own task: its own slot entry (a crash or timeout fails that item
        # only) and its own result record, committed as soon as it ends (a crash loses none).
        t0 = monotonic()
        slot_set(idx, task_id, t0, 0)
        try:
            fn, items = prepare(func_id, data)
        except BaseException as exc:
            body = error_info(exc)
            put(head + pack_res(task_id, ST_RAISED, ITEM_ALL, len(body), t0, monotonic())
                + body, None)
            return
        last = len(items) - 1
        for i in range(last + 1):
            if i:
                t0 = monotonic()
                slot_set(idx, task_id, t0, i)
            item = items[i]
            try:
                value = fn(item)
            except BaseException as exc:
                status, body = ST_RAISED, error_info(exc)
            else:
                status, body = encode(value)
                value = None
            if i == last:
                items = item = None   # before the last result (an arena segment goes back)
            put(head + pack_res(task_id, status, i, len(body), t0, monotonic()) + body, None)

    # Announce ourselves through the result ring, so the parent knows our pid before any of our
    # results (the zygote's report travels another way and may arrive later).
    put(STARTED.pack(b"S", idx, os.getpid()), None)
    over = _memory_check(max_rss)

    def recycle_if_over() -> None:
        rss = over() if over is not None else 0
        if rss:
            put(RECYCLE.pack(b"M", idx, os.getpid(), rss), None)
            _exit_worker(inbound, outbound)

    while True:
        msgs = inbound.get_many(32, None)
        for msg in msgs:
            kind = msg[0:1]
            if kind == b"T":
                view = memoryview(msg)
                _, count, _ = BATCH_HDR.unpack_from(view, 0)
                off = BATCH_HDR.size
                for _ in range(count):
                    task_id, func_id, mode, n = unpack_task(view, off)
                    off += TASK_HDR.size
                    data = view[off:off + n]
                    off += n
                    if mode == MODE_ITEMS:
                        run_items(task_id, func_id, data)
                        if dropped:
                            release_dropped()
                        if over is not None:
                            recycle_if_over()
                        continue
                    t0 = monotonic()
                    slot_set(idx, task_id, t0)
                    try:
                        fn, payload = prepare(func_id, data)
                        if mode == MODE_CALL:
                            value = fn(*payload[0], **payload[1])
                        elif mode == MODE_MAP:
                            value = list(map(fn, payload))
                        else:
                            value = [fn(*args) for args in payload]
                    except BaseException as exc:
                        status, body = ST_RAISED, error_info(exc)
                    else:
                        status, body = encode(value)
                        value = None
                    # the arguments go before the result does: an argument that came in an
                    # arena segment is free for the parent's next task when it learns this one
                    # is done
                    payload = None
                    t1 = monotonic()
                    put(head + pack_res(task_id, status, 0, len(body), t0, t1) + body, None)
                    if dropped:
                        release_dropped()
                    if over is not None:
                        recycle_if_over()
            elif kind == b"F":
                _, func_id = FUNC_HDR.unpack_from(msg, 0)
                try:
                    funcs[func_id] = pickle.loads(memoryview(msg)[FUNC_HDR.size:])
                    func_errors.pop(func_id, None)
                except BaseException as exc:
                    func_errors[func_id] = SerializationError(
                        f"the function could not be unpickled in the worker: "
                        f"{type(exc).__name__}: {exc}")
            elif kind == b"X":
                _, func_id = FUNC_HDR.unpack_from(msg, 0)
                funcs.pop(func_id, None)
                func_errors.pop(func_id, None)
            elif kind == b"Q":
                _exit_worker(inbound, outbound)


# How long a quitting worker waits for the multiprocessing finalizers of what its tasks made
# (a stdlib Queue's feeder thread flushing into a pipe nobody reads) before it exits anyway.
EXIT_FLUSH_TIMEOUT = 10.0


def _run_exit_finalizers() -> None:
    """What the stdlib's worker does as it exits (``util._exit_function``, less its children
    part): run this process's ``multiprocessing.util.Finalize`` callbacks, so that a stdlib
    ``Queue`` a task put into flushes its feeder thread's buffer instead of losing it.  The
    stdlib waits for that flush without limit (its documented "joining processes that use
    queues" deadlock when nobody reads); here at most ``EXIT_FLUSH_TIMEOUT`` seconds."""
    # Not imported, nothing registered: importing it here (with subprocess and locale, ~5 ms)
    # would only delay every worker's exit, and so every pool's join().
    mp_util: Any = sys.modules.get("multiprocessing.util")   # (its private names: not typed)
    if mp_util is None or not mp_util._finalizer_registry:
        return
    # A thread, so that a flush into a pipe nobody reads cannot keep the worker from exiting
    # (a finalizer's exception is the thread's: reported, and the worker exits regardless).
    flush = threading.Thread(target=mp_util._run_finalizers, name="multitask-exit-flush",
                             daemon=True)
    try:
        flush.start()
    except RuntimeError:   # no thread can be started (resources): exit without the flush
        return
    flush.join(EXIT_FLUSH_TIMEOUT)


def _exit_worker(inbound: Any, outbound: Any) -> None:
    _run_exit_finalizers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(0)


def _worker_signals() -> None:
    """Signal dispositions of every worker: Ctrl-C is the parent's alone (one KeyboardInterrupt,
    no worker tracebacks -- CPython gh-125886), SIGTERM and SIGHUP kill it, and nothing of the
    zygote's signal plumbing (its wake-up fd and handlers) is kept."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, _PARENT_DEATH_SIGNAL):
        signal.signal(signum, signal.SIG_DFL)


def new_crash_report() -> int:
    """The forker's half of a worker's crash report (issue #19): a memfd, made before the fork,
    into which the worker writes its stack if it crashes (faulthandler, on SIGSEGV, SIGBUS,
    SIGILL, SIGFPE, SIGABRT) or the traceback if its own loop raises.  The forker reads it after
    reaping the worker (:func:`read_crash_report`).  -1 where memfds do not exist."""
    try:
        return os.memfd_create("multitask-crash", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return -1


def read_crash_report(fd: int) -> str:
    """What a dead worker wrote into its crash report (at most 64 KiB); closes ``fd``."""
    if fd < 0:
        return ""
    try:
        return os.pread(fd, CRASH_MAX, 0).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def reap_status(pid: int, options: int) -> tuple[int, int, int]:
    """``wait4``: (pid, exit code as Process.exitcode, peak RSS in bytes); pid 0 if none."""
    got, status, usage = os.wait4(pid, options)
    if got == 0:
        return 0, 0, 0
    return got, os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024   # KiB on Linux


def _crash_reports_to(fd: int) -> None:
    """In a new worker: fatal signals dump every thread's stack into its crash report."""
    if fd < 0:
        return
    import faulthandler

    try:
        faulthandler.enable(file=fd, all_threads=True)
    except (OSError, ValueError, RuntimeError):
        pass


def become_worker(idx: int, inbound: Any, outbound: Any, slots: Any, initializer: Any,
                  initargs: tuple[Any, ...], name: str, parent_name: str, parent_pid: int,
                  parent_sentinel: int, forked_by: int, *, after_fork: bool,
                  nice: int | None = None, cpu_affinity: Any = None,
                  crash_fd: int = -1, max_rss: int | None = None) -> None:
    """In a child just forked (by the zygote, or by the pool's process itself for its first
    workers): set it up as worker ``idx`` and run it.  Never returns (os._exit).

    ``forked_by``: the pid whose death must kill this worker (PR_SET_PDEATHSIG);
    ``after_fork``: forked by the pool's process, so do the stdlib's child set-up the zygote
    otherwise did for it (see ``_spawn.adopt_identity``)."""
    from .._core import _spawn, _stacks

    try:
        _worker_signals()
        _crash_reports_to(crash_fd)
        _stacks.install()   # `multitask ps --stacks` (the parent's FIFO is closed here)
        _spawn.adopt_identity(name, parent_name, parent_pid, parent_sentinel,
                              after_fork=after_fork)
        _spawn.set_parent_death_signal(forked_by, signal.SIGKILL)
        if nice is not None or cpu_affinity is not None:
            _spawn.apply_child_settings(nice, cpu_affinity)
        worker_main(idx, inbound, outbound, slots, initializer, initargs, max_rss)
    except BaseException as exc:
        # The loop itself failed (tasks' own exceptions never get here): say why, for the
        # parent's WorkerDiedError (cause "exception").
        if crash_fd >= 0:
            import traceback

            text = EXCEPTION_MARK + "".join(traceback.format_exception(exc))
            try:
                os.pwrite(crash_fd, text.encode("utf-8", "replace")[:CRASH_MAX], 0)
            except OSError:
                pass
    finally:
        os._exit(1)


# ---------------------------------------------------------------------------------------------
# zygote
# ---------------------------------------------------------------------------------------------

# Sent to the zygote by the kernel when the pool's process dies (PR_SET_PDEATHSIG): handled, so
# the zygote can kill its workers and sweep the pool's segments before it exits.
_PARENT_DEATH_SIGNAL = signal.SIGUSR1
CRASH_MAX = 1 << 16
EXCEPTION_MARK = "multitask: the worker loop raised\n"

def zygote_main(cmd: Any, report: Any, alive: Any, outbound: Any, slots: Any,
                initializer: Any, initargs: tuple[Any, ...], nice: int | None, cpu_affinity: Any,
                parent_pid: int, group: str | None, first: list[tuple[int, Any]],
                parent_name: str = "MainProcess", worker_prefix: str = "PoolWorker",
                bootstrap: bool = False, max_rss: int | None = None) -> None:
    """Fork the ``first`` workers, then fork, reap and report workers until told to exit or
    the parent dies.

    ``bootstrap``: the zygote was forked directly (``_channel.ForkedChild``), not started by
    ``multiprocessing.Process``, and does the stdlib's child set-up itself.  Workers are named
    ``f"{worker_prefix}-{slot + 1}"`` (``multiprocessing.current_process().name``)."""
    from .._core import _ring, _spawn, _stacks

    if bootstrap:
        _spawn.adopt_identity("multitask-zygote", parent_name, parent_pid, alive.fileno(),
                              after_fork=True)
    _stacks.install()
    children: dict[int, int] = {}
    crash_fds: dict[int, int] = {}   # pid -> its crash report (see new_crash_report)

    def tell(msg: tuple[Any, ...]) -> None:
        # The pool's process may stop listening (it closes its end once it has seen its
        # workers exit): nothing is lost then, and the zygote must not die of it.
        try:
            report.send(msg)
        except OSError:
            pass

    def parent_gone(signum: int = 0, _frame: Any = None) -> None:
        if signum and os.getppid() == parent_pid:
            # PR_SET_PDEATHSIG fires when the *thread* that forked us exits: a Pool created in
            # a thread that has since ended.  The pool's process is alive; carry on.
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)   # bounded: SIGKILLed
            except ChildProcessError:
                pass
        # The pool's rings are untracked (Ring(group=...)): no resource tracker will unlink
        # their segments after a crash, so we do, now that the pool's process is gone and our
        # workers are dead -- nobody can read them any more.
        # (group None: tracked rings, whose resource tracker does it.)
        try:
            if group is not None:
                _ring.sweep_segments("mt-" + group)
        finally:
            os._exit(0)

    # Ctrl-C goes to the whole foreground process group; only the parent should see it
    # (one KeyboardInterrupt, no worker tracebacks -- CPython gh-125886).  SIGTERM and SIGHUP
    # sent to the whole group are ignored too, as the stdlib's resource tracker ignores them:
    # the zygote must outlive the pool's process to clean up after it (it exits right after).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(_PARENT_DEATH_SIGNAL, parent_gone)
    if os.getppid() == parent_pid:
        _spawn.set_parent_death_signal(parent_pid, _PARENT_DEATH_SIGNAL)
    # else: started through a forkserver, whose death is not ours to follow; the "alive" pipe
    # below is what ties the zygote to the pool's process in every case.
    if nice is not None or cpu_affinity is not None:
        _spawn.apply_child_settings(nice, cpu_affinity)
    my_pid = os.getpid()
    sel: selectors.BaseSelector | None = None
    wake_r = wake_w = -1

    def fork_worker(idx: int, ring: Any) -> None:
        crash = new_crash_report()
        pid = os.fork()
        if pid == 0:
            try:
                if sel is not None:
                    sel.close()
                    os.close(wake_r)
                    os.close(wake_w)
                cmd.close()
                report.close()
                for other in crash_fds.values():   # its siblings' reports are not its own
                    os.close(other)
                # ``alive`` stays open: parent_process().is_alive() of the worker watches it
                become_worker(idx, ring, outbound, slots, initializer, initargs,
                              f"{worker_prefix}-{idx + 1}", parent_name, parent_pid,
                              alive.fileno(), my_pid, after_fork=False, crash_fd=crash,
                              max_rss=max_rss)
            finally:
                os._exit(1)
        children[pid] = idx
        if crash >= 0:
            crash_fds[pid] = crash
        ring.close()
        # Straight into the result ring as well (never blocking: if it is full, the report
        # does it): whoever settles results learns the pid one thread hop sooner than through
        # the watcher, which matters to a join() right after close() (_exit_fds, P7).
        try:
            outbound.put(STARTED.pack(b"P", idx, pid), 0)
        except ClosedError:
            pass
        tell(("started", idx, pid))

    # The first workers before anything else: they are what the pool's first result waits for.
    for idx, ring in first:
        fork_worker(idx, ring)
    del first

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(cmd, selectors.EVENT_READ, "cmd")
    sel.register(alive, selectors.EVENT_READ, "alive")
    sel.register(wake_r, selectors.EVENT_READ, "chld")
    exiting = False

    def reap() -> None:
        while children:
            try:
                pid, code, rss = reap_status(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            idx = children.pop(pid, None)
            crash = read_crash_report(crash_fds.pop(pid, -1))
            if idx is not None:
                tell(("exited", idx, pid, code, rss, crash))

    reap()   # a first worker may have exited before SIGCHLD was watched

    while True:
        for key, _ in sel.select():
            what = key.data
            if what == "chld":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
            elif what == "alive":
                # The parent is gone: nobody will collect results; stop everything now.
                parent_gone()
            else:
                try:
                    msg = cmd.recv()
                except (EOFError, OSError):
                    # The parent died (EOF, or a ring it sent could not be attached: its fds
                    # went with it), or it closed the pipe after telling us to go.  A dead
                    # parent's alive pipe need not show EOF yet (the kernel closes its fds one
                    # by one, and its death signal comes after them): a close we were not told
                    # of first is a death, whose segments we sweep.
                    if not exiting or alive.poll(0):
                        parent_gone()
                    msg = ("killall",)
                op = msg[0]
                if op == "spawn":
                    _, idx, ring = msg
                    # Imported here once, so that replacement workers do not each pay ~5 ms
                    # for it at their first error; not at start-up, where it would take CPU
                    # from the first workers while they run the pool's first tasks.
                    import traceback  # noqa: F401

                    fork_worker(idx, ring)
                elif op == "kill":
                    _, pid, signum = msg
                    if pid in children:  # never signal a pid we have already reaped
                        try:
                            os.kill(pid, signum)
                        except ProcessLookupError:
                            pass
                elif op in ("killall", "exit"):
                    exiting = True
                    if op == "killall":
                        for pid in children:
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
        if exiting:
            # Wait (bounded by the children's own exit) for every worker to be reaped and
            # reported, so the parent learns every exit code before the zygote goes.  No
            # command is read any more: the pool's process closes that pipe, and its EOF, ready
            # at every select, made this loop spin for its whole 5 s (a zygote that is not the
            # program's child gets no death signal to end it: one forked by the fork helper, or
            # by a forkserver, after a program that exits right after close()/join()).
            sel.unregister(cmd)
            deadline = time.monotonic() + 5.0
            while children and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    if key.data == "chld":
                        try:
                            while os.read(wake_r, 512):
                                pass
                        except BlockingIOError:
                            pass
                        reap()
                    elif key.data == "alive":
                        # the pool's process is gone: nobody is left to read the reports
                        parent_gone()
            # Reap every child before going: an unreaped one would be left to init as a
            # zombie (which, in a container, may never reap it).  Bounded: SIGKILLed.
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            for pid in children:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            os._exit(0)


def zygote_from_helper(cmd_fd: int, report_fd: int, alive_fd: int, *args: Any) -> None:
    """:func:`zygote_main` in a child of the program's fork helper (``_core/_forkhelper.py``):
    its three pipe ends arrive as fds; ``args`` are zygote_main's others, ``bootstrap=True``
    among them (it does the stdlib's child set-up itself, as a zygote forked from the program
    does)."""
    from .._core._channel import Channel

    zygote_main(Channel(cmd_fd), Channel(report_fd), Channel(alive_fd), *args)
