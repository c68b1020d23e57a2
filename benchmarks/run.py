#!/usr/bin/env python
"""Run multitask's benchmark suite: DESIGN.md section 4 (P1-P7) plus the queue matrix, ping-pong
latency, large payloads and the ProcessPoolExecutor workloads (E1-E4).  Every number is a median
of round-robin repeats, and every row is shown as a ratio against the stdlib measured in the same
run.

    .venv/bin/python benchmarks/run.py                   # everything (a few minutes)
    .venv/bin/python benchmarks/run.py --quick           # small counts, 1 repeat: a smoke run
    .venv/bin/python benchmarks/run.py --only P1,P4 --repeat 7
    .venv/bin/python benchmarks/run.py --markdown --json results.json

See benchmarks/README.md for what each workload measures and how to read the ratios.
"""

from __future__ import annotations

import os

# Keep numerical libraries single-threaded (2 workers on 2 cores; and no threads before fork).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

# os.path, not pathlib: every trial is a fork of this process and inherits what it imported
# (see _parse_args).
HERE = os.path.dirname(os.path.realpath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_executor  # noqa: E402
import bench_flood  # noqa: E402
import bench_payload  # noqa: E402
import bench_pool  # noqa: E402
import bench_queue  # noqa: E402
import bench_startup  # noqa: E402
from _harness import (  # noqa: E402
    Config,
    Table,
    machine_info,
    render_markdown,
    render_summary_markdown,
    render_summary_text,
    render_text,
)

WORKLOADS: dict[str, Callable[[Config], list[Table]]] = {
    "P1": bench_pool.p1,
    "P2": bench_pool.p2,
    "P3": bench_pool.p3,
    "P4": bench_queue.p4,
    "P5": bench_payload.p5,
    "P6": bench_pool.p6,
    "P7": bench_pool.p7,
    "MATRIX": bench_queue.matrix,
    "PINGPONG": bench_queue.pingpong,
    "PAYLOAD": bench_payload.payloads,
    "FLOOD": bench_flood.flood,
    "E1": bench_executor.e1,
    "E2": bench_executor.e2,
    "E3": bench_executor.e3,
    "E4": bench_executor.e4,
    "S1": bench_startup.s1,
    "S2": bench_startup.s2,
    "S3": bench_startup.s3,
}


def _parse_only(text: str | None) -> list[str]:
    if not text:
        return list(WORKLOADS)
    wanted = [w.strip().upper() for w in text.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    return [w for w in WORKLOADS if w in wanted]


def _versions() -> dict[str, str]:
    """The measured packages' versions, read in a forked child: importlib.metadata loads ~50
    modules (email, zipfile, csv...), which every trial forked from this runner would inherit
    and a script does not have -- a larger process to fork, not what a script pays."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            from importlib import metadata

            out = {}
            for dist in ("multitask", "mpire", "loky", "faster-fifo", "pebble", "numpy"):
                try:
                    out[dist] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    out[dist] = "not installed"
            os.write(wfd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data)) if data else {"versions": "unknown"}


def _parser() -> Any:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    ap.add_argument("--repeat", type=int, help="repeats per implementation (default: 5, "
                    "3 for P6/MATRIX/PAYLOAD; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small counts, 1 repeat: a smoke run")
    ap.add_argument("--timeout", type=float,
                    help="seconds per trial (default 60, quick 30; 1 GiB payloads get 300)")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH as JSON")
    ap.add_argument("--markdown", action="store_true",
                    help="finish with a README-ready markdown block (machine, date, tables)")
    ap.add_argument("--aa", action="store_true",
                    help="add an A/A control row (the stdlib baseline measured twice) per table")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    return ap


def _parse_args(argv: list[str] | None) -> Any:
    """The command line, parsed in a throwaway child.

    Using argparse (add_argument) imports shutil, bz2, lzma, zlib, locale and fnmatch: modules
    that every trial forked from this runner would inherit, that a script does not have, and
    that the stdlib's ``multiprocessing.pool`` imports (through tempfile) -- a ~4 ms head start
    for its first ``Pool()`` in P7.  ``--help`` and usage errors print from the child; this
    process then exits with its status.
    """
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            try:
                args = _parser().parse_args(argv)
            except SystemExit as exc:   # --help, a usage error
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            else:
                os.write(wfd, json.dumps(vars(args)).encode())
                code = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise SystemExit(os.waitstatus_to_exitcode(status))
    return types.SimpleNamespace(**json.loads(data))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    if args.list:
        for name, fn in WORKLOADS.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:9} {doc[0] if doc else ''}")
        return 0

    selected = _parse_only(args.only)
    # SIGTERM unwinds like Ctrl-C, so the running trial's process group is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    timeout = args.timeout or (30.0 if args.quick else 60.0)

    def progress(msg: str) -> None:
        sys.stderr.write(f"  .. {msg}\n")
        sys.stderr.flush()

    cfg = Config(quick=args.quick, repeat=args.repeat, timeout=timeout, progress=progress,
                 aa=args.aa)
    info = machine_info()
    versions = _versions()
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
          f"{info['memory']}, Python {info['python']}, {info['kernel']}, {info['date']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("mode: " + ("quick (smoke counts, not for quoting)" if args.quick else "full")
          + (f", repeat {args.repeat}" if args.repeat else ""))
    print()

    started = time.perf_counter()
    tables: list[Table] = []
    failures: dict[str, str] = {}
    for name in selected:
        t0 = time.perf_counter()
        try:
            produced = WORKLOADS[name](cfg)
        except Exception as exc:  # a workload's own setup failed: report, go on
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}  n/a ({failures[name]})\n", flush=True)
            continue
        for table in produced:
            tables.append(table)
            print(render_text(table))
            print(flush=True)
        progress(f"{name} done in {time.perf_counter() - t0:.1f}s")
    total = time.perf_counter() - started
    summary = render_summary_text(tables)
    if summary:
        print(summary)
        print()
    print(f"total: {total:.0f} s for {', '.join(selected)}")

    if args.markdown:
        print()
        print("## Benchmark results")
        print()
        print(f"- date: {info['date']}")
        print(f"- machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable "
              f"to this process), {info['memory']} RAM")
        print(f"- Python {info['python']} ({info['implementation']}), {info['kernel']}")
        print("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        cmdline = " ".join(argv if argv is not None else sys.argv[1:])
        print(f"- command: `benchmarks/run.py {cmdline}` (total {total:.0f} s)")
        print("- each cell: median of round-robin repeats; ratio = stdlib median / row median "
              "(> 1 is faster); spread = ± half the min-max range")
        print()
        summary_md = render_summary_markdown(tables)
        if summary_md:
            print(summary_md)
            print()
        for table in tables:
            print(render_markdown(table))
            print()
        for name, why in failures.items():
            print(f"- {name}: n/a ({why})")

    if args.json:
        payload = {
            "machine": info,
            "versions": versions,
            "quick": args.quick,
            "repeat": args.repeat,
            "total_s": total,
            "tables": [t.to_json() for t in tables],
            "failures": failures,
        }
        with open(args.json, "w") as f:
            f.write(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
