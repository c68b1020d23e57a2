"""A tiny benchmark harness: isolated trials, round-robin repeats, medians, ratios, tables.

Every *trial* (one measurement of one implementation) runs in a freshly forked child process that
leads its own process group.  The child does its own untimed setup (create the pool, warm it up),
times only the work with ``time.perf_counter`` and sends the elapsed seconds back over a pipe.  The
parent waits at most ``timeout`` seconds, then kills the whole process group, so a pool that hangs,
a worker left behind or a peer that crashes can never stall or pollute the rest of the suite.  A
trial that raises is reported as ``n/a (<reason>)`` in its cell.

Repeats are interleaved round-robin (A B C, B C A, C A B, ...) so that drift on a shared machine
(other builds, thermal throttling) hits every implementation alike; a workload reports the median
of its repeats and the ratio of medians against its baseline (normally the stdlib).
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
import select
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------
# Running one trial in an isolated child
# --------------------------------------------------------------------------------------------


def _short_reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= 72 else text[:69] + "..."


def _trial_child(fn: Callable[..., float], params: dict[str, Any], wfd: int) -> int:
    os.setpgrp()  # lead our own group, so the parent can reap everything we start
    try:
        msg: tuple[Any, ...] = ("ok", float(fn(**params)), None)
        code = 0
    except BaseException as exc:
        msg = ("err", _short_reason(exc), traceback.format_exc())
        code = 1
    data = memoryview(pickle.dumps(msg))
    while data:
        data = data[os.write(wfd, data):]
    os.close(wfd)
    # What a script's exit would do: the atexit hooks of whatever the trial started (pools
    # left open, the stdlib's children).
    atexit._run_exitfuncs()
    return code


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap_group(pgid: int, grace: float) -> None:
    """Give the trial's leftovers ``grace`` seconds to exit by themselves, then SIGKILL them."""
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class TrialResult:
    seconds: float | None
    error: str | None = None
    detail: str | None = None


