"""The soak suite's short form (``make soak`` runs the long one; see tests/soak/).

Fixed seeds, so a failure here replays with ``make soak SEED=<seed> SOAK_SCALE=short``.  Each
kind of pool (the three start methods and the thread backend) gets its own seeds: the kind is
forced, the rest of the plan comes from the seed.
"""

from __future__ import annotations

import pytest
from soak.driver import KINDS, run


@pytest.mark.slow
@pytest.mark.no_leak_check   # the run checks processes, fds and /dev/shm itself, per run
@pytest.mark.parametrize("seed", [11, 12, 13, 14])
@pytest.mark.parametrize("kind", KINDS)
def test_soak_short(kind, seed):
    report = run(seed, "short", kind)
    assert not report.errors, (
        f"{report.line()}\n" + "\n".join(report.errors[:20])
        + f"\nreplay: make soak SEED={seed} SOAK_SCALE=short SOAK_KIND={kind}")
    assert report.ops > 0
