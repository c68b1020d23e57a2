"""A task timeline: which worker ran which task when, as a self-contained HTML page.

:func:`render_timeline` takes :class:`TaskRecord` objects (one per task, times on the system-wide
monotonic clock) and writes one HTML file with inline SVG -- no script, no stylesheet or font from
the network, so it opens anywhere, offline, years later:

- a Gantt chart, one row per worker slot, each task a bar coloured by function (failed tasks red
  and hatched); hovering a bar shows its function, duration, queue wait, worker and pid (an SVG
  ``<title>``, so no JavaScript is needed);
- the queue depth over time on the same time axis (tasks submitted but not yet started);
- the utilisation of each worker (busy time / wall time) and of the whole pool;
- a queue-wait summary (mean, median, p95, max) with a histogram;
- where the time went (:func:`analyze`): each task split into *queue wait* (submitted until it
  could go: sent to its worker and that worker free), *send* (from then until the worker started
  it: the copy into the ring, the worker's wake-up), *run* (the worker's own clock: unpickling
  the arguments, the call, pickling the result) and *receive* (until the parent had settled the
  result), totals per phase, the stragglers (tasks that ran far longer than their function's
  median) and, for maps, a chunk size that would make the per-task overhead small.

:func:`write_chrome_trace` writes the same records as Chrome-trace JSON (Perfetto, chrome://tracing).

Each bar carries ``data-task="<task_id>"``, so a test (or a script) can check that every task is
drawn exactly once.
"""

from __future__ import annotations

import html
import math
import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Analysis", "TaskPhases", "TaskRecord", "analyze", "render_timeline",
           "write_chrome_trace"]


@dataclass(frozen=True)
class TaskRecord:
    """One finished task.  Times are ``time.monotonic()`` seconds (system-wide on Linux), taken in
    the parent (``submitted``) and in the worker (``started``, ``finished``)."""

    task_id: int
    worker: int        # the worker's slot index in the pool (stable across replacements)
    pid: int           # the process that ran it
    function: str      # qualified name, e.g. "__main__.crunch"
    submitted: float
    started: float
    finished: float
    ok: bool           # False if the task raised (or its worker died / timed out)
    items: int = 1     # items the task carried (a map chunk carries several)
    dispatched: float | None = None   # parent: put into its worker's ring
    settled: float | None = None      # parent: the result delivered


@dataclass(frozen=True)
class TaskPhases:
    """Where one task's time went (seconds): see the module docstring."""

    record: TaskRecord
    queue: float
    send: float
    run: float
    receive: float


@dataclass(frozen=True)
class Analysis:
    """:func:`analyze`'s answer."""

    phases: list[TaskPhases]
    totals: dict[str, float]              # phase -> seconds, summed over the tasks
    stragglers: list[TaskPhases]          # longest first
    suggestions: list[str]                # chunk-size advice, one sentence each


