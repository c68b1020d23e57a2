"""What the operating system says about a process: the facts ``ps`` and ``top`` print.

:func:`proc_info` returns a :class:`ProcInfo` for one pid -- the ``STAT`` letter as ``ps aux``
shows it (``R`` running, ``S`` interruptible sleep, ``D`` uninterruptible sleep, ``T`` stopped,
``t`` stopped by a tracer, ``Z`` zombie, ``I`` idle kernel thread, ``X`` dead) followed by the
modifiers ``ps`` adds (``<`` high priority, ``N`` low priority, ``s`` session leader, ``l``
multi-threaded, ``+`` in the foreground process group), the parent pid, CPU %, resident memory,
nice value, thread count and command line.  Everything comes from psutil, except the foreground
process group which psutil does not expose and is read from ``/proc/<pid>/stat``.

Nothing here blocks for longer than a few ``/proc`` reads, and nothing raises for a process that
vanished or cannot be inspected: :func:`proc_info` returns ``None`` for a pid that does not exist,
and fields the OS refuses to show (another user's process, a zombie's memory) are ``None``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

__all__ = ["CpuSampler", "ProcInfo", "proc_info", "state_letter"]

# psutil status string -> the letter `ps` prints (procps `ps/output.c`, pr_stat)
_LETTERS = {
    "running": "R",
    "sleeping": "S",
    "disk-sleep": "D",
    "stopped": "T",
    "tracing-stop": "t",
    "zombie": "Z",
    "dead": "X",
    "wake-kill": "K",
    "waking": "W",
    "parked": "P",
    "idle": "I",
}


@dataclass(frozen=True)
class ProcInfo:
    """A snapshot of one process as the OS sees it (plain data, JSON-ready via :meth:`as_dict`)."""

    pid: int
    ppid: int | None
    state: str                 # the ps STAT column, e.g. "S", "R+", "Ssl", "Z", "T"
    status: str                # psutil's word for the first letter: "sleeping", "zombie", ...
    cpu_percent: float | None  # see proc_info() for the two ways it is measured
    rss: int | None            # resident set size in bytes
    nice: int | None
    threads: int | None
    name: str
    command: str               # full command line, or "[name]" when it cannot be read
    create_time: float         # time.time() when the process started (psutil's clock)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-ready)."""
        return asdict(self)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ") ", so split at the last one.
    end = raw.rfind(b")")
    if end < 0:
        return None
    return raw[end + 2:].decode("ascii", "replace").split()


def _modifiers(pid: int, nice: int | None, threads: int | None) -> str:
    """The characters `ps` appends to the state letter, in the order `ps` prints them."""
    out = ""
    if nice is not None:
        if nice < 0:
            out += "<"
        elif nice > 0:
            out += "N"
    fields = _stat_fields(pid)
    # stat fields after the name: state ppid pgrp session tty_nr tpgid ...
    if fields is not None and len(fields) > 5:
        try:
            pgrp, session, tpgid = int(fields[2]), int(fields[3]), int(fields[5])
        except ValueError:
            pgrp = session = tpgid = -2
        if session == pid:
            out += "s"
        if threads is not None and threads > 1:
            out += "l"
        if tpgid == pgrp and tpgid > 0:
            out += "+"
    elif threads is not None and threads > 1:
        out += "l"
    return out


def state_letter(pid: int) -> str | None:
    """Only the first letter of ``ps``'s STAT for *pid* (``"R"``, ``"S"``, ``"Z"``...), or None
    if there is no such process.  Cheap: one psutil status read, never blocks."""
    try:
        status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return "?"
    return _LETTERS.get(status, "?")


def _lifetime_cpu_percent(times: Any, create_time: float) -> float | None:
    # What `ps` prints as %CPU: CPU time used over the whole life of the process.
    elapsed = time.time() - create_time
    if elapsed <= 0:
        return None
    cpu_seconds: float = times.user + times.system
    return round(100.0 * cpu_seconds / elapsed, 1)


def proc_info(pid: int, *, sampler: CpuSampler | None = None) -> ProcInfo | None:
    """Facts about *pid*, or ``None`` if no such process exists (it may exit at any moment).

    CPU % is, without a *sampler*, what ``ps`` shows: CPU time over the process's lifetime.  With a
    :class:`CpuSampler` it is what ``top`` shows: CPU use since the sampler last saw this pid
    (``None`` on the first sighting).  Never raises for a vanished or inaccessible process.
    """
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            status = proc.status()
            ppid = proc.ppid()
            create_time = proc.create_time()
            name = proc.name()
            nice: int | None = _try(proc.nice)
            threads: int | None = _try(proc.num_threads)
            mem = _try(proc.memory_info)
            times = _try(proc.cpu_times)
            cmdline = _try(proc.cmdline)
    except psutil.NoSuchProcess:  # includes a process that exited between the calls above
        return None
    except psutil.AccessDenied:
        return ProcInfo(pid, None, "?", "unknown", None, None, None, None, "?", "?", 0.0)
    letter = _LETTERS.get(status, "?")
    if status == psutil.STATUS_ZOMBIE:
        # ps shows a zombie as "Z" (plus modifiers) with "<defunct>" as its command.
        command = f"[{name}] <defunct>"
        cpu: float | None = None
        rss = None
    else:
        command = " ".join(cmdline) if cmdline else f"[{name}]"
        rss = mem.rss if mem is not None else None
        if sampler is not None:
            cpu = sampler.percent(proc, create_time)
        elif times is not None:
            cpu = _lifetime_cpu_percent(times, create_time)
        else:
            cpu = None
    return ProcInfo(
        pid=pid,
        ppid=ppid,
        state=letter + _modifiers(pid, nice, threads),
        status=status,
        cpu_percent=cpu,
        rss=rss,
        nice=nice,
        threads=threads,
        name=name,
        command=command,
        create_time=create_time,
    )


def _try(fn: Any) -> Any:
    try:
        return fn()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None


class CpuSampler:
    """Remembers processes between calls so CPU % can be measured over an interval, like ``top``.

    Keeps one :class:`psutil.Process` per (pid, start time), so a reused pid is a new process.
    Not thread-safe; meant for one refresh loop.  :meth:`prune` forgets pids not seen recently.
    """

    def __init__(self) -> None:
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._seen: set[tuple[int, float]] = set()

    def percent(self, proc: psutil.Process, create_time: float) -> float | None:
        """CPU % of *proc* since the previous call for it (None on the first call).  Can exceed
        100 for a multi-threaded process, as in ``top``."""
        key = (proc.pid, create_time)
        self._seen.add(key)
        known = self._procs.get(key)
        if known is None:
            self._procs[key] = proc
            try:
                proc.cpu_percent(None)  # primes psutil's delta
            except psutil.Error:
                pass
            return None
        try:
            percent: float = known.cpu_percent(None)
            return round(percent, 1)
        except psutil.Error:
            return None

    def prune(self) -> None:
        """Forget processes that were not asked about since the previous prune."""
        for key in list(self._procs):
            if key not in self._seen:
                del self._procs[key]
        self._seen.clear()
