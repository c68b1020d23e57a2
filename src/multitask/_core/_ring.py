"""The shared-memory ring buffer every multitask transport rides on.

Data flow of one message::

    put(data)                                   get()
      |                                           ^
      |-- len(data) <= spill_threshold --------   |-- record is inline: copy it out -> bytes
      |   copy [len|flags|payload] into the       |   (one memcpy, under the ring's mutex)
      |   ring's free space, then commit          |
      |                                           |
      '-- larger (> capacity/4) ---------------   '-- record is a spill reference:
          write data to its own segment               map "/mt-<token>-<pid>-<n>", unlink it at
          "/mt-<token>-<pid>-<n>" (registered          once, return a read-only memoryview of
          with the resource tracker), put a           the mapping (no copy; the mapping lives
          small reference record instead              as long as the memoryview)

The ring itself lives in a **memfd** (``os.memfd_create``): it never appears in /dev/shm, and the
kernel frees it when the last process holding it exits or closes it, crash or not.  Other
processes get it by inheritance (fork), by fd passing while a child is being spawned
(``multiprocessing.reduction.DupFd``), or, when a Ring is unpickled anywhere else (e.g. as a Pool
task argument), by opening ``/proc/<pid>/fd/<fd>`` of the process that pickled it -- which must
still be running and hold the ring open (otherwise unpickling raises :class:`RingAttachError`).
There is no portable (non-memfd) fallback yet: this module is Linux only.

Crash safety is in the C half (``_ringbuf.c``): a robust process-shared mutex, a journalled
single-store commit (a process SIGKILLed at any instant never leaves a torn message visible and
never wedges the others) and futex wake-ups issued only when someone waits.

Spill segments (and the out-of-band segments of ``_serialize.dumps(obj, ring.spill_prefix)``) are
the only names in /dev/shm, ``mt-<token>-<pid>-<n>``.  Once its reference is committed a segment
belongs to the *ring*, not to the process that made it; it is released at exactly one of:

* the ``get`` that takes its message (the consumer unlinks the name right after mapping it; the
  data lives on in the consumer's mapping);
* the ``close()`` of the last process holding the ring (no other live process attached, none
  pickled/forked but not yet attached): it drains the unread messages and unlinks their segments,
  then sweeps every ``mt-<token>-*`` name (segments of producers killed between creating a segment
  and committing its reference);
* after crashes, the ring's *home* resource tracker: the stdlib tracker of the process that created
  the ring.  Every process holding the ring also holds a write end of that tracker's pipe
  (inherited by fork, passed to spawn/forkserver children, opened through /proc by any other
  unpickler) and registers/unregisters the ring's segments there, so the tracker unlinks what is
  left only when the last of those processes has exited -- never while one could still read.

A producer exiting, cleanly or not, releases nothing it has put.  (Before, each process used its
own tracker: a fork child started before any tracker existed got a private one, which unlinked the
child's segments the moment the child exited, unread, and the consumer's UNREGISTER to a different
tracker printed ``KeyError``.)

Wake-ups: a put wakes at most one waiting consumer per message it commits; a consumer that leaves
messages behind wakes the next one, so waiting consumers are never woken in a herd.

Unlike ``multiprocessing.Queue`` there is no feeder thread (gh-85927, gh-132634, gh-84376): a put
has finished copying when it returns, so nothing is lost at exit and nothing needs joining.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from multitask._core import _ringbuf
from multitask._core._errors import ClosedError, MultitaskError

__all__ = ["Ring", "RingAttachError", "create_segment", "new_group", "open_segment",
           "sweep_segments", "unlink_segment"]

_ringbuf._set_closed_error(ClosedError)

HEADER_SIZE: int = _ringbuf.HEADER_SIZE
FLAG_SPILL: int = _ringbuf.FLAG_SPILL
_MIN_CAPACITY = 256

try:  # pragma: no cover - the stdlib module is present on every POSIX CPython
    import _posixshmem
except ImportError:  # pragma: no cover
    _posixshmem = None


class RingAttachError(MultitaskError, OSError):
    """An unpickled Ring could not be attached (its sender exited or closed it)."""


# --------------------------------------------------------------------------- segments

_seg_counter = itertools.count()
_SHM_DIR = "/dev/shm"

_live: weakref.WeakSet[Ring] = weakref.WeakSet()
# reentrant: a Ring finalizer (close) may run from a GC pass triggered while it is held
_live_lock = threading.RLock()


# Every ring has a *home* resource tracker: the stdlib tracker of the process that created it
# (started there if needed).  Each process using the ring holds its own write end of that tracker's
# pipe (``Ring._tfd``: inherited by fork, passed as an fd to spawn/forkserver children, opened
# through /proc by other unpickler), and every segment named ``/mt-<token>-...`` is registered and
# unregistered through it.  So the REGISTER of a producer and the UNREGISTER of the consumer always
# reach the same tracker, and that tracker only cleans up (unlinks what is still registered) when
# the last process holding its pipe -- hence every process that could still read the ring -- has
# exited.  Registering with the caller's own tracker instead (the old behaviour) lost messages: a
# fork child started before any tracker existed started a private one, which unlinked the child's
# segments as soon as the child exited, unread (and the consumer's UNREGISTER to *its* tracker
# printed ``KeyError``).  Names of no live ring here (``mt-s-...``) use this process's tracker.
#
# A ring created with ``group=`` has no home tracker: its token is the group (which starts with
# ``UNTRACKED_MARK``) plus a suffix, and its segments are never registered.  Its owner promises the
# crash clean-up instead -- the process backend's zygote, which outlives the pool's process by
# design, sweeps every ``mt-<group>*`` name when that process dies.  (Starting the stdlib
# tracker costs a fork+exec of a new interpreter: 5-15 ms of every first Pool() here, and ~20 ms
# of CPU taken from the workers starting at the same time.)
_tracker_fds: dict[str, list[int]] = {}   # ring token -> this process's fds on its home tracker
UNTRACKED_MARK = "u"


def new_group() -> str:
    """A fresh name for a group of untracked rings (see ``Ring(group=...)``)."""
    return UNTRACKED_MARK + os.urandom(4).hex()


def _tracker_send(cmd: str, name: str) -> None:
    token = name[4:].partition("-")[0] if name.startswith("/mt-") else ""
    if token.startswith(UNTRACKED_MARK):
        return  # an untracked ring's owner sweeps its segments (Ring(tracked=False))
    msg = f"{cmd}:{name}:shared_memory\n".encode("ascii")
    with _live_lock:
        fds = _tracker_fds.get(token)
        if fds:
            try:
                os.write(fds[0], msg)
                return
            except OSError:  # the home tracker is gone (killed): fall back to ours
                pass
    from multiprocessing import resource_tracker

    if cmd == "REGISTER":
        resource_tracker.register(name, "shared_memory")
    else:
        resource_tracker.unregister(name, "shared_memory")


def _tracker_register(name: str) -> None:
    _tracker_send("REGISTER", name)


def _tracker_unregister(name: str) -> None:
    _tracker_send("UNREGISTER", name)


def _home_tracker_fd() -> int:
    """A new fd on this process's stdlib resource tracker pipe (starting the tracker), or -1."""
    try:
        from multiprocessing import resource_tracker

        fd = resource_tracker.getfd()
        return -1 if fd is None else os.dup(fd)
    except Exception:  # pragma: no cover - no tracker (e.g. it cannot be started)
        return -1


