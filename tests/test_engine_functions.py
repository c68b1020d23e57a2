"""multitask._engine.functions: the function cache every pickling backend shares."""

from __future__ import annotations

import pickle

import pytest

from multitask._engine.functions import FunctionCache


def _fns(n):
    return [(lambda k: lambda x: x + k)(i) for i in range(n)]


def test_one_serialization_and_one_id_per_function():
    calls = []

    def dumps(fn):
        calls.append(fn)
        return b"blob"

    cache = FunctionCache(dumps, limit=4)
    f, g = _fns(2)
    first = cache.entry(f)
    assert cache.entry(f) == (first[0], b"blob", [])
    second = cache.entry(g)
    assert second[0] != first[0]
    assert calls == [f, g]


def test_least_recently_used_is_evicted_and_reported():
    cache = FunctionCache(lambda fn: b"x", limit=2)
    a, b, c = _fns(3)
    fa = cache.entry(a)[0]
    fb = cache.entry(b)[0]
    cache.entry(a)                        # a is now the most recent
    fc, _, evicted = cache.entry(c)
    assert evicted == [(id(b), fb)]
    assert len(cache) == 2
    assert cache.entry(a)[0] == fa        # still cached
    assert cache.entry(b)[0] not in (fa, fb, fc)   # came back under a new id


def test_a_function_that_cannot_be_serialized_is_not_cached():
    def dumps(fn):
        raise pickle.PicklingError("no")

    cache = FunctionCache(dumps)
    with pytest.raises(pickle.PicklingError):
        cache.entry(len)
    assert len(cache) == 0


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        FunctionCache(lambda fn: b"", limit=0)


def test_prime_serializes_outside_and_entry_takes_it():
    calls = []

    def dumps(fn):
        calls.append(fn)
        return b"primed"

    cache = FunctionCache(dumps, limit=2)
    f, g, h, i = _fns(4)
    cache.prime(f)
    cache.prime(f)                      # once
    assert calls == [f]
    assert cache.entry(f)[1] == b"primed" and calls == [f]   # entry did not serialize again
    cache.prime(f)                      # cached: nothing to do
    assert calls == [f]
    cache.prime(g)
    cache.prime(h)
    cache.prime(i)                      # at most `limit` wait: i is not primed
    assert calls == [f, g, h]


def test_prime_never_raises():
    def dumps(fn):
        raise pickle.PicklingError("no")

    cache = FunctionCache(dumps)
    cache.prime(len)                    # the error comes at dispatch, from entry()
    with pytest.raises(pickle.PicklingError):
        cache.entry(len)


class _Holder:
    def method(self, x):
        return x


def test_a_bound_method_does_not_keep_its_object_alive_and_its_entry_goes_with_it():
    import gc
    import weakref

    cache = FunctionCache(lambda fn: b"blob", limit=8)
    obj = _Holder()
    alive = weakref.ref(obj)
    bound = obj.method
    fid, _, _ = cache.entry(bound)
    assert cache.entry(bound)[0] == fid          # cached while it lives
    del obj, bound
    gc.collect()
    assert alive() is None                       # the cache did not keep the instance
    other = _Holder().method
    _, _, evicted = cache.entry(other)           # the dead entry is dropped first
    assert [old for _, old in evicted] == [fid]  # and the workers are told to forget it
    assert len(cache) == 1


def test_plain_functions_stay_held():
    cache = FunctionCache(lambda fn: b"blob", limit=8)
    f = _fns(1)[0]
    fid = cache.entry(f)[0]
    assert cache.entry(f) == (fid, b"blob", [])
