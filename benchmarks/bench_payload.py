"""Large-data workloads: P5 (a 100 MB NumPy array to a pool worker and its sum back) and large
payloads through a queue (1 MiB, 64 MiB, 1 GiB), MB/s.

NumPy is imported inside the trials only, so the harness process stays free of it.
"""

from __future__ import annotations

import time
from typing import Any

from _adapters import LABELS, POOL_KINDS, WORKERS
from _adapters import open_pool as _open_pool
from _harness import (
    Config,
    Impl,
    Table,
    bar_ratio,
    mem_available_bytes,
    ms,
    shm_free_bytes,
    throughput,
)
from bench_queue import CTX, QUEUE_KINDS, QUEUE_LABELS, _close, make_queue, q_get

MB = 1_000_000
MiB = 1 << 20
GiB = 1 << 30


# ---- P5 ----------------------------------------------------------------------------------------


def arr_sum(a: Any) -> float:
    return float(a.sum())


def p5_trial(kind: str, nbytes: int, shared: bool = False, again: bool = False) -> float:
    import numpy as np

    n = nbytes // 8
    warm = np.arange(16, dtype=np.float64)
    # Workers started and numpy imported in them, untimed.
    pool = _open_pool(kind, arr_sum, warm, mode="call")
    try:
        if shared:
            import multitask

            a = multitask.shared_array((n,), np.float64)
            a[:] = np.arange(n, dtype=np.float64)
        else:
            a = np.arange(n, dtype=np.float64)
        expected = float(n * (n - 1) // 2)
        if again:
            # steady state: one array of this size has gone through the pool already (untimed)
            pool.call(arr_sum, a)
        t0 = time.perf_counter()
        s = pool.call(arr_sum, a)
        elapsed = time.perf_counter() - t0
        if s != expected:
            raise AssertionError(f"wrong sum {s} != {expected}")
        del a
    finally:
        pool.close()
    return elapsed


def p5(cfg: Config) -> list[Table]:
    """P5: send a 100 MB float64 array to a worker and return its sum."""
    nbytes = cfg.n(100 * MB, 10 * MB)
    impls = []
    for kind in POOL_KINDS:
        impls.append(Impl(LABELS[kind], p5_trial, {"kind": kind, "nbytes": nbytes},
                          baseline=kind == "stdlib",
                          bar=bar_ratio(20) if kind == "multitask" else None,
                          note="apply()" if kind in ("stdlib", "mpire", "multitask")
                          else "submit().result()"))
    impls.append(Impl("multitask Pool + shared_array", p5_trial,
                      {"kind": "multitask", "nbytes": nbytes, "shared": True},
                      bar=bar_ratio(20), note="array allocated by multitask.shared_array"))
    steady = [Impl(LABELS[kind], p5_trial, {"kind": kind, "nbytes": nbytes, "again": True},
                   baseline=kind == "stdlib",
                   bar=bar_ratio(20) if kind == "multitask" else None)
              for kind in POOL_KINDS]
    return [cfg.run(
        "P5", f"{nbytes / MB:.0f} MB float64 array to a worker, sum back", ms(), impls,
        notes=[f"{WORKERS} workers; pool started and warmed up (numpy imported in the workers), "
               "array filled, all outside the timed region",
               "ordinary array: multitask should move it through shared memory (pickle 5 "
               "out-of-band); shared_array: the worker maps the same memory"]),
        cfg.run(
        "P5b", f"P5 for the second {nbytes / MB:.0f} MB array through the same pool", ms(),
        steady,
        notes=["as P5, after one array of the same size went through the pool untimed: "
               "multitask's pool reuses the shared memory of the first (its arena)"])]


# ---- large payloads through a queue ------------------------------------------------------------


def _make_payload(kind: str, nbytes: int) -> Any:
    if kind == "bytes":
        return bytes(nbytes)
    import numpy as np

    return np.ones(nbytes, dtype=np.uint8)


def _payload_producer(q: Any, payload_kind: str, nbytes: int, count: int, ready: Any,
                      go: Any) -> None:
    payload = _make_payload(payload_kind, nbytes)
    ready.release()
    go.wait()
    for _ in range(count):
        q.put(payload)


def payload_trial(kind: str, payload_kind: str, nbytes: int, count: int) -> float:
    if payload_kind == "ndarray":
        import numpy  # noqa: F401  (so unpickling the first array does not time the import)
    q = make_queue(kind, nbytes=2 * nbytes + 4 * MiB) if kind == "ff" else make_queue(kind)
    ready, go = CTX.Semaphore(0), CTX.Event()
    proc = CTX.Process(target=_payload_producer,
                       args=(q, payload_kind, nbytes, count, ready, go))
    proc.start()
    try:
        ready.acquire()
        t0 = time.perf_counter()
        go.set()
        for _ in range(count):
            item = q_get(q, kind)
            size = len(item) if payload_kind == "bytes" else item.nbytes
            if size != nbytes:
                raise AssertionError(f"got {size} bytes, expected {nbytes}")
            del item
        elapsed = time.perf_counter() - t0
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        _close(q)
    return elapsed


def payloads(cfg: Config) -> list[Table]:
    """PAYLOAD: 1 MiB, 64 MiB, 1 GiB payloads through a queue, MB/s."""
    cases = [
        ("ndarray", MiB, cfg.n(100, 10)),
        ("bytes", MiB, cfg.n(100, 10)),
        ("ndarray", 64 * MiB, cfg.n(4, 1)),
        ("bytes", 64 * MiB, cfg.n(4, 1)),
    ]
    tables = []
    if not cfg.quick:
        cases.append(("ndarray", GiB, 1))
    for payload_kind, nbytes, count in cases:
        size = f"{nbytes // GiB} GiB" if nbytes >= GiB else f"{nbytes // MiB} MiB"
        title = f"{count} x {size} {payload_kind} through a queue, producer -> consumer"
        table_id = f"PAYLOAD-{size.replace(' ', '')}-{payload_kind}"
        if nbytes >= GiB:
            # Producer's copy + pickled copy + faster-fifo's 2x ring + consumer's copy, roughly.
            need = 7 * nbytes
            if mem_available_bytes() < need or shm_free_bytes() < 3 * nbytes:
                tables.append(Table(table_id, title, throughput(nbytes * count), [],
                                    notes=[f"skipped: needs ~{need / GiB:.0f} GiB free memory "
                                           f"and {3 * nbytes / GiB:.0f} GiB free in /dev/shm"]))
                continue
        impls = [
            Impl(QUEUE_LABELS[kind], payload_trial,
                 {"kind": kind, "payload_kind": payload_kind, "nbytes": nbytes, "count": count},
                 baseline=kind == "mp",
                 note="max_size_bytes = 2 x payload + 4 MiB" if kind == "ff" else "",
                 timeout=max(cfg.timeout, 300.0) if nbytes >= GiB else None)
            for kind in QUEUE_KINDS
        ]
        tables.append(cfg.run(table_id, title, throughput(nbytes * count), impls,
                              default_repeat=2 if nbytes >= GiB else 3)
                      .with_ratio_header("vs mp.Queue"))
    return tables