def _open_tracker_fd(pid: int, fd: int) -> int:
    """Open another process's tracker pipe fd through /proc (non-blocking open: no reader, no
    hang), or -1."""
    if fd < 0:
        return -1
    try:
        tfd = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    os.set_blocking(tfd, True)
    return tfd


def new_segment_name(prefix: str = "mt-s-") -> str:
    """A fresh POSIX shm name ``/<prefix><pid>-<n>`` (``prefix`` must start with ``mt-``)."""
    return f"/{prefix}{os.getpid()}-{next(_seg_counter)}"


def create_segment(name: str, buffers: Sequence[Any], size: int | None = None,
                   offsets: Sequence[int] | None = None) -> None:
    """Create segment ``name`` holding ``buffers`` (at ``offsets``, default back to back).

    The name is registered with the resource tracker before any data is written, so a process
    killed half-way leaks nothing past the end of the process tree.  Raises OSError.
    """
    if _posixshmem is None:  # pragma: no cover
        raise OSError("POSIX shared memory is not available")
    views = [memoryview(b).cast("B") for b in buffers]
    if offsets is None:
        offs, pos = [], 0
        for v in views:
            offs.append(pos)
            pos += v.nbytes
        offsets = offs
    if size is None:
        size = max((o + v.nbytes for o, v in zip(offsets, views, strict=True)), default=0)
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        _tracker_register(name)
        os.ftruncate(fd, max(size, 1))
        for off, v in zip(offsets, views, strict=True):
            done = 0
            # pwrite into tmpfs avoids a page fault per 4 KiB that writing through mmap costs
            while done < v.nbytes:
                done += os.pwrite(fd, v[done:], off + done)
    except BaseException:
        os.close(fd)
        unlink_segment(name)
        raise
    os.close(fd)


