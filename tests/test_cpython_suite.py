"""CPython's own multiprocessing suite against multitask (tests/cpython; issue #17).

The short form for ``make test``: the fork start method, the stdlib and multitask in the same
run, compared by tests/cpython/compare.py against tests/cpython/allowlist.txt.  ``make
cpython-suite`` runs every start method.  Skipped, saying so, where the interpreter has no
``test`` package.
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
def test_cpython_multiprocessing_suite_fork(tmp_path):
    if importlib.util.find_spec("test._test_multiprocessing") is None:
        pytest.skip("this interpreter has no test package (test._test_multiprocessing)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    runs = []
    for target in ("stdlib", "multitask"):
        out = tmp_path / f"{target}.json"
        proc = subprocess.run([sys.executable, "-m", "cpython", "--target", target,
                               "--method", "fork", "--json", str(out)],
                              cwd=TESTS, env=env, capture_output=True, text=True, timeout=800)
        assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
        runs.append(str(out))
    cmp = subprocess.run([sys.executable, "-m", "cpython.compare", *runs], cwd=TESTS,
                         env=env, capture_output=True, text=True, timeout=60)
    print(cmp.stdout)
    assert cmp.returncode == 0, cmp.stdout
