"""Executor workloads E1-E4 (issue #18, point 5): ``multitask.ProcessPoolExecutor`` next to
``concurrent.futures.ProcessPoolExecutor`` (the baseline) and loky's executor.

Each ``*_trial`` function runs inside its own forked trial process (see ``_harness.run_trial``),
creates and warms up its executor untimed (except E4, which times exactly that, in a fresh
interpreter), times the work with ``time.perf_counter`` and returns the elapsed seconds.  Every
row is driven through the same ``concurrent.futures`` calls (``submit``, ``Future.result``,
``map``), so only the executor differs.

- ``cf``        ``concurrent.futures.ProcessPoolExecutor(2, mp_context=<fork>)`` (baseline)
- ``loky``      ``loky.get_reusable_executor(max_workers=2, timeout=300)`` (loky's own
  fork+exec start method, cloudpickle; the timeout keeps idle workers alive through a trial)
- ``multitask`` ``multitask.ProcessPoolExecutor(2, mp_context=multitask.get_context("fork"))``
"""

from __future__ import annotations

import time
from typing import Any

from _adapters import WORKERS, stdlib_chunksize
from _harness import (
    Config,
    Impl,
    Metric,
    Table,
    bar_ratio,
    finish,
    measure,
    ms,
    per_op,
    rate,
    run_trial,
)
from bench_pool import busy, calibrate_busy, noop, p6_serial_trial, sq

EXECUTOR_KINDS = ["cf", "loky", "multitask"]

LABELS = {
    "cf": "concurrent.futures ProcessPoolExecutor",
    "loky": "loky reusable executor",
    "multitask": "multitask ProcessPoolExecutor",
}

NOTE = (f"{WORKERS} workers each, fork start method (loky: its own fork+exec); executors are "
        "created and warmed up outside the timed region")


def open_executor(kind: str, warm_fn: Any = noop, arg: Any = 0) -> Any:
    """Create the executor of ``kind`` and warm it up: every worker started and the workload's
    function run in it (a few ``submit().result()`` plus one small ``map``), untimed."""
    if kind == "cf":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))
    elif kind == "loky":
        import loky

        ex = loky.get_reusable_executor(max_workers=WORKERS, timeout=300)
    elif kind == "multitask":
        import multitask

        ex = multitask.ProcessPoolExecutor(WORKERS, mp_context=multitask.get_context("fork"))
    else:
        raise ValueError(kind)
    try:
        # concurrently outstanding, so that every worker gets (and imports) some
        for f in [ex.submit(warm_fn, arg) for _ in range(WORKERS * 4)]:
            f.result()
        list(ex.map(warm_fn, [arg] * (WORKERS * 4)))
    except BaseException:
        ex.shutdown(wait=True)
        raise
    return ex


# ---- trials ----------------------------------------------------------------------------------


def e1_trial(kind: str, n: int) -> float:
    ex = open_executor(kind, noop, 0)
    try:
        submit = ex.submit
        t0 = time.perf_counter()
        for i in range(n):
            submit(noop, i).result()
        elapsed = time.perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    return elapsed


def e2_trial(kind: str, n: int, chunksize: int) -> float:
    ex = open_executor(kind, sq, 3)
    try:
        t0 = time.perf_counter()
        out = list(ex.map(sq, range(n), chunksize=chunksize))
        elapsed = time.perf_counter() - t0
        if len(out) != n or out[-1] != (n - 1) ** 2 or sum(out) != sum(x * x for x in range(n)):
            raise AssertionError(f"wrong result: {len(out)} items")
    finally:
        ex.shutdown(wait=True)
    return elapsed


def e3_trial(kind: str, n: int, iters: int) -> float:
    ex = open_executor(kind, busy, 10)
    try:
        submit = ex.submit
        t0 = time.perf_counter()
        futures = [submit(busy, iters) for _ in range(n)]
        total = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - t0
        if total != n * busy(iters):
            raise AssertionError("wrong sum of results")
    finally:
        ex.shutdown(wait=True)
    return elapsed


# E4 is what a script's first executor costs, so (as P7 does) each trial runs a fresh
# interpreter that has imported only the library's top-level package; the executor's own
# modules (concurrent.futures.process, multitask.futures, loky's) load inside the timed region,
# as they do in a script.  Per kind: (import, executor constructor).
_E4_CODE = {
    "cf": ("import concurrent.futures, multiprocessing",
           "concurrent.futures.ProcessPoolExecutor(2, "
           "mp_context=multiprocessing.get_context('fork'))"),
    "loky": ("import loky",
             "loky.get_reusable_executor(max_workers=2)"),
    "multitask": ("import multitask",
                  "multitask.ProcessPoolExecutor(2, mp_context=multitask.get_context('fork'))"),
}

# E4 starts the clock after the import line, E4b (whole=True) before it: the stdlib's package
# concurrent.futures is the base multitask.futures needs too (its Future, ~10 ms with logging),
# so E4 counts it for multitask only; E4b is what the script as a whole waits for.
_E4_SCRIPT = """\
import sys, time
t_start = time.perf_counter()
{imp}

def noop(_x=None):
    return None

t0 = t_start if {whole} else time.perf_counter()
ex = {new}
ex.submit(noop, 0).result()
elapsed = time.perf_counter() - t0
ex.shutdown(wait=True)
print(repr(elapsed))
"""


