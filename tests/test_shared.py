"""multitask.shared_array: one memory across processes, freed with its last user."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

import multitask

np = pytest.importorskip("numpy")


def _fill(arr, value):
    arr[:] = value


def _add_one(view):
    view += 1


def test_importing_multitask_does_not_import_numpy():
    code = "import sys, multitask, multitask.shared; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_is_a_zero_filled_ndarray_not_in_dev_shm():
    before = set(os.listdir("/dev/shm"))
    a = multitask.shared_array((4, 5), dtype=np.int32)
    assert isinstance(a, np.ndarray) and a.shape == (4, 5) and a.dtype == np.int32
    assert not a.any()
    assert set(os.listdir("/dev/shm")) == before  # a memfd: nothing named, nothing to leak
    a1 = multitask.shared_array(3)
    assert a1.dtype == np.float64 and a1.shape == (3,)


def test_child_writes_are_seen_by_parent(ctx):
    a = multitask.shared_array(1000)
    p = ctx.Process(target=_fill, args=(a, 7.5))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert (a == 7.5).all()


def test_views_are_shared_too(ctx):
    a = multitask.shared_array((10,), dtype=np.int64)
    p = ctx.Process(target=_add_one, args=(a[5:],))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert a.tolist() == [0] * 5 + [1] * 5


def test_pickled_by_reference_not_by_value():
    a = multitask.shared_array(1_000_000)
    data = pickle.dumps(a, protocol=5)
    assert len(data) < 1000
    b = pickle.loads(data)
    b[3] = 42.0
    assert a[3] == 42.0
    m = multitask.shared_array((3, 4))  # the sender must still hold it while it is unpickled
    t = pickle.loads(pickle.dumps(m[:, 1]))
    t[2] = 5.0
    assert t.shape == (3,) and m[2, 1] == 5.0


def test_through_a_queue(ctx):
    a = multitask.shared_array(10)
    q = multitask.Queue()
    q.put(a)
    b = q.get()
    b[0] = 1.0
    assert a[0] == 1.0
    q.close()


def test_derived_arrays_are_ordinary():
    a = multitask.shared_array(5)
    b = a + 1
    assert type(b) is np.ndarray
    c = pickle.loads(pickle.dumps(b))
    c[0] = 9
    assert a[0] == 0


@pytest.mark.parametrize("shape, dtype, exc", [
    ((-1,), float, ValueError),
    ("x", float, TypeError),
    ((2.5,), float, TypeError),
    ((2,), object, TypeError),
    ((2,), "not-a-dtype", TypeError),
])
def test_bad_arguments(shape, dtype, exc):
    with pytest.raises(exc):
        multitask.shared_array(shape, dtype)


def test_memory_freed_with_last_array():
    a = multitask.shared_array(100)
    view = a[10:]
    fds_with = len(os.listdir("/proc/self/fd"))
    del a
    assert len(os.listdir("/proc/self/fd")) == fds_with  # the view keeps it alive
    view[0] = 1
    del view
    assert len(os.listdir("/proc/self/fd")) < fds_with  # closed with the last array


def _memfd_maps(_=None):
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "/memfd:" in line)


def _sum_and_keep_nothing(arr):
    return float(arr.sum())


def test_pool_worker_unmaps_a_task_argument_after_sending_its_result(ctx):
    # The worker drops a task's arguments before its result goes, but unmaps a shared_array
    # segment only after (unmapping 100 MB takes milliseconds): nothing accumulates.
    with ctx.Pool(1) as pool:
        idle = pool.apply(_memfd_maps)
        for i in range(20):
            a = multitask.shared_array(1 << 16)
            a[:] = i
            assert pool.apply(_sum_and_keep_nothing, (a,)) == float(i << 16)
            del a
        assert pool.apply(_memfd_maps) == idle
        assert [pool.apply(_sum_and_keep_nothing, (v,)) for v in
                (multitask.shared_array(8) + 1, multitask.shared_array(8)[2:])] == [8.0, 0.0]
        assert pool.apply(_memfd_maps) == idle


def test_a_process_forked_from_a_worker_does_not_park_segments():
    from multitask import shared

    assert shared._deferred is None
    parked = shared.defer_releases()
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"1" if shared._deferred is None else b"0")
            os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"1"
        os.close(r)
        os.waitpid(pid, 0)
        assert shared._deferred is parked
    finally:
        shared.release_deferred()
        shared._stop_deferring()
