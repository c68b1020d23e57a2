"""multitask._core._arena: reused shared-memory segments for large task arguments."""

from __future__ import annotations

import gc
import os
import pickle

import pytest

from multitask._core import _arena
from multitask._core._arena import ARENA_MIN, BUSY, FREE, RETIRED, Arena
from multitask._core._ringbuf import Lease, _copy_into, _state
from multitask._core._serialize import discard, dumps, loads

np = pytest.importorskip("numpy")

MIB = 1 << 20
PREFIX = "mt-arenatest-"


def _ours() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(PREFIX)}


@pytest.fixture(autouse=True)
def _forget_mappings():
    # This process receives arena messages here, as a worker would: its cached mappings (each
    # holding the fd mmap keeps) are process state, dropped before the fd/segment leak check.
    yield
    _arena._mapped.clear()
    gc.collect()


@pytest.fixture
def arena():
    a = Arena(PREFIX)
    yield a
    a.close()
    assert not _ours()


def _array(mib: float, value: float = 1.0):
    return np.full(int(mib * MIB) // 8, value)


# -- the C primitives ------------------------------------------------------------------------

def test_state_is_compare_and_swap():
    buf = bytearray(64)
    assert _state(buf, 0, -1, 0) == FREE            # a load
    assert _state(buf, 0, FREE, BUSY) == FREE       # swapped
    assert _state(buf, 0, FREE, RETIRED) == BUSY    # not swapped: the value found
    assert _state(buf, 0, -1, 0) == BUSY


@pytest.mark.parametrize("offset", [-4, 2, 61, 64])
def test_state_rejects_words_outside_or_misaligned(offset):
    with pytest.raises(ValueError, match="state word"):
        _state(bytearray(64), offset, -1, 0)


def test_copy_into_checks_bounds():
    dst = bytearray(8)
    _copy_into(dst, 4, b"abcd")
    assert dst == b"\0\0\0\0abcd"
    with pytest.raises(ValueError, match="does not fit"):
        _copy_into(dst, 5, b"abcd")
    with pytest.raises(ValueError, match="does not fit"):
        _copy_into(dst, -1, b"a")
    with pytest.raises(TypeError):
        _copy_into(b"readonly", 0, b"a")


def test_lease_frees_busy_word_when_last_view_goes():
    buf = bytearray(128)
    _state(buf, 0, FREE, BUSY)
    view = memoryview(Lease(buf, 0))
    part = view[64:72]
    del view
    assert _state(buf, 0, -1, 0) == BUSY     # a slice still holds the lease
    part[:] = b"12345678"
    del part
    gc.collect()
    assert _state(buf, 0, -1, 0) == FREE
    assert buf[64:72] == b"12345678"


def test_lease_leaves_retired_word_alone():
    buf = bytearray(64)
    _state(buf, 0, FREE, RETIRED)
    view = memoryview(Lease(buf, 0))
    del view
    assert _state(buf, 0, -1, 0) == RETIRED


def test_lease_needs_writable_buffer_and_valid_word():
    with pytest.raises(BufferError):
        Lease(b"readonly", 0)
    with pytest.raises(ValueError, match="state word"):
        Lease(bytearray(64), 62)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_copies_split_over_threads_copy_every_byte(monkeypatch, threads):
    monkeypatch.setattr(_arena, "_COPY_THREADS", threads)
    src = np.random.default_rng(threads).integers(0, 255, 50 * MIB + 12345, dtype=np.uint8)
    dst = bytearray(64 + src.nbytes + 7)
    _arena._copy(dst, 64, memoryview(src))  # type: ignore[arg-type]  # any writable buffer
    assert bytes(dst[64:64 + src.nbytes]) == src.tobytes()
    assert dst[:64] == bytes(64) and dst[-7:] == bytes(7)
    with pytest.raises(ValueError, match="does not fit"):
        _arena._copy(bytearray(src.nbytes), 64, memoryview(src))  # type: ignore[arg-type]


# -- through dumps/loads ---------------------------------------------------------------------

def test_large_message_goes_into_arena_and_segment_is_reused(arena):
    data = dumps(_array(2, 1.0), PREFIX, arena)
    assert data[0] == 0x03
    got = loads(data)
    assert got.sum() == 2 * MIB // 8
    assert arena.statistics()["busy"] == 1           # the array is alive
    del got
    assert arena.statistics()["busy"] == 0
    data = dumps(_array(2, 3.0), PREFIX, arena)
    got = loads(data)
    assert (got == 3.0).all()
    st = arena.statistics()
    assert (st["segments"], st["created"], st["reused"]) == (1, 1, 1)
    assert len(_ours()) == 1


def test_a_segment_in_use_is_never_written_again(arena):
    first = loads(dumps(_array(2, 1.0), PREFIX, arena))
    second = loads(dumps(_array(2, 2.0), PREFIX, arena))   # first still alive: a new segment
    assert arena.statistics()["segments"] == 2
    assert (first == 1.0).all() and (second == 2.0).all()
    first[0] = 99.0                                        # receivers may write their copy
    del first, second


def test_small_messages_do_not_use_the_arena(arena):
    data = dumps(np.zeros(ARENA_MIN // 8 - 64), PREFIX, arena)
    assert data[0] == 0x01
    assert loads(data).sum() == 0
    assert arena.statistics()["segments"] == 0


def test_readonly_buffers_stay_readonly(arena):
    a = _array(2)
    a.flags.writeable = False
    got = loads(dumps(a, PREFIX, arena))
    assert not got.flags.writeable
    assert (got == 1.0).all()


def test_several_buffers_in_one_message(arena):
    obj = {"x": _array(1, 1.0), "y": _array(1.5, 2.0), "z": pickle.PickleBuffer(b"q" * MIB)}
    data = dumps(obj, PREFIX, arena)
    assert data[0] == 0x03
    got = loads(data)
    assert (got["x"] == 1.0).all() and (got["y"] == 2.0).all()
    assert bytes(got["z"]) == b"q" * MIB
    x = got["x"]
    del got
    assert arena.statistics()["busy"] == 1     # one array of the message is enough to hold it
    del x
    assert arena.statistics()["busy"] == 0


def test_over_the_cap_falls_back_to_a_fresh_segment():
    arena = Arena(PREFIX, max_bytes=4 * MIB)
    try:
        big = dumps(_array(5), PREFIX, arena)
        assert big[0] == 0x01                  # larger than the cap
        held = loads(dumps(_array(2), PREFIX, arena))   # 3 MiB segment, busy
        other = dumps(_array(2), PREFIX, arena)         # no room next to it
        assert other[0] == 0x01
        assert (loads(big) == 1.0).all() and (loads(other) == 1.0).all()
        del held
    finally:
        arena.close()
    assert not _ours()


def test_free_segments_are_retired_to_make_room_and_receivers_forget_them():
    arena = Arena(PREFIX, max_bytes=8 * MIB)
    try:
        got = loads(dumps(_array(2), PREFIX, arena))     # 3 MiB
        (old,) = _ours()
        del got
        assert "/" + old in _arena._mapped                 # this process mapped it as receiver
        got = loads(dumps(_array(6), PREFIX, arena))     # 7 MiB: 3 + 7 > 8, the free one goes
        assert old not in _ours()
        assert "/" + old not in _arena._mapped             # dropped at the next arena message
        assert arena.statistics()["segments"] == 1
        del got
    finally:
        arena.close()


def test_discard_frees_an_unread_message(arena):
    data = dumps(_array(2), PREFIX, arena)
    assert arena.statistics()["busy"] == 1
    discard(data)
    assert arena.statistics()["busy"] == 0
    assert dumps(_array(2), PREFIX, arena)[0] == 0x03
    assert arena.statistics()["reused"] == 1


def test_close_unlinks_everything_and_live_arrays_stay_readable():
    arena = Arena(PREFIX)
    got = loads(dumps(_array(2, 5.0), PREFIX, arena))
    unread = dumps(_array(2, 6.0), PREFIX, arena)
    arena.close()
    assert not _ours()
    assert (got == 5.0).all()                    # the mapping outlives the name
    fresh = dumps(_array(2), PREFIX, arena)
    assert fresh[0] == 0x01                      # closed: fresh segments
    discard(fresh)
    with pytest.raises(Exception, match="gone"):
        loads(unread)
    del got
    arena.close()                                # idempotent


def test_a_forked_child_does_not_use_its_parents_arena(arena):
    loads(dumps(_array(2), PREFIX, arena))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            data = dumps(_array(2), PREFIX, arena)
            arena.close()                       # a no-op here: the parent's segments stay
            if data[0] == 0x01 and not _arena._mapped:
                discard(data)
                code = 0
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    assert os.read(r, 1) == b"\0"
    os.close(r)
    os.waitpid(pid, 0)
    assert arena.statistics()["segments"] == 1
    assert len(_ours()) == 1


# -- through a Pool (every start method) -----------------------------------------------------

N = 2 * MIB // 8
_kept: list = []


def total(a):
    return float(a.sum())


def keep(a):
    _kept.append(a)
    return float(a.sum())


def kept_total():
    return float(sum(a.sum() for a in _kept))


def scribble(a):
    a[:] = -1.0
    return float(a.sum())


def die(a):
    os._exit(9)


def test_pool_reuses_one_segment_for_a_large_argument_per_task(ctx):
    with ctx.Pool(2) as pool:
        for i in range(4):
            assert pool.apply(total, (np.full(N, float(i)),)) == N * i
        st = pool._backend._arena.statistics()
    # the worker drops its arguments before it sends the result: free again for the next task
    assert (st["created"], st["reused"]) == (1, 3)


def test_pool_never_overwrites_an_argument_a_worker_kept(ctx):
    with ctx.Pool(1) as pool:
        assert pool.apply(keep, (np.full(N, 1.0),)) == N
        assert pool.apply(total, (np.full(N, 2.0),)) == 2 * N
        assert pool.apply(kept_total) == N                    # still all ones
        assert pool._backend._arena.statistics()["created"] == 2


def test_pool_worker_writes_to_an_argument_stay_in_the_worker(ctx):
    a = np.full(N, 3.0)
    with ctx.Pool(1) as pool:
        assert pool.apply(scribble, (a,)) == -N
        assert (a == 3.0).all()
        assert pool.apply(total, (a,)) == 3 * N               # the segment was written afresh


def test_pool_segment_of_a_worker_that_died_is_reused(ctx):
    import multitask

    with ctx.Pool(1) as pool:
        with pytest.raises(multitask.WorkerDiedError):
            pool.apply(die, (np.full(N, 1.0),))
        assert pool.apply(total, (np.full(N, 4.0),)) == 4 * N
        st = pool._backend._arena.statistics()
    assert (st["created"], st["reused"]) == (1, 1)


def test_pool_map_over_large_arrays(ctx):
    arrays = [np.full(N, float(i)) for i in range(12)]
    with ctx.Pool(2) as pool:
        assert pool.map(total, arrays, chunksize=1) == [N * i for i in range(12)]
        assert sorted(pool.imap_unordered(total, arrays)) == [N * i for i in range(12)]
        st = pool._backend._arena.statistics()
    assert st["reused"] > 0 and st["busy"] == 0
