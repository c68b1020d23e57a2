"""The shared-memory ring (multitask._core._ring): behaviour, blocking, spills, attach, signals."""

from __future__ import annotations

import collections
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from multitask._core._errors import ClosedError
from multitask._core._ring import Ring, RingAttachError


@pytest.fixture
def ring():
    r = Ring(4096)
    yield r
    r.close()


def _got(msg: bytes | memoryview | None) -> bytes:
    """A get's message, which the test knows is there (None would be a timeout)."""
    assert msg is not None
    return bytes(msg)


def _mt_names(token: str) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"mt-{token}-")]


def test_put_get_fifo_and_counters(ring):
    msgs = [b"", b"a", b"hello world", bytes(range(256)) * 2, bytearray(b"xy"), memoryview(b"mv")]
    for m in msgs:
        assert ring.put(m) is True
    assert ring.qsize() == len(msgs)
    assert ring.write_count == len(msgs)
    out = [ring.get() for _ in msgs]
    assert out == [bytes(m) for m in msgs]
    assert all(type(o) is bytes for o in out)
    assert ring.qsize() == 0
    assert ring.read_count == len(msgs)
    assert ring.get(timeout=0) is None


def test_records_wrap_around_the_end(ring):
    # sizes chosen so records straddle the end of the data area many times
    for i in range(2000):
        data = bytes([i % 251]) * (i % 300)
        assert ring.put(data, timeout=0)
        assert ring.get(timeout=0) == data


def test_full_ring_put_times_out_then_succeeds_after_get():
    r = Ring(256, maxitems=3)
    try:
        assert all(r.put(b"x", timeout=0) for _ in range(3))
        assert r.put(b"x", timeout=0) is False
        t = time.monotonic()
        assert r.put(b"x", timeout=0.2) is False
        assert 0.15 < time.monotonic() - t < 2
        assert r.get() == b"x"
        assert r.put(b"y", timeout=0) is True
        assert r.maxitems == 3 and r.capacity == 256
    finally:
        r.close()


def test_byte_capacity_limits_puts():
    r = Ring(256)
    try:
        n = 0
        while r.put(b"z" * 40, timeout=0):  # 48-byte records
            n += 1
        assert n == 256 // 48
        assert r.qsize() == n
    finally:
        r.close()


def test_get_timeout_on_monotonic_clock(ring):
    t = time.monotonic()
    assert ring.get(timeout=0.2) is None
    assert 0.15 < time.monotonic() - t < 2
    assert ring.get_many(5, timeout=0.05) == []


def test_blocking_get_is_woken_by_put_from_another_thread(ring):
    out = []
    th = threading.Thread(target=lambda: out.append(ring.get(timeout=10)))
    th.start()
    time.sleep(0.1)
    ring.put(b"wake")
    th.join(5)
    assert out == [b"wake"]


def test_blocking_put_is_woken_by_get_in_another_process():
    r = Ring(256, maxitems=1)
    try:
        r.put(b"first")
        pid = os.fork()
        if pid == 0:  # child: consume after a delay
            time.sleep(0.2)
            r.get()
            os._exit(0)
        t = time.monotonic()
        assert r.put(b"second", timeout=10) is True
        assert time.monotonic() - t < 5
        os.waitpid(pid, 0)
        assert r.get() == b"second"
    finally:
        r.close()


def test_put_many_get_many(ring):
    items = [str(i).encode() for i in range(100)]
    assert ring.put_many(items) == 100
    got = ring.get_many(30)
    assert got == items[:30]
    rest: list[bytes] = []
    while len(rest) < 70:
        rest += ring.get_many(1000, timeout=0)
    assert rest == items[30:]
    assert ring.get_many(3, timeout=0) == []


def test_put_many_partial_on_timeout():
    r = Ring(256, maxitems=5)
    try:
        assert r.put_many([b"a"] * 8, timeout=0) == 5
        assert r.put_many([b"b"] * 2, timeout=0.05) == 0
        assert r.get_many(10) == [b"a"] * 5
    finally:
        r.close()


def test_put_many_blocks_until_consumers_make_room():
    r = Ring(256, maxitems=4)
    try:
        pid = os.fork()
        if pid == 0:
            n = 0
            while n < 50:
                n += len(r.get_many(3, timeout=10))
            os._exit(0 if n == 50 else 1)
        assert r.put_many([b"%d" % i for i in range(50)], timeout=10) == 50
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        r.close()