def analyze(records: Sequence[TaskRecord]) -> Analysis:
    """Split every task into queue wait, send, run and receive; find stragglers; suggest chunk
    sizes.  Pure computation over the records (times from ``Pool.timeline()``).

    A task's *send* starts when it was dispatched or, if its worker was still busy with the
    task before it, when that one finished (it waited in the worker's ring: that is queue
    wait).  A *straggler* ran more than 3x its function's median and at least 5 ms longer.  A
    chunk size is suggested for a function whose median task spends more than 20% of its time
    in send + receive: the smallest that brings that overhead to ~10% of a chunk's run time,
    at most a quarter of its items per worker (so the load still balances).
    """
    records = list(records)
    by_worker: dict[int, list[TaskRecord]] = {}
    for r in records:
        by_worker.setdefault(r.worker, []).append(r)
    phases: list[TaskPhases] = []
    for rs in by_worker.values():
        rs.sort(key=lambda r: r.started)
        free = -math.inf
        for r in rs:
            sent = r.dispatched if r.dispatched is not None else r.started
            ready = min(max(sent, free), r.started)
            submitted = min(r.submitted, ready)
            finished = max(r.finished, r.started)
            settled = r.settled if r.settled is not None else finished
            phases.append(TaskPhases(r, ready - submitted, r.started - ready,
                                     finished - r.started, max(0.0, settled - finished)))
            free = finished
    totals = {k: sum(getattr(p, k) for p in phases) for k in ("queue", "send", "run", "receive")}
    by_fn: dict[str, list[TaskPhases]] = {}
    for p in phases:
        by_fn.setdefault(p.record.function, []).append(p)
    stragglers: list[TaskPhases] = []
    suggestions: list[str] = []
    workers = max(1, len(by_worker))
    for fn, ps in sorted(by_fn.items()):
        runs = sorted(p.run for p in ps)
        median = _percentile(runs, 0.5)
        stragglers += [p for p in ps if p.run > 3 * median and p.run - median > 0.005]
        if len(ps) < 8:
            continue
        per_item = sorted(p.run / max(1, p.record.items) for p in ps)
        overhead = sorted(p.send + p.receive for p in ps)
        item_run, over = _percentile(per_item, 0.5), _percentile(overhead, 0.5)
        chunk = _percentile(sorted(float(p.record.items) for p in ps), 0.5)
        if item_run <= 0 or over <= 0.2 * (over + item_run * chunk):
            continue
        items = sum(p.record.items for p in ps)
        best = min(max(1, math.ceil(over / (0.1 * item_run))), max(1, items // (4 * workers)))
        if best > chunk * 1.5:
            suggestions.append(
                f"{fn}: each task spends {_fmt_dur(over)} in send + receive for "
                f"{_fmt_dur(item_run * chunk)} of work ({chunk:.0f} "
                f"{'item' if chunk == 1 else 'items'} a task); "
                f"chunksize={best} would cut that overhead to about 10%")
    stragglers.sort(key=lambda p: p.run, reverse=True)
    return Analysis(phases, totals, stragglers, suggestions)


# Colour-blind-friendly qualitative palette (Tableau 10 without its red, kept for failures).
_PALETTE = ("#4e79a7", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
            "#ff9da7", "#bab0ac")
_FAILED = "#e15759"

_WIDTH = 1200          # px of the SVG drawing (it scales with the window)
_LABEL_W = 180         # left column: worker labels
_UTIL_W = 130          # right column: utilisation per worker
_PLOT_W = _WIDTH - _LABEL_W - _UTIL_W - 20
_ROW_H = 26
_BAR_H = 18
_AXIS_H = 28
_QUEUE_H = 56


def _fmt_dur(seconds: float) -> str:
    """Human duration: 0.000012 -> "12 µs", 0.0123 -> "12.3 ms", 3.5 -> "3.50 s"."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    m, s = divmod(seconds, 60)
    return f"{int(m)} min {s:.0f} s"


def _nice_step(span: float, target: int = 8) -> float:
    raw = span / target
    mag: float = 10 ** math.floor(math.log10(raw))  # int ** int is Any in typeshed
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _tick_label(t: float, step: float) -> str:
    if step < 0.001:
        return f"{t * 1e6:.0f}µs"
    if step < 1:
        digits = max(0, -math.floor(math.log10(step * 1e3) + 1e-9))
        return f"{t * 1e3:.{digits}f}ms"
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{t:.{digits}f}s"


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by *intervals* (overlaps counted once)."""
    total = 0.0
    end = -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _check(records: Sequence[TaskRecord]) -> None:
    for r in records:
        if not isinstance(r, TaskRecord):
            raise TypeError(f"render_timeline() needs TaskRecord objects, got {type(r).__name__}")
        times = [r.submitted, r.started, r.finished]
        times += [t for t in (r.dispatched, r.settled) if t is not None]
        if not all(math.isfinite(x) for x in times):
            raise ValueError(f"task {r.task_id}: times must be finite numbers")


def render_timeline(records: Sequence[TaskRecord], path: str | os.PathLike[str], *,
                    title: str = "multitask timeline") -> Path:
    """Write the timeline of *records* as a self-contained HTML file at *path*; return its path.

    The file is written to a temporary name in the same directory and renamed, so a reader never
    sees half a page.  Raises TypeError for something that is not a :class:`TaskRecord`,
    ValueError for non-finite times, OSError if the file cannot be written.  A task whose
    ``finished`` precedes ``started`` is drawn with zero length; a ``submitted`` after ``started``
    counts as zero queue wait.  An empty *records* gives a page that says so.
    """
    records = list(records)
    _check(records)
    return _write_atomically(Path(path), _page(records, title))


def _write_atomically(out: Path, text: str) -> Path:
    """Write ``text`` to a temporary name beside ``out`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp",
                               dir=str(out.parent) if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; it is a report meant to be shared
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return out


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:18px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;
min-width:90px;flex:1}
.card b{display:block;font-size:20px} .card span{color:#666;font-size:12px}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin-bottom:18px}
h2{font-size:15px;margin:0 0 8px}
svg{width:100%;height:auto;display:block} svg text{font:11px system-ui,sans-serif;fill:#333}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:8px 0 0;font-size:12px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;
vertical-align:-2px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;text-align:right}
th{color:#555;font-weight:600;border-bottom:1px solid #ddd}
td:first-child,th:first-child{text-align:left}
.barbg{display:inline-block;width:120px;height:10px;background:#e8e8e8;border-radius:2px;
vertical-align:middle;overflow:hidden;text-align:left}
.bar{display:block;height:100%;background:#4e79a7}
rect.t:hover{stroke:#000;stroke-width:1.5}
.suggest{background:#fff8e6;border-left:3px solid #edc948;padding:6px 10px;margin:10px 0 0}
"""


def _page(records: list[TaskRecord], title: str) -> str:
    esc = html.escape
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>")
    if not records:
        return head + '<p class="sub">No tasks were recorded.</p></body></html>\n'

    waits = sorted(max(0.0, r.started - r.submitted) for r in records)
    t0 = min(min(r.started for r in records), min(r.submitted for r in records))
    t1 = max(max(r.finished, r.started) for r in records)
    span = max(t1 - t0, 1e-9)
    workers = sorted({r.worker for r in records})
    by_worker = {w: [r for r in records if r.worker == w] for w in workers}
    busy = {w: _union_length([(r.started, max(r.finished, r.started)) for r in rs])
            for w, rs in by_worker.items()}
    overall = sum(busy.values()) / (len(workers) * span)
    failed = sum(not r.ok for r in records)
    items = sum(r.items for r in records)
    functions = sorted({r.function for r in records})
    colour = {fn: _PALETTE[i % len(_PALETTE)] for i, fn in enumerate(functions)}
    analysis = analyze(records)

    cards = [
        (f"{len(records)}", "tasks" + (f" ({items} items)" if items != len(records) else "")),
        (f"{failed}", "failed"),
        (_fmt_dur(span), "wall time"),
        (f"{len(workers)}", "workers"),
        (f"{overall * 100:.1f}%", "pool utilisation"),
        (f"{len(records) / span:,.1f}/s", "throughput"),
        (_fmt_dur(statistics.fmean(waits)), "mean queue wait"),
        (_fmt_dur(_percentile(waits, 0.95)), "p95 queue wait"),
    ]
    out = [head,
           f'<div class="sub">{len(records)} tasks on {len(workers)} workers over '
           f"{_fmt_dur(span)}. Hover a bar for its details.</div>",
           '<div class="cards">',
           *(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for v, k in cards),
           "</div>",
           '<div class="panel"><h2>Tasks per worker</h2>',
           _gantt(records, by_worker, busy, t0, span, colour,
                  {p.record.task_id for p in analysis.stragglers}),
           '<div class="legend">',
           *(f'<span><span class="sw" style="background:{colour[fn]}"></span>{esc(fn)}</span>'
             for fn in functions),
           f'<span><span class="sw" style="background:{_FAILED}"></span>failed</span>',
           "</div></div>",
           _phase_panel(analysis),
           _worker_table(by_worker, busy, span),
           _wait_panel(waits),
           "</body></html>\n"]
    return "".join(out)


def _gantt(records: list[TaskRecord], by_worker: dict[int, list[TaskRecord]],
           busy: dict[int, float], t0: float, span: float, colour: dict[str, str],
           stragglers: set[int]) -> str:
    esc = html.escape
    rows = len(by_worker)
    queue_top = _AXIS_H + rows * _ROW_H + 14
    height = queue_top + _QUEUE_H + 24
    scale = _PLOT_W / span
    x0 = _LABEL_W

    def x(t: float) -> float:
        return x0 + (t - t0) * scale

    parts = [f'<svg viewBox="0 0 {_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" '
             f'role="img" aria-label="task timeline">',
             '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="6" height="6" fill="' + _FAILED + '"/>'
             '<line x1="0" y1="0" x2="0" y2="6" stroke="#8b1a1a" stroke-width="2"/></pattern>'
             "</defs>"]
    # time axis: grid lines through the rows and the queue chart
    step = _nice_step(span)
    n = 0
    while n * step <= span * 1.0001:
        tx = x(t0 + n * step)
        parts.append(f'<line x1="{tx:.1f}" y1="{_AXIS_H - 6}" x2="{tx:.1f}" '
                     f'y2="{queue_top + _QUEUE_H}" stroke="#e3e3e3"/>'
                     f'<text x="{tx:.1f}" y="{_AXIS_H - 10}" text-anchor="middle">'
                     f"{_tick_label(n * step, step)}</text>")
        n += 1
    parts.append(f'<text x="{_WIDTH - 8}" y="{_AXIS_H - 10}" text-anchor="end" '
                 'font-weight="600">utilisation</text>')
    for i, (w, rs) in enumerate(by_worker.items()):
        y = _AXIS_H + i * _ROW_H
        if i % 2:
            parts.append(f'<rect x="0" y="{y}" width="{_WIDTH}" height="{_ROW_H}" '
                         'fill="#f6f6f6"/>')
        pids = sorted({r.pid for r in rs})
        pid_text = "pid " + ", ".join(map(str, pids[:3])) + ("…" if len(pids) > 3 else "")
        parts.append(f'<text x="6" y="{y + _ROW_H / 2 + 4}"><tspan font-weight="600">worker {w}'
                     f'</tspan> <tspan fill="#777">{esc(pid_text)}</tspan></text>')
        # a thin line where a worker slot's process changed (a crash or timeout replaced it)
        last_pid = None
        for r in sorted(rs, key=lambda r: r.started):
            if last_pid is not None and r.pid != last_pid:
                px = x(r.started)
                parts.append(f'<line x1="{px:.1f}" y1="{y + 1}" x2="{px:.1f}" '
                             f'y2="{y + _ROW_H - 1}" stroke="#000" stroke-dasharray="2,2">'
                             f"<title>worker {w} replaced: pid {last_pid} → {r.pid}</title>"
                             "</line>")
            last_pid = r.pid
        for r in rs:
            dur = max(0.0, r.finished - r.started)
            wait = max(0.0, r.started - r.submitted)
            bx = x(r.started)
            bw = max(dur * scale, 0.75)  # a 10 µs task is still visible
            fill = "url(#hatch)" if not r.ok else colour[r.function]
            tip = (f"task {r.task_id} · {r.function}\n"
                   f"{'FAILED' if not r.ok else 'ok'} · ran {_fmt_dur(dur)}"
                   f" · waited {_fmt_dur(wait)} in queue\n"
                   f"worker {r.worker} (pid {r.pid})"
                   + (f" · {r.items} items" if r.items != 1 else "")
                   + f"\nstarted at +{_fmt_dur(r.started - t0)}")
            slow = r.task_id in stragglers
            if slow:
                tip += "\nSTRAGGLER: ran far longer than this function's median"
            parts.append(f'<rect class="t{" s" if slow else ""}" data-task="{r.task_id}" '
                         f'x="{bx:.2f}" y="{y + (_ROW_H - _BAR_H) / 2}" width="{bw:.2f}" '
                         f'height="{_BAR_H}" rx="2" fill="{fill}"'
                         + (' stroke="#d62728" stroke-width="2"' if slow else "")
                         + f"><title>{esc(tip)}</title></rect>")
        # utilisation of this worker: a bar and a number in the right column
        u = busy[w] / span
        ux = _WIDTH - _UTIL_W + 6
        parts.append(f'<rect x="{ux}" y="{y + 8}" width="70" height="10" fill="#e8e8e8" rx="2"/>'
                     f'<rect x="{ux}" y="{y + 8}" width="{70 * min(u, 1.0):.1f}" height="10" '
                     f'fill="#4e79a7" rx="2"/>'
                     f'<text x="{ux + 76}" y="{y + 17}">{u * 100:.0f}%</text>')
    # queue depth over time: +1 at each submit, -1 at each start (a step chart)
    events = sorted([(r.submitted, 1) for r in records] + [(r.started, -1) for r in records],
                    key=lambda e: (e[0], e[1]))
    depth = 0
    peak = 0
    points: list[tuple[float, int]] = [(t0, 0)]
    for t, d in events:
        depth += d
        peak = max(peak, depth)
        points.append((t, depth))
    peak = max(peak, 1)
    base = queue_top + _QUEUE_H
    path = [f"M{x(t0):.1f},{base}"]
    prev = 0
    for t, d in points:
        px = x(t)
        path.append(f"L{px:.1f},{base - _QUEUE_H * prev / peak:.1f}")
        path.append(f"L{px:.1f},{base - _QUEUE_H * d / peak:.1f}")
        prev = d
    path.append(f"L{x(t0 + span):.1f},{base - _QUEUE_H * prev / peak:.1f}L{x(t0 + span):.1f},"
                f"{base}Z")
    parts.append(f'<text x="6" y="{queue_top + _QUEUE_H / 2}"><tspan font-weight="600">queue'
                 f'</tspan></text><text x="6" y="{queue_top + _QUEUE_H / 2 + 14}" fill="#777">'
                 f"peak {peak} waiting</text>"
                 f'<line x1="{x0}" y1="{base}" x2="{x0 + _PLOT_W}" y2="{base}" stroke="#bbb"/>'
                 f'<path d="{"".join(path)}" fill="#f28e2b" fill-opacity="0.35" '
                 f'stroke="#f28e2b" stroke-width="1"/></svg>')
    return "".join(parts)


_PHASE_COLOURS = {"queue": "#f28e2b", "send": "#76b7b2", "run": "#4e79a7", "receive": "#b07aa1"}


def _phase_panel(a: Analysis) -> str:
    """Where the time went: a stacked bar of the phase totals, stragglers, suggestions."""
    esc = html.escape
    total = sum(a.totals.values()) or 1e-9
    bar = ['<div style="display:flex;height:22px;border-radius:3px;overflow:hidden;'
           'margin:6px 0 4px" data-phases="1">']
    legend = []
    for k, v in a.totals.items():
        share = v / total
        bar.append(f'<div data-phase="{k}" title="{k}: {_fmt_dur(v)}" style="width:'
                   f'{share * 100:.2f}%;background:{_PHASE_COLOURS[k]}"></div>')
        legend.append(f'<span><span class="sw" style="background:{_PHASE_COLOURS[k]}"></span>'
                      f"{k} {_fmt_dur(v)} ({share * 100:.1f}%)</span>")
    medians = " · ".join(
        f"{k} <b>{_fmt_dur(_percentile(sorted(getattr(p, k) for p in a.phases), 0.5))}</b>"
        for k in a.totals)
    out = ['<div class="panel"><h2>Where the time went (summed over tasks)</h2>',
           *bar, "</div>", '<div class="legend">', *legend, "</div>",
           f'<p style="margin:8px 0 0">median task: {medians}</p>']
    if a.stragglers:
        rows = "".join(
            f"<tr><td>{esc(p.record.function)}</td><td>{p.record.task_id}</td>"
            f"<td>worker {p.record.worker}</td><td>{_fmt_dur(p.run)}</td></tr>"
            for p in a.stragglers[:10])
        out.append(f'<h2 style="margin-top:12px">Stragglers ({len(a.stragglers)})</h2>'
                   "<table><tr><th>function</th><th>task</th><th>worker</th><th>ran</th></tr>"
                   f"{rows}</table>")
    for text in a.suggestions:
        out.append(f'<p class="suggest"><b>Suggestion:</b> {esc(text)}</p>')
    out.append("</div>")
    return "".join(out)


def write_chrome_trace(records: Sequence[TaskRecord], path: str | os.PathLike[str], *,
                       title: str = "multitask timeline") -> Path:
    """Write *records* as Chrome-trace JSON (the Trace Event format that Perfetto's UI and
    chrome://tracing open): one track per worker with each task's send, run and receive as
    slices, and each task's queue wait as an async slice on a "queue" track.  Written to a
    temporary name and renamed, like :func:`render_timeline`; returns the path."""
    import json

    records = list(records)
    _check(records)
    a = analyze(records)
    t0 = min((min(r.submitted, r.started) for r in records), default=0.0)

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    events: list[dict[str, object]] = [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": title}}]
    for w in sorted({r.worker for r in records}):
        events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": w + 1,
                       "args": {"name": f"worker {w}"}})
    for p in a.phases:
        r = p.record
        args = {"task": r.task_id, "pid": r.pid, "items": r.items, "ok": r.ok,
                "queue_ms": p.queue * 1e3, "send_ms": p.send * 1e3, "run_ms": p.run * 1e3,
                "receive_ms": p.receive * 1e3}
        ready = r.started - p.send
        if p.queue > 0:
            events.append({"ph": "b", "cat": "queue", "name": "queued", "id": r.task_id,
                           "pid": 1, "tid": 0, "ts": us(ready - p.queue)})
            events.append({"ph": "e", "cat": "queue", "name": "queued", "id": r.task_id,
                           "pid": 1, "tid": 0, "ts": us(ready)})
        for name, start, dur, cat in (("send", ready, p.send, "send"),
                                      (r.function, r.started, p.run, "run"),
                                      ("receive", r.started + p.run, p.receive, "receive")):
            if dur > 0 or cat == "run":
                events.append({"ph": "X", "cat": cat if r.ok else cat + ",failed",
                               "name": name, "pid": 1, "tid": r.worker + 1, "ts": us(start),
                               "dur": round(dur * 1e6, 3), "args": args})
    return _write_atomically(Path(path),
                             json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))


