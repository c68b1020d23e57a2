"""``multitask top``: a live view of running multitask programs, their pools and workers.

Every *interval* seconds it re-reads the registry and ``/proc`` and redraws, with rich, one panel
per program: per pool its counters and throughput (tasks/s, from the ``completed`` counter of
successive registry snapshots over the last few seconds), per worker its OS state, CPU use as a
utilisation bar (measured between two refreshes, like ``top``), the share of recent samples in
which it was busy, its current task and how long it has run.

Keys are read from the terminal in cbreak mode with ``select`` (so no thread is needed and the
terminal is restored on every exit path): ``q`` quits, ``s`` shows (and hides) the Python
stack of every busy worker (:func:`stacks_panel`).  With ``--pid`` it exits by itself when
that program ends.  Ctrl-C also quits cleanly.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import psutil
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .._core import _stacks
from . import registry
from .procinfo import CpuSampler
from .view import ProgramView, build, flatten, human_bytes, human_seconds

__all__ = ["run_top"]

#: Seconds of history used for throughput and the busy share.
WINDOW = 5.0


@contextmanager
def _keyboard(stream: TextIO) -> Iterator[Callable[[float], str]]:
    """Yield ``read(timeout) -> str`` returning the keys pressed within *timeout* seconds.

    On a terminal, switches it to cbreak mode (keys arrive unbuffered, no echo) and restores the
    previous mode on exit, however the block ends.  Elsewhere ``read`` just sleeps.
    """
    try:
        fd = stream.fileno()
        is_tty = os.isatty(fd)
    except (OSError, ValueError, AttributeError):
        is_tty = False
    if not is_tty:
        def sleep_only(timeout: float) -> str:
            time.sleep(timeout)
            return ""
        yield sleep_only
        return

    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return ""
        try:
            return os.read(fd, 64).decode("utf-8", "replace")
        except OSError:
            return ""

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@dataclass
class _History:
    """Per-pool and per-worker samples kept between refreshes."""

    completed: dict[tuple[int, str], deque[tuple[float, int]]] = field(default_factory=dict)
    busy: dict[tuple[int, int], deque[tuple[float, bool]]] = field(default_factory=dict)

    def throughput(self, key: tuple[int, str], updated: float, completed: int) -> float | None:
        """Tasks/s over the window, from the snapshots' own timestamps (None until two)."""
        samples = self.completed.setdefault(key, deque())
        if not samples or samples[-1][0] != updated:
            samples.append((updated, completed))
        while len(samples) > 2 and samples[0][0] < updated - WINDOW:
            samples.popleft()
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return None
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        return max(0.0, (c1 - c0) / (t1 - t0))

    def busy_share(self, key: tuple[int, int], now: float, busy: bool) -> float:
        samples = self.busy.setdefault(key, deque())
        samples.append((now, busy))
        while samples and samples[0][0] < now - WINDOW:
            samples.popleft()
        return sum(b for _, b in samples) / len(samples)


def _state_text(state: str) -> Text:
    style = {"R": "bold green", "D": "bold red", "T": "yellow", "Z": "bold magenta",
             "X": "dim"}.get(state[:1], "")
    return Text(state, style=style)


def _program_panel(v: ProgramView, hist: _History, now: float) -> Panel:
    e = v.entry
    parts: list[RenderableType] = []
    m = v.main
    header = Text()
    header.append(f"pid {e.pid}", style="bold")
    header.append("  STAT ")
    header.append_text(_state_text(m.state))
    header.append(f"  CPU {m.cpu_percent if m.cpu_percent is not None else '-'}%"
                  f"  RSS {human_bytes(m.rss)}  {e.cpu_count} CPUs"
                  f"  up {human_seconds(time.time() - (m.started or e.updated))}")
    parts.append(header)
    for pool in v.pools:
        s = pool.stats
        rate = hist.throughput((e.pid, s.name), e.updated, s.completed)
        line = Text()
        line.append(f"pool {s.name}", style="bold cyan")
        line.append(f"  {s.state}  {s.backend}  ")
        line.append(f"{rate:.1f} tasks/s" if rate is not None else "… tasks/s", style="bold")
        line.append(f"  done {s.completed}/{s.submitted}  failed {s.failed}  "
                    f"queued {s.queued}  running {s.running}  replaced {s.workers_replaced}")
        parts.append(line)
        table = Table(box=None, pad_edge=False, header_style="dim")
        for col, justify in (("#", "right"), ("PID", "right"), ("STAT", "left"),
                             ("CPU", "left"), ("", "right"), ("busy", "right"),
                             ("TASK", "left"), ("TIME", "right"), ("DONE", "right"),
                             ("FAIL", "right"), ("RSS", "right"), ("NI", "right")):
            table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for w in pool.workers:
            cpu = w.cpu_percent
            share = hist.busy_share((e.pid, w.pid), now, w.task_state == "busy")
            task = w.task or (w.task_state or "")
            table.add_row(
                str(w.worker), str(w.pid), _state_text(w.state),
                ProgressBar(total=100.0, completed=min(cpu or 0.0, 100.0), width=16),
                "-" if cpu is None else f"{cpu:.0f}%",
                f"{share * 100:.0f}%",
                Text(task, style="green" if w.task_state == "busy" else "dim"),
                human_seconds(w.task_running_for), str(w.tasks_done), str(w.tasks_failed),
                human_bytes(w.rss), "-" if w.nice is None else str(w.nice))
        parts.append(table)
    if v.processes:
        table = Table(box=None, pad_edge=False, header_style="dim")
        for col in ("PID", "STAT", "ROLE", "NAME", "CPU", "RSS"):
            table.add_column(col, no_wrap=True)
        for p in v.processes:
            table.add_row(str(p.pid), _state_text(p.state), p.role, p.name,
                          "-" if p.cpu_percent is None else f"{p.cpu_percent:.0f}%",
                          human_bytes(p.rss))
        parts.append(table)
    title = Text(" ".join(e.argv)[:80] or e.executable, style="bold")
    return Panel(Group(*parts), title=title, title_align="left")


