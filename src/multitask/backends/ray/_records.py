"""The driver side's records (a call sent to an actor, an actor slot), its tunables, and the
helpers that need no backend."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pickle
import select
import socket
import sys
import sysconfig
import threading
import time
from typing import Any

import cloudpickle
import ray
import ray.exceptions
import ray.util.queue

from ..._core._errors import SerializationError
from ..._engine.jobs import MODE_CALL, MODE_MAP, Task
from ._actor import _BIG_ARRAY_BYTES, _Big

# How long stopping a pool waits for the processes of its killed actors to exit.
_DEATH_WAIT = 10.0
# An actor Ray has not created after this long is killed and replaced (its queued calls are
# sent again); the initializer's time does not count.
_START_GRACE = 20.0
# Distinct functions kept serialized here and cached in the actors (least recently used out).
_FUNC_CACHE = 256
# Queue a second task on a busy actor only when its task takes less than this (measured) ...
_PIPELINE_BELOW = 0.02
# ... and the one it runs has not been running longer than max(this, 4 x the measured time).
_HEAD_SLOW_AFTER = 0.005



class _OwnedRay:
    """The Ray runtime a pool of ours started: how many pools use it (the last one to be
    released shuts it down), under ``lock``."""

    lock = threading.Lock()
    users = 0



class _Call:
    """One task sent to an actor, until its outcome is known."""

    __slots__ = ("fid", "outcome", "ref", "settled", "started", "task")

    def __init__(self, task: Task, ref: Any, fid: int, started: float) -> None:
        self.task = task
        self.ref = ref
        self.fid = fid
        self.outcome: tuple[str, Any] | None = None
        self.started = started   # estimated start in the actor (driver's clock)
        self.settled = False


class _Actor:
    """The driver's record of one worker slot (the index survives replacements)."""

    __slots__ = (
        "alive",
        "born",
        "created",
        "funcs",
        "gen",
        "handle",
        "host",
        "idx",
        "inflight",
        "pid",
        "quota",
        "ready",
        "state",
        "tasks_done",
        "tasks_failed",
    )

    def __init__(self, idx: int, handle: Any, quota: int | None, gen: int) -> None:
        self.idx = idx
        self.handle = handle
        self.pid: int | None = None
        self.host = ""
        self.state = "starting"          # starting | running | dead
        self.inflight: collections.deque[_Call] = collections.deque()
        self.funcs: set[int] = set()
        self.tasks_done = 0
        self.tasks_failed = 0
        self.created = time.time()
        self.born = time.monotonic()
        self.alive = False               # Ray has created it (its first call ran)
        self.ready: Any = None           # that first call's future
        self.quota = quota
        self.gen = gen





def _kill(handle: Any) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # already gone, or Ray shut down: nothing left to stop
        pass


def _await_exits(actors: list[_Actor], timeout: float) -> None:
    """Wait (at most ``timeout`` s) until Ray is done with killed actors.

    ``ray.kill`` only asks.  A pool made right after this one could otherwise get its actors
    placed while Ray is still tearing these down: on this 2-core machine that race left a new
    actor of the next pool "starting" for ever, about one test run in six.  An actor Ray had
    not created yet is waited for through its first call (it fails once the kill has gone
    through); a created one on this host through a pidfd on its process.  Events, no polling.
    Actors on other nodes are not waited for.
    """
    deadline = time.monotonic() + timeout
    unborn = [a.ready for a in actors if not a.alive and a.ready is not None]
    if unborn:
        concurrent.futures.wait(unborn, timeout=timeout)
    host = socket.gethostname()
    poller = select.poll()
    fds = []
    for a in actors:
        if a.pid is None or a.host != host:
            continue
        try:
            fd = os.pidfd_open(a.pid)
        except OSError:   # gone already (or no pidfds here): nothing to wait for
            continue
        fds.append(fd)
        poller.register(fd, select.POLLIN)
    try:
        left = len(fds)
        while left:
            wait_ms = (deadline - time.monotonic()) * 1000
            if wait_ms <= 0:
                break
            for fd, _ in poller.poll(wait_ms):
                poller.unregister(fd)
                left -= 1
    finally:
        for fd in fds:
            os.close(fd)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_big(x: Any) -> bool:
    nbytes = getattr(x, "nbytes", None)
    return (isinstance(nbytes, int) and nbytes >= _BIG_ARRAY_BYTES
            and type(x).__module__ == "numpy")


def _put_big(data: Any, mode: int) -> Any:
    """Replace large top-level ndarrays by object-store references (each object put once)."""
    seen: dict[int, _Big] = {}

    def swap(x: Any) -> Any:
        if not _is_big(x):
            return x
        big = seen.get(id(x))
        if big is None:
            big = seen[id(x)] = _Big(ray.put(x))
        return big

    if mode == MODE_CALL:
        args, kwargs = data
        if not any(_is_big(a) for a in args) and not any(_is_big(v) for v in kwargs.values()):
            return data
        return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}
    if mode == MODE_MAP:
        if not any(_is_big(x) for x in data):
            return data
        return [swap(x) for x in data]
    if not any(_is_big(a) for item in data for a in item):
        return data
    return [tuple(swap(a) for a in item) for item in data]


def _check_picklable(data: Any) -> None:
    cloudpickle.dumps(data, protocol=5)


_INSTALLED = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")})


def _installed(module_name: str | None) -> bool:
    """True for a module of an installed package or the stdlib (importable on every node)."""
    if not module_name:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    path: str | None = getattr(module, "__file__", None)
    if path is None:
        return True   # builtin module
    return os.path.realpath(path).startswith(_INSTALLED)


def _dumps_function(fn: Any) -> bytes:
    """By reference when it comes from an installed package, else by value (cloudpickle).

    Ray's workers import by-reference functions by module name, and the user's own modules
    (the script's directory, a checkout on ``sys.path``) are not importable there -- on a
    cluster not even present.  So the user's code travels by value, module by module
    (``register_pickle_by_value``), and installed packages (``numpy.sum``...) by name.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if _installed(module) and "<" not in qualname:
        try:
            return pickle.dumps(fn, protocol=5)
        except Exception:
            pass
    by_value = None
    if module and module != "__main__" and module in sys.modules and not _installed(module):
        by_value = sys.modules[module]
    try:
        if by_value is not None:
            with _by_value_lock:
                cloudpickle.register_pickle_by_value(by_value)
                try:
                    by_value_data: bytes = cloudpickle.dumps(fn, protocol=5)
                    return by_value_data
                finally:
                    cloudpickle.unregister_pickle_by_value(by_value)
        data: bytes = cloudpickle.dumps(fn, protocol=5)
        return data
    except Exception as exc:
        raise _serialization_error(exc, f"the function {module}.{qualname}") from exc


_by_value_lock = threading.Lock()


def _serialization_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, SerializationError):
        return exc
    err = SerializationError(f"{what} could not be pickled: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


