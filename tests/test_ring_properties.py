"""Property tests: the ring behaves like a FIFO model (collections.deque) under any interleaving.

Operations are put/put_many/get/get_many with timeout=0 (never blocking) and message sizes from 0
bytes to several times the ring size, so inline records, wrap-around and spilled messages mix.
"""

from __future__ import annotations

import os
from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multitask._core._ring import Ring

CAPACITIES = st.sampled_from([256, 512, 1024])
SIZES = st.one_of(st.integers(0, 64), st.integers(0, 4 * 1024))

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), SIZES),
        st.tuples(st.just("put_many"), st.lists(SIZES, min_size=0, max_size=6)),
        st.tuples(st.just("get"), st.just(0)),
        st.tuples(st.just("get_many"), st.integers(1, 8)),
    ),
    max_size=60,
)


def _payload(counter: int, size: int) -> bytes:
    # distinct, recognisable content: a torn or misordered message cannot compare equal
    seed = counter.to_bytes(4, "little")
    return (seed * (size // 4 + 1))[:size]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=CAPACITIES, maxitems=st.sampled_from([0, 0, 3, 7]), ops=OPS)
def test_ring_matches_fifo_model(capacity, maxitems, ops):
    ring = Ring(capacity, maxitems)
    token = ring.token
    model: deque[bytes] = deque()
    counter = 0
    try:
        for op, arg in ops:
            if op == "put":
                data = _payload(counter, arg)
                counter += 1
                ok = ring.put(data, timeout=0)
                if ok:
                    model.append(data)
                else:
                    # refusing a put is only allowed when something is in the way
                    assert len(model) > 0
                    if maxitems:
                        assert len(model) >= maxitems or ring.qsize() > 0
            elif op == "put_many":
                items = []
                for size in arg:
                    items.append(_payload(counter, size))
                    counter += 1
                n = ring.put_many(items, timeout=0)
                assert 0 <= n <= len(items)
                model.extend(items[:n])
                if n < len(items):
                    assert len(model) > 0
            elif op == "get":
                got = ring.get(timeout=0)
                if model:
                    assert got is not None and bytes(got) == model.popleft()
                else:
                    assert got is None
            else:
                many = ring.get_many(arg, timeout=0)
                expect = [model.popleft() for _ in range(min(arg, len(model)))]
                assert [bytes(g) for g in many] == expect
            assert ring.qsize() == len(model)
            assert ring.write_count - ring.read_count == len(model)
            if maxitems:
                assert len(model) <= maxitems
        # everything still in the ring comes out, in order
        rest: list[bytes] = []
        while True:
            chunk = ring.get_many(100, timeout=0)
            if not chunk:
                break
            rest.extend(bytes(c) for c in chunk)
        assert rest == list(model)
    finally:
        ring.close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"mt-{token}-")]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=30))
def test_close_with_pending_messages_releases_every_spill(sizes):
    ring = Ring(512)
    token = ring.token
    for i, size in enumerate(sizes):
        ring.put(_payload(i, size), timeout=0)
    ring.close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"mt-{token}-")]