def render(views: list[ProgramView], hist: _History, *, pid: int | None,
           interval: float) -> RenderableType:
    """The whole screen for one refresh."""
    now = time.monotonic()
    head = Text()
    head.append("multitask top", style="bold")
    head.append(f"  {time.strftime('%H:%M:%S')}  {len(views)} program(s)"
                f"  refresh {interval:g}s  press q to quit, s for the stacks of busy workers",
                style="dim")
    if not views:
        what = f"program {pid}" if pid is not None else "any multitask program"
        return Group(head, Text(f"waiting for {what} to publish its pools…", style="yellow"))
    return Group(head, *(_program_panel(v, hist, now) for v in views))


def stacks_panel(views: list[ProgramView], frames: int = 8) -> Panel:
    """The Python stack of every busy worker (``s`` in top): the innermost ``frames`` frames of
    its main thread, from its faulthandler FIFO (see _core/_stacks.py).  Blocks ~50 ms per busy
    worker (a worker that does not answer costs 0.5 s)."""
    parts: list[RenderableType] = []
    for row in flatten(views):
        if row.role != "worker" or row.task_state != "busy":
            continue
        dump = _stacks.request(row.pid, timeout=0.5, quiet=0.05)
        title = Text(f"worker {row.worker} of {row.pool} (pid {row.pid}): {row.task} for "
                     f"{human_seconds(row.task_running_for)}", style="bold green")
        parts.append(title)
        parts.append(Text(main_thread_frames(dump, frames) if dump else
                          "  (no stack: the worker did not answer)", style="dim"))
    if not parts:
        parts.append(Text("no busy worker", style="dim"))
    return Panel(Group(*parts), title="stacks of busy workers (most recent call first)",
                 title_align="left")


def main_thread_frames(dump: str, frames: int) -> str:
    """The first ``frames`` frame lines of a faulthandler dump's current (main) thread."""
    lines = dump.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Current thread")), 0)
    out = []
    for ln in lines[start + 1:]:
        if not ln.strip():
            break
        out.append(ln)
    return "\n".join(out[:frames])


def _alive(pid: int) -> bool:
    try:
        alive: bool = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # psutil: untyped
        return alive
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def run_top(pid: int | None = None, interval: float = 0.5, *,
            console: Console | None = None, stdin: TextIO | None = None) -> int:
    """Run the live view until ``q``, Ctrl-C, or (with *pid*) that program's end.

    Blocks; returns the exit status (0, or 1 if *pid* does not exist at start).
    """
    console = console or Console()
    if pid is not None and not _alive(pid):
        console.print(f"multitask top: no process {pid}")
        return 1
    sampler = CpuSampler()
    hist = _History()
    ended = False
    show_stacks = False
    try:
        with _keyboard(stdin or sys.stdin) as read_keys, \
                Live(console=console, screen=console.is_terminal, auto_refresh=False,
                     transient=False) as live:
            while True:
                entries = registry.read_all()
                if pid is not None:
                    entries = [e for e in entries if e.pid == pid]
                    if not entries and not _alive(pid):
                        ended = True
                        break
                views = build(entries, sampler=sampler)
                screen = render(views, hist, pid=pid, interval=interval)
                if show_stacks and views:
                    screen = Group(screen, stacks_panel(views))
                live.update(screen, refresh=True)
                keys = read_keys(interval).lower()
                if "q" in keys:
                    break
                if "s" in keys:
                    show_stacks = not show_stacks
    except KeyboardInterrupt:
        pass
    if ended:
        console.print(f"multitask top: program {pid} ended")
    return 0

