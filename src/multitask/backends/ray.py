"""The Ray backend: the Pool API on Ray actors, on this machine or a cluster.

``Pool(backend="ray")`` -- or ``MULTITASK_BACKEND=ray`` for an unchanged program -- runs every
task in one of ``processes`` Ray actors.  Where Ray is:

* ``Pool(..., ray_address="ray://host:10001" | "host:6379" | "auto")``, else
* the environment variable ``RAY_ADDRESS`` (Ray's own convention), else
* a Ray this process already initialised (``ray.init(...)`` before the pool), else
* a local Ray started with ``ray.init(num_cpus=max(processes, cpu_count()),
  include_dashboard=False)`` and shut down when the last pool that started it is joined or
  terminated.

Data flow of one task::

    caller thread                         Ray actor i                 Ray's callback thread
    -------------                         -----------                 ---------------------
    apply_async(f, args)
      large ndarrays -> ray.put (once)
      Job -> _pending; _dispatch():
        the actor with the fewest tasks,
        at most 2 in flight (1 if the one
        it runs looks slow)
        actor.run.remote(fid, f?, mode, data) -> run f -> (status, value, t0, t1)
        call appended to actor.inflight                     ref resolves -> future callback
                                                                         -> event queue
    result thread: takes events in completion order, settles calls in each actor's order,
      dispatches more, then job.task_done() -> AsyncResult._set (callbacks run here)

Dispatch is load-balanced (``ray.util.multiprocessing.Pool`` hands chunks out round-robin, so a
slow chunk holds up everything queued behind it, ray-project/ray#29466): a task goes to the idle
actor, and a second one is queued on a busy actor only when tasks are cheap (< 20 ms measured)
and its current one is not overdue, so a slow task never holds a fast one behind it for long.
Results come from ``ObjectRef.future()`` callbacks -- event-driven, not a 100 ms poll (Ray's
Pool, ray-project/ray#21343): ``ray.wait`` in a loop cannot be woken when a new task is
submitted, so it would need exactly such a poll.

Differences from the process backend:

* functions and arguments are serialized by Ray (cloudpickle); a function is sent once per
  actor and cached there.  Functions importable by name are sent by reference, so the module
  must be importable on every node (install your package there, or use Ray's
  ``runtime_env``); ``__main__`` functions, lambdas and closures go by value;
* NumPy arrays of 1 MiB or more in a task's arguments are ``ray.put`` into Ray's object store
  once, when the call is made (a later change to the array does not reach the task, as with the
  process backend), and the actor gets a zero-copy **read-only** view; large results come back
  the same way, so a large array returned by a task is read-only (``arr.copy()`` to write);
* the initializer runs once per actor, in the actor's process, so globals it sets are seen by
  the tasks of that actor (``ray.util.multiprocessing.Pool`` does not support this,
  ray-project/ray#29453); a failing initializer fails the pool with
  :class:`multitask.ProcessError` as in the process backend;
* an actor that dies (``os._exit``, a segfault, OOM, its node lost: Ray reports
  ``RayActorError``) fails exactly the task it was running with
  :class:`multitask.WorkerDiedError` (``.pid`` is the actor's pid; ``.exitcode`` is None, Ray
  does not report it); the task queued behind it, never started, goes to another actor; the
  actor is replaced and the pool goes on (Ray's Pool does not replace, ray-project/ray#37705);
* ``task_timeout`` is measured from when the actor started the task, as seen from here (the
  completion of the task before it, or the dispatch); an overdue task's actor is killed with
  ``ray.kill``, its result raises :class:`multitask.TaskTimeoutError`, the actor is replaced;
* an actor Ray has not *created* 20 s after it was asked for (seen on a 2-core machine right
  after other actors were killed: "starting" for ever, with the calls queued on it) is killed
  and replaced, its queued calls sent again, with a warning on the ``"multitask"`` logger; the
  initializer's own time does not count;
* stopping a pool waits (at most 10 s) until Ray is done with its killed actors -- an unborn
  one's first call has failed, a local one's process has exited -- so that the next pool's
  actors are not placed while these are torn down (the race that leaves one never created);
* a result that Ray cannot serialize raises :class:`multitask.SerializationError`;
* ``nice``/``cpu_affinity`` are applied in each actor process (on its node);
* statistics: ``pid`` is the actor's process id on its node; ``queued`` tasks wait here, not
  on the cluster.

Stays local (works only between processes on one machine, not across Ray nodes):
``Value``/``Array``/``RawValue``/``RawArray``, ``shared_array``, ``Lock``/``Semaphore``/``Event``
and the other synchronisation primitives, ``Pipe``, and ``multitask.Queue`` (a shared-memory
ring).  A ring ``Queue`` *does* work between the driver and actors on the driver's node (the
actor attaches to it through ``/proc``); across nodes use :class:`RayQueue`, which has the
``multitask.Queue`` method set on top of ``ray.util.queue.Queue`` (an actor).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pickle
import queue as _queue
import select
import socket
import sys
import sysconfig
import threading
import time
import types
from collections.abc import Iterable
from typing import Any

import cloudpickle
import ray
import ray.exceptions
import ray.util.queue

from .._core._errors import (
    ClosedError,
    ProcessError,
    SerializationError,
    TaskTimeoutError,
    WorkerDiedError,
    remote_traceback,
)
from .._engine import envelope
from .._engine.backend import Backend
from .._engine.codes import ST_OK, ST_RAISED
from .._engine.functions import FunctionCache
from .._engine.jobs import MODE_CALL, MODE_MAP, Job, Redo, Task
from .._engine.log import logger
from .._engine.stats import TaskInfo, WorkerStatistics

# Arrays at least this large travel through the object store by an explicit ray.put.
_BIG_ARRAY_BYTES = 1 << 20
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

_owned_lock = threading.Lock()
_owned_users = 0          # pools using a Ray runtime that a pool of ours started


# ---------------------------------------------------------------------------------------------
# the actor (runs in a Ray worker process)
# ---------------------------------------------------------------------------------------------


class _Big:
    """Marks where a large array was replaced by its object-store reference."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Big, (self.ref,))


