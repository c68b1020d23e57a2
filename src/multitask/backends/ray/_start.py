"""Starting a Ray pool: finding or starting Ray, the actors (one per worker slot).

Functions of :class:`RayBackend` (its methods, gathered in ``_backend.py``); the backend's
state is declared there.
"""

from __future__ import annotations

import collections
import os
import queue as _queue
import threading
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions
import ray.util.queue

from ..._engine.functions import FunctionCache
from ._actor import _RemoteWorker
from ._records import _FUNC_CACHE, _Actor, _dumps_function, _OwnedRay

if TYPE_CHECKING:
    from ._backend import RayBackend


def start(self: RayBackend) -> None:
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
    with _OwnedRay.lock:
        if not ray.is_initialized():
            if address:
                ray.init(address=address)
            else:
                ray.init(num_cpus=max(self.processes, os.cpu_count() or 1),
                         include_dashboard=False)
                _OwnedRay.users = 0
                self._owns_ray = True
        elif _OwnedRay.users > 0:
            self._owns_ray = True   # share the runtime a pool of ours started
        if self._owns_ray:
            _OwnedRay.users += 1
    try:
        self._initializer_bytes = (None if self.initializer is None
                                   else _dumps_function(self.initializer))
        self._actor_options = {"num_cpus": 1, **actor_options}
        self._check_resources()
        self._init()
    except BaseException:
        self._release_ray()
        raise


def _check_resources(self: RayBackend) -> None:
    # A cluster without room for every actor would leave tasks queued forever: say so now.
    need = float(self._actor_options.get("num_cpus") or 0) * self.processes
    have = float(ray.cluster_resources().get("CPU", 0.0))
    if need > have:
        raise ValueError(
            f"the Ray cluster has {have:g} CPUs; {self.processes} actors of "
            f"{self._actor_options['num_cpus']} CPU need {need:g} (lower processes, or pass "
            f"ray_actor_options={{'num_cpus': ...}})")


def _init(self: RayBackend) -> None:
    self._lock = threading.Lock()
    self._events = _queue.SimpleQueue()
    self._pending = collections.deque()
    self._starved = []
    self._closing = False
    self._terminated = False
    self._broken = None
    self._drained = threading.Event()
    self._replaced = 0
    self._gen = 0
    self._fn_seconds = {}   # function id -> measured seconds per item
    # functions sent to actors, at most _FUNC_CACHE (evicted ones forgotten by the actors)
    self._funcs = FunctionCache(_dumps_function, _FUNC_CACHE)
    self._released = False
    self._watch_starts = False
    self._actors = [self._new_actor_locked(i) for i in range(self.processes)]
    self._thread = threading.Thread(target=self._result_loop, daemon=True,
                                    name="multitask-ray-results")
    self._thread.start()


def _new_actor_locked(self: RayBackend, idx: int) -> _Actor:
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
