"""Pickling for everything multitask sends: protocol 5, out-of-band buffers in shared memory.

Wire format of one message (what :func:`dumps` returns and :func:`loads` takes):

* **in-band** (the common case): the plain protocol-5 pickle.  It starts with the PROTO opcode
  ``0x80``, so :func:`loads` recognises it with one byte test.
* **out-of-band**: ``0x01`` + ``u16 name length`` + segment name + ``u32 count`` + ``count`` x
  ``(u64 offset, u64 length, u8 readonly)`` + the protocol-5 pickle whose ``PickleBuffer``\\ s
  (NumPy arrays, ``pickle.PickleBuffer`` objects) of at least :data:`OOB_THRESHOLD` bytes were
  left out.  Those buffers were written once, 64-byte aligned, into one shared-memory segment
  ``/mt-...``; :func:`loads` maps it, unlinks the name at once, and hands the mapped memory to the
  unpickler, so the arrays it returns are backed by the mapping (zero copy; the mapping lives as
  long as the arrays).  The stdlib pipes every byte through a connection instead (gh-89467).

Smaller buffers stay in-band: a segment costs a few syscalls, which only pays off for large data.

* **arena out-of-band**: ``0x03`` + the same layout, naming a segment of the sender's
  :class:`~multitask._core._arena.Arena` (a Pool's task arguments of at least ``ARENA_MIN``
  bytes; offsets count the segment's 64-byte header).  :func:`loads` views it through a Lease
  and leaves the name alone: when the returned arrays are gone the segment is free for the
  sender's next message.

* **typed list**: ``0x02`` + typecode (``q`` or ``d``) + 6 pad bytes + the items as native int64 /
  float64 -- a ``list`` of at least :data:`TYPED_MIN` items that are all exactly ``int`` (each
  fitting in 64 bits) or all exactly ``float``: what a ``map`` of numeric work returns.  Pickle
  spends ~40 ns per int above 2**31 on each side (LONG1 opcodes); this costs ~15 ns, and the
  parent that unpickles every worker's results is a pool's bottleneck.  ``loads`` returns an
  equal ``list`` (same types, same values, bit for bit for floats).

Ownership: with ``prefix=ring.spill_prefix`` (what every Queue passes) the segment belongs to the
ring once the message is put, exactly like the ring's own spill segments (see
``multitask._core._ring``): it is registered with the ring's home resource tracker as soon as it
exists, unlinked and unregistered there by the :func:`loads` of the consumer, or by the last
``close()`` of the ring if never read; the home tracker removes it only after every process
holding the ring has exited (crashes).  The producer exiting releases nothing.  Without a ring
prefix (``mt-s-...``) the segment is registered with the calling process's own stdlib resource
tracker (shared by its process tree when it was started before the children were).  A message
dropped unread must go through :func:`discard`.

Functions, lambdas, closures and objects defined in ``__main__`` that the C pickler refuses are
pickled with ``cloudpickle`` instead (transparent to :func:`loads`).
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from multitask._core._arena import ARENA_MIN, HEADER, Arena, lease, release
from multitask._core._errors import SerializationError
from multitask._core._ring import create_segment, new_segment_name, open_segment, unlink_segment
from multitask._core._ringbuf import _pack_typed

__all__ = ["OOB_THRESHOLD", "TYPED_MIN", "discard", "dumps", "loads"]

#: A PickleBuffer at least this large travels out-of-band through shared memory.
OOB_THRESHOLD = 64 * 1024
_ALIGN = 64
_OOB = 0x01
_TYPED = 0x02
_ARENA = 0x03
_TYPED_HEAD = 8
#: A list of at least this many ints (or floats) travels as a typed array.
TYPED_MIN = 32
_HEAD = struct.Struct("<BH")
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<QQB")

_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads


def _describe(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = "<unrepresentable>"
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{type(obj).__module__}.{type(obj).__qualname__} object {text}"


def _pickle(obj: Any, bufs: list[pickle.PickleBuffer] | None,
            keep: list[bool] | None = None) -> bytes:
    """Pickle with protocol 5.  ``bufs``: collect buffers out-of-band (all of them, or those whose
    ``keep`` entry is True, in order); ``None``: everything in-band."""

    def callback(pb: pickle.PickleBuffer) -> bool:
        if keep is not None and not keep[len(seen)]:
            seen.append(False)
            return True  # true: serialize this one in-band
        seen.append(True)
        assert bufs is not None
        bufs.append(pb)
        return False

    seen: list[bool] = []
    cb = None if bufs is None else (bufs.append if keep is None else callback)
    try:
        return _pickle_dumps(obj, 5, buffer_callback=cb)
    except (pickle.PicklingError, AttributeError, TypeError) as first:
        # lambdas, closures, __main__-local classes: the C pickler can only pickle by reference
        if bufs is not None:
            bufs.clear()
            seen.clear()
        try:
            import cloudpickle
        except ImportError:  # pragma: no cover - cloudpickle is a dependency
            raise SerializationError(f"cannot pickle {_describe(obj)}: {first}") from first
        try:
            data: bytes = cloudpickle.dumps(obj, protocol=5, buffer_callback=cb)
            return data
        except Exception as exc:
            raise SerializationError(f"cannot pickle {_describe(obj)}: {exc}") from exc
    except Exception as exc:
        raise SerializationError(f"cannot pickle {_describe(obj)}: {exc}") from exc


_SCALARS = frozenset({int, float, bool, str, complex, type(None)})

#: From this size on the C pickler writes a bytes/bytearray object outside its frames, as one
#: opcode, the length and the raw data (CPython's ``FRAME_SIZE_TARGET``).
_BIG_BYTES = 64 * 1024
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _dumps_big_bytes(obj: bytes | bytearray) -> bytes:
    """The exact protocol-5 pickle of a large ``bytes``/``bytearray``, built with one allocation.

    ``pickle.dumps`` grows its output buffer by reallocation, which for MiB-sized objects makes
    glibc map fresh pages on every call: ~0.4 ms per MiB here, ten times the copy itself.  A
    ``join`` of the opcodes around the object allocates the result once, at its final size.
    ``tests/test_serialize.py`` checks the bytes equal ``pickle.dumps(obj, 5)``.
    """
    n = len(obj)
    if type(obj) is bytearray:
        head = b"\x80\x05\x96" + _U64.pack(n)          # PROTO 5, BYTEARRAY8
    elif n < 1 << 32:
        head = b"\x80\x05B" + _U32.pack(n)             # PROTO 5, BINBYTES
    else:
        head = b"\x80\x05\x8e" + _U64.pack(n)          # PROTO 5, BINBYTES8
    return b"".join((head, obj, b"\x94."))             # MEMOIZE, STOP


def dumps(obj: Any, prefix: str | None = None, arena: Arena | None = None) -> bytes:
    """Pickle ``obj`` (protocol 5), large buffers out-of-band in one shared-memory segment.

    ``prefix`` (``"mt-..."``) names the segment; give a ring's ``spill_prefix``.  With an
    ``arena`` (a Pool's task arguments), buffers totalling at least ``ARENA_MIN`` go into one of
    its reused segments when it has room (an arena message).  Does not block.
    Raises :class:`SerializationError` (chained to the original error) if ``obj`` cannot be
    pickled even by cloudpickle, OSError if the segment cannot be created.
    """
    if type(obj) in _SCALARS:
        # These never yield out-of-band buffers: skip the buffer_callback machinery, which
        # costs more than pickling a small value (0.6 us -> 0.26 us per queue item).
        return _pickle_dumps(obj, 5)
    if type(obj) is bytes or type(obj) is bytearray:
        if len(obj) >= _BIG_BYTES:
            return _dumps_big_bytes(obj)
        return _pickle_dumps(obj, 5)
    if type(obj) is list and len(obj) >= TYPED_MIN:
        # all exact ints of 64 bits, or all exact floats: a typed list (None otherwise)
        typed = _pack_typed(obj, _TYPED)
        if typed is not None:
            return typed
    bufs: list[pickle.PickleBuffer] = []
    try:  # fast path: the C pickler, no wrapper (zero-cost try)
        data = _pickle_dumps(obj, 5, buffer_callback=bufs.append)
    except Exception:
        bufs = []
        data = _pickle(obj, bufs)
    if not bufs:
        return data
    big = [b.raw().nbytes >= OOB_THRESHOLD for b in bufs]
    if not any(big):
        return _pickle(obj, None)
    if not all(big):
        # pickle again, keeping only the large buffers out of band
        bufs = []
        data = _pickle(obj, bufs, big)
    raws = [b.raw() for b in bufs]
    offsets, pos = [], 0
    for r in raws:
        offsets.append(pos)
        pos += (r.nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
    tag = _OOB
    name = None
    if arena is not None and pos >= ARENA_MIN:
        name = arena.write(raws, offsets, pos)
        if name is not None:
            tag = _ARENA
            offsets = [HEADER + o for o in offsets]
    if name is None:
        name = new_segment_name(prefix or "mt-s-")
        create_segment(name, raws, size=pos, offsets=offsets)
    encoded = name.encode()
    parts = [_HEAD.pack(tag, len(encoded)), encoded, _COUNT.pack(len(raws))]
    parts.extend(_ENTRY.pack(o, r.nbytes, r.readonly) for o, r in zip(offsets, raws, strict=True))
    parts.append(data)
    return b"".join(parts)


def _parse(data: Any) -> tuple[str, list[tuple[int, int, int]], memoryview]:
    view = memoryview(data)
    _, nlen = _HEAD.unpack_from(view, 0)
    pos = _HEAD.size
    name = bytes(view[pos:pos + nlen]).decode()
    pos += nlen
    (count,) = _COUNT.unpack_from(view, pos)
    pos += _COUNT.size
    entries = []
    for _ in range(count):
        entries.append(_ENTRY.unpack_from(view, pos))
        pos += _ENTRY.size
    return name, entries, view[pos:]


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Inverse of :func:`dumps`.  Does not block.

    Out-of-band arrays are backed by the mapped segment (zero copy); the segment's name is
    unlinked at once, and the memory is freed when the last array using it is.  Raises
    :class:`SerializationError` (chained) if the message cannot be unpickled.
    """
    try:
        tag = data[0]
        if tag == _TYPED:
            items = memoryview(data)[_TYPED_HEAD:]
            # the typecode byte: b"q" (int64) or b"d" (float64)
            return (items.cast("q") if data[1] == 0x71 else items.cast("d")).tolist()
        if tag != _OOB and tag != _ARENA:
            return _pickle_loads(data)
    except Exception as exc:
        raise SerializationError(f"cannot unpickle message: {exc!r}") from exc
    name, entries, payload = _parse(data)
    try:
        # an arena segment stays named (its owner fills it again once our Lease is gone)
        whole = lease(name) if tag == _ARENA else memoryview(open_segment(name, writable=True))
    except FileNotFoundError as exc:
        raise SerializationError(f"shared-memory segment {name} of the message is gone") from exc
    buffers = []
    for off, length, readonly in entries:
        part = whole[off:off + length]
        buffers.append(part.toreadonly() if readonly else part)
    try:
        return _pickle_loads(payload, buffers=buffers)
    except Exception as exc:
        raise SerializationError(f"cannot unpickle message: {exc!r}") from exc


def discard(data: bytes | bytearray | memoryview) -> None:
    """Release the shared-memory segment ``data`` refers to, without unpickling it."""
    if data and data[0] == _OOB:
        name, _, _ = _parse(data)
        unlink_segment(name)
    elif data and data[0] == _ARENA:
        name, _, _ = _parse(data)
        release(name)