class _RayWorker:
    """One pool worker.  Ray runs its methods one at a time, in the order they were called."""

    def __init__(self) -> None:
        self._funcs: dict[int, Any] = {}
        # One namespace per module whose functions arrive by value (see _adopt).
        self._namespaces: dict[str, dict[str, Any]] = {}

    def setup(self, initializer: bytes | None, initargs: tuple[Any, ...], nice: int | None,
              cpu_affinity: Any) -> tuple[int, str, bytes | None]:
        """Apply settings, run the initializer; (pid, host, error info or None)."""
        try:
            if nice is not None or cpu_affinity is not None:
                from .._core import _spawn

                _spawn.apply_child_settings(nice, cpu_affinity)
            if initializer is not None:
                _adopt(pickle.loads(initializer), self._namespaces)(*initargs)
        except BaseException as exc:
            return os.getpid(), socket.gethostname(), _error_info(exc)
        return os.getpid(), socket.gethostname(), None

    def run(self, fid: int, fbytes: bytes | None, mode: int,
            data: Any) -> tuple[int, Any, float, float]:
        """Run one task: (status, value or error info, seconds started, seconds finished)."""
        t0 = time.monotonic()
        try:
            if fbytes is not None:
                self._funcs[fid] = _adopt(pickle.loads(fbytes), self._namespaces)
            fn = self._funcs[fid]
            data = _resolve_big(mode, data)
            if mode == MODE_CALL:
                value = fn(*data[0], **data[1])
            elif mode == MODE_MAP:
                value = list(map(fn, data))
            else:
                value = [fn(*a) for a in data]
        except BaseException as exc:
            return ST_RAISED, _error_info(exc), t0, time.monotonic()
        return ST_OK, value, t0, time.monotonic()

    def forget(self, fid: int) -> None:
        self._funcs.pop(fid, None)


_RemoteWorker = ray.remote(_RayWorker)


