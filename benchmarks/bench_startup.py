"""Start-up and small-map workloads S1-S3 (issue #21): what a new user measures first.

- **S1** whole program, timed from outside: a fresh ``python -I -c`` that imports the library,
  optionally starts one background thread (as a web app, a notebook kernel or a logging thread
  would), makes ``Pool(2)``, runs ``map(sq, range(1000))``, closes and joins the pool and exits.
  One table per case: fork without a thread, fork with a thread, spawn, forkserver.
- **S2** a program's *second* pool: the same script times, inside itself, ``Pool(2)`` +
  ``map(sq, range(1000))`` + close/join after a first pool has come and gone: fork with and
  without a background thread, spawn, forkserver.
- **S3** small and medium maps on a warm pool: ``map(sq, range(n))`` for n = 10, 100, 1 000 and
  10 000, each trial the median of 31 maps; fork, spawn and forkserver pools.

Rows: the stdlib's ``multiprocessing`` and multitask (the start-up question is theirs: the
peers' start-up is in P7 and E4).  Ratio = stdlib median time / multitask median time.
"""

from __future__ import annotations

import statistics
import time

from _adapters import WORKERS
from _harness import Config, Impl, Table, bar_ratio, ms, per_op
from bench_pool import sq

LABELS = {"stdlib": "multiprocessing (stdlib)", "multitask": "multitask",
          "multitask-nohelper": "multitask, MULTITASK_FORK_HELPER=0"}

_SCRIPT = """\
import time
t0 = time.perf_counter()
import {lib} as mp
import threading

def sq(x):
    return x * x

if __name__ == "__main__":
    stop = threading.Event()
    if {thread}:
        threading.Thread(target=stop.wait, daemon=True).start()
    ctx = mp.get_context({method!r})
    for _ in range({pools} - 1):
        with ctx.Pool({workers}) as pool:
            pool.map(sq, range(1000))
    t1 = time.perf_counter()
    pool = ctx.Pool({workers})
    assert pool.map(sq, range(1000))[-1] == 999 * 999
    pool.close()
    pool.join()
    print(repr(time.perf_counter() - t1))
    stop.set()
"""


def program_trial(kind: str, method: str, thread: bool, pools: int = 1,
                  inside: bool = False) -> float:
    """One fresh interpreter running the script above, from a file (spawn and forkserver
    re-import it); its wall time (S1) or the time it measured itself for its last pool (S2).
    ``kind`` "multitask-nohelper": multitask with ``MULTITASK_FORK_HELPER=0``."""
    import os
    import subprocess
    import sys
    import tempfile

    lib = "multiprocessing" if kind == "stdlib" else "multitask"
    script = _SCRIPT.format(lib=lib, thread=thread, method=method, pools=pools,
                            workers=WORKERS)
    env = dict(os.environ, MULTITASK_FORK_HELPER="0" if kind == "multitask-nohelper" else "1")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w") as f:
            f.write(script)
        t0 = time.perf_counter()
        # -I: no user site, no PYTHON* variables, no script directory on sys.path
        out = subprocess.run([sys.executable, "-I", "-W", "ignore", path], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip()
                           else f"exit code {out.returncode}")
    return float(out.stdout.strip().splitlines()[-1]) if inside else wall


def small_map_trial(kind: str, n: int, reps: int = 31, method: str = "fork") -> float:
    """Median of ``reps`` ``map(sq, range(n))`` on a warm pool of ``method``."""
    if kind == "stdlib":
        import multiprocessing as lib
    else:
        import multitask as lib  # type: ignore[no-redef]
    pool = lib.get_context(method).Pool(WORKERS)
    try:
        items = range(n)
        for _ in range(5):
            pool.map(sq, items)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            pool.map(sq, items)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        pool.close()
        pool.join()


def _impls(fn, params: dict, bar=None,
           kinds: tuple[str, ...] = ("stdlib", "multitask")) -> list[Impl]:
    return [Impl(label=LABELS[k], fn=fn, params={"kind": k, **params}, baseline=k == "stdlib",
                 bar=bar if k == "multitask" else None) for k in kinds]


WITH_NOHELPER = ("stdlib", "multitask", "multitask-nohelper")


S1_CASES = [("fork", False, "fork, no other thread"), ("fork", True, "fork, one background thread"),
            ("spawn", False, "spawn"), ("forkserver", False, "forkserver")]


def s1(cfg: Config) -> list[Table]:
    tables = []
    for method, thread, what in S1_CASES:
        tables.append(cfg.run(
            "S1", f"whole program, {what}: import, Pool({WORKERS}), map(sq, range(1000)), "
                  f"close/join, exit", ms(),
            _impls(program_trial, {"method": method, "thread": thread}, bar_ratio(1.25),
                   WITH_NOHELPER if method == "fork" else ("stdlib", "multitask")),
            default_repeat=7,
            notes=["wall time of a fresh `python -I -c` (interpreter start-up included, the "
                   "same for both)", "bar: P7's, whole program <= 0.8x the stdlib's time"]))
    return tables


S2_CASES = [("fork", False, "fork, no other thread"), ("fork", True, "fork, one background thread"),
            ("spawn", False, "spawn"), ("forkserver", False, "forkserver")]


def s2(cfg: Config) -> list[Table]:
    tables = []
    for method, thread, what in S2_CASES:
        tables.append(cfg.run(
            "S2", f"second Pool({WORKERS}) of a program ({what}): start, map(sq, range(1000)), "
                  "close/join", ms(),
            _impls(program_trial, {"method": method, "thread": thread, "pools": 2,
                                   "inside": True}, bar_ratio(1),
                   WITH_NOHELPER if method == "fork" else ("stdlib", "multitask")),
            default_repeat=7,
            notes=["timed inside the program, after a first pool has come and gone"]))
    return tables


def s3(cfg: Config) -> list[Table]:
    tables = []
    for method in ("fork", "spawn", "forkserver"):
        for n in (10, 100, 1_000, 10_000):
            tables.append(cfg.run(
                "S3", f"warm {method} pool, map(sq, range({n:_}))", per_op(1, "µs / map"),
                _impls(small_map_trial, {"n": n, "method": method}, bar_ratio(1.5)),
                default_repeat=5,
                notes=[f"{WORKERS} workers, {method}; each trial the median of 31 maps after 5 "
                       "untimed ones"]))
    return tables
