"""FLOOD workloads (issue #16): a pool flooded with ``apply_async`` calls.

* FLOOD: 300 000 ``apply_async(sq, (i,))`` on ``Pool(2)``, then ``get()`` on each in order --
  the program of issue #16, which hung ~1 run in 10 before the fix.  Tasks per second.
* FLOODMEM: 1 000 000 calls outstanding at once (both workers held by a gate task, so nothing
  runs while they are submitted): the parent's RSS growth per outstanding call, in bytes.  Then
  the gate opens and every result is taken and checked (the trial fails if one is wrong).

Each trial is its own forked process (see _harness.run_trial); RSS is read from
``/proc/self/statm``.  Peers: ``concurrent.futures`` (``submit``), the closest API.
"""

from __future__ import annotations

import os
import time
from typing import Any

from _adapters import WORKERS
from _harness import Config, Impl, Metric, Table, bar_ratio, rate


def sq(x: int) -> int:
    return x * x


def gate(path: str) -> None:
    """Hold a worker until ``path`` exists (benchmark scaffolding, not timed)."""
    while not os.path.exists(path):
        time.sleep(0.001)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _open(kind: str) -> tuple[Any, Any, Any]:
    """(pool, submit(fn, *args) -> handle, result(handle))."""
    import multiprocessing

    if kind == "multitask":
        import multitask

        pool: Any = multitask.get_context("fork").Pool(WORKERS)
        return pool, lambda fn, *a: pool.apply_async(fn, a), lambda r: r.get(timeout=120)
    if kind == "stdlib":
        pool = multiprocessing.get_context("fork").Pool(WORKERS)
        return pool, lambda fn, *a: pool.apply_async(fn, a), lambda r: r.get(timeout=120)
    import concurrent.futures

    pool = concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("fork"))
    return pool, pool.submit, lambda f: f.result(timeout=120)


def _close(kind: str, pool: Any) -> None:
    if kind == "cf":
        pool.shutdown(wait=True)
    else:
        pool.close()
        pool.join()


def flood_trial(kind: str, n: int) -> float:
    pool, submit, result = _open(kind)
    try:
        for r in [submit(sq, i) for i in range(100)]:   # warm: workers up, functions cached
            result(r)
        t0 = time.perf_counter()
        rs = [submit(sq, i) for i in range(n)]
        for i, r in enumerate(rs):
            if result(r) != i * i:
                raise AssertionError(f"wrong result for {i}")
        elapsed = time.perf_counter() - t0
    finally:
        _close(kind, pool)
    return elapsed


def floodmem_trial(kind: str, n: int) -> float:
    """Returns bytes of parent RSS per outstanding call (not seconds: see FLOODMEM's metric)."""
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="bench-gate-"), "open")
    pool, submit, result = _open(kind)
    try:
        for r in [submit(sq, i) for i in range(100)]:
            result(r)
        gates = [submit(gate, path) for _ in range(WORKERS)]
        time.sleep(0.2)   # let the gate tasks reach the workers before measuring
        before = _rss()
        rs = [submit(sq, i) for i in range(n)]
        per_task = (_rss() - before) / n
        open(path, "w").close()
        for g in gates:
            result(g)
        for i, r in enumerate(rs):
            if result(r) != i * i:
                raise AssertionError(f"wrong result for {i}")
    finally:
        open(path, "a").close()
        _close(kind, pool)
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    return per_task


_LABELS = {"stdlib": "multiprocessing.Pool", "cf": "concurrent.futures",
           "multitask": "multitask.Pool"}


def _impls(fn: Any, params: dict[str, Any], bar: Any, timeout: float) -> list[Impl]:
    return [Impl(_LABELS[k], fn, {"kind": k, **params}, baseline=k == "stdlib",
                 bar=bar if k == "multitask" else None, timeout=timeout,
                 note="submit().result()" if k == "cf" else "apply_async().get()")
            for k in ("stdlib", "cf", "multitask")]


def flood(cfg: Config) -> list[Table]:
    n = cfg.n(300_000, 30_000)
    m = cfg.n(1_000_000, 100_000)
    note = f"{WORKERS} workers, fork; results taken with get() in submission order"
    return [
        cfg.run("FLOOD", f"{n:_} apply_async, then get() each in order (issue #16)",
                rate(n, "tasks/s"), _impls(flood_trial, {"n": n}, bar_ratio(1), 300),
                default_repeat=3, notes=[note]),
        cfg.run("FLOODMEM", f"{m:_} calls outstanding at once: parent RSS per call",
                Metric("bytes / call", lambda b: b, "{:,.0f}"),
                _impls(floodmem_trial, {"n": m}, None, 600), default_repeat=3,
                notes=[note, "both workers held by a gate task while the calls are submitted; "
                       "ratio above 1 = less memory than the stdlib"]),
    ]
