"""What publishing to the monitor registry costs: P1 and P2 with MULTITASK_REGISTRY on and off.

Every trial is a fresh interpreter (the registry is configured at import); on and off trials
alternate so drift on a shared machine hits both alike.  Prints the median of each and the
overhead as a percentage.  Run: ``.venv/bin/python benchmarks/bench_registry.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

TRIAL = r"""
import time, multitask

def sq(x):
    return x * x

if __name__ == "__main__":
    with multitask.Pool(2) as pool:
        pool.map(sq, range(1000))
        t = time.perf_counter(); pool.map(sq, range(200_000)); p1 = time.perf_counter() - t
        t = time.perf_counter()
        n = sum(1 for _ in pool.imap_unordered(sq, range(20_000), chunksize=1))
        p2 = time.perf_counter() - t
    print(p1, p2)
"""


def trial(enabled: bool) -> tuple[float, float]:
    env = {**os.environ, "MULTITASK_REGISTRY": "1" if enabled else "0"}
    out = subprocess.run([sys.executable, "-c", TRIAL], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for i in range(args.repeat):
        for enabled in ((True, False) if i % 2 == 0 else (False, True)):
            (on if enabled else off).append(trial(enabled))
    print(f"{'workload':<28}{'registry off':>14}{'registry on':>14}{'overhead':>10}")
    for k, name in enumerate(("P1 map 200k (ms)", "P2 imap_unordered 20k (ms)")):
        a = statistics.median(t[k] for t in off) * 1e3
        b = statistics.median(t[k] for t in on) * 1e3
        print(f"{name:<28}{a:>14.1f}{b:>14.1f}{(b / a - 1) * 100:>9.1f}%")


if __name__ == "__main__":
    main()
