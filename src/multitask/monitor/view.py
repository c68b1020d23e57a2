"""Joining the registry (what multitask knows) with ``/proc`` (what the OS knows) into rows.

:func:`build` turns :func:`~multitask.monitor.registry.read_all` entries into
:class:`ProgramView` objects -- the program's own process, its pools with one :class:`Row` per
worker, and its plain processes -- each row carrying the OS facts from
:func:`~multitask.monitor.procinfo.proc_info`.  ``multitask ps`` prints them, ``ps --json`` dumps
``Row.as_dict()``, and ``multitask top`` redraws them.  Reads ``/proc`` only; never blocks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .._engine.stats import PoolStatistics
from .procinfo import CpuSampler, ProcInfo, proc_info
from .registry import ProgramEntry

__all__ = ["ProgramView", "Row", "build", "flatten"]


@dataclass(frozen=True)
class Row:
    """One process of a multitask program, as ``multitask ps`` shows it.

    ``state`` is the OS state as ``ps`` prints it in STAT (``"S"``, ``"R+"``, ``"Z"``, ``"T"``;
    ``"X"`` when the process no longer exists); ``task_state`` is the pool's view of a worker
    (``"idle"``, ``"busy"``, ``"starting"``, ``"stopping"``, ``"dead"``), None for other roles.
    """

    program: int                    # pid of the program's main process
    pid: int
    ppid: int | None
    role: str                       # "main" | "worker" | "process" | "zygote" | ...
    name: str                       # pool name for workers, process name, or the program's argv
    state: str
    cpu_percent: float | None
    rss: int | None
    nice: int | None
    threads: int | None
    command: str
    cpu_count: int                  # multitask.cpu_count() of the program
    pool: str | None = None
    worker: int | None = None       # the worker's slot index in its pool
    task_state: str | None = None
    task: str | None = None         # function of the running task
    task_id: int | None = None
    task_items: int | None = None
    task_running_for: float | None = None  # seconds, now (extrapolated from the snapshot)
    tasks_done: int | None = None
    tasks_failed: int | None = None
    started: float | None = None    # time.time() when it started

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form, as ``multitask ps --json`` prints it."""
        return asdict(self)


@dataclass(frozen=True)
class PoolView:
    stats: PoolStatistics
    workers: tuple[Row, ...]


@dataclass(frozen=True)
class ProgramView:
    """One program: its main-process row, its pools with their worker rows, other processes."""

    entry: ProgramEntry
    main: Row
    pools: tuple[PoolView, ...] = field(default=())
    processes: tuple[Row, ...] = field(default=())

    def rows(self) -> list[Row]:
        """Every row of the program, main first, in display order."""
        out = [self.main]
        for pool in self.pools:
            out.extend(pool.workers)
        out.extend(self.processes)
        return out


def _os_fields(info: ProcInfo | None) -> dict[str, Any]:
    if info is None:  # exited since the entry was written (a worker being replaced, say)
        return {"ppid": None, "state": "X", "cpu_percent": None, "rss": None, "nice": None,
                "threads": None, "command": ""}
    return {"ppid": info.ppid, "state": info.state, "cpu_percent": info.cpu_percent,
            "rss": info.rss, "nice": info.nice, "threads": info.threads,
            "command": info.command}


def build(entries: list[ProgramEntry], *, sampler: CpuSampler | None = None,
          now_monotonic: float | None = None) -> list[ProgramView]:
    """Views of *entries* with the OS facts read now (CPU % per *sampler*, see ``proc_info``)."""
    now = time.monotonic() if now_monotonic is None else now_monotonic
    views = []
    for entry in entries:
        # Task durations in the entry are as of its write; add the time since then.
        age = max(0.0, now - entry.updated_monotonic)
        info = proc_info(entry.pid, sampler=sampler)
        name = " ".join(entry.argv)
        if entry.argv[:1] in ((), ("-c",), ("",)) and info is not None:  # argv is a tuple
            name = info.command[:100]  # `python -c ...`: argv says only "-c"
        main = Row(program=entry.pid, pid=entry.pid, role="main",
                   name=name or entry.executable, cpu_count=entry.cpu_count,
                   started=info.create_time if info else None, **_os_fields(info))
        pools = []
        for stats in entry.pools:
            rows = []
            for w in stats.workers:
                if w.pid is None:
                    continue  # a slot between two workers: nothing to show in `ps`
                winfo = proc_info(w.pid, sampler=sampler)
                task = w.current_task
                rows.append(Row(
                    program=entry.pid, pid=w.pid, role="worker", name=stats.name,
                    cpu_count=entry.cpu_count, pool=stats.name, worker=w.index,
                    task_state=w.state,
                    task=task.function if task else None,
                    task_id=task.task_id if task else None,
                    task_items=task.items if task else None,
                    task_running_for=round(task.running_for + age, 3) if task else None,
                    tasks_done=w.tasks_done, tasks_failed=w.tasks_failed, started=w.started,
                    **_os_fields(winfo)))
            pools.append(PoolView(stats, tuple(rows)))
        procs = []
        for rec in entry.processes:
            pinfo = proc_info(rec.pid, sampler=sampler)
            procs.append(Row(program=entry.pid, pid=rec.pid, role=rec.role, name=rec.name,
                             cpu_count=entry.cpu_count, started=rec.started,
                             **_os_fields(pinfo)))
        views.append(ProgramView(entry, main, tuple(pools), tuple(procs)))
    if sampler is not None:
        sampler.prune()
    return views


def flatten(views: list[ProgramView]) -> list[Row]:
    """All rows of all programs, in display order."""
    return [row for view in views for row in view.rows()]


def human_bytes(n: int | None) -> str:
    """``1536`` -> ``"1.5K"``, like ``ps``/``top`` columns; ``"-"`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def human_seconds(s: float | None) -> str:
    """``75.3`` -> ``"1:15"``, ``3.21`` -> ``"3.2s"``; ``""`` for None."""
    if s is None:
        return ""
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