def open_segment(name: str, writable: bool = False) -> Any:
    """Map segment ``name``, unlink it at once, return the ``mmap`` (lives as long as its views).

    Raises FileNotFoundError if the segment is gone.
    """
    import mmap

    if _posixshmem is None:  # pragma: no cover
        raise OSError("POSIX shared memory is not available")
    fd = _posixshmem.shm_open(name, os.O_RDWR if writable else os.O_RDONLY, 0o600)
    try:
        size = os.fstat(fd).st_size
        # No MAP_POPULATE: the reader's first touch faults pages in 16 at a time (fault-around),
        # which costs less than populating up front (100 MB, mapped then summed: ~19 ms against
        # ~25 ms here), and nothing for pages never read.
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
    finally:
        os.close(fd)
        unlink_segment(name)
    return mm


def unlink_segment(name: str) -> None:
    """Unlink ``name`` (if it still exists) and unregister it from the resource tracker."""
    if _posixshmem is None:  # pragma: no cover
        return
    try:
        _posixshmem.shm_unlink(name)
    except FileNotFoundError:
        return
    _tracker_unregister(name)


def sweep_segments(prefix: str) -> int:
    """Unlink every ``/dev/shm/<prefix>*`` segment; returns how many.  Used by the last closer."""
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return 0
    n = 0
    for entry in names:
        if entry.startswith(prefix):
            unlink_segment("/" + entry)
            n += 1
    return n


# --------------------------------------------------------------------------- the ring