def _adopt(fn: Any, namespaces: dict[str, dict[str, Any]]) -> Any:
    """Re-bind a function that arrived by value to its module's one namespace in this actor.

    cloudpickle gives every separately pickled by-value function its own copy of its module's
    globals, so an initializer's ``global CONFIG; CONFIG = ...`` would be invisible to the tasks
    (the pattern of the notes).  A worker process of the process backend has one ``__main__``;
    this gives an actor the same, per module: names a function brings are added (values already
    there -- set by the initializer -- are kept), and the function reads and writes ``shared``.
    Functions imported by name (their module is importable here) are returned unchanged.
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    module = fn.__module__ or "__main__"
    real = sys.modules.get(module)
    if real is not None and getattr(real, "__dict__", None) is fn.__globals__:
        return fn
    shared = namespaces.get(module)
    if shared is None:
        shared = namespaces[module] = {"__name__": module, "__builtins__": __builtins__}
    return _rebind(fn, shared)


def _rebind(fn: Any, shared: dict[str, Any]) -> Any:
    old = fn.__globals__
    if old is shared:
        return fn
    for name, value in list(old.items()):
        if name in shared or name in ("__builtins__", "__name__"):
            continue
        if (isinstance(value, types.FunctionType) and value.__globals__ is old
                and value is not fn):
            shared[name] = None    # placeholder: breaks cycles between helpers
            value = _rebind(value, shared)
        shared[name] = value
    new = types.FunctionType(fn.__code__, shared, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__dict__.update(fn.__dict__)
    if shared.get(fn.__name__) is fn or fn.__name__ not in shared:
        shared[fn.__name__] = new
    return new


def _error_info(exc: BaseException) -> bytes:
    """The engine's error envelope, with an in-band codec (the bytes may leave the machine)."""
    return envelope.pack(exc, _inband_dumps)


def _inband_dumps(obj: Any) -> bytes:
    data: bytes = cloudpickle.dumps(obj, protocol=5)
    return data


def _remote_exception(info: bytes) -> BaseException:
    """Re-create a task's exception in the driver, with the actor's traceback as __cause__."""
    return envelope.unpack(info, pickle.loads, here="driver", there="actor")


def _resolve_big(mode: int, data: Any) -> Any:
    """Swap _Big markers for the arrays (zero-copy, read-only views of the object store)."""
    if mode == MODE_CALL:
        args, kwargs = data
        if any(isinstance(a, _Big) for a in args) or any(
                isinstance(v, _Big) for v in kwargs.values()):
            args = tuple(ray.get(a.ref) if isinstance(a, _Big) else a for a in args)
            kwargs = {k: ray.get(v.ref) if isinstance(v, _Big) else v for k, v in kwargs.items()}
        return args, kwargs
    if mode == MODE_MAP:
        if any(isinstance(x, _Big) for x in data):
            return [ray.get(x.ref) if isinstance(x, _Big) else x for x in data]
        return data
    out = []
    for item in data:
        if any(isinstance(a, _Big) for a in item):
            item = tuple(ray.get(a.ref) if isinstance(a, _Big) else a for a in item)
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# the driver side
# ---------------------------------------------------------------------------------------------


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


