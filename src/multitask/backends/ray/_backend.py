"""The Ray backend's class: its state, declared in one place, and its methods, each written in
the module of its concern (``_start``, ``_dispatch``, ``_settle``, ``_shutdown``) and gathered
here, as the process backend's are (``docs/design.md``).  The data flow is drawn in the package's
docstring (``__init__.py``)."""

from __future__ import annotations

import collections
import queue as _queue
import threading
import time
from typing import Any

from ..._engine.backend import Backend
from ..._engine.functions import FunctionCache
from ..._engine.jobs import Job, Redo
from ..._engine.stats import TaskInfo, WorkerStatistics
from . import _dispatch, _settle, _shutdown, _start
from ._records import _Actor


class RayBackend(Backend):
    """Pool workers as Ray actors.  See the package docstring."""

    name = "ray"
    option_names = frozenset({"ray_address", "ray_actor_options"})

    # -- state: set by start() (_start.py) --------------------------------------------------
    _lock: threading.Lock                       # guards the dispatch state below
    _events: _queue.SimpleQueue[tuple[Any, ...]]   # Ray's completion callbacks -> result thread
    _pending: collections.deque[Job | Redo]     # work not yet given to an actor
    _starved: list[Job]                         # jobs waiting for an actor with room
    _actors: list[_Actor]                       # one record per slot (survives replacements)
    _gen: int                                   # actor generations (a late event of a replaced one)
    _funcs: FunctionCache                       # functions serialized once, ids per actor
    _fn_seconds: dict[int, float]               # function id -> measured seconds per item
    _initializer_bytes: bytes | None
    _actor_options: dict[str, Any]
    _owns_ray: bool                             # this pool counts in _OwnedRay.users
    _thread: threading.Thread                   # the result thread
    _drained: threading.Event
    _broken: BaseException | None
    _replaced: int
    _watch_starts: bool
    _closing: bool
    _terminated: bool
    _released: bool

    # -- start: Ray, the actors (_start.py) --------------------------------------------------
    start = _start.start
    _check_resources = _start._check_resources
    _init = _start._init
    _new_actor_locked = _start._new_actor_locked

    # -- submitting and dispatch (_dispatch.py) ----------------------------------------------
    prepare = _dispatch.prepare
    submit = _dispatch.submit
    wake = _dispatch.wake
    _room = _dispatch._room
    _dispatch_locked = _dispatch._dispatch_locked
    _take_locked = _dispatch._take_locked
    _send_locked = _dispatch._send_locked
    _function_locked = _dispatch._function_locked
    _report = _dispatch._report

    # -- results, lost actors, deadlines (_settle.py) ----------------------------------------
    _result_loop = _settle._result_loop
    _on_setup = _settle._on_setup
    _on_done = _settle._on_done
    _lose_actor_locked = _settle._lose_actor_locked
    _retire_locked = _settle._retire_locked
    _check_drained_locked = _settle._check_drained_locked
    _next_deadline = _settle._next_deadline
    _break = _settle._break

    # -- close, join, terminate, release (_shutdown.py) --------------------------------------
    close = _shutdown.close
    join = _shutdown.join
    terminate = _shutdown.terminate
    _stop = _shutdown._stop
    _release_ray = _shutdown._release_ray

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



BACKEND = RayBackend
