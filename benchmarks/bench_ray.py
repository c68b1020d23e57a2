#!/usr/bin/env python
"""multitask's Ray backend against ``ray.util.multiprocessing.Pool``, on the same local Ray.

    .venv/bin/python benchmarks/bench_ray.py               # 3 repeats (~1-2 min with Ray start)
    .venv/bin/python benchmarks/bench_ray.py --repeat 5 --markdown

Both pools get 2 workers on one local Ray (``ray.init(num_cpus=2)``, started once: Ray's start-up
of ~10 s is not what is measured).  Each pool is created once per repeat and warmed up with one
small map; then each workload is timed with ``time.perf_counter``.  Repeats alternate between the
two implementations; the table shows medians and the ratio ``ray.util Pool time / multitask
time`` (above 1: multitask is faster).

Workloads:
  map20k   ``pool.map(sq, range(20_000))`` (default chunking of each pool)
  tasks10  200 ``apply_async`` tasks of ~10 ms each (``time.sleep(0.01)``), then ``get`` all
  apply    ``pool.apply(noop, (i,))`` round trip, 200 in a row, per call
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def sq(x: int) -> int:
    return x * x


def nap(_: int) -> None:
    time.sleep(0.01)


def noop(x: int) -> int:
    return x


def _map20k(pool: Any) -> float:
    t0 = time.perf_counter()
    out = pool.map(sq, range(20_000))
    dt = time.perf_counter() - t0
    assert out[-1] == 19_999 ** 2
    return dt


def _tasks10(pool: Any) -> float:
    t0 = time.perf_counter()
    rs = [pool.apply_async(nap, (i,)) for i in range(200)]
    for r in rs:
        r.get()
    return time.perf_counter() - t0


def _apply(pool: Any) -> float:
    n = 200
    t0 = time.perf_counter()
    for i in range(n):
        pool.apply(noop, (i,))
    return (time.perf_counter() - t0) / n


WORKLOADS: list[tuple[str, str, Callable[[Any], float], float]] = [
    ("map20k", "map of 20 000 cheap items", _map20k, 1e3),
    ("tasks10", "200 tasks of ~10 ms (apply_async)", _tasks10, 1e3),
    ("apply", "apply round trip", _apply, 1e6),
]
UNITS = {"map20k": "ms", "tasks10": "ms", "apply": "µs / call"}


def _multitask_pool() -> Any:
    import multitask

    return multitask.Pool(2, backend="ray")


def _ray_pool() -> Any:
    from ray.util.multiprocessing import Pool

    return Pool(2)


def run(repeat: int) -> list[tuple[str, str, float, float]]:
    """Median seconds per workload for (multitask, ray.util); one Ray for everything."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for impl, make in (("multitask", _multitask_pool), ("ray.util", _ray_pool)):
            pool = make()
            try:
                pool.map(sq, range(100))     # actors up
                for key, _desc, fn, _scale in WORKLOADS:
                    samples.setdefault((key, impl), []).append(fn(pool))
            finally:
                pool.terminate()
                if hasattr(pool, "join"):
                    pool.join()
    rows = []
    for key, desc, _fn, _scale in WORKLOADS:
        ours = statistics.median(samples[(key, "multitask")])
        theirs = statistics.median(samples[(key, "ray.util")])
        rows.append((key, desc, ours, theirs))
    return rows


def render(rows: list[tuple[str, str, float, float]], markdown: bool) -> str:
    import ray

    scale = {key: s for key, _d, _f, s in WORKLOADS}
    lines = []
    if markdown:
        lines.append(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                     f"Python {platform.python_version()}, Ray {ray.__version__}, "
                     f"{datetime.date.today().isoformat()}")
        lines.append("")
        lines.append("| workload | multitask (ray backend) | ray.util.multiprocessing.Pool "
                     "| ratio (ray.util / multitask) |")
        lines.append("|---|---|---|---|")
    else:
        lines.append(f"{'workload':<36} {'multitask':>14} {'ray.util':>14} {'ratio':>8}")
    for key, desc, ours, theirs in rows:
        unit = UNITS[key]
        a = f"{ours * scale[key]:.1f} {unit}"
        b = f"{theirs * scale[key]:.1f} {unit}"
        ratio = f"{theirs / ours:.2f}x"
        if markdown:
            lines.append(f"| {desc} | {a} | {b} | {ratio} |")
        else:
            lines.append(f"{desc:<36} {a:>14} {b:>14} {ratio:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("bench_ray: n/a (ray is not installed: pip install 'multitask[ray]')")
        return 0
    rows = run(max(1, args.repeat))
    print(render(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
