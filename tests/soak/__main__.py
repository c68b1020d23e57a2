"""``python -m soak`` (with ``tests`` on ``sys.path``; ``make soak`` does that).

    python -m soak --minutes 30            # random seeds until the time is up (the long form)
    python -m soak --seed 1234             # replay one run
    python -m soak --runs 8 --scale short  # a fixed number of runs, seeds 1..8

Prints one line per run and a summary; exits 1 after the first failing run, naming its seed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from .driver import KINDS, SCALES, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soak")
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--scale", choices=sorted(SCALES), default="long")
    ap.add_argument("--kind", choices=KINDS, default=None)
    args = ap.parse_args(argv)
    if args.seed is not None:
        seeds: object = iter([args.seed])
    elif args.runs is not None:
        seeds = iter(range(1, args.runs + 1))
    else:
        rng = random.SystemRandom()
        seeds = iter(lambda: rng.randrange(1 << 31), None)
    end = None if args.minutes is None else time.monotonic() + args.minutes * 60
    if args.minutes is None and args.runs is None and args.seed is None:
        end = time.monotonic() + 30 * 60
    total = {"runs": 0, "ops": 0, "tasks": 0, "kills": 0, "terminated": 0}
    t0 = time.monotonic()
    for seed in seeds:  # type: ignore[attr-defined]
        if end is not None and time.monotonic() >= end:
            break
        report = run(seed, args.scale, args.kind)
        print(report.line(), flush=True)
        total["runs"] += 1
        total["ops"] += report.ops
        total["tasks"] += report.tasks
        total["kills"] += report.kills
        total["terminated"] += report.terminated
        if report.errors:
            for e in report.errors[:20]:
                print("   ", e, flush=True)
            replay = f"make soak SEED={report.seed}"
            if args.scale != "long":
                replay += f" SOAK_SCALE={args.scale}"
            if args.kind:
                replay += f" SOAK_KIND={args.kind}"
            print(f"soak FAILED at seed {report.seed}; replay: {replay}", flush=True)
            return 1
    mins = (time.monotonic() - t0) / 60
    print(f"soak passed: {total['runs']} runs, {total['ops']} operations, {total['tasks']} "
          f"tasks, {total['kills']} workers killed, {total['terminated']} pools terminated, "
          f"0 hangs, 0 wrong or lost results, {mins:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
