"""CPython's own suites against multitask (tests/cpython; issues #17 and #18).

The short form for ``make test``: under the fork start method, the stdlib and multitask in the
same run, compared by tests/cpython/compare.py against the suite's allowlist --
``test._test_multiprocessing`` (``allowlist.txt``) and the process-pool tests of
``test.test_concurrent_futures`` (``allowlist-futures.txt``).  ``make cpython-suite`` runs
every start method.  Skipped, saying so, where the interpreter's ``test`` package lacks the
suite (some builds ship a partial test package).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# suite -> (the module it needs, seconds one run may take).  The futures harness also stops a
# test still running after 120 s itself (python -m cpython's --test-timeout).
SUITES = {
    "multiprocessing": ("test._test_multiprocessing", 800),
    "futures": ("test.test_concurrent_futures", 420),
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.no_leak_check   # the suite runs in child interpreters, which check themselves
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_cpython_suite_fork(tmp_path, suite):
    module, limit = SUITES[suite]
    package = importlib.util.find_spec("test")
    if package is None:
        pytest.skip("this interpreter has no test package")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"this interpreter's test package ({package.origin}) has no {module} "
                    "(a partial test package)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    runs = []
    for target in ("stdlib", "multitask"):
        out = tmp_path / f"{target}.json"
        cmd = [sys.executable, "-m", "cpython", "--suite", suite, "--target", target,
               "--method", "fork", "--json", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True,
                                  timeout=limit)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            pytest.fail(f"{suite} {target}: the run took over {limit} s\n{err[-3000:]}")
        assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
        runs.append(str(out))
    cmp = subprocess.run([sys.executable, "-m", "cpython.compare", *runs], cwd=TESTS,
                         env=env, capture_output=True, text=True, timeout=60)
    print(cmp.stdout)
    assert cmp.returncode == 0, cmp.stdout