class RayBackend(Backend):
    """Pool workers as Ray actors.  See the module docstring."""

    name = "ray"
    option_names = frozenset({"ray_address", "ray_actor_options"})

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        global _owned_users
        options = dict(self.options)
        address = options.pop("ray_address", None) or os.environ.get("RAY_ADDRESS") or None
        actor_options = dict(options.pop("ray_actor_options", None) or {})
        if options:
            raise TypeError(f"unknown Pool options for the ray backend: {sorted(options)}")
        if self.max_memory_per_child is not None:
            # Ray has its own memory monitor (RAY_memory_usage_threshold), which kills and
            # retries the task of a worker past the node's limit.
            raise ValueError("max_memory_per_child is not supported by the ray backend; Ray's "
                             "memory monitor (RAY_memory_usage_threshold) does this there")
        self._owns_ray = False
        with _owned_lock:
            if not ray.is_initialized():
                if address:
                    ray.init(address=address)
                else:
                    ray.init(num_cpus=max(self.processes, os.cpu_count() or 1),
                             include_dashboard=False)
                    _owned_users = 0
                    self._owns_ray = True
            elif _owned_users > 0:
                self._owns_ray = True   # share the runtime a pool of ours started
            if self._owns_ray:
                _owned_users += 1
        try:
            self._initializer_bytes = (None if self.initializer is None
                                       else _dumps_function(self.initializer))
            self._actor_options = {"num_cpus": 1, **actor_options}
            self._check_resources()
            self._init()
        except BaseException:
            self._release_ray()
            raise

    def _check_resources(self) -> None:
        # A cluster without room for every actor would leave tasks queued forever: say so now.
        need = float(self._actor_options.get("num_cpus") or 0) * self.processes
        have = float(ray.cluster_resources().get("CPU", 0.0))
        if need > have:
            raise ValueError(
                f"the Ray cluster has {have:g} CPUs; {self.processes} actors of "
                f"{self._actor_options['num_cpus']} CPU need {need:g} (lower processes, or pass "
                f"ray_actor_options={{'num_cpus': ...}})")

    def _init(self) -> None:
        self._lock = threading.Lock()
        self._events: _queue.SimpleQueue[tuple[Any, ...]] = _queue.SimpleQueue()
        self._pending: collections.deque[Job | Redo] = collections.deque()
        self._starved: list[Job] = []
        self._closing = False
        self._terminated = False
        self._broken: BaseException | None = None
        self._drained = threading.Event()
        self._replaced = 0
        self._gen = 0
        self._fn_seconds: dict[int, float] = {}   # function id -> measured seconds per item
        # functions sent to actors, at most _FUNC_CACHE (evicted ones forgotten by the actors)
        self._funcs = FunctionCache(_dumps_function, _FUNC_CACHE)
        self._released = False
        self._watch_starts = False
        self._actors = [self._new_actor_locked(i) for i in range(self.processes)]
        self._thread = threading.Thread(target=self._result_loop, daemon=True,
                                        name="multitask-ray-results")
        self._thread.start()

    def _new_actor_locked(self, idx: int) -> _Actor:
        self._gen += 1
        handle: Any = _RemoteWorker.options(**self._actor_options).remote()
        actor = _Actor(idx, handle, self.new_quota(), self._gen)
        events = self._events
        # First call: done once Ray has created the actor, before the initializer (in setup)
        # runs -- what the start watchdog (_next_deadline) waits for.
        actor.ready = handle.__ray_ready__.remote().future()
        actor.ready.add_done_callback(lambda f: events.put(("alive", actor, f)))
        ref = handle.setup.remote(self._initializer_bytes, self.initargs, self.nice,
                                  self.cpu_affinity)
        ref.future().add_done_callback(lambda f: events.put(("setup", actor, f)))
        if not self._watch_starts:
            self._watch_starts = True
            events.put(("tick",))    # the result thread recomputes its next deadline
        return actor

    # -- submitting --------------------------------------------------------------------------
    def prepare(self, job: Job) -> None:
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

    def submit(self, job: Job) -> None:
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

    def wake(self) -> None:
        with self._lock:
            if self._starved:
                self._pending.extend(self._starved)
                self._starved.clear()
            failures = self._dispatch_locked()
            self._check_drained_locked()
        self._report(failures)

    def _room(self, a: _Actor, now: float) -> int:
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

    def _dispatch_locked(self) -> list[tuple[Task, BaseException]]:
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

    def _take_locked(self) -> Task | None:
        while self._pending:
            source = self._pending[0]
            task = source.next_task()
            if task is not None:
                return task
            self._pending.popleft()
            if not source.exhausted and isinstance(source, Job):
                self._starved.append(source)
        return None

    def _send_locked(self, a: _Actor, task: Task, now: float) -> None:
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

    def _function_locked(self, fn: Any) -> tuple[int, bytes]:
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

    def _report(self, failures: list[tuple[Task, BaseException]]) -> None:
        for task, exc in failures:
            task.job.task_done(task, False, exc, 0.0, 0.0, -1, None)

    # -- results -----------------------------------------------------------------------------
    def _result_loop(self) -> None:
        while True:
            try:
                ev = self._events.get(timeout=self._next_deadline())
            except _queue.Empty:
                continue
            kind = ev[0]
            try:
                if kind == "done":
                    self._on_done(ev[1], ev[2], ev[3])
                elif kind == "setup":
                    self._on_setup(ev[1], ev[2])
                elif kind == "alive":
                    if ev[2].exception() is None:
                        ev[1].alive = True      # a death shows in setup's outcome instead
                elif kind == "stop":
                    return
            except BaseException:  # the result thread must survive anything
                logger.exception("multitask: the Ray result thread hit an error")

    def _on_setup(self, a: _Actor, fut: Any) -> None:
        try:
            pid, host, err = fut.result()
        except ray.exceptions.RayActorError as exc:
            with self._lock:
                ours = a.state == "starting" and self._actors[a.idx] is a
            if ours:
                # It died in its initializer (os._exit, a crash): replacing it would loop.
                err = ProcessError(f"a Ray actor of the pool died while starting (in the "
                                   f"initializer?): {_first_line(exc)}")
                err.__cause__ = exc
                self._break(err)
            return
        except BaseException as exc:
            self._break(ProcessError(f"a Ray actor of the pool could not start: {exc}"))
            return
        if err is not None:
            cause = _remote_exception(err)
            perr = ProcessError(f"the pool's initializer failed in a Ray actor: "
                                f"{type(cause).__name__}: {cause}")
            perr.__cause__ = cause
            self._break(perr)
            return
        with self._lock:
            a.pid, a.host = pid, host
            if a.state == "starting":
                a.state = "running"
                if a.inflight:   # its first task starts now, not when it was sent
                    a.inflight[0].started = time.monotonic()
        self.notify_pool()

    def _on_done(self, a: _Actor, call: _Call, fut: Any) -> None:
        try:
            status, value, t0, t1 = fut.result()
            outcome: tuple[str, Any] = ("ok" if status == ST_OK else "raised", (value, t0, t1))
        except ray.exceptions.RayActorError as exc:
            outcome = ("died", exc)
        except ray.exceptions.RayTaskError as exc:
            # Our run() catches the task's own exceptions, so this is Ray failing to
            # (de)serialize the arguments or the result.
            err = SerializationError(
                f"Ray could not serialize the arguments or the result of "
                f"{call.task.job.function_name}: {exc.cause!r}")
            err.__cause__ = remote_traceback(getattr(exc, "traceback_str", "") or str(exc))
            outcome = ("error", err)
        except BaseException as exc:   # ObjectLostError, OutOfMemoryError...: fail the task
            outcome = ("error", exc)
        settled: list[tuple[Task, bool, Any, float, float]] = []
        with self._lock:
            if call.settled:
                return     # already failed (timeout, terminate); late outcome is discarded
            call.outcome = outcome
            now = time.monotonic()
            died: BaseException | None = None
            # Settle in the actor's order: an actor runs its calls one by one, so the first
            # call that saw the death is the one it was running.
            while a.inflight and a.inflight[0].outcome is not None:
                c = a.inflight.popleft()
                c.settled = True
                kind, payload = c.outcome  # type: ignore[misc]
                a.tasks_done += 1
                if kind == "died":
                    a.tasks_failed += 1
                    died = WorkerDiedError(
                        f"the Ray actor (pid {a.pid} on {a.host or '?'}) running "
                        f"{c.task.job.function_name} died: {_first_line(payload)}", pid=a.pid)
                    died.__cause__ = payload
                    settled.append((c.task, False, died, c.started, now))
                    break
                if kind == "error":
                    a.tasks_failed += 1
                    settled.append((c.task, False, payload, c.started, now))
                else:
                    value, t0, t1 = payload
                    ok = kind == "ok"
                    if not ok:
                        a.tasks_failed += 1
                        value = _remote_exception(value)
                    # Actor clocks are not ours (other nodes): place the run by its duration.
                    started = max(c.started, now - (t1 - t0))
                    settled.append((c.task, ok, value, started, now))
                    if ok and c.task.n:
                        per = (t1 - t0) / c.task.n
                        old = self._fn_seconds.get(c.fid, 0.0)
                        self._fn_seconds[c.fid] = per if old == 0.0 else 0.7 * old + 0.3 * per
                if a.inflight:
                    a.inflight[0].started = now   # the next call starts now
            if died is not None:
                self._lose_actor_locked(a)
            elif a.quota is not None and a.quota <= 0 and not a.inflight:
                self._retire_locked(a)          # maxtasksperchild: a fresh actor
            failures = self._dispatch_locked()
            self._check_drained_locked()
        self._report(failures)
        for task, ok, value, started, finished in settled:
            task.job.task_done(task, ok, value, started, finished, a.idx, a.pid)
        self.notify_pool()

    def _lose_actor_locked(self, a: _Actor, *, kill: bool = False) -> None:
        """The actor is gone: re-queue the calls it never started, put a new actor in its slot."""
        a.state = "dead"
        redo = [c.task for c in a.inflight]
        for c in a.inflight:
            c.settled = True
        a.inflight.clear()
        if kill:
            _kill(a.handle)
        if redo:
            self._pending.appendleft(Redo(redo))
        if not self._terminated and self._broken is None:
            self._replaced += 1
            self._actors[a.idx] = self._new_actor_locked(a.idx)

    def _retire_locked(self, a: _Actor) -> None:
        a.state = "dead"
        _kill(a.handle)
        if not self._terminated and self._broken is None:
            fresh = self._new_actor_locked(a.idx)
            self._actors[a.idx] = fresh

    def _check_drained_locked(self) -> None:
        if (not self._starved and all(src.exhausted for src in self._pending)
                and all(not a.inflight for a in self._actors)):
            self._drained.set()

    def _next_deadline(self) -> float | None:
        """Kill actors whose running task overran, replace actors Ray never created; return
        seconds until the next check."""
        now = time.monotonic()
        soonest: float | None = None
        expired: list[tuple[_Actor, _Call, float]] = []
        stalled: list[_Actor] = []
        with self._lock:
            if self._terminated:
                return None
            self._watch_starts = False
            for a in self._actors:
                if a.state != "starting" or a.alive:
                    continue
                # Ray sometimes never creates an actor asked for right after others were
                # killed (seen on this 2-core machine: "starting" for ever, its calls with it).
                self._watch_starts = True
                deadline = a.born + _START_GRACE
                if now >= deadline:
                    stalled.append(a)
                elif soonest is None or deadline < soonest:
                    soonest = deadline
            for a in stalled:
                logger.warning("multitask: Ray did not create a pool actor within %g s; "
                               "replacing it", _START_GRACE)
                self._lose_actor_locked(a, kill=True)
            for a in self._actors:
                if not a.inflight or a.state == "dead":
                    continue
                head = a.inflight[0]
                limit = head.task.job.timeout
                if limit is None:
                    continue
                deadline = head.started + limit
                if now >= deadline:
                    expired.append((a, head, limit))
                elif soonest is None or deadline < soonest:
                    soonest = deadline
            settled = []
            for a, head, limit in expired:
                a.inflight.popleft()
                head.settled = True
                a.tasks_done += 1
                a.tasks_failed += 1
                exc = TaskTimeoutError(
                    f"{head.task.job.function_name} ran longer than its task_timeout of "
                    f"{limit} s; its Ray actor (pid {a.pid}) was killed and replaced",
                    timeout=limit, pid=a.pid)
                settled.append((a, head.task, exc, head.started))
                self._lose_actor_locked(a, kill=True)
            failures = self._dispatch_locked() if expired or stalled else []
        self._report(failures)
        for a, task, exc, started in settled:
            task.job.task_done(task, False, exc, started, now, a.idx, a.pid)
        if settled:
            self.notify_pool()
        if settled or stalled:
            return 0.0    # look again at once: the replacements' start deadlines count now
        if soonest is None:
            return None
        return max(0.0, soonest - time.monotonic()) + 0.001

    def _break(self, err: BaseException) -> None:
        """The pool cannot go on (initializer failed): fail everything with ``err``."""
        with self._lock:
            if self._broken is not None:
                return
            self._broken = err
        self.terminate(_reason=err)

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._check_drained_locked()

    def join(self, timeout: float | None = None) -> bool:
        if not self._drained.wait(timeout):
            return False
        self._stop()
        return True

    def terminate(self, _reason: BaseException | None = None) -> None:
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

    def _stop(self) -> None:
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

    def _release_ray(self) -> None:
        global _owned_users
        if not self._owns_ray:
            return
        self._owns_ray = False
        with _owned_lock:
            _owned_users -= 1
            if _owned_users == 0 and ray.is_initialized():
                ray.shutdown()

    # -- introspection -----------------------------------------------------------------------
    def worker_statistics(self) -> tuple[WorkerStatistics, ...]:
        now = time.monotonic()
        out = []
        with self._lock:
            for a in self._actors:
                current = None
                state = a.state
                if a.inflight and a.state != "dead":
                    c = a.inflight[0]
                    current = TaskInfo(c.task.id, c.task.job.function_name, c.started,
                                       max(0.0, now - c.started), c.task.n)
                    state = "busy"
                elif a.state == "running":
                    state = "idle"
                out.append(WorkerStatistics(a.idx, a.pid, state, a.tasks_done, a.tasks_failed,
                                            current, a.created))
        return tuple(out)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# a Queue that works across Ray nodes