def test_large_messages_are_spilled_not_rejected(ring):
    big = os.urandom(3 * ring.capacity)
    assert ring.put(big)
    assert len(_mt_names(ring.token)) == 1
    got = ring.get()
    assert isinstance(got, memoryview) and got.readonly
    assert bytes(got) == big
    assert _mt_names(ring.token) == []  # unlinked as soon as mapped


def _allocated(r: Ring) -> int:
    """Bytes of the ring's memfd that hold pages (tmpfs allocates one when first written)."""
    return os.fstat(r._fd).st_blocks * 512


def test_a_ring_that_empties_starts_again_on_its_first_pages():
    # lockstep put/get: every get empties the ring, which rewinds it to offset 0, so 50 MiB go
    # through the first MiB of an 8 MiB ring.  (A ring this small is never punched: without the
    # rewind the records would march round it and every one of its pages would be allocated.)
    r = Ring(8 << 20)
    try:
        msg = os.urandom(1 << 20)
        for _ in range(50):
            assert r.put(msg)
            assert r.get() == msg
        assert _allocated(r) <= 2 << 20
    finally:
        r.close()


def test_a_big_ring_keeps_its_pages_while_streaming_and_returns_them_once_empty():
    cap = 64 << 20
    r = Ring(cap)
    try:
        msgs = [os.urandom(1 << 20) for _ in range(24)]
        assert r.put_many(msgs) == 24
        assert _allocated(r) >= 24 << 20
        for m in msgs[:-1]:
            assert r.get() == m
        assert _allocated(r) >= 23 << 20   # not empty yet: nothing returned mid-stream
        assert r.get() == msgs[-1]
        # empty: everything past the warm first eighth went back to the OS
        assert _allocated(r) <= cap // 8 + (64 << 10)
        assert r.put(b"again") and r.get() == b"again"
    finally:
        r.close()


def test_records_stay_whole_across_rewinds_and_wraps():
    # mixed sizes, sometimes emptying the ring (rewind), sometimes wrapping past its end
    r = Ring(1 << 16)
    try:
        rng = random.Random(7)
        pending: collections.deque[bytes] = collections.deque()
        for _ in range(3000):
            if pending and rng.random() < 0.5:
                assert _got(r.get(timeout=1)) == pending.popleft()
                continue
            msg = os.urandom(rng.choice([0, 1, 7, 100, 5000, 20000]))
            if r.put(msg, timeout=0):
                pending.append(msg)
        while pending:
            assert _got(r.get(timeout=1)) == pending.popleft()
        assert r.qsize() == 0
    finally:
        r.close()


def test_spill_in_batches(ring):
    items = [b"s", os.urandom(5000), b"t", os.urandom(9000)]
    assert ring.put_many(items) == 4
    assert [bytes(x) for x in ring.get_many(10)] == items
    assert _mt_names(ring.token) == []


def test_unread_spilled_messages_released_by_last_close():
    r = Ring(1024)
    token = r.token
    r.put(os.urandom(4000))
    r.put_many([os.urandom(3000), b"small"])
    assert len(_mt_names(token)) == 2
    discarded = []
    r.on_discard = lambda payload: discarded.append(bytes(payload))
    r.close()
    assert _mt_names(token) == []
    assert len(discarded) == 3 and discarded[2] == b"small"


def test_spill_not_put_on_timeout_is_released():
    r = Ring(256, maxitems=1)
    try:
        r.put(b"x")
        assert r.put(os.urandom(1000), timeout=0) is False
        assert r.put_many([os.urandom(1000), b"y"], timeout=0) == 0
        assert _mt_names(r.token) == []
    finally:
        r.close()


@pytest.mark.parametrize("kwargs, exc", [
    ({"capacity": 10}, ValueError),
    ({"capacity": -1}, ValueError),
    ({"capacity": "big"}, TypeError),
    ({"maxitems": -1}, ValueError),
    ({"maxitems": 1.5}, TypeError),
])
def test_bad_constructor_values(kwargs, exc):
    with pytest.raises(exc):
        Ring(**kwargs)


