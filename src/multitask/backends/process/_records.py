"""What the process backend's parts share: its tunables, the parent's record of a worker slot
(:class:`_Worker`), the work one dispatch round decides (:class:`_Sends`, :class:`_Batch`),
and the helpers that need no backend."""

from __future__ import annotations

import collections
import pickle
import select
import struct
import threading
import time
from typing import Any

from ..._core import _mainfn, _serialize
from ..._core._errors import SerializationError
from ..._core._ring import Ring
from ..._engine import envelope
from ..._engine.jobs import Task
from ...monitor import _hook
from .._worker import BATCH_HDR, TASK_HDR

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
        self.backlog: collections.deque[bytes | _Deferred] = collections.deque()
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


class _Deferred:
    """A task in a worker's backlog whose input is serialized only when it is put into the ring
    (``_flush``): a map's chunk, cut under ``_lock`` but pickled after it is released -- its
    items' ``__reduce__`` is user code, which must not run under the dispatch lock (#20)."""

    __slots__ = ("fid", "mode", "task")

    def __init__(self, task: Task, fid: int, mode: int) -> None:
        self.task = task
        self.fid = fid
        self.mode = mode

    def message(self, wire: bytes) -> bytes:
        return (BATCH_HDR.pack(b"T", 1, 0) + TASK_HDR.pack(self.task.id, self.fid, self.mode,
                                                           len(wire)) + wire)


class _Batch:
    """The messages for one worker built during one dispatch round."""

    __slots__ = ("msgs", "parts", "quit", "worker")

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.msgs: list[bytes | _Deferred] = []
        self.parts: list[bytes] = []
        self.quit = False

    def add(self, task: Task, fid: int, mode: int, fmsgs: list[bytes]) -> None:
        if fmsgs:   # function definitions must precede the tasks that use them
            self._seal()
            self.msgs.extend(fmsgs)
        if task.wire is None:   # serialized later, outside the lock: a message of its own
            self._seal()
            self.msgs.append(_Deferred(task, fid, mode))
            return
        self.parts.append(TASK_HDR.pack(task.id, fid, mode, len(task.wire)))
        self.parts.append(task.wire)
        if len(self.parts) >= 2 * _MAX_BATCH:
            self._seal()

    def _seal(self) -> None:
        if self.parts:
            self.msgs.append(BATCH_HDR.pack(b"T", len(self.parts) // 2, 0)
                             + b"".join(self.parts))
            self.parts = []

    def finish(self) -> list[bytes | _Deferred]:
        self._seal()
        if self.quit:
            self.msgs.append(b"Q")
        return self.msgs


def _queued(w: _Worker) -> float:
    return w.queued



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
