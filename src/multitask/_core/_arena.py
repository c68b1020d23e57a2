"""Reused shared-memory segments for large out-of-band buffers: the arena of a Pool.

A fresh shared-memory segment costs more than the copy into it: tmpfs allocates (and the
receiver maps) every 4 KiB page again, ~40 ms for 100 MB here where the copy itself takes ~10 ms.
An :class:`Arena` keeps the segments of large messages after their receiver is done with them and
fills them again for the next message, so a pool that sends a large array per task pays for the
pages once.

Data flow of one large task argument (``_serialize.dumps(obj, prefix, arena)``)::

    parent (owner)                              worker (receiver)
    take(n): a free cached segment, state       loads(): the segment's mapping, cached by
      0 -> 1 (or a new one, written with          name (mapped once per worker, never
      pwrite, state 1)                            unlinked by the receiver)
    copy the buffers in (GIL released)          Lease over the mapping -> the arrays view it
    message: tag 0x03 + segment name + offsets    (zero copy)
                                                the arrays die -> the Lease dies -> state 1 -> 0
    next take(n) finds it free: a memcpy into
      pages that exist and are mapped already

The state word (u32 at offset 0 of the segment, see ``_ringbuf.c``): 0 free, 1 busy, 2 retired.
Only the owner moves 0 -> 1 and 0 -> 2; only a receiver's Lease (or :func:`release` of a message
nobody will read) moves 1 -> 0.  No channel back is needed, and a receiver that dies holding a
segment leaves it busy: the owner never reuses it and unlinks it at :meth:`Arena.close`.

Ownership and clean-up: segment names carry the owner's ring prefix (``mt-<token>-<pid>-<n>``),
so everything the ring-based clean-up does for other segments holds for them too: registered
with the ring's home resource tracker (a crash of every holder), swept by the ring's last close
and, for a forked pool, by its zygote after the parent died.  The owner unlinks them at
:meth:`Arena.close` (the pool's release) and when it trims its cache; a receiver drops its
mapping of a retired segment at its next arena message, and holds at most
:data:`RECEIVER_CACHE` mappings.

Differences from sending a fresh segment per message: up to ``max_bytes`` of shared memory stay
allocated while the pool lives (:data:`ARENA_MAX_BYTES`), and the receiver's arrays are views of
memory the owner will write again -- only after they are all gone, which the Lease guarantees.
"""

from __future__ import annotations

import collections
import mmap
import os
import threading

from multitask._core._ring import create_segment, new_segment_name, unlink_segment
from multitask._core._ringbuf import Lease, _copy_into, _state

__all__ = ["ARENA_MAX_BYTES", "ARENA_MIN", "HEADER", "Arena", "lease", "release"]

#: Bytes before the first buffer of an arena segment (the state word, padded to a cache line).
HEADER = 64
#: Messages whose out-of-band buffers total less than this use a fresh segment (the arena's
#: bookkeeping and a receiver's cached mapping only pay off for large data).
ARENA_MIN = 1 << 20
#: Default cap of the bytes an Arena keeps allocated: 512 MiB, or 1/8 of the machine's memory.
ARENA_MAX_BYTES = min(512 << 20, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8)
#: Mappings of arena segments a receiving process keeps (least recently used dropped first).
RECEIVER_CACHE = 8

FREE, BUSY, RETIRED = 0, 1, 2
_GRAIN = 1 << 20   # segment capacities are whole MiB, so similar sizes share segments


class _Segment:
    __slots__ = ("capacity", "mm", "name", "ready")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.mm: mmap.mmap | None = None     # the owner's mapping, once ``ready``
        self.ready = threading.Event()

    def map(self) -> None:
        """Map (populated) in the owner, off the caller's path: run by a short-lived thread
        after the first message was written with pwrite.  Sets ``ready`` whatever happens."""
        try:
            self.mm = _open(self.name, populate=True)
        except OSError:
            self.mm = None   # gone already (closed), or no memory for page tables: never reused
        finally:
            self.ready.set()

    def state(self) -> int | None:
        """The state word, or None if the owner has no mapping (it never will)."""
        self.ready.wait(_MAP_WAIT)
        mm = self.mm
        return None if mm is None else _state(mm, 0, -1, 0)