def e4_trial(kind: str, whole: bool = False) -> float:
    import subprocess
    import sys

    imp, new = _E4_CODE[kind]
    script = _E4_SCRIPT.format(imp=imp, new=new, whole=whole)
    # -I: no user site, no PYTHON* variables, no script directory on sys.path
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip()
                           else f"exit code {out.returncode}")
    return float(out.stdout.strip().splitlines()[-1])


# ---- workloads -------------------------------------------------------------------------------


def _impls(fn, params: dict, bar: Any = None, timeout: float | None = None) -> list[Impl]:
    return [
        Impl(label=LABELS[kind], fn=fn, params={"kind": kind, **params},
             baseline=kind == "cf", bar=bar if kind == "multitask" else None, timeout=timeout)
        for kind in EXECUTOR_KINDS
    ]


def e1(cfg: Config) -> list[Table]:
    """E1: executor round trip, submit(noop, i).result() 5_000 times in a row, µs."""
    n = cfg.n(5_000, 500)
    impls = _impls(e1_trial, {"n": n}, bar_ratio(8))
    return [
        cfg.run("E1", f"submit(noop, i).result(), {n:_} in a row",
                per_op(n, "µs / round trip"), impls, notes=[NOTE])
    ]


def e2(cfg: Config) -> list[Table]:
    """E2: executor map(sq, range(200_000)), chunksize=1 (E2) and tuned (E2b), items/s."""
    n = cfg.n(200_000, 20_000)
    tuned = stdlib_chunksize(n)
    # chunksize=1 costs the stdlib executor (and loky) a future and a round trip per item:
    # ~25 s for 200 000 items here, so those trials get more than the default 60 s.
    slow = None if cfg.quick else max(cfg.timeout, 300.0)
    return [
        cfg.run("E2", f"list(ex.map(sq, range({n:_}))), default chunksize=1",
                rate(n, "items/s"), _impls(e2_trial, {"n": n, "chunksize": 1}, bar_ratio(2),
                                           timeout=slow),
                notes=[NOTE, "chunksize=1 (every executor's default): the stdlib and loky send "
                       "each item as its own call; multitask groups cheap items itself, "
                       "keeping per-item results"]),
        cfg.run("E2b", f"list(ex.map(sq, range({n:_}), chunksize={tuned:_}))",
                rate(n, "items/s"), _impls(e2_trial, {"n": n, "chunksize": tuned},
                                           bar_ratio(2)),
                notes=[NOTE, f"chunksize = the stdlib Pool's rule ceil(n / (4 * workers)) = "
                       f"{tuned:_}, the one P1 gives the executors"]),
    ]


def e3(cfg: Config) -> list[Table]:
    """E3: executor, 4_000 tasks of ~1 ms: submit() each, then result() each, % of ideal."""
    n = cfg.n(4_000, 400)
    iters = calibrate_busy(1e-3)
    params = {"n": n, "iters": iters}
    impls = [Impl("ideal: serial time / 2", p6_serial_trial, dict(params),
                  note="same tasks in one process, halved")]
    impls += _impls(e3_trial, params)
    rows = measure(cfg.with_control(impls), cfg.reps(3), cfg.timeout,
                   (lambda m: cfg.progress(f"E3: {m}")) if cfg.progress else None)
    ideal = rows[0].median if rows[0].samples else None
    if rows[0].samples:
        import statistics

        ideal = statistics.median(rows[0].samples)
    metric = (Metric("% of ideal", lambda s, ideal=ideal: ideal / s * 100, "{:.1f}")
              if ideal else ms())
    table = Table("E3", f"{n:_} CPU-bound tasks of ~1 ms: submit() each, then result() each",
                  metric, rows, notes=[
                      NOTE,
                      f"busy loop calibrated to ~1 ms here: busy({iters:_})",
                      "timed from the first submit() to the last result(); all submitted "
                      "before the first result() is asked for",
                      "ideal = serial time / 2 (measured in the same run, round-robin with the "
                      "executors)",
                  ])
    return [finish(table)]


def e4(cfg: Config) -> list[Table]:
    """E4: executor time to first result, cold (fresh interpreter, process start), ms."""
    impls = _impls(e4_trial, {})
    # One discarded run per library first: a module edited since its .pyc was written (an
    # editable install under development) is compiled, and its cache written, by the first
    # interpreter that imports it -- tens of ms that would land in one library's first trial.
    for impl in impls:
        run_trial(impl.fn, impl.params, cfg.timeout)
    return [
        cfg.run("E4", "time to first result: new executor + first submit(noop).result()", ms(),
                impls, default_repeat=7,
                notes=["each trial a fresh interpreter that imported only the library's package; "
                       "timed from the executor's constructor to the first result (process "
                       "start and the executor's modules included); shutdown untimed",
                       f"{WORKERS} workers; fork start method (loky: its own fork+exec, "
                       "get_reusable_executor -- in a fresh interpreter a new executor)",
                       "one untimed run per library first, so that no trial compiles .pyc "
                       "caches"]),
        cfg.run("E4b", "a script's first result: its import line + new executor + first result",
                ms(), _impls(e4_trial, {"whole": True}), default_repeat=7,
                notes=["as E4, the clock started before the script's import line (the stdlib: "
                       "import concurrent.futures, multiprocessing; loky: import loky; "
                       "multitask: import multitask)"]),
    ]


WORKLOADS = {"E1": e1, "E2": e2, "E3": e3, "E4": e4}
