"""multitask._core._serialize: pickle-5 with out-of-band buffers in shared memory."""

from __future__ import annotations

import os
import pickle
import struct
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multitask._core._errors import SerializationError
from multitask._core._serialize import OOB_THRESHOLD, TYPED_MIN, discard, dumps, loads

np = pytest.importorskip("numpy")


def _mt() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("mt-")}


@pytest.mark.parametrize("obj", [0, -1, 2**80, "text", b"bytes", [1, (2, 3)], {"a": None},
                                 {1, 2}, 1.5, None])
def test_roundtrip_plain(obj):
    data = dumps(obj)
    assert data[0] == 0x80  # plain protocol-5 pickle, in-band
    assert loads(data) == obj


def test_small_arrays_stay_in_band():
    a = np.arange(100)
    before = _mt()
    data = dumps(a)
    assert _mt() == before
    assert (loads(data) == a).all()


def test_large_array_goes_through_one_segment_zero_copy():
    a = np.arange(1_000_000, dtype=np.float64)
    b = np.ones((500, 300), dtype=np.int32)[:, ::1]
    before = _mt()
    data = dumps({"a": a, "b": b, "small": np.arange(3)})
    assert len(data) < 4096  # the arrays are not in the message
    assert len(_mt() - before) == 1
    out = loads(data)
    assert _mt() == before  # unlinked right after mapping
    assert (out["a"] == a).all() and (out["b"] == b).all()
    assert out["a"].flags.writeable
    # zero copy: the array's memory is the mapping, not a bytes copy of the message
    assert not out["a"].flags.owndata
    out["a"][0] = 123.0  # writable private mapping of an unlinked segment
    assert a[0] == 0


def test_readonly_buffers_stay_readonly():
    ro = np.frombuffer(b"x" * (OOB_THRESHOLD + 10), dtype=np.uint8)
    out = loads(dumps(ro))
    assert not out.flags.writeable
    assert bytes(out[:3]) == b"xxx"


def test_pickle_buffer_out_of_band():
    buf = bytearray(os.urandom(OOB_THRESHOLD * 2))
    out = loads(dumps(pickle.PickleBuffer(buf)))
    assert bytes(out) == bytes(buf)


def test_mapping_outlives_message_and_is_freed_with_arrays():
    data = dumps(np.full(200_000, 7, dtype=np.int64))
    arr = loads(data)
    del data
    assert int(arr.sum()) == 7 * 200_000


def test_discard_releases_segment():
    before = _mt()
    data = dumps(np.zeros(100_000))
    assert len(_mt() - before) == 1
    discard(data)
    assert _mt() == before
    discard(dumps(5))  # in-band: nothing to do
    with pytest.raises(SerializationError, match="gone"):
        loads(data)


def test_prefix_names_the_segment():
    data = dumps(np.zeros(100_000), prefix="mt-testpfx-")
    try:
        assert any(n.startswith("mt-testpfx-") for n in _mt())
    finally:
        discard(data)


def test_lambdas_closures_and_main_local_objects_via_cloudpickle():
    k = 10
    assert loads(dumps(lambda x: x + k))(1) == 11

    def outer():
        class Local:
            def __init__(self):
                self.v = 3
        return Local()

    assert loads(dumps(outer())).v == 3


def test_unpicklable_raises_serialization_error_describing_object():
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="lock") as info:
        dumps({"x": lock})
    assert isinstance(info.value, pickle.PicklingError)
    assert info.value.__cause__ is not None


def test_unpicklable_does_not_leak_segments():
    before = _mt()
    with pytest.raises(SerializationError):
        dumps([np.zeros(100_000), threading.Lock()])
    assert _mt() == before


def test_loads_garbage_raises_serialization_error():
    with pytest.raises(SerializationError):
        loads(b"\x80\x05garbage")
    with pytest.raises(SerializationError):
        loads(b"")


# ---- typed lists: a list of ints (64-bit) or floats travels as a native array ----------------

_I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _same(a: list, b: list) -> bool:
    """Equal item by item, with the same exact types (and the same bits for floats)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y):
            return False
        if type(x) is float:
            if struct.pack("<d", x) != struct.pack("<d", y):
                return False
        elif x != y:
            return False
    return True


@given(st.lists(_I64, min_size=TYPED_MIN, max_size=300))
def test_int_lists_travel_typed_and_come_back_equal(xs):
    data = dumps(xs)
    assert data[0] == 0x02 and data[1:2] == b"q"
    assert len(data) == 8 + 8 * len(xs)
    assert _same(loads(data), xs)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=TYPED_MIN,
                max_size=300))
def test_float_lists_travel_typed_bit_for_bit(xs):
    data = dumps(xs)
    assert data[1:2] == b"d"
    assert _same(loads(data), xs)


@pytest.mark.parametrize("xs", [
    [1] * (TYPED_MIN - 1),                      # too short to bother
    [1] * TYPED_MIN + [2**63],                  # one int beyond 64 bits, at the end
    [-(2**63) - 1] + [1] * TYPED_MIN,           # ... or at the start
    [1] * TYPED_MIN + [True],                   # a bool is not an int here
    [True] * TYPED_MIN,
    [1] * TYPED_MIN + [1.0],                    # mixed
    [1.0] * TYPED_MIN + [1],
    [1.0] * TYPED_MIN + [None],
    [1] * TYPED_MIN + ["1"],
], ids=lambda xs: f"{type(xs[0]).__name__}x{len(xs)}-{type(xs[-1]).__name__}")
def test_other_lists_are_pickled_and_keep_their_types(xs):
    data = dumps(xs)
    assert data[0] == 0x80            # the plain pickle
    assert _same(loads(data), xs)


def test_int_subclasses_and_numpy_scalars_are_not_flattened():
    np = pytest.importorskip("numpy")

    class MyInt(int):
        pass

    for xs in ([MyInt(3)] * TYPED_MIN, [1] * TYPED_MIN + [MyInt(2)],
               [np.int64(5)] * TYPED_MIN, [np.float64(0.5)] * TYPED_MIN):
        out = loads(dumps(xs))
        assert [type(x) for x in out] == [type(x) for x in xs]
        assert out == xs


def test_typed_list_inside_a_container_is_plain_pickle():
    # only a top-level list is typed; nested ones are ordinary pickle, as before
    obj = {"a": list(range(100))}
    assert dumps(obj)[0] == 0x80
    assert loads(dumps(obj)) == obj


@pytest.mark.parametrize("size", [0, 100, 65535, 65536, 65537, 1 << 20, (3 << 20) + 5])
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_bytes_are_built_as_the_exact_pickle(kind, size):
    # dumps assembles big bytes/bytearray pickles itself (one allocation): the result must be
    # what pickle writes, and load back as an equal object of the same type
    obj = kind(os.urandom(size))
    data = dumps(obj)
    assert data == pickle.dumps(obj, 5)
    back = loads(data)
    assert type(back) is kind and back == obj