def test_bad_call_values(ring):
    with pytest.raises(ValueError):
        ring.get(timeout=-1)
    with pytest.raises(ValueError):
        ring.put(b"x", timeout=-0.5)
    with pytest.raises(ValueError):
        ring.get_many(0)
    with pytest.raises(TypeError):
        ring.put("not bytes")
    with pytest.raises(TypeError):
        ring.put_many([b"ok", 3])
    # a batch with a bad item is rejected before anything is put
    assert ring.get_many(10, timeout=0) == []


def test_use_after_close_raises_closed_error():
    r = Ring(256)
    r.close()
    r.close()  # idempotent
    for call in (lambda: r.put(b"x"), r.get, lambda: r.get_many(1), r.qsize,
                 lambda: r.write_count, lambda: pickle.dumps(r)):
        with pytest.raises(ClosedError):
            call()
    assert isinstance(ClosedError("x"), ValueError)


def test_close_wakes_a_thread_blocked_in_get():
    r = Ring(256)
    errors = []

    def waiter():
        try:
            r.get(timeout=30)
        except ClosedError as exc:
            errors.append(exc)

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.1)
    r.close()
    th.join(5)
    assert not th.is_alive() and len(errors) == 1


def test_pickle_attaches_same_ring_in_this_process(ring):
    other = pickle.loads(pickle.dumps(ring))
    try:
        other.put(b"via /proc")
        assert ring.get() == b"via /proc"
        assert other.token == ring.token
    finally:
        other.close()
    ring.put(b"still works")
    assert ring.get() == b"still works"


def test_attach_fails_clearly_when_sender_is_gone():
    r = Ring(256)
    state = pickle.dumps(r)
    # forge the pickled pid into one that cannot exist
    fn, (token, _dupfd, _pid, fd, *_tracker) = r.__reduce__()
    r._pending(-2)
    r.close()
    with pytest.raises(RingAttachError, match="cannot attach"):
        fn(token, None, 2**22 + 12345, fd)
    assert state


SPAWN_CHILD = textwrap.dedent("""
    import pickle, sys
    ring = pickle.loads(sys.stdin.buffer.read())
    ring.put(b"from an unrelated process")
    ring.close()
""")


def test_unrelated_process_attaches_through_proc(ring):
    data = pickle.dumps(ring)
    subprocess.run([sys.executable, "-c", SPAWN_CHILD], input=data, check=True, timeout=30)
    assert ring.get(timeout=5) == b"from an unrelated process"


SPILL_AND_EXIT = textwrap.dedent("""
    import pickle, sys
    ring = pickle.loads(sys.stdin.buffer.read())
    ring.put(b"s" * (ring.spill_threshold + 1))   # spilled to its own segment
    # exit without close(): the segment belongs to the ring now, not to this process
""")


@pytest.mark.timeout(60)
def test_spill_of_an_exited_unrelated_producer_is_still_readable():
    r = Ring(4096)
    try:
        p = subprocess.run([sys.executable, "-c", SPILL_AND_EXIT], input=pickle.dumps(r),
                           capture_output=True, timeout=30)
        assert p.returncode == 0 and p.stderr == b"", p.stderr
        time.sleep(0.2)  # a private resource tracker of the producer would have unlinked it
        assert _got(r.get(timeout=5)) == b"s" * (r.spill_threshold + 1)
        assert _mt_names(r.token) == []
    finally:
        r.close()


def _get_one(ring, out):
    out.put(ring.get(timeout=30))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batched", [False, True])
def test_every_waiting_consumer_is_woken_for_its_message(batched):
    """Puts wake one waiting consumer per message (no thundering herd): each of several
    consumers blocked in get() must still receive a message promptly."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    r, out = Ring(4096), Ring(4096)
    procs = [ctx.Process(target=_get_one, args=(r, out)) for _ in range(6)]
    try:
        for p in procs:
            p.start()
        time.sleep(0.5)  # let them block
        msgs = [b"m%d" % i for i in range(6)]
        if batched:
            assert r.put_many(msgs[:4]) == 4
            assert r.put_many(msgs[4:]) == 2
        else:
            for m in msgs:
                assert r.put(m)
        got = sorted(_got(out.get(timeout=10)) for _ in procs)
        assert got == sorted(msgs)
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        r.close()
        out.close()


def test_joinable_counter():
    r = Ring(1024, joinable=True)
    try:
        r.put_many([b"a", b"b"])
        r.put(b"c")
        assert r.unfinished == 3
        assert r.join(timeout=0.05) is False
        for _ in range(3):
            r.get()
            r.task_done()
        assert r.join(timeout=0) is True
        with pytest.raises(ValueError):
            r.task_done()
    finally:
        r.close()


CTRL_C_CHILD = textwrap.dedent("""
    import sys
    from multitask._core._ring import Ring
    r = Ring(4096)
    print("ready", flush=True)
    r.get()