def _copy(mm: mmap.mmap, off: int, raw: memoryview) -> None:
    """Copy ``raw`` into ``mm`` at ``off``; a large one in parts, one per thread.

    One thread copies ~7 GB/s here; two, ~12 GB/s (one core alone does not saturate the memory
    bus), and the workers are waiting for this copy anyway.  (Writing a *new* segment with
    pwrite does not scale so: the kernel's page allocation is the bottleneck.)"""
    n = raw.nbytes
    parts = min(_COPY_THREADS, n // _COPY_PART_MIN)
    if parts <= 1:
        _copy_into(mm, off, raw)
        return
    step = (n // parts + 4095) // 4096 * 4096
    errors: list[BaseException] = []

    def part(lo: int) -> None:
        try:
            _copy_into(mm, off + lo, raw[lo:lo + step])
        except BaseException as exc:  # re-raised by the caller
            errors.append(exc)

    threads = [threading.Thread(target=part, args=(lo,), name="multitask-arena-copy")
               for lo in range(step, n, step)]
    for t in threads:
        t.start()
    part(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


_COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
_COPY_PART_MIN = 16 << 20   # below this per thread, starting a thread costs more than it saves
_MAP_WAIT = 10.0    # bound on waiting for a segment's background mapping (~10 ms per 100 MB)
_BUSY_WORD = BUSY.to_bytes(4, "little")


class Arena:
    """The large-message segments one process (a Pool's parent) sends through one ring prefix.

    Thread-safe; never blocks beyond the copy, a segment's creation and, right after a
    segment was created, its background mapping.  Used only in the process that created it (a
    forked child's copy hands out nothing and unlinks nothing).
    """

    def __init__(self, prefix: str, max_bytes: int = ARENA_MAX_BYTES) -> None:
        self.prefix = prefix
        self.max_bytes = max_bytes
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # least recently used first; name -> segment
        self._segments: collections.OrderedDict[str, _Segment] = collections.OrderedDict()
        self._bytes = 0
        self._closed = False
        self.reused = 0        # messages written into a segment that already existed
        self.created = 0       # segments created

    def write(self, raws: list[memoryview], offsets: list[int], size: int) -> str | None:
        """Put ``raws`` at ``HEADER + offsets`` of a busy segment of at least ``HEADER + size``
        bytes and return its name, or None when the arena cannot take it (too large for the
        cap, every cached segment busy, closed, another process's arena): the caller then uses a
        fresh segment.  Raises OSError if a segment cannot be created."""
        taken = self._take(HEADER + size)
        if taken is None:
            return None
        seg, fresh = taken
        if fresh:
            # A new segment is written with pwrite, which allocates tmpfs pages without a page
            # fault each (~40 ms per 100 MB instead of ~75 ms through a mapping); the owner's
            # mapping, needed only for the next message, is populated by a thread meanwhile.
            try:
                create_segment(seg.name, [_BUSY_WORD, *raws], size=seg.capacity,
                               offsets=[0, *(HEADER + o for o in offsets)])
                threading.Thread(target=seg.map, name="multitask-arena-map", daemon=True).start()
            except BaseException:
                with self._lock:
                    if self._segments.get(seg.name) is seg:
                        seg.ready.set()
                        self._drop_locked(seg)
                raise
            return seg.name
        assert seg.mm is not None
        try:
            for raw, off in zip(raws, offsets, strict=True):
                _copy(seg.mm, HEADER + off, raw)
        except BaseException:
            _state(seg.mm, 0, BUSY, FREE)
            raise
        return seg.name

    def _take(self, need: int) -> tuple[_Segment, bool] | None:
        """A free segment made busy (False: reused), or a new one reserved (True), or None."""
        if os.getpid() != self._pid:
            return None   # (checked before the lock: a fork may have copied it held)
        with self._lock:
            if self._closed:
                return None
            best: _Segment | None = None
            for seg in self._segments.values():
                if need <= seg.capacity <= 2 * need + _GRAIN and \
                        (best is None or seg.capacity < best.capacity) and \
                        seg.state() == FREE:
                    best = seg
            if best is not None:
                assert best.mm is not None
                # only the owner leaves FREE, and it holds the lock: this cannot fail
                _state(best.mm, 0, FREE, BUSY)
                self._segments.move_to_end(best.name)
                self.reused += 1
                return best, False
            capacity = (need + _GRAIN - 1) // _GRAIN * _GRAIN
            if capacity > self.max_bytes:
                return None
            # make room: retire free segments (and unusable ones), least recently used first
            for seg in list(self._segments.values()):
                if self._bytes + capacity <= self.max_bytes:
                    break
                st = seg.state()
                if st is None or (st == FREE and _state(seg.mm, 0, FREE, RETIRED) == FREE):
                    self._drop_locked(seg)
            if self._bytes + capacity > self.max_bytes:
                return None   # the rest is busy (in flight, or still used by a receiver)
            seg = _Segment(new_segment_name(self.prefix), capacity)
            self._segments[seg.name] = seg
            self._bytes += capacity
            self.created += 1
            return seg, True

    def _drop_locked(self, seg: _Segment) -> None:
        del self._segments[seg.name]
        self._bytes -= seg.capacity
        unlink_segment(seg.name)
        seg.ready.wait(_MAP_WAIT)
        if seg.mm is not None:
            try:
                seg.mm.close()
            except BufferError:
                pass   # a copy into it is under way (close() racing a send): unmapped when done

    def close(self) -> None:
        """Retire and unlink every segment (receivers still using one keep their mapping).
        Idempotent; a no-op in a forked child."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for seg in list(self._segments.values()):
                # retired whatever its state: a receiver's Lease moves only busy -> free
                st = seg.state()
                if st is not None:
                    _state(seg.mm, 0, st, RETIRED)
                self._drop_locked(seg)

    def statistics(self) -> dict[str, int]:
        """``{"segments", "bytes", "busy", "created", "reused"}``."""
        with self._lock:
            busy = sum(s.state() == BUSY for s in self._segments.values())
            return {"segments": len(self._segments), "bytes": self._bytes, "busy": busy,
                    "created": self.created, "reused": self.reused}


# ---- the receiving side --------------------------------------------------------------------

_mapped: collections.OrderedDict[str, mmap.mmap] = collections.OrderedDict()
_mapped_lock = threading.Lock()


def _mapping(name: str) -> mmap.mmap:
    with _mapped_lock:
        # drop the mappings of segments their owner retired (it unlinked them; our mapping
        # would keep the memory alive)
        for n in [n for n, m in _mapped.items() if _state(m, 0, -1, 0) == RETIRED]:
            del _mapped[n]
        mm = _mapped.get(name)
        if mm is not None:
            _mapped.move_to_end(name)
            return mm
    mm = _open(name)
    with _mapped_lock:
        _mapped[name] = mm
        while len(_mapped) > RECEIVER_CACHE:
            _mapped.popitem(last=False)   # live Leases keep their own reference
    return mm


def _open(name: str, populate: bool = False) -> mmap.mmap:
    """Map segment ``name`` shared and writable, without unlinking it.  A receiver maps without
    MAP_POPULATE: its first read faults pages in 16 at a time (fault-around), cheaper than
    populating up front (~5 vs ~10 ms per 100 MB here).  FileNotFoundError if it is gone."""
    import _posixshmem

    fd = _posixshmem.shm_open(name, os.O_RDWR, 0o600)
    try:
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        return mmap.mmap(fd, os.fstat(fd).st_size, flags=flags)
    finally:
        os.close(fd)


def lease(name: str) -> memoryview:
    """A writable view of arena segment ``name`` whose last release frees the segment for its
    owner.  Raises FileNotFoundError if the segment is gone."""
    return memoryview(Lease(_mapping(name), 0))


def release(name: str) -> None:
    """Free arena segment ``name`` whose message will not be read (it was discarded, or its
    receiver died): busy -> free through a mapping of its own.  Never blocks."""
    try:
        mm = _open(name)
    except FileNotFoundError:
        return
    _state(mm, 0, BUSY, FREE)
    mm.close()


def _reset_after_fork() -> None:
    # A forked child drops its copies of the parent's mappings; the lock is new (another thread
    # may have held it at the fork).
    global _mapped_lock
    _mapped_lock = threading.Lock()
    _mapped.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
