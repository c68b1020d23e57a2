"""Process-safe queues on the shared-memory ring: ``Queue``, ``SimpleQueue``, ``JoinableQueue``.

Same names, methods and exceptions as ``multiprocessing.queues`` (``queue.Full``/``queue.Empty``),
with these differences, all on purpose:

* **No feeder thread** (gh-85927, gh-132634, gh-84376).  ``put`` pickles in the caller and copies
  the message into shared memory before it returns, so a pickling error raises from ``put`` itself
  (:class:`~multitask.SerializationError`), nothing is lost when the process exits right after a
  ``put``, and ``join_thread``/``cancel_join_thread`` have nothing to do.
* **Exact** ``qsize()`` (the stdlib's is approximate and raises NotImplementedError on macOS);
  ``empty()``/``full()`` are exact at the moment of the call.
* **Crash-proof**: a process killed inside ``put``/``get`` never blocks the others and never makes
  them read a torn message (see ``multitask._core._ring``).
* **Large objects** travel through shared memory (NumPy arrays as pickle-5 out-of-band buffers;
  big pickles as a spilled segment), not through a pipe (gh-89467).
* **Unbounded** (``maxsize <= 0``) means a 64 MiB ring (virtual memory; pages are touched only as
  it fills, and all but the first 8 MiB are returned whenever it empties).  The stdlib buffers
  without limit in its feeder thread; here a ``put`` into a full unbounded ring **blocks** until
  consumers make room (``put_nowait`` raises ``queue.Full``).  A bounded queue is full when it
  holds ``maxsize`` messages *or* its 4 MiB ring is full (objects over 1 MiB take only a
  reference's room).
* Batch calls ``put_many(items)`` / ``get_many(max_items, timeout)``.
* Queues pickle to any process at any time (fork, spawn, forkserver children, Pool task arguments
  and results), not only while spawning a child.
* Any use after ``close()`` raises :class:`~multitask.ClosedError` (a ValueError), in ``get`` as
  well as in ``put``.
"""

from __future__ import annotations

import queue
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._core._errors import ClosedError
from ._core._ring import Ring
from ._core._serialize import discard, dumps, loads

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing import Generic as _Generic
else:
    class _Generic:
        """The queues are generic in their item type for type checkers only (``Queue[int]``, as
        typeshed's ``multiprocessing.queues.Queue``).  At run time ``Queue[int]`` is a
        ``types.GenericAlias``, as for the stdlib's ``queue.Queue``: ``typing.Generic`` would
        double the time this module takes to import."""

        __slots__ = ()
        __class_getitem__ = classmethod(types.GenericAlias)

_BOUNDED_CAPACITY = 4 << 20
_UNBOUNDED_CAPACITY = 64 << 20


def _check_timeout(block: bool, timeout: Any) -> float | None:
    if not block:
        return 0.0
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


