"""Smoke test for the benchmark suite: it runs, terminates, and prints a table with a stdlib row.

Benchmarks are not tests: nothing here looks at a timing.  This only guards against the suite
rotting (an import error, a crash in the harness, a hang).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


@pytest.mark.timeout(90)  # the subprocess itself is capped at 60 s
def test_quick_run_prints_tables_with_a_stdlib_row():
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "P3,P4", "--timeout", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "P3" in out and "P4" in out, out
    lines = out.splitlines()
    stdlib_p3 = [ln for ln in lines if ln.startswith("stdlib multiprocessing.Pool")]
    stdlib_p4 = [ln for ln in lines if ln.startswith("multiprocessing.Queue put/get")]
    assert stdlib_p3 and "baseline" in stdlib_p3[0], out
    assert stdlib_p4 and "baseline" in stdlib_p4[0], out
    assert "total:" in out
