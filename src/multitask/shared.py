"""``shared_array``: NumPy arrays in shared memory that stay shared when sent to other processes.

The memory is a **memfd** (``os.memfd_create``): it has no name in /dev/shm, and the kernel frees it
when the last process that maps it (or holds its fd) is done -- exit, crash or garbage collection
alike, so nothing can leak.  An array (or any view of it) pickled to another process -- a child
``Process`` of any start method, a Pool task argument or result, a Queue item -- arrives as a view
of the *same* memory: the receiver's writes are seen by the sender.  How it attaches: inherited
mapping (fork), the fd passed while spawning (spawn/forkserver), otherwise
``/proc/<pid>/fd/<fd>`` of the process that pickled it (which must still hold the array; it does
while the task that carries it is running).

The stdlib has no equivalent: ``multiprocessing.Array`` is a ctypes array (slow element access,
a copy per ``np.frombuffer``-less use) and ``shared_memory.SharedMemory`` leaks its name when a
process dies before ``unlink`` (gh-82300).

NumPy is imported only when :func:`shared_array` is first called.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

__all__ = ["shared_array"]

_array_class: Any = None

#: A list in a Pool worker (see :func:`defer_releases`): mappings of segments dropped while a
#: task finishes, unmapped by :func:`release_deferred` once its result is sent.
_deferred: list[tuple[mmap.mmap, int]] | None = None


class _Segment:
    """One memfd mapping; its fd stays open (for /proc attach) until the mapping is collected."""

    __slots__ = ("__weakref__", "address", "fd", "mm", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.mm = mmap.mmap(fd, max(size, 1), flags=mmap.MAP_SHARED,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        import ctypes

        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))

    def __del__(self) -> None:
        if _deferred is not None:
            # Unmapping takes ~4 ms per 100 MB of touched pages: not before the result.
            _deferred.append((self.mm, self.fd))
            return
        try:
            os.close(self.fd)
        except OSError:
            pass

    def __reduce__(self) -> Any:
        from multiprocessing import context, reduction

        if context.get_spawning_popen() is not None:
            return (_attach_segment, (reduction.DupFd(self.fd), None, None, self.size))
        return (_attach_segment, (None, os.getpid(), self.fd, self.size))


def defer_releases() -> list[tuple[mmap.mmap, int]]:
    """From now on (a Pool worker), keep dropped segments mapped until
    :func:`release_deferred`: the worker drops a task's arguments before it sends the result
    (see backends/_worker.py), and the result need not wait for the unmapping.  Returns the
    list of parked segments (empty when there is nothing to release)."""
    global _deferred
    _deferred = []
    return _deferred


def _stop_deferring() -> None:
    # A process forked by a task is not a Pool worker: nothing would release what it parks.
    global _deferred
    _deferred = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_stop_deferring)


def release_deferred() -> None:
    """Unmap and close the segments dropped since the last call.  Never raises."""
    pending = _deferred
    while pending:
        mm, fd = pending.pop()
        try:
            mm.close()
        except BufferError:
            pass   # a view of it is still alive: unmapped when that goes
        try:
            os.close(fd)
        except OSError:
            pass


def _attach_segment(dupfd: Any, pid: int | None, fd: int | None, size: int) -> _Segment:
    if dupfd is not None:
        myfd = dupfd.detach()
    else:
        try:
            myfd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot attach shared array: process {pid} that sent it has "
                          f"exited or released it ({exc.strerror})") from exc
    return _Segment(myfd, size)


def _rebuild(seg: _Segment, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
             dtype: Any) -> Any:
    import numpy as np

    cls = _get_class()
    arr = np.ndarray(shape, dtype=dtype, buffer=seg.mm, offset=offset, strides=strides)
    out = arr.view(cls)
    out._mt_seg = seg
    return out


def _get_class() -> Any:
    global _array_class
    if _array_class is not None:
        return _array_class
    import numpy as np

    class SharedNDArray(np.ndarray):
        """An ndarray whose memory is shared: pickling sends a reference, not the data.

        Views and slices are shared too.  Arrays computed from it (``a + 1``) are ordinary memory:
        they pickle by value.
        """

        _mt_seg: _Segment | None

        def __array_finalize__(self, obj: Any) -> None:
            self._mt_seg = getattr(obj, "_mt_seg", None)

        def _in_segment(self) -> bool:
            seg = self._mt_seg
            if seg is None:
                return False
            start = self.__array_interface__["data"][0]
            return bool(seg.address <= start < seg.address + max(seg.size, 1))

        def __reduce_ex__(self, protocol: Any) -> Any:
            # ndarray.__reduce_ex__ would send the data (out-of-band with protocol 5); send a
            # reference to the shared memory instead when this array lives in it.
            if not self._in_segment():
                return np.asarray(self).__reduce_ex__(protocol)
            seg = self._mt_seg
            assert seg is not None
            offset = self.__array_interface__["data"][0] - seg.address
            return (_rebuild, (seg, offset, self.shape, self.strides, self.dtype))

        def __reduce__(self) -> Any:
            return self.__reduce_ex__(2)

        def __array_wrap__(self, obj: Any, context: Any = None, return_scalar: bool = False
                           ) -> Any:
            # results of ufuncs are new memory: hand them back as plain ndarrays
            out = np.ndarray.__array_wrap__(self, obj, context)
            if isinstance(out, SharedNDArray) and not out._in_segment():
                out = out.view(np.ndarray)
            if return_scalar and isinstance(out, np.ndarray) and out.ndim == 0:
                return out[()]
            return out

    _array_class = SharedNDArray
    return SharedNDArray


def shared_array(shape: int | tuple[int, ...], dtype: Any = float) -> Any:
    """Return a zero-filled ``numpy.ndarray`` of ``shape``/``dtype`` backed by shared memory.

    Passed to a child ``Process`` or as a Pool task argument it is the *same* memory in the
    receiver.  Freed when the last process using it lets go (also after crashes).  Does not block.
    Raises ImportError without NumPy, TypeError/ValueError for a bad shape or dtype, OSError if
    the memory cannot be created.  Not in the stdlib.
    """
    import numpy as np

    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, tuple) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape):
        raise TypeError(f"shape must be an int or a tuple of ints, not {shape!r}")
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimensions are not allowed: {shape!r}")
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise TypeError("a shared array cannot hold Python objects (dtype=object)")
    size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    fd = os.memfd_create("mt-array", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(size, 1))
        seg = _Segment(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return _rebuild(seg, 0, tuple(int(n) for n in shape),
                    _c_strides(shape, dt.itemsize), dt)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(int(n), 1)
    return tuple(reversed(strides))