""")


def test_ctrl_c_interrupts_blocked_get_promptly():
    p = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        time.sleep(0.1)
        t = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
        assert time.monotonic() - t < 2
        assert b"KeyboardInterrupt" in err
        assert p.returncode != 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_signal_handler_that_does_not_raise_keeps_waiting():
    got = []

    def handler(signum, frame):
        got.append(signum)

    old = signal.signal(signal.SIGUSR1, handler)
    r = Ring(256)
    try:
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        t = time.monotonic()
        assert r.get(timeout=0.5) is None
        assert time.monotonic() - t >= 0.45  # kept waiting the remaining time
        assert got == [signal.SIGUSR1]
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
        r.close()


# ---- polling before sleeping (spin_ns) ---------------------------------------------------------


def test_spin_ns_default_and_bad_values(ring):
    assert ring.spin_ns == 100_000          # the default: poll 100 us before sleeping
    ring.spin_ns = 0
    assert ring.spin_ns == 0
    for bad, exc in ((-1, ValueError), (10**8 + 1, ValueError), (1.5, TypeError),
                     (True, TypeError), ("1", TypeError)):
        with pytest.raises(exc):
            ring.spin_ns = bad
    assert ring.spin_ns == 0                # a rejected value changes nothing


def test_spin_ns_is_per_object_not_shared(ring):
    ring.spin_ns = 5_000
    other = pickle.loads(pickle.dumps(ring))   # another object on the same ring
    try:
        assert other.spin_ns == 100_000
    finally:
        other.close()


@pytest.mark.parametrize("spin_ns", [0, 100_000, 10**8])
def test_get_while_polling_sees_a_put_from_another_process(spin_ns):
    r = Ring(4096)
    r.spin_ns = spin_ns
    try:
        pid = os.fork()
        if pid == 0:
            time.sleep(0.05)
            r.put(b"late")
            os._exit(0)
        assert r.get(timeout=10) == b"late"
        assert r.get_many(4, timeout=0.01) == []   # the poll is bounded by the timeout
        os.waitpid(pid, 0)
    finally:
        r.close()


def test_polling_get_still_honours_a_short_timeout(ring):
    ring.spin_ns = 10**8                    # poll up to 0.1 s ...
    t = time.monotonic()
    assert ring.get(timeout=0.01) is None   # ... but never past the caller's deadline
    assert time.monotonic() - t < 0.09


def test_spin_budget_adapts_to_how_long_gets_wait(ring):
    ring.spin_ns = 10**8
    assert ring.spin_budget == 10**8
    for _ in range(12):                      # long waits (timeouts): polling stops paying off
        assert ring.get(timeout=0.001) is None
    assert ring.spin_budget == 0
    ring.put(b"here")
    assert ring.get(timeout=0) == b"here"    # no wait at all: nothing learnt
    assert ring.spin_budget == 0
    timer = threading.Timer(0.05, ring.put, (b"soon",))
    timer.start()
    assert ring.get(timeout=10) == b"soon"   # a wait polling would have covered: poll again
    timer.join()
    assert ring.spin_budget == 10**8


# ---- the reader gate (leader/follower, used by the pool's result ring) -------------------------


def _follower(ring, out, rounds):
    """Run the follower side: take batches with _follow_get, record them, release."""
    try:
        for _ in range(rounds):
            msgs = ring._follow_get(64)
            try:
                out.extend(msgs)
            finally:
                ring._follow_done()
    except ClosedError:
        out.append("closed")


def test_gate_one_leader_at_a_time(ring):
    assert ring._lead_acquire() is True
    got = []
    th = threading.Thread(target=lambda: got.append(ring._lead_acquire(0)))
    th.start()
    th.join(5)
    assert got == [False]                    # another thread leads: no waiting, no second leader
    ring._lead_release()
    assert ring._lead_acquire(0) is True
    ring._lead_release()


def test_follower_takes_messages_only_while_nobody_leads(ring):
    seen: list = []
    th = threading.Thread(target=_follower, args=(ring, seen, 1), daemon=True)
    th.start()
    assert ring._lead_acquire(5) is True     # the follower is asleep (ring empty): gate free
    ring.put(b"for-the-leader")
    assert ring.get_many(8, timeout=5) == [b"for-the-leader"]
    assert seen == []
    ring.put(b"left-behind")                 # still leading: the follower must not take it
    time.sleep(0.05)
    assert seen == []
    ring._lead_release()                     # messages waiting: the follower takes over
    th.join(5)
    assert seen == [b"left-behind"]


def test_caller_waiting_to_lead_is_handed_the_gate_after_the_followers_batch(ring):
    ring.put(b"a")
    msgs = ring._follow_get(8)               # this thread is the follower, holding the gate
    assert msgs == [b"a"]
    got = []
    release = threading.Event()

    def heir():
        got.append(ring._lead_acquire(10))
        release.wait(10)
        ring._lead_release()

    th = threading.Thread(target=heir)
    th.start()
    time.sleep(0.05)
    assert got == []                         # waits for the batch to be settled
    ring._follow_done()                      # hands the gate over
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [True]
    assert ring._lead_acquire(0) is False    # held by the heir now
    ring._lead_release()                     # not ours: a no-op
    assert ring._lead_acquire(0) is False
    release.set()
    th.join(5)
    assert ring._lead_acquire(0) is True
    ring._lead_release()


def test_waiting_to_lead_times_out_while_the_follower_holds_the_gate(ring):
    ring.put(b"x")
    assert ring._follow_get(8) == [b"x"]
    t = time.monotonic()
    assert ring._lead_acquire(0.05) is False
    assert 0.04 < time.monotonic() - t < 2
    ring._follow_done()
    assert ring._lead_acquire(0) is True     # the withdrawn heir left nothing behind
    ring._lead_release()


def test_close_wakes_a_sleeping_follower():
    r = Ring(4096)
    seen: list = []
    th = threading.Thread(target=_follower, args=(r, seen, 5), daemon=True)
    th.start()
    time.sleep(0.05)
    r.close()
    th.join(5)
    assert not th.is_alive() and seen == ["closed"]


def test_producer_wake_meant_for_a_sleeping_leader_is_not_lost():
    """The follower (uncounted) and a leader asleep in get() share the futex word: a producer in
    another process wakes one of them; if it is the follower, it must pass the wake-up on."""
    r = Ring(4096)
    r.spin_ns = 0                            # make the leader really sleep
    seen: list = []
    th = threading.Thread(target=_follower, args=(r, seen, 1), daemon=True)
    th.start()
    try:
        time.sleep(0.05)
        assert r._lead_acquire(5) is True
        pid = os.fork()
        if pid == 0:
            time.sleep(0.1)
            r.put(b"late")
            os._exit(0)
        assert r.get(timeout=10) == b"late"  # woken, whoever the kernel picked
        os.waitpid(pid, 0)
        assert seen == []
        r._lead_release()
    finally:
        r.close()
        th.join(5)


# ---- untracked rings (Ring(group=...)): the pool's rings under fork --------------------------


def test_group_rings_share_the_group_prefix_and_reject_bad_groups():
    from multitask._core._ring import new_group

    group = new_group()
    assert group.startswith("u") and len(group) == 9
    a, b = Ring(4096, group=group), Ring(4096, group=group)
    try:
        assert a.token.startswith(group) and b.token.startswith(group)
        assert a.token != b.token
        assert a.spill_prefix == f"mt-{a.token}-"
        # a spilled message still travels (its segment is just not registered anywhere)
        a.put(b"x" * 3000, None)
        assert _got(a.get(1.0)) == b"x" * 3000
    finally:
        a.close()
        b.close()
    for bad in ("", "u123", "x12345678", "uABCDEF01", "u1234567g", "u123456789"):
        with pytest.raises(ValueError, match="group"):
            Ring(4096, group=bad)
