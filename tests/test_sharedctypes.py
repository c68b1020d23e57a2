"""Value, Array, RawValue, RawArray: shared memory for every start method, and clear errors."""

from __future__ import annotations

import ctypes

import pytest

import multitask


def _bump(v, arr, s):
    with v.get_lock():
        v.value += 1
    for i in range(len(arr)):
        arr[i] = arr[i] * 2
    s.value = b"child"


def test_value_and_array_shared_with_child(ctx):
    v = ctx.Value("i", 41)
    arr = ctx.Array("d", [1.0, 2.0, 3.0])
    s = ctx.Array("c", 10)
    p = ctx.Process(target=_bump, args=(v, arr, s))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    assert v.value == 42
    assert arr[:] == [2.0, 4.0, 6.0]
    assert s.value == b"child"


def test_value_api():
    v = multitask.Value("d", 1.5)
    assert v.value == 1.5
    lock = v.get_lock()
    assert hasattr(lock, "acquire")
    assert isinstance(v.get_obj(), ctypes.c_double)
    raw = multitask.RawValue(ctypes.c_int, 7)
    assert raw.value == 7
    unlocked = multitask.Value("i", 3, lock=False)
    assert unlocked.value == 3 and not hasattr(unlocked, "get_lock")
    shared_lock = multitask.RLock()
    with_lock = multitask.Value("i", 0, lock=shared_lock)
    assert with_lock.get_lock() is shared_lock


def test_array_api():
    a = multitask.Array("i", range(5))
    assert len(a) == 5
    assert a[1:3] == [1, 2]
    a[1:3] = [10, 20]
    # iterates by __getitem__, which typeshed's SynchronizedArray does not declare as __iter__
    assert list(a) == [0, 10, 20, 3, 4]  # type: ignore[call-overload]
    z = multitask.RawArray("h", 4)
    assert list(z) == [0, 0, 0, 0]
    c = multitask.Array("c", b"hello")
    assert c.value == b"hello" and c.raw == b"hello"
    c.value = b"hi"
    assert c.value == b"hi"
    assert c.raw[:3] == b"hi\x00"
    assert list(multitask.RawArray("b", 0)) == []


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: multitask.Value("zz", 1), TypeError, "valid typecodes are 'c'"),
        (lambda: multitask.Value(3, 1), TypeError, "typecode_or_type"),  # type: ignore[call-overload]
        (lambda: multitask.Value("i", "x"), TypeError, "typecode 'i'"),
        (lambda: multitask.RawValue("d", [1]), TypeError, "typecode 'd'"),
        (lambda: multitask.Array("i", -1), ValueError, ">= 0"),
        (lambda: multitask.Array("i", 2.5),  # type: ignore[call-overload]
         TypeError, "int size or a sequence"),
        (lambda: multitask.Array("i", ["a", "b"]), TypeError, "typecode 'i'"),
        (lambda: multitask.Array("q", True), TypeError, "bool"),
        (lambda: multitask.Array("zz", 3), TypeError, "valid typecodes"),
        (lambda: multitask.Value("i", 1, lock="yes"),  # type: ignore[call-overload]
         TypeError, "lock must be"),
    ],
)
def test_bad_input_raises_at_the_call(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_value_cannot_travel_through_a_pipe():
    v = multitask.Value("i", 1)
    a, b = multitask.Pipe()
    with a, b, pytest.raises(RuntimeError, match="inheritance"):
        a.send(v)


def test_memory_released_with_the_object():
    import gc
    import os

    def memfds() -> set[str]:
        # Only the mappings' memfds: background threads (registry, reaper) may open other
        # descriptors for a moment while we look.
        out = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:"):
                    out.add(fd)
            except OSError:
                continue
        return out

    before = memfds()
    values = [multitask.Value("i", i) for i in range(20)]
    assert len(memfds() - before) >= 1
    assert sum(v.value for v in values) == sum(range(20))
    del values
    gc.collect()
    assert memfds() <= before