class Ring(_ringbuf.RingBase):
    """A multi-producer multi-consumer ring of byte messages in shared memory.

    ``Ring(capacity, maxitems)`` creates one: ``capacity`` bytes of data area (rounded up to a
    multiple of 8, at least 256; it is sparse, pages are touched only as it fills) and an optional
    limit on the number of messages (0 = only bytes limit).  Raises ValueError/TypeError on bad
    values.

    Blocking: ``put`` blocks while the ring is full, ``get`` while it is empty; ``timeout=None``
    waits forever, ``0`` does not wait, otherwise seconds on the monotonic clock.  Waits release
    the GIL and are interruptible (a signal handler that raises, e.g. KeyboardInterrupt, raises
    from the call).  A negative timeout raises ValueError.  Any use after :meth:`close` raises
    :class:`~multitask._core._errors.ClosedError`.

    Messages larger than ``spill_threshold`` (capacity/4) are spilled to their own segment and
    come back from ``get`` as a read-only ``memoryview``; small ones come back as ``bytes``.

    ``put(data, timeout=None) -> bool``: False if still full at the timeout.
    ``put_many(items, timeout=None) -> int``: puts in order, as many as fit per lock round (one
    commit per round, so a batch becomes visible at once); returns how many were put.
    ``get(timeout=None)``: a message, or None if still empty at the timeout.
    ``get_many(max_items, timeout=None) -> list``: waits for the first message, then takes up to
    ``max_items`` that are there; ``[]`` on timeout.
    ``qsize()``: exact count.  ``write_count``/``read_count``: messages ever committed/removed
    (``read_count`` moves atomically with the removal).

    ``group=new_group()``: an untracked ring.  No resource tracker is started or told about its
    segments; the caller takes over their clean-up after crashes, for every ring of the group at
    once with ``sweep_segments("mt-" + group)`` (the process backend's zygote does).  Segments
    left by dead producers are still swept by the last ``close()``.

    Thread safety: all methods may be called from several threads and processes at once.
    """

    _fd: int
    _tfd: int
    _prefix: str
    on_discard: Any

    def __init__(self, capacity: int = 1 << 22, maxitems: int = 0, *,
                 joinable: bool = False, group: str | None = None) -> None:
        for label, value in (("capacity", capacity), ("maxitems", maxitems)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{label} must be an int, not {type(value).__name__}")
        if capacity < _MIN_CAPACITY:
            raise ValueError(f"capacity must be >= {_MIN_CAPACITY} bytes, got {capacity}")
        if maxitems < 0:
            raise ValueError(f"maxitems must be >= 0, got {maxitems}")
        capacity = (capacity + 7) & ~7
        # (os.urandom, not secrets: that module imports hmac and hashlib, ~4 ms)
        if group is None:
            token = os.urandom(4).hex()
        elif (len(group) != 9 or not group.startswith(UNTRACKED_MARK)
              or not all(c in "0123456789abcdef" for c in group[1:])):
            raise ValueError(f"group must come from new_group(), got {group!r}")
        else:
            token = group + os.urandom(2).hex()
        fd = os.memfd_create("mt-ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, HEADER_SIZE + capacity)
            self._map(fd, True, capacity, maxitems, joinable, token)
        except BaseException:
            os.close(fd)
            raise
        self._setup(fd, _home_tracker_fd() if group is None else -1)
        self._attach(0)

    def _setup(self, fd: int, tfd: int) -> None:
        self._fd = fd
        self._tfd = tfd
        self._prefix = f"mt-{self.token}-"
        self._closed_here = False
        self.on_discard = None
        with _live_lock:
            _live.add(self)
            if tfd >= 0:
                _tracker_fds.setdefault(self.token, []).append(tfd)

    @property
    def spill_prefix(self) -> str:
        """Name prefix (``mt-<token>-``) for segments whose messages travel through this ring.

        Pass it to :func:`multitask._core._serialize.dumps` so out-of-band segments of messages
        that are never read are swept by the last ``close()``.
        """
        return self._prefix

    # -- spill hooks, called from C -------------------------------------------------------
    def _spill_out(self, data: Any) -> bytes:
        name = new_segment_name(self._prefix)
        create_segment(name, [data])
        return name.encode()

    def _spill_in(self, ref: bytes) -> memoryview:
        return memoryview(open_segment(ref.decode()))

    def _spill_abort(self, ref: bytes) -> None:
        unlink_segment(ref.decode())

    # -- joinable (used by JoinableQueue) ---------------------------------------------------
    def task_done(self) -> None:
        """Mark one message as processed (JoinableQueue).  ValueError if called too often."""
        self._task_done()

    def join(self, timeout: float | None = None) -> bool:
        """Block until every message put was matched by ``task_done``; False on timeout."""
        return bool(self._join_wait(timeout))

    @property
    def unfinished(self) -> int:
        """Messages put but not yet matched by ``task_done`` (joinable rings)."""
        return int(self._unfinished)

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the ring in this process; idempotent.

        Closing never releases messages other processes may still read, whoever put them.  Only
        if no other live process may still use the ring (none attached, none pickled or forked
        but not yet attached) are pending messages discarded: their spill segments are unlinked
        and ``on_discard(payload)`` (if set) is called for each, and every ``mt-<token>-*``
        segment left by dead producers is swept.  Then this process's fds on the ring and on its
        home resource tracker are closed.
        """
        if getattr(self, "_closed_here", True):
            return
        self._closed_here = True
        with _live_lock:
            _live.discard(self)
        token = self._prefix[3:-1]
        try:
            if self._detach():
                self._release_pending()
        finally:
            self._unmap()
            os.close(self._fd)
            self._close_tracker_fd(token)

    def _close_tracker_fd(self, token: str) -> None:
        tfd, self._tfd = self._tfd, -1
        if tfd < 0:
            return
        with _live_lock:
            fds = _tracker_fds.get(token)
            if fds is not None and tfd in fds:
                fds.remove(tfd)
                if not fds:
                    del _tracker_fds[token]
            os.close(tfd)

    def _release_pending(self) -> None:
        discard = self.on_discard
        for flags, payload in self._drain_raw():
            if flags & FLAG_SPILL:
                name = payload.decode()
                if discard is not None:
                    try:
                        data: Any = memoryview(open_segment(name))
                    except FileNotFoundError:
                        continue
                    payload = data
                else:
                    unlink_segment(name)
                    continue
            if discard is not None:
                try:
                    discard(payload)
                except Exception:  # a bad message must not stop the others being released
                    pass
        sweep_segments(self._prefix)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        if getattr(self, "_closed_here", True) or self.closed:
            return "<Ring closed>"
        return (f"<Ring token={self.token} capacity={self.capacity} maxitems={self.maxitems} "
                f"qsize={self.qsize()}>")

    # -- pickling ---------------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        if getattr(self, "_closed_here", True) or self.closed:
            raise ClosedError("cannot pickle a closed Ring")
        from multiprocessing import context, reduction

        # Counted as a pending user until the receiver attaches, so a close() here in the
        # meantime does not discard messages the receiver is about to read.
        self._pending(1)
        if context.get_spawning_popen() is not None:
            # a child being spawned: pass the fds themselves (spawn and forkserver know how)
            tdup = reduction.DupFd(self._tfd) if self._tfd >= 0 else None
            return (_rebuild_ring, (self.token, reduction.DupFd(self._fd), None, None, tdup))
        return (_rebuild_ring, (self.token, None, os.getpid(), self._fd, None, self._tfd))


def _rebuild_ring(token: str, dupfd: Any, pid: int | None, fd: int | None,
                  tdup: Any = None, tfd: int = -1) -> Ring:
    if tdup is not None:
        mytfd = tdup.detach()
    elif pid is not None:
        mytfd = _open_tracker_fd(pid, tfd)
    else:
        mytfd = -1
    try:
        ring = _map_ring(token, dupfd, pid, fd)
    except BaseException:
        if mytfd >= 0:
            os.close(mytfd)
        raise
    ring._setup(ring._fd, mytfd)  # from here on close() releases both fds
    ring._attach(-1)
    return ring


def _map_ring(token: str, dupfd: Any, pid: int | None, fd: int | None) -> Ring:
    if dupfd is not None:
        myfd = dupfd.detach()
    else:
        try:
            myfd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RingAttachError(
                f"cannot attach to ring {token}: process {pid} that sent it has exited or closed "
                f"it (/proc/{pid}/fd/{fd}: {exc.strerror})") from exc
    ring = Ring.__new__(Ring)
    try:
        ring._map(myfd, False, 0, 0, False, token)
    except (ValueError, OSError) as exc:
        os.close(myfd)
        raise RingAttachError(f"cannot attach to ring {token}: {exc}") from exc
    ring._fd = myfd
    return ring


# A forked child inherits every open ring: count it as a user before the parent can decide it is
# the last one (pending +1 in the parent before fork, the child turns it into an attach).
def _before_fork() -> None:
    with _live_lock:
        rings = list(_live)
    for r in rings:
        try:
            r._pending(1)
        except Exception:
            pass


def _after_fork_child() -> None:
    global _live_lock
    _live_lock = threading.RLock()
    for r in list(_live):
        try:
            r._gate_reset()
            r._attach(-1)
        except Exception:
            pass


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_child)