class _Child:
    """A forked trial process: pid, exit code, bounded waits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None

    def poll(self) -> int | None:
        if self.exitcode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.exitcode
            if pid == self.pid:
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def join(self, timeout: float) -> None:
        if self.poll() is not None:
            return
        try:
            fd = os.pidfd_open(self.pid)   # readable once the child has exited
        except OSError:
            return    # reaped meanwhile
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        self.poll()

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_trial(fn: Callable[..., float], params: dict[str, Any], timeout: float) -> TrialResult:
    """Run ``fn(**params)`` (which returns timed seconds) in a fresh forked child.

    Forked with ``os.fork`` and a plain pipe, not ``multiprocessing.Process``: the trial inherits
    every module the runner has loaded, and a runner using the stdlib's Process and Pipe would
    hand each trial ``multiprocessing.connection``/``util`` (and ``subprocess``, ``tempfile``...)
    that a script starts without -- a ~7 ms head start for the stdlib's first ``Pool()`` (P7).
    """
    rfd, wfd = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(rfd)
        os.close(wfd)
        return TrialResult(None, f"could not start trial: {_short_reason(exc)}")
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            code = _trial_child(fn, params, wfd)
        finally:
            os._exit(code)
    os.close(wfd)
    proc = _Child(pid)
    pgid = pid
    result: TrialResult
    try:
        result = _wait_for_result(proc, rfd, timeout)
    except BaseException:
        # Ctrl-C / SIGTERM of the runner: take the trial's whole process group down with us.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.kill()   # not yet in its own group
        proc.join(2.0)
        raise
    finally:
        os.close(rfd)
    # The child tears its pools down after sending the result; give it a moment, then make sure.
    proc.join(5.0 if result.error is None else 0.2)
    if proc.poll() is None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.join(2.0)
    _reap_group(pgid, grace=1.0)
    if os.environ.get("BENCH_DEBUG") and result.detail:
        sys.stderr.write(result.detail)
    return result


def _wait_for_result(proc: _Child, rfd: int, timeout: float) -> TrialResult:
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([rfd], [], [], left)[0]:
            if proc.poll() is not None:
                return TrialResult(None, f"trial process died (exit code {proc.exitcode})")
            return TrialResult(None, f"timeout after {timeout:g}s")
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        status, value, detail = pickle.loads(b"".join(chunks))
    except Exception:
        proc.join(1.0)
        return TrialResult(None, f"trial process died (exit code {proc.poll()})")
    return TrialResult(value) if status == "ok" else TrialResult(None, value, detail)


# --------------------------------------------------------------------------------------------
# Workloads: a set of implementations measured round-robin
# --------------------------------------------------------------------------------------------


@dataclass
class Impl:
    """One row of a table: a label and the trial function measuring it."""

    label: str
    fn: Callable[..., float]
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    baseline: bool = False
    bar: Callable[[float, float], tuple[str, bool]] | None = None  # (ratio, metric) -> text, ok
    timeout: float | None = None


@dataclass
class Metric:
    """How a median time turns into the number shown (seconds -> ms, msg/s, MB/s ...)."""

    name: str  # column header, e.g. "msg/s"
    convert: Callable[[float], float]
    fmt: str = "{:,.0f}"


def ms() -> Metric:
    return Metric("time (ms)", lambda s: s * 1e3, "{:,.1f}")


def rate(count: int, unit: str) -> Metric:
    return Metric(unit, lambda s: count / s, "{:,.0f}")


def per_op(count: int, unit: str = "µs / op") -> Metric:
    return Metric(unit, lambda s: s / count * 1e6, "{:,.1f}")


def throughput(nbytes: int) -> Metric:
    return Metric("MB/s", lambda s: nbytes / s / 1e6, "{:,.0f}")


@dataclass
class Row:
    label: str
    note: str
    samples: list[float]
    error: str | None
    baseline: bool
    bar: Callable[[float, float], tuple[str, bool]] | None
    median: float | None = None
    spread: float | None = None  # (max - min) / median
    ratio: float | None = None  # baseline median / this median: > 1 means faster
    bar_text: str = ""
    bar_ok: bool | None = None


@dataclass
class Table:
    id: str
    title: str
    metric: Metric
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    ratio_header: str = "vs stdlib"

    def with_ratio_header(self, header: str) -> Table:
        self.ratio_header = header
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "metric": self.metric.name,
            "notes": self.notes,
            "extra": self.extra,
            "rows": [
                {
                    "label": r.label,
                    "note": r.note,
                    "samples_s": r.samples,
                    "median_s": r.median,
                    "spread": r.spread,
                    "value": None if r.median is None else self.metric.convert(r.median),
                    "ratio": r.ratio,
                    "error": r.error,
                    "baseline": r.baseline,
                    "bar": r.bar_text,
                    "bar_ok": r.bar_ok,
                }
                for r in self.rows
            ],
        }


def measure(
    impls: list[Impl],
    repeat: int,
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Measure every implementation ``repeat`` times, interleaved round-robin.

    An implementation whose trial fails is not tried again in later rounds (its first error is
    what its cell shows), so a missing feature costs one failed trial, not ``repeat`` of them.
    """
    samples: dict[int, list[float]] = {i: [] for i in range(len(impls))}
    errors: dict[int, str] = {}
    n = len(impls)
    for r in range(repeat):
        order = [(r + k) % n for k in range(n)]  # rotate who goes first each round
        for i in order:
            if i in errors:
                continue
            impl = impls[i]
            if progress:
                progress(f"{impl.label} [{r + 1}/{repeat}]")
            res = run_trial(impl.fn, impl.params, impl.timeout or timeout)
            if res.error is not None:
                errors[i] = res.error
            else:
                assert res.seconds is not None
                samples[i].append(res.seconds)
    rows = []
    for i, impl in enumerate(impls):
        rows.append(
            Row(
                label=impl.label,
                note=impl.note,
                samples=samples[i],
                error=errors.get(i),
                baseline=impl.baseline,
                bar=impl.bar,
            )
        )
    return rows


def finish(table: Table) -> Table:
    """Compute medians, spreads, ratios against the baseline row and the bar verdicts."""
    base: float | None = None
    for row in table.rows:
        if row.samples and row.error is None:
            row.median = statistics.median(row.samples)
            if row.median > 0:
                row.spread = (max(row.samples) - min(row.samples)) / row.median
        elif row.samples and row.error is not None:
            # Failed after some good rounds: keep the numbers but show the failure too.
            row.median = statistics.median(row.samples)
        if row.baseline and row.median:
            base = row.median
    for row in table.rows:
        if base and row.median:
            row.ratio = base / row.median
        if row.bar is not None:
            if row.ratio is not None and row.median is not None:
                row.bar_text, row.bar_ok = row.bar(row.ratio, table.metric.convert(row.median))
            else:
                row.bar_text, _ = row.bar(math.nan, math.nan)
                row.bar_ok = None
    return table


# Bars, as in DESIGN.md section 4 (ratios are "times faster than the baseline").


def bar_ratio(minimum: float) -> Callable[[float, float], tuple[str, bool]]:
    def check(ratio: float, _value: float) -> tuple[str, bool]:
        return f"≥ {minimum:g}x", ratio >= minimum

    return check