def _worker_table(by_worker: dict[int, list[TaskRecord]], busy: dict[int, float],
                  span: float) -> str:
    esc = html.escape
    rows = []
    for w, rs in by_worker.items():
        durs = [max(0.0, r.finished - r.started) for r in rs]
        u = busy[w] / span
        pids = ", ".join(str(p) for p in sorted({r.pid for r in rs}))
        rows.append(f"<tr><td>worker {w}</td><td>{esc(pids)}</td><td>{len(rs)}</td>"
                    f"<td>{sum(not r.ok for r in rs)}</td><td>{_fmt_dur(busy[w])}</td>"
                    f"<td>{_fmt_dur(statistics.fmean(durs))}</td>"
                    f'<td><span class="barbg"><span class="bar" '
                    f'style="width:{min(u, 1) * 100:.1f}%"></span></span> '
                    f"{u * 100:.1f}%</td></tr>")
    return ('<div class="panel"><h2>Utilisation</h2><table><tr><th>worker</th><th>pid(s)</th>'
            "<th>tasks</th><th>failed</th><th>busy</th><th>mean task</th><th>utilisation</th>"
            "</tr>" + "".join(rows) + "</table></div>")


def _wait_panel(waits: list[float]) -> str:
    """Queue-wait figures and a histogram (*waits* sorted)."""
    stats = [("mean", statistics.fmean(waits)), ("median", _percentile(waits, 0.5)),
             ("p95", _percentile(waits, 0.95)), ("max", waits[-1])]
    bins = 24
    top = waits[-1] if waits[-1] > 0 else 1e-9
    counts = [0] * bins
    for w in waits:
        counts[min(int(w / top * bins), bins - 1)] += 1
    peak = max(counts)
    w_px, h_px, left, bottom = 600, 120, 40, 20
    bar_w = (w_px - left - 10) / bins
    svg = [f'<svg viewBox="0 0 {w_px} {h_px + bottom}" xmlns="http://www.w3.org/2000/svg" '
           'style="max-width:600px" role="img" aria-label="queue wait histogram">']
    for i, c in enumerate(counts):
        bh = (h_px - 10) * c / peak
        lo, hi = top * i / bins, top * (i + 1) / bins
        svg.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{h_px - bh:.1f}" '
                   f'width="{bar_w - 2:.1f}" height="{bh:.1f}" fill="#f28e2b">'
                   f"<title>{c} tasks waited {_fmt_dur(lo)} to {_fmt_dur(hi)}</title></rect>")
    svg.append(f'<line x1="{left}" y1="{h_px}" x2="{w_px - 10}" y2="{h_px}" stroke="#999"/>'
               f'<text x="{left}" y="{h_px + 14}">0</text>'
               f'<text x="{w_px - 10}" y="{h_px + 14}" text-anchor="end">{_fmt_dur(top)}</text>'
               f'<text x="{left - 4}" y="14" text-anchor="end">{peak}</text>'
               f'<text x="{left - 4}" y="{h_px}" text-anchor="end">0</text></svg>')
    figures = " · ".join(f"{k} <b>{_fmt_dur(v)}</b>" for k, v in stats)
    return ('<div class="panel"><h2>Queue wait (submitted → started)</h2>'
            f"<p>{figures}</p>" + "".join(svg) + "</div>")
