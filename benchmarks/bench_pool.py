"""Pool workloads P1, P2, P3, P6, P7 (DESIGN.md section 4).

Each ``*_trial`` function runs inside its own forked trial process (see ``_harness.run_trial``),
creates and warms up its pool untimed (except P7, which times exactly that), times the work with
``time.perf_counter`` and returns the elapsed seconds.
"""

from __future__ import annotations

import statistics
import time

from _adapters import LABELS, POOL_KINDS, WORKERS, open_pool, stdlib_chunksize
from _harness import (
    Config,
    Impl,
    Metric,
    Table,
    bar_ratio,
    bar_value_at_least,
    finish,
    measure,
    ms,
    per_op,
    rate,
)

# ---- task functions (module level: picklable by reference) ----------------------------------


def sq(x: int) -> int:
    return x * x


def noop(_x: object = None) -> None:
    return None


def busy(iters: int) -> int:
    s = 0
    for i in range(iters):
        s += i
    return s


# ---- trials ----------------------------------------------------------------------------------


def p1_trial(kind: str, n: int) -> float:
    pool = open_pool(kind, sq, 3)
    try:
        t0 = time.perf_counter()
        out = pool.map(sq, range(n))
        elapsed = time.perf_counter() - t0
        if len(out) != n or out[-1] != (n - 1) ** 2:
            raise AssertionError(f"wrong result: {len(out)} items")
    finally:
        pool.close()
    return elapsed


def p2_trial(kind: str, n: int) -> float:
    pool = open_pool(kind, sq, 3, mode="imap")
    try:
        t0 = time.perf_counter()
        count = pool.imap_unordered_count(sq, range(n))
        elapsed = time.perf_counter() - t0
        if count != n:
            raise AssertionError(f"got {count} results, expected {n}")
    finally:
        pool.close()
    return elapsed


def p3_trial(kind: str, n: int) -> float:
    pool = open_pool(kind, noop, 0, mode="call")
    try:
        call = pool.call
        t0 = time.perf_counter()
        for i in range(n):
            call(noop, i)
        elapsed = time.perf_counter() - t0
    finally:
        pool.close()
    return elapsed


def p6_trial(kind: str, n: int, iters: int) -> float:
    pool = open_pool(kind, busy, 10)
    try:
        t0 = time.perf_counter()
        out = pool.map(busy, [iters] * n)
        elapsed = time.perf_counter() - t0
        if len(out) != n:
            raise AssertionError(f"got {len(out)} results")
    finally:
        pool.close()
    return elapsed


def p6_serial_trial(n: int, iters: int) -> float:
    """The ideal: the same tasks run serially in one process, divided by the 2 workers."""
    busy(iters)
    t0 = time.perf_counter()
    for _ in range(n):
        busy(iters)
    return (time.perf_counter() - t0) / WORKERS


# P7 is what a script's first pools cost, so each trial runs in a fresh interpreter that has
# imported only the library's top-level package: a trial forked from the runner would inherit
# whatever the runner and its harness loaded (argparse's shutil/bz2/lzma, statistics' random,
# traceback, weakref, concurrent.futures...), some of which one library's Pool() imports and
# another's does not -- a head start of several ms for whoever's imports they are.
# Per kind: (import, pool constructor, one round trip, shutdown), as in _adapters.py.
_P7_CODE = {
    "stdlib": ("import multiprocessing",
               "multiprocessing.get_context('fork').Pool(2)",
               "pool.apply_async(noop, (0,)).get()",
               "pool.close(); pool.join()"),
    "cf": ("import concurrent.futures, multiprocessing",
           "concurrent.futures.ProcessPoolExecutor(2, "
           "mp_context=multiprocessing.get_context('fork'))",
           "pool.submit(noop, 0).result()",
           "pool.shutdown(wait=True)"),
    "mpire": ("import mpire",
              "mpire.WorkerPool(n_jobs=2, start_method='fork', keep_alive=True)",
              "pool.apply_async(noop, args=(0,)).get()",
              "pool.stop_and_join()"),
    "loky-fresh": ("import loky",
                   "loky.ProcessPoolExecutor(max_workers=2)",
                   "pool.submit(noop, 0).result()",
                   "pool.shutdown(wait=True)"),
    "pebble": ("import multiprocessing, pebble",
               "pebble.ProcessPool(max_workers=2, context=multiprocessing.get_context('fork'))",
               "pool.submit(noop, None, 0).result()",
               "pool.close(); pool.join()"),
    "multitask-fork": ("import multitask",
                       "multitask.get_context('fork').Pool(2)",
                       "pool.apply_async(noop, (0,)).get()",
                       "pool.close(); pool.join()"),
}

_P7_SCRIPT = """\
import sys, time
{imp}

def noop(_x=None):
    return None

total = 0.0
for _ in range({inner}):
    t0 = time.perf_counter()
    pool = {new}
    {call}
    {close}
    total += time.perf_counter() - t0
print(repr(total / {inner}))
"""


def p7_trial(kind: str, inner: int) -> float:
    import subprocess
    import sys

    imp, new, call, close = _P7_CODE[kind]
    script = _P7_SCRIPT.format(imp=imp, new=new, call=call, close=close, inner=inner)
    # -I: no user site, no PYTHON* variables, no script directory on sys.path
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip()
                           else f"exit code {out.returncode}")
    return float(out.stdout.strip().splitlines()[-1])


