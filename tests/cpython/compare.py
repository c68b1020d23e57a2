"""Compare runs of CPython's suites: stdlib against multitask, per suite and start method.

    python -m cpython.compare RUN.json ...      (the JSON files of python -m cpython)

Every test that passes on the stdlib and does not pass on multitask (same suite, same start
method) must match a line of the suite's allowlist -- ``allowlist.txt`` for the multiprocessing
suite, ``allowlist-futures.txt`` for concurrent.futures' -- (an fnmatch pattern on the test id, a
reason, and where the difference is documented); otherwise it is a regression and the exit status
is 1 -- as is an error or a hang that only the multitask run has, outside the stdlib run's tests
(a class or module fixture's).  Prints the counts per suite and start method, and the last line
of each regression's traceback (the whole of it is in the run's JSON, "errors", and its log).
"""

from __future__ import annotations

import collections
import fnmatch
import json
import sys
from pathlib import Path

ALLOWLISTS = {"multiprocessing": Path(__file__).with_name("allowlist.txt"),
              "futures": Path(__file__).with_name("allowlist-futures.txt")}
ALLOWLIST = ALLOWLISTS["multiprocessing"]


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


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def main(argv: list[str]) -> int:
    # (suite, target, method) -> the run; a JSON without "suite" is the multiprocessing suite's
    runs: dict[tuple[str, str, str], dict] = {}
    for name in argv:
        data = json.loads(Path(name).read_text())
        runs[(data.get("suite", "multiprocessing"), data["target"], data["method"])] = data
    bad = 0
    for suite in ALLOWLISTS:
        if not any(key[0] == suite for key in runs):
            continue
        allow = load_allowlist(ALLOWLISTS[suite])
        used: set[str] = set()
        prefix = "" if suite == "multiprocessing" else f"{suite} "
        for method in ("fork", "spawn", "forkserver"):
            std_run = runs.get((suite, "stdlib", method))
            our_run = runs.get((suite, "multitask", method))
            if std_run is None or our_run is None:
                continue
            std, ours = std_run["outcomes"], our_run["outcomes"]
            regressions: list[tuple[str, str]] = []
            allowed: list[tuple[str, str]] = []
            for test, outcome in sorted(std.items()):
                if outcome != "pass" or ours.get(test) == "pass":
                    continue
                hit = next((p for p, _ in allow if fnmatch.fnmatchcase(test, p)), None)
                (allowed if hit else regressions).append((test, ours.get(test, "missing")))
                if hit:
                    used.add(hit)
            # a fixture's error (setUpModule, tearDownClass...) or a hang only multitask has
            regressions += [(test, outcome) for test, outcome in sorted(ours.items())
                            if test not in std and outcome in ("fail", "error", "hang")]
            c_std = collections.Counter(std.values())
            c_ours = collections.Counter(ours.values())
            print(f"{prefix}{method}: stdlib {c_std['pass']} passed of {len(std)}; multitask "
                  f"{c_ours['pass']} passed of {len(ours)}; {len(allowed)} documented "
                  f"differences; {len(regressions)} regressions")
            for test, outcome in regressions:
                why = _last_line(our_run.get("errors", {}).get(test, ""))
                print(f"  REGRESSION {test}: {outcome}" + (f" -- {why}" if why else ""))
            for label, run in (("stdlib", std_run), ("multitask", our_run)):
                if "abandoned_at" in run:
                    print(f"  the {label} run was abandoned at {run['abandoned_at']} "
                          "(a test that would not stop): the tests after it did not run")
            bad += len(regressions)
        for pattern, reason in allow:
            if pattern not in used:
                print(f"  (allowlist entry not needed in these runs: {pattern} -- {reason})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