class _RingQueue(_Generic[_T]):
    """Shared implementation of the three queues."""

    _joinable = False

    def __init__(self, maxsize: int = 0, *, ctx: Any = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        self._maxsize = maxsize if maxsize > 0 else 0
        capacity = _BOUNDED_CAPACITY if self._maxsize else _UNBOUNDED_CAPACITY
        self._ring = Ring(capacity, self._maxsize, joinable=self._joinable)
        self._ctx = ctx
        self._setup()

    def _setup(self) -> None:
        self._ring.on_discard = discard
        self._prefix = self._ring.spill_prefix
        self._rput = self._ring.put
        self._rget = self._ring.get

    # -- pickling: the ring attaches in the receiver (inherit, fd passing, or /proc) -----------
    def __getstate__(self) -> dict[str, Any]:
        if self._ring.closed:
            raise ClosedError(f"cannot pickle a closed {type(self).__name__}")
        return {"ring": self._ring, "maxsize": self._maxsize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._ring = state["ring"]
        self._maxsize = state["maxsize"]
        self._ctx = None
        self._setup()

    # -- put ----------------------------------------------------------------------------------
    def put(self, obj: _T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj``; blocks while the queue is full (forever if ``timeout`` is None).

        Pickles ``obj`` now, in the caller.  Raises ``queue.Full`` if still full after
        ``timeout`` seconds (at once if ``block`` is false), ValueError for a negative timeout,
        :class:`~multitask.SerializationError` if ``obj`` cannot be pickled,
        :class:`~multitask.ClosedError` after ``close()``.
        """
        t = _check_timeout(block, timeout) if (timeout is not None or not block) else None
        data = dumps(obj, self._prefix)
        if not self._rput(data, t):
            discard(data)
            raise queue.Full

    def put_nowait(self, obj: _T) -> None:
        """``put(obj, False)``: raises ``queue.Full`` at once if the queue is full."""
        self.put(obj, False)

    def put_many(self, items: Iterable[_T], block: bool = True,
                 timeout: float | None = None) -> None:
        """Put every item of ``items`` in order, batching the copies (one lock round per batch).

        Blocks while the queue is full.  Raises ``queue.Full`` if not all items could be put
        before ``timeout``: the exception's ``put_count`` says how many were (the first ones).
        Not in the stdlib.
        """
        t = _check_timeout(block, timeout)
        prefix = self._prefix
        datas: list[bytes] = []
        try:
            for obj in items:
                datas.append(dumps(obj, prefix))
        except BaseException:
            for d in datas:
                discard(d)
            raise
        n = self._ring.put_many(datas, t)
        if n < len(datas):
            for d in datas[n:]:
                discard(d)
            exc = queue.Full(f"only {n} of {len(datas)} items were put before the timeout")
            exc.put_count = n  # type: ignore[attr-defined]
            raise exc

    # -- get ----------------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """Remove and return the next item; blocks while the queue is empty.

        Raises ``queue.Empty`` if still empty after ``timeout`` seconds (at once if ``block`` is
        false), ValueError for a negative timeout, :class:`~multitask.SerializationError` if the
        item cannot be unpickled (it is removed all the same), :class:`~multitask.ClosedError`
        after ``close()``.  Interruptible by signals (Ctrl-C raises KeyboardInterrupt at once).
        """
        t = _check_timeout(block, timeout) if (timeout is not None or not block) else None
        data = self._rget(t)
        if data is None:
            raise queue.Empty
        obj: _T = loads(data)
        return obj

    def get_nowait(self) -> _T:
        """``get(False)``: raises ``queue.Empty`` at once if the queue is empty."""
        return self.get(False)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[_T]:
        """Wait for the first item (up to ``timeout``), then return up to ``max_items`` items.

        Returns a list of 1..max_items items in queue order.  Raises ``queue.Empty`` on timeout
        (``timeout=0``: at once), ValueError if ``max_items < 1`` or ``timeout < 0``.  Not in the
        stdlib.
        """
        if isinstance(max_items, bool) or not isinstance(max_items, int):
            raise TypeError(f"max_items must be an int, not {type(max_items).__name__}")
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        t = _check_timeout(True, timeout)
        datas = self._ring.get_many(max_items, t)
        if not datas:
            raise queue.Empty
        try:
            return [loads(d) for d in datas]
        except BaseException:
            # One item could not be unpickled: the batch is lost to the caller, so release
            # every segment it refers to (discard is a no-op for in-band items and for the
            # segments already unlinked by the loads that succeeded).
            for d in datas:
                discard(d)
            raise

    # -- state --------------------------------------------------------------------------------
    def qsize(self) -> int:
        """Exact number of items in the queue now."""
        return self._ring.qsize()

    def empty(self) -> bool:
        """True if the queue holds no item now."""
        return self._ring.qsize() == 0

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items now (never for an unbounded queue)."""
        return bool(self._maxsize) and self._ring.qsize() >= self._maxsize

    @property
    def maxsize(self) -> int:
        """The ``maxsize`` given (0 = unbounded)."""
        return self._maxsize

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop using the queue in this process; idempotent.  Never blocks.

        Unlike the stdlib there is no buffered data to flush: everything ``put`` returned from is
        already in shared memory, readable by the other processes.  If this was the last process
        using the queue, items nobody read are released (their shared memory freed).
        """
        self._ring.close()

    def join_thread(self) -> None:
        """No-op: there is no feeder thread to join (the stdlib's exists for gh-85927)."""

    def cancel_join_thread(self) -> None:
        """No-op: there is no feeder thread, so exiting can never lose or hang on data."""

    def __repr__(self) -> str:
        state = "closed" if self._ring.closed else f"qsize={self._ring.qsize()}"
        return f"<{type(self).__name__} maxsize={self._maxsize} {state}>"


class Queue(_RingQueue[_T]):
    """``multiprocessing.Queue`` on a shared-memory ring (see the module docstring).

    ``Queue(maxsize=0)``: ``maxsize <= 0`` is unbounded.  TypeError if ``maxsize`` is not an int.
    """


class JoinableQueue(_RingQueue[_T]):
    """A :class:`Queue` with ``task_done()`` and ``join()``.

    The unfinished-task counter lives in the ring's shared memory and is incremented in the same
    commit as the message (a producer killed inside ``put`` cannot leave it off by one).
    """

    _joinable = True

    def task_done(self) -> None:
        """Mark one retrieved item as processed.  ValueError if called more times than items."""
        self._ring.task_done()

    def join(self, timeout: float | None = None) -> bool:
        """Block until every item put has been marked ``task_done``.

        Sleeps on a futex (no polling).  ``timeout`` (not in the stdlib): return False if items
        are still unfinished after ``timeout`` seconds; True otherwise.
        """
        if timeout is not None:
            _check_timeout(True, timeout)
        return self._ring.join(timeout)


class SimpleQueue(_RingQueue[_T]):
    """``multiprocessing.SimpleQueue``: unbounded, ``get()``/``put()``/``empty()``/``close()``.

    Same ring as :class:`Queue`; ``get`` blocks until an item arrives, ``put`` blocks only if the
    64 MiB ring is full.
    """

    def __init__(self, *, ctx: Any = None) -> None:
        super().__init__(0, ctx=ctx)

    def get(self) -> _T:  # type: ignore[override]  # the stdlib's takes no block/timeout
        """Remove and return the next item, blocking until there is one."""
        data = self._rget(None)
        assert data is not None  # timeout=None: get() returns only with a message
        obj: _T = loads(data)
        return obj

    def put(self, obj: _T) -> None:  # type: ignore[override]  # the stdlib's: no block/timeout
        """Put ``obj`` (pickled now).  Blocks only while the ring is full."""
        data = dumps(obj, self._prefix)
        self._rput(data, None)