def bar_value_at_least(minimum: float, unit: str) -> Callable[[float, float], tuple[str, bool]]:
    def check(_ratio: float, value: float) -> tuple[str, bool]:
        return f"≥ {minimum:g}{unit}", value >= minimum

    return check


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    header = ["implementation", table.metric.name, table.ratio_header, "spread", "bar", "note"]
    body = []
    for row in table.rows:
        if row.median is None:
            value = f"n/a ({row.error})" if row.error else "n/a"
            ratio = spread = ""
        else:
            value = table.metric.fmt.format(table.metric.convert(row.median))
            if row.error:
                value += f" (then failed: {row.error})"
            ratio = "baseline" if row.baseline else (f"{row.ratio:.2f}x" if row.ratio else "")
            spread = (f"±{row.spread * 50:.0f}%"
                      if row.spread is not None and len(row.samples) > 1 else "")
        bar = ""
        if row.bar_text:
            verdict = {True: "✓", False: "✗", None: "?"}[row.bar_ok]
            bar = f"{row.bar_text} {verdict}"
        body.append([row.label, value, ratio, spread, bar, row.note])
    # Drop the bar column when no row has a bar.
    if not any(r[4] for r in body):
        header.pop(4)
        for r in body:
            r.pop(4)
    return header, body


def render_text(table: Table) -> str:
    header, body = _cells(table)
    if not body:
        return "\n".join([f"{table.id}  {table.title}"] + [f"  · {n}" for n in table.notes])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = [f"{table.id}  {table.title}"]
    sep = "  "
    lines.append(sep.join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append(sep.join("-" * w for w in widths))
    for r in body:
        lines.append(sep.join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for note in table.notes:
        lines.append(f"  · {note}")
    return "\n".join(lines)


def render_markdown(table: Table) -> str:
    header, body = _cells(table)
    lines = [f"### {table.id} — {table.title}", ""]
    if not body:
        return "\n".join(lines + [f"- {n}" for n in table.notes])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for r in body:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    if table.notes:
        lines.append("")
        for note in table.notes:
            lines.append(f"- {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    uname = os.uname()
    try:
        with open("/proc/meminfo") as f:
            mem = next(x for x in f if x.startswith("MemTotal")).split()[1]
        mem_text = f"{int(mem) / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem_text = "unknown"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "usable_cores": str(len(os.sched_getaffinity(0))),
        "memory": mem_text,
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "kernel": f"{uname.sysname} {uname.release}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def mem_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


# --------------------------------------------------------------------------------------------
# Run configuration shared by every workload
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    quick: bool = False
    repeat: int | None = None  # None: each workload's own default
    timeout: float = 60.0  # per trial
    progress: Callable[[str], None] | None = None
    aa: bool = False  # add an A/A control row (the baseline measured twice) to every table

    def reps(self, default: int) -> int:
        if self.repeat is not None:
            return max(1, self.repeat)
        return 1 if self.quick else default

    def with_control(self, impls: list[Impl]) -> list[Impl]:
        """With ``aa``: a second copy of the baseline, right after it, as a noise control."""
        if not self.aa:
            return impls
        out = []
        for impl in impls:
            out.append(impl)
            if impl.baseline:
                out.append(Impl(f"{impl.label} (A/A control)", impl.fn, dict(impl.params),
                                note="the baseline again: its ratio shows the noise"))
        return out

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def run(self, table_id: str, title: str, metric: Metric, impls: list[Impl],
            default_repeat: int = 5, notes: list[str] | None = None) -> Table:
        def prog(msg: str) -> None:
            if self.progress:
                self.progress(f"{table_id}: {msg}")

        impls = self.with_control(impls)
        rows = measure(impls, self.reps(default_repeat), self.timeout, prog)
        return finish(Table(table_id, title, metric, rows, notes=list(notes or [])))


def summary_rows(tables: list[Table]) -> list[list[str]]:
    """One line per row that has a bar: workload, row, value, ratio, bar, verdict."""
    out = []
    for table in tables:
        for row in table.rows:
            if not row.bar_text:
                continue
            if row.median is None:
                value, ratio = f"n/a ({row.error})", ""
            else:
                value = f"{table.metric.fmt.format(table.metric.convert(row.median))} "
                value += table.metric.name
                ratio = f"{row.ratio:.2f}x" if row.ratio else ""
            verdict = {True: "met", False: "NOT met", None: "not measured"}[row.bar_ok]
            out.append([table.id, row.label, value, ratio, row.bar_text, verdict])
    return out


SUMMARY_HEADER = ["id", "row", "value", "ratio", "bar", "verdict"]


def render_summary_text(tables: list[Table]) -> str:
    rows = summary_rows(tables)
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(SUMMARY_HEADER)]
    lines = ["Bars (DESIGN.md section 4)"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(SUMMARY_HEADER, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render_summary_markdown(tables: list[Table]) -> str:
    rows = summary_rows(tables)
    if not rows:
        return ""
    lines = ["### Bars (DESIGN.md section 4)", ""]
    lines.append("| " + " | ".join(SUMMARY_HEADER) + " |")
    lines.append("|" + "|".join("---" for _ in SUMMARY_HEADER) + "|")
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)
