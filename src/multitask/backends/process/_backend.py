"""The process backend's class: its state, declared in one place, and its methods, each
written in the module of its concern (``_start``, ``_dispatch``, ``_settle``, ``_deaths``,
``_watch``, ``_shutdown``) and gathered here.  The data flow is drawn in the package's
docstring (``__init__.py``)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._core._arena import Arena
from ..._core._ring import Ring
from ..._engine.backend import Backend
from ..._engine.functions import FunctionCache
from ..._engine.jobs import Job, Redo
from .._slots import Slots
from . import _deaths, _dispatch, _settle, _shutdown, _start, _watch
from ._records import _Worker

if TYPE_CHECKING:
    from ..._engine.stats import WorkerStatistics


class ProcessBackend(Backend):
    """Worker processes fed through shared-memory rings (see the package docstring)."""

    name = "process"
    item_groups = True
    #: ``prefetch=False``: a worker holds one task at a time (none queued behind the running
    #: one), so a task a worker holds is running -- what cancel_task needs to stop a running
    #: task without stopping another (the Executor's ``cancel_running=True``).
    option_names = frozenset({"prefetch"})

    # -- state: set by start() (_start.py), where each is explained -------------------------
    _lock: threading.Lock                       # guards all of the dispatch state below
    _pending: collections.deque[Job | Redo]     # work not yet given to a worker
    _starved: list[Job | Redo]                  # jobs waiting for a worker with room
    _workers: list[_Worker]                     # one record per slot (survives replacements)
    _slots: Slots                               # the slots' published state (monitor)
    _funcs: FunctionCache                       # functions serialized once, ids per worker
    _main_now: dict[str, Any]                   # __main__'s functions a worker has by name
    _fn_seconds: dict[int, float]               # seconds per item, EWMA per function id
    _prefetch: bool
    _outbound: Ring                             # the result ring (every worker writes it)
    _group: str | None                          # untracked rings' group (forked zygote)
    _spill_prefix: str
    _arena: Arena                               # reused segments for large arguments
    _leader: int | None                         # thread reading results in get() (lead)
    _settler: int | None                        # thread settling a batch (_pump)
    _zygote: Any
    _cmd: Any                                   # commands to the zygote
    _report: Any                                # the zygote's reports (exits, starts)
    _alive: Any                                 # held open while the pool lives
    _direct: dict[int, int]                     # pid -> slot of workers forked here
    _pidfds: dict[int, int]                     # pid -> pidfd of a live worker
    _crash_fds: dict[int, int]                  # pid -> crash report of a worker forked here
    _wake_r: int                                # the watcher's wake-up pipe
    _wake_w: int
    _result_thread: threading.Thread
    _watch_thread: threading.Thread
    _watch_at: float                            # when the watcher next looks at deadlines
    _timed_out: dict[int, tuple[int, float, str]]   # pid -> (task id, timeout, its stack)
    _cancelled: set[int]                        # task ids whose worker cancel_task stopped
    _when_running: list[Callable[[], None]] | None
    _broken: BaseException | None
    _replaced: int
    _memory_recycled: int
    _oom_kills: int
    _order_breach_logged: bool
    _all_exited: threading.Event
    _join_lock: threading.Lock
    # the phases of shutdown (see _shutdown.py)
    _closing: bool
    _zygote_told: bool
    _zygote_detached: bool
    _winding_down: bool
    _terminated: bool
    _stopped: bool

    # -- start: zygote, first worker, rings, threads; killing and reaping a worker (_start.py)
    start = _start.start
    _start_from_helper = _start._start_from_helper
    _zygote_args = _start._zygote_args
    _fork_first_worker = _start._fork_first_worker
    _kill_worker = _start._kill_worker
    _reap_direct = _start._reap_direct
    _post_death = _start._post_death
    _new_ring = _start._new_ring

    # -- submitting and dispatch (_dispatch.py) ------------------------------------------
    submit = _dispatch.submit
    prepare = _dispatch.prepare
    wake = _dispatch.wake
    _has_room = _dispatch._has_room
    _next_is_chunk = _dispatch._next_is_chunk
    _estimate = _dispatch._estimate
    _dispatch_locked = _dispatch._dispatch_locked
    _send = _dispatch._send
    _flush = _dispatch._flush
    _unsent = _dispatch._unsent
    _function_locked = _dispatch._function_locked

    # -- reading and settling results (_settle.py) ---------------------------------------
    _result_loop = _settle._result_loop
    lead = _settle.lead
    kick = _settle.kick
    _pump = _settle._pump
    _settle_msgs = _settle._settle_msgs
    _on_results = _settle._on_results
    _out_of_order_locked = _settle._out_of_order_locked
    _decode = _settle._decode

    # -- a worker's death, a broken pool, workers quitting (_deaths.py) ------------------
    _on_death = _deaths._on_death
    _cause = _deaths._cause
    _death_error = _deaths._death_error
    _on_initializer_failed = _deaths._on_initializer_failed
    _on_zygote_lost = _deaths._on_zygote_lost
    _break = _deaths._break
    _maybe_quit_locked = _deaths._maybe_quit_locked

    # -- the watcher: exits, deadlines, cancelling a running task (_watch.py) ------------
    when_running = _watch.when_running
    _run_when_running = _watch._run_when_running
    _watch_loop = _watch._watch_loop
    _next_deadline = _watch._next_deadline
    item_seconds_hint = _watch.item_seconds_hint
    cancel_task = _watch.cancel_task
    _stack_then_kill = _watch._stack_then_kill
    poke_watcher = _watch.poke_watcher

    # -- close, join, terminate, release (_shutdown.py) ----------------------------------
    close = _shutdown.close
    join = _shutdown.join
    _join_locked = _shutdown._join_locked
    _watch_pid = _shutdown._watch_pid
    _quitting_locked = _shutdown._quitting_locked
    _exit_pids_known = _shutdown._exit_pids_known
    _exit_fds = _shutdown._exit_fds
    terminate = _shutdown.terminate
    _stop = _shutdown._stop
    _release = _shutdown._release

    def worker_statistics(self) -> tuple[WorkerStatistics, ...]:
        from ..._engine.stats import TaskInfo, WorkerStatistics

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


BACKEND = ProcessBackend