def calibrate_busy(target_s: float = 1e-3) -> int:
    """Iterations of ``busy`` that take about ``target_s`` here (median of a few probes)."""
    iters = 10_000
    for _ in range(20):
        t0 = time.perf_counter()
        busy(iters)
        dt = time.perf_counter() - t0
        if dt > 2e-4:
            break
        iters *= 2
    probes = []
    for _ in range(7):
        t0 = time.perf_counter()
        busy(iters)
        probes.append(time.perf_counter() - t0)
    per_iter = statistics.median(probes) / iters
    return max(1, round(target_s / per_iter))


# ---- workloads -------------------------------------------------------------------------------


def _pool_impls(fn, params: dict, bars: dict[str, object] | None = None,
                kinds: list[str] | None = None) -> list[Impl]:
    impls = []
    for kind in kinds or POOL_KINDS:
        impls.append(
            Impl(
                label=LABELS[kind],
                fn=fn,
                params={"kind": kind, **params},
                baseline=kind == "stdlib",
                bar=(bars or {}).get(kind),  # type: ignore[arg-type]
            )
        )
    return impls


def _note_chunks(n: int) -> str:
    return (
        f"chunksize: stdlib, mpire, multitask choose their own; concurrent.futures, loky and "
        f"pebble get the stdlib's rule ceil(n / (4 * workers)) = {stdlib_chunksize(n)}"
    )


POOL_NOTE = (
    f"{WORKERS} workers each; pools are created and warmed up outside the timed region"
)


def p1(cfg: Config) -> list[Table]:
    n = cfg.n(200_000, 20_000)
    impls = _pool_impls(p1_trial, {"n": n}, {"multitask": bar_ratio(2)})
    return [
        cfg.run("P1", f"map(sq, range({n:_}))", ms(), impls,
                notes=[POOL_NOTE, _note_chunks(n), "ratio = stdlib median time / this median time"])
    ]


def p2(cfg: Config) -> list[Table]:
    n = cfg.n(20_000, 2_000)
    impls = _pool_impls(p2_trial, {"n": n}, {"multitask": bar_ratio(5)})
    for impl in impls:
        if impl.params["kind"] in ("cf", "loky", "pebble"):
            impl.note = "no imap_unordered: submit() each + as_completed"
    return [
        cfg.run("P2", f"imap_unordered(sq, range({n:_}), chunksize=1)", rate(n, "tasks/s"),
                impls, notes=[POOL_NOTE])
    ]


def p3(cfg: Config) -> list[Table]:
    n = cfg.n(5_000, 500)
    impls = _pool_impls(p3_trial, {"n": n}, {"multitask": bar_ratio(5)})
    for impl in impls:
        kind = impl.params["kind"]
        impl.note = {
            "stdlib": "apply_async().get()",
            "mpire": "apply_async().get()",
            "multitask": "apply_async().get()",
        }.get(kind, "submit().result()")
    return [
        cfg.run("P3", f"task round trip, {n:_} in a row", per_op(n, "µs / round trip"), impls,
                notes=[POOL_NOTE])
    ]


def p6(cfg: Config) -> list[Table]:
    n = cfg.n(4_000, 400)
    iters = calibrate_busy(1e-3)
    params = {"n": n, "iters": iters}
    impls = [Impl("ideal: serial time / 2", p6_serial_trial, dict(params),
                  note="same tasks in one process, halved")]
    impls += _pool_impls(p6_trial, params, {"multitask": bar_value_at_least(95, " %")})
    rows = measure(cfg.with_control(impls), cfg.reps(3), cfg.timeout,
                   (lambda m: cfg.progress(f"P6: {m}")) if cfg.progress else None)
    ideal = rows[0].median if rows[0].samples else None
    if rows[0].samples:
        ideal = statistics.median(rows[0].samples)
    if ideal:
        metric = Metric("% of ideal", lambda s, ideal=ideal: ideal / s * 100, "{:.1f}")
    else:
        metric = ms()
    table = Table("P6", f"{n:_} CPU-bound tasks of ~1 ms via map", metric, rows, notes=[
        POOL_NOTE,
        f"busy loop calibrated to ~1 ms here: busy({iters:_})",
        "ideal = serial time / 2 (measured in the same run, round-robin with the pools)",
        _note_chunks(n),
    ])
    return [finish(table)]


def p7(cfg: Config) -> list[Table]:
    inner = cfg.n(3, 1)
    kinds = ["stdlib", "cf", "mpire", "loky-fresh", "pebble", "multitask-fork"]
    impls = _pool_impls(p7_trial, {"inner": inner}, kinds=kinds)
    for impl in impls:
        if impl.params["kind"] == "multitask-fork":
            impl.bar = _bar_not_slower
    return [
        cfg.run("P7", "Pool(2) start + first result + close/join (fork)", ms(), impls,
                notes=[f"mean of {inner} start/stop cycles per trial; everything is timed",
                       "each trial in a fresh interpreter that imported only the library's "
                       "package (the first cycle pays the pool modules' imports, as a script's "
                       "first Pool() does)",
                       "fork start method wherever there is a choice; loky always fork+exec"])
    ]


def _bar_not_slower(ratio: float, _value: float) -> tuple[str, bool]:
    return "≤ stdlib fork", ratio >= 1.0


WORKLOADS = {"P1": p1, "P2": p2, "P3": p3, "P6": p6, "P7": p7}
