"""Per-worker "what am I running" slots in shared memory.

Each worker writes, before it starts a task, the task id and the start time into its slot.  The
parent reads the slots (never writes them while the worker lives) to decide, when a worker dies,
which of the tasks it had been sent was running (it fails) and which it never started (they are
given to another worker), and to enforce ``task_timeout`` from the real start time.  A slot naming
a task whose result already arrived means "between tasks".

Layout: one 32-byte record per worker index: ``task_id: u64, start: f64 (time.monotonic, which is
system-wide on Linux), generation: u64, spare: u64``.  A record is written as task id last-but-one
and re-read by the parent until two reads agree, so a torn read is never acted on.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

_REC = struct.Struct("<QdQQ")
RECORD = _REC.size


class Slots:
    """``n`` slot records in a memfd mapping, shareable with any process of the same user."""

    def __init__(self, n: int, *, _attach: tuple[int, int] | None = None) -> None:
        self.n = n
        size = max(RECORD * n, mmap.PAGESIZE)
        if _attach is None:
            self._fd = os.memfd_create("multitask-slots", os.MFD_CLOEXEC)
            os.ftruncate(self._fd, size)
            self._owner_pid = os.getpid()
        else:
            owner_pid, owner_fd = _attach
            # A spawned/forkserver child re-opens the creator's memfd through /proc: nothing is
            # ever named in /dev/shm, so nothing can leak after a crash.
            self._fd = os.open(f"/proc/{owner_pid}/fd/{owner_fd}", os.O_RDWR | os.O_CLOEXEC)
            self._owner_pid = owner_pid
            self._owner_fd = owner_fd
        self._map = mmap.mmap(self._fd, size)
        self._view = memoryview(self._map)
        if _attach is None:
            self._owner_fd = self._fd

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach_slots, (self.n, self._owner_pid, self._owner_fd))

    def set(self, idx: int, task_id: int, start: float, item: int = 0) -> None:
        """Worker ``idx`` runs task ``task_id`` (its item ``item``, for grouped items) since
        ``start``."""
        _REC.pack_into(self._view, idx * RECORD, task_id, start, item, 0)

    def clear(self, idx: int) -> None:
        _REC.pack_into(self._view, idx * RECORD, 0, 0.0, 0, 0)

    def get(self, idx: int) -> tuple[int, float]:
        """(task_id, start) of worker ``idx``; (0, 0.0) when it runs nothing unflushed."""
        task_id, start, _ = self.get_item(idx)
        return task_id, start

    def get_item(self, idx: int) -> tuple[int, float, int]:
        """(task_id, start, item) of worker ``idx``."""
        off = idx * RECORD
        while True:
            a = _REC.unpack_from(self._view, off)
            b = _REC.unpack_from(self._view, off)
            if a == b:
                return a[0], a[1], a[2]

    def close(self) -> None:
        if self._map is None:
            return
        self._view.release()
        self._map.close()
        os.close(self._fd)
        self._map = None  # type: ignore[assignment]


def _attach_slots(n: int, owner_pid: int, owner_fd: int) -> Slots:
    return Slots(n, _attach=(owner_pid, owner_fd))
