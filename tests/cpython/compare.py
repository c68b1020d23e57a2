"""Compare runs of CPython's multiprocessing suite: stdlib against multitask, per start method.

    python -m cpython.compare RUN.json ...      (the JSON files of python -m cpython)

Every test that passes on the stdlib and does not pass on multitask (same start method) must
match a line of ``allowlist.txt`` (an fnmatch pattern on the test id, a reason, and where the
difference is documented); otherwise it is a regression and the exit status is 1.  Prints the
counts per start method.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import sys
from pathlib import Path

ALLOWLIST = Path(__file__).with_name("allowlist.txt")


def load_allowlist(path: Path = ALLOWLIST) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" ")
        reason = reason.strip()
        if not reason:
            raise ValueError(f"allowlist entry without a reason: {line!r}")
        out.append((pattern, reason))
    return out


def main(argv: list[str]) -> int:
    runs: dict[tuple[str, str], dict[str, str]] = {}
    for name in argv:
        data = json.loads(Path(name).read_text())
        runs[(data["target"], data["method"])] = data["outcomes"]
    allow = load_allowlist()
    used: set[str] = set()
    bad = 0
    for method in ("fork", "spawn", "forkserver"):
        std, ours = runs.get(("stdlib", method)), runs.get(("multitask", method))
        if std is None or ours is None:
            continue
        regressions: list[tuple[str, str]] = []
        allowed: list[tuple[str, str]] = []
        for test, outcome in sorted(std.items()):
            if outcome != "pass" or ours.get(test) == "pass":
                continue
            hit = next((p for p, _ in allow if fnmatch.fnmatchcase(test, p)), None)
            (allowed if hit else regressions).append((test, ours.get(test, "missing")))
            if hit:
                used.add(hit)
        c_std = collections.Counter(std.values())
        c_ours = collections.Counter(ours.values())
        print(f"{method}: stdlib {c_std['pass']} passed of {len(std)}; multitask "
              f"{c_ours['pass']} passed of {len(ours)}; {len(allowed)} documented "
              f"differences; {len(regressions)} regressions")
        for test, outcome in regressions:
            print(f"  REGRESSION {test}: {outcome}")
        bad += len(regressions)
    for pattern, reason in allow:
        if pattern not in used:
            print(f"  (allowlist entry not needed in these runs: {pattern} -- {reason})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
