"""CPython's own concurrent.futures suite against multitask.futures (tests/cpython; issue #18).

The short form for ``make test``: the process-pool tests of ``test.test_concurrent_futures``
under the fork start method, the stdlib and multitask in the same run, compared by
tests/cpython/compare.py against tests/cpython/allowlist-futures.txt.  ``make cpython-futures``
runs every start method.  Skipped, saying so, where the interpreter's ``test`` package has no
``test_concurrent_futures`` (some builds ship a partial test package).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.no_leak_check   # the suite runs in child interpreters, which check themselves
def test_cpython_futures_suite_fork(tmp_path):
    package = importlib.util.find_spec("test")
    if package is None:
        pytest.skip("this interpreter has no test package")
    if importlib.util.find_spec("test.test_concurrent_futures") is None:
        pytest.skip(f"this interpreter's test package ({package.origin}) has no "
                    "test_concurrent_futures (a partial test package)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    runs = []
    for target in ("stdlib", "multitask"):
        out = tmp_path / f"{target}.json"
        # A test still running after 120 s is stopped and fails (python -m cpython's
        # --test-timeout); each run of the stdlib takes ~30 s.
        cmd = [sys.executable, "-m", "cpython", "--suite", "futures", "--target", target,
               "--method", "fork", "--json", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True,
                                  timeout=420)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            pytest.fail(f"{target}: the run took over 420 s\n{err[-3000:]}")
        assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
        runs.append(str(out))
    cmp = subprocess.run([sys.executable, "-m", "cpython.compare", *runs], cwd=TESTS,
                         env=env, capture_output=True, text=True, timeout=60)
    print(cmp.stdout)
    assert cmp.returncode == 0, cmp.stdout
