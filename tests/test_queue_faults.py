"""Fault injection: processes SIGKILLed inside put/get, crashes with spilled data, Ctrl-C.

Every message carries a CRC32 of its payload, so a torn message (one read while half written) is
detected.  After each round the survivors must still be able to use the queue promptly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from typing import Any

import pytest

import multitask
from multitask.queues import Queue


def _msg(seq: int) -> tuple[int, bytes, int]:
    payload = os.urandom(8 + seq % 200)
    return seq, payload, zlib.crc32(payload)


def _check(item) -> None:
    seq, payload, crc = item
    assert zlib.crc32(payload) == crc, f"torn message {seq}"


def _hammer_put(q, started, big):
    started.put(os.getpid())
    seq = 0
    while True:
        if big:
            payload = os.urandom(1 << 20)  # spilled: bigger than the ring's threshold
            q.put((seq, payload, zlib.crc32(payload)), timeout=5)
        else:
            q.put_many([_msg(seq + i) for i in range(8)], timeout=5)
        seq += 8


def _hammer_get(q, started):
    started.put(os.getpid())
    while True:
        try:
            for item in q.get_many(16, timeout=5):
                _check(item)
        except Exception:
            os._exit(3)


def _drain_and_check(q) -> int:
    n = 0
    while True:
        try:
            items = q.get_many(1000, timeout=0)
        except Exception as exc:  # queue.Empty
            if type(exc).__name__ == "Empty":
                return n
            raise
        for item in items:
            _check(item)
        n += len(items)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("big", [False, True], ids=["small", "spilled"])
def test_sigkill_inside_put_and_get_never_wedges_or_tears(big):
    ctx = multitask.get_context("fork")
    q: Queue[Any] = Queue(maxsize=64)
    started: Queue[Any] = Queue()
    rng = random.Random(1234)
    prefix = q._prefix
    rounds = 12 if big else 30
    for _ in range(rounds):
        procs = [ctx.Process(target=_hammer_put, args=(q, started, big)),
                 ctx.Process(target=_hammer_get, args=(q, started))]
        for p in procs:
            p.start()
        for _ in procs:
            started.get(timeout=30)
        time.sleep(rng.uniform(0.0, 0.05))
        victim = rng.choice(procs)
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        time.sleep(rng.uniform(0.0, 0.02))
        for p in procs:
            if p is not victim:
                assert p.pid is not None
                os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(10)
            assert p.exitcode == -signal.SIGKILL, "a consumer saw a torn message"
        # the survivors (us) are not wedged: the lock is recoverable, the queue works
        t = time.monotonic()
        _drain_and_check(q)
        q.put(_msg(0), timeout=5)
        _check(q.get(timeout=5))
        assert time.monotonic() - t < 5
        assert q.qsize() == 0
    q.close()
    started.close()
    # spill segments of killed producers (made but never committed) were swept by close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def _put_spilled_then_wait(q, ready):
    for _ in range(3):
        q.put(os.urandom(2 << 20))
    ready.put("done")
    time.sleep(60)


@pytest.mark.timeout(60)
def test_crash_of_producer_holding_spilled_messages_leaks_nothing(start_method):
    ctx = multitask.get_context(start_method)
    q: Queue[Any] = Queue()
    ready: Queue[Any] = Queue()
    prefix = q._prefix
    p = ctx.Process(target=_put_spilled_then_wait, args=(q, ready))
    p.start()
    assert ready.get(timeout=30) == "done"
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert q.qsize() == 3
    assert len(q.get()) == 2 << 20  # readable after the producer's death
    q.close()  # the two unread ones are released
    ready.close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


CTRL_C = textwrap.dedent("""
    import os
    import multitask
    q = multitask.Queue()
    q.put(os.urandom(20 << 20))   # a spilled message nobody will read
    q.put(b"x")
    q.get(); q.get()
    print("ready", flush=True)
    q.get()
""")


@pytest.mark.timeout(60)
def test_ctrl_c_in_blocked_queue_get_exits_promptly_without_leaks():
    before = {n for n in os.listdir("/dev/shm") if n.startswith("mt-")}
    p = subprocess.Popen([sys.executable, "-c", CTRL_C], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        time.sleep(0.1)
        t = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert time.monotonic() - t < 2
        assert err.count(b"Traceback") == 1 and b"KeyboardInterrupt" in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    after = {n for n in os.listdir("/dev/shm") if n.startswith("mt-")}
    assert after <= before


def _put_huge_inline(ring, started):
    payload = os.urandom(6 << 20)
    msg = zlib.crc32(payload).to_bytes(4, "little") + payload
    started.put(os.getpid())
    while True:  # both calls copy 6 MiB under the mutex: most of the time is spent holding it
        ring.put(msg, timeout=5)
        got = ring.get(timeout=5)
        if got is None or zlib.crc32(got[4:]) != int.from_bytes(got[:4], "little"):
            os._exit(3)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_while_holding_the_ring_lock():
    """A 6 MiB inline record is copied under the ring's mutex (~ms), so most kills land while
    the victim owns it: the next locker must get EOWNERDEAD, repair and carry on."""
    from multitask._core._ring import Ring

    ctx = multitask.get_context("fork")
    ring = Ring(32 << 20)  # spill threshold 8 MiB: 6 MiB records stay inline
    started: Queue[Any] = Queue()
    rng = random.Random(99)
    for _ in range(15):
        p = ctx.Process(target=_put_huge_inline, args=(ring, started))
        p.start()
        started.get(timeout=30)
        time.sleep(rng.uniform(0.001, 0.03))
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        t = time.monotonic()
        while True:
            got = ring.get(timeout=0)
            if got is None:
                break
            assert zlib.crc32(got[4:]) == int.from_bytes(got[:4], "little"), "torn record"
        assert ring.put(b"alive", timeout=5) and ring.get(timeout=5) == b"alive"
        assert time.monotonic() - t < 5
        assert ring.write_count == ring.read_count
    # most kills landed inside a critical section and were repaired (EOWNERDEAD path)
    assert ring.recoveries >= 3
    ring.close()
    started.close()