# ---------------------------------------------------------------------------------------------


class RayQueue:
    """``multitask.Queue``'s method set on a Ray actor (``ray.util.queue.Queue``).

    Use it to pass items between tasks running on different Ray nodes; it pickles as a handle to
    the actor, so it can be passed as a task argument.  ``put``/``get`` block (on the actor) as
    ``multitask.Queue``'s do and raise :class:`queue.Full` / :class:`queue.Empty`; each call is
    a Ray round trip (~0.5 ms), so prefer ``put_many``/``get_many`` for many small items.  On one
    machine the shared-memory ``multitask.Queue`` is faster by orders of magnitude and also works
    with Ray actors there.  ``close()`` stops the actor (only the creator's ``close`` does).
    """

    def __init__(self, maxsize: int = 0, *, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if not ray.is_initialized():
            raise RuntimeError("RayQueue needs Ray: create a Pool(backend='ray') or call "
                               "ray.init() first")
        self._q = ray.util.queue.Queue(max(0, maxsize), actor_options=actor_options)
        self._maxsize = max(0, maxsize)
        self._owner = True
        self._closed = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_queue, (self._q, self._maxsize))

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("Queue is closed")

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Blocks while the queue is full (up to ``timeout``); raises queue.Full after it."""
        self._check()
        self._q.put(obj, block=block, timeout=timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Blocks while the queue is empty (up to ``timeout``); raises queue.Empty after it."""
        self._check()
        return self._q.get(block=block, timeout=timeout)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = None) -> None:
        """Put every item in order, in one round trip when they all fit.

        If they do not, falls back to one blocking ``put`` each; raises queue.Full (with
        ``put_count``, as ``multitask.Queue.put_many``) if not all could be put in time.
        """
        self._check()
        items = list(items)
        try:
            self._q.put_nowait_batch(items)
            return
        except ray.util.queue.Full:
            if not block:
                exc = _queue.Full("the queue cannot take every item now")
                exc.put_count = 0  # type: ignore[attr-defined]
                raise exc
        deadline = None if timeout is None else time.monotonic() + timeout
        for i, item in enumerate(items):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._q.put(item, block=True, timeout=left)
            except ray.util.queue.Full:
                exc = _queue.Full(f"only {i} of {len(items)} items were put before the timeout")
                exc.put_count = i  # type: ignore[attr-defined]
                raise exc

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """At least one item (waiting up to ``timeout``) and at most ``max_items``."""
        self._check()
        if isinstance(max_items, bool) or not isinstance(max_items, int):
            raise TypeError(f"max_items must be an int, not {type(max_items).__name__}")
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        first = self._q.get(block=True, timeout=timeout)
        n = min(max_items - 1, self._q.qsize())
        rest = self._q.get_nowait_batch(n) if n > 0 else []
        return [first, *rest]

    def qsize(self) -> int:
        self._check()
        return int(self._q.qsize())

    def empty(self) -> bool:
        self._check()
        return bool(self._q.empty())

    def full(self) -> bool:
        self._check()
        return bool(self._q.full())

    def close(self) -> None:
        """No more use from this handle; the creator's close also stops the queue's actor."""
        if self._closed:
            return
        self._closed = True
        if self._owner:
            try:
                self._q.shutdown()
            except Exception:  # Ray already shut down
                pass

    def join_thread(self) -> None:
        """Nothing to join: there is no feeder thread (puts complete before they return)."""

    def cancel_join_thread(self) -> None:
        """Nothing to cancel (no feeder thread)."""


def _rebuild_queue(q: Any, maxsize: int) -> RayQueue:
    self = RayQueue.__new__(RayQueue)
    self._q = q
    self._maxsize = maxsize
    self._owner = False
    self._closed = False
    return self


BACKEND = RayBackend
