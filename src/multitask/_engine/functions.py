"""The function cache: each function a front end submits is serialized once and known to the
workers by a small id, so a task carries the id, not the function.

A backend keeps one :class:`FunctionCache` and, per worker, the set of ids that worker has
been sent.  Dispatch asks :meth:`FunctionCache.entry` for the function's id and bytes; a worker
that lacks the id gets the bytes ahead of the task.  The cache holds at most ``limit``
functions (least recently used out first): a program that submits a new closure per call must
not grow the parent -- or the workers, which the backend tells to forget each evicted id.

Plain functions, builtins and classes are held by their entry (which keeps their id from being
reused).  Any other callable -- a bound method, a ``functools.partial``, an object with
``__call__`` -- is held weakly where it can be: it carries user objects (the method's
instance, the partial's arguments) that the cache must not keep alive once the program and
its jobs have dropped them (CPython's test_no_stale_references).  Its entry is evicted when it
dies: the weakref callback only queues the key (it can run in any thread, even one that holds
the backend's lock), and :meth:`entry` drops the queued keys before it looks anything up, so a
new object that reuses the id never finds the dead one's entry.
"""

from __future__ import annotations

import collections
import types
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["FunctionCache"]

# held strongly: stable objects whose lifetime the program does not expect to end early
_STRONG = (types.FunctionType, types.BuiltinFunctionType, type)


class FunctionCache:
    """``id(fn)`` -> (fn, small id, serialized fn), LRU, at most ``limit`` entries.

    :meth:`entry` is not thread-safe: the backend calls it under its dispatch lock.
    :meth:`prime` may be called from any thread, outside that lock, so that serializing a
    function -- user code: ``__reduce__``, cloudpickle of a closure, milliseconds -- does not
    run while the lock is held.  ``dumps`` raises for a function that cannot be serialized
    (the caller fails that task); nothing is cached then.
    """

    def __init__(self, dumps: Callable[[Any], bytes], limit: int = 256) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._dumps = dumps
        self._limit = limit
        self._entries: collections.OrderedDict[int, tuple[Any, int, bytes]] = (
            collections.OrderedDict())
        self._ids = 0
        self._primed: dict[int, tuple[Any, bytes]] = {}   # id(fn) -> (fn, bytes), not yet in
        self._dead: collections.deque[int] = collections.deque()   # keys of dead weak entries

    def prime(self, fn: Any) -> None:
        """Serialize ``fn`` now, in the calling thread, if it is not cached; :meth:`entry` then
        takes the bytes without serializing.  Never raises (a function that cannot be
        serialized fails its task at dispatch, as without priming)."""
        key = id(fn)
        # dict reads and stores are atomic; at most `limit` primed functions wait (those of
        # jobs that never reached dispatch are dropped with the cache)
        if key in self._entries or key in self._primed or len(self._primed) >= self._limit:
            return
        try:
            data = self._dumps(fn)
        except Exception:
            return
        self._primed[key] = (fn, data)

    def entry(self, fn: Any) -> tuple[int, bytes, list[tuple[int, int]]]:
        """``(fid, serialized fn, evicted)``; ``evicted`` lists ``(id(old fn), old fid)`` of the
        functions dropped to make room, for the backend to forget (per-function measurements,
        the workers' copies)."""
        evicted: list[tuple[int, int]] = []
        while self._dead:   # weakly held callables that died: before any lookup (see above)
            dead_key = self._dead.popleft()
            gone = self._entries.pop(dead_key, None)
            if gone is not None:
                evicted.append((dead_key, gone[1]))
        key = id(fn)
        found = self._entries.get(key)
        if found is not None:   # the entry keeps fn alive (or dies with it): id not reused
            self._entries.move_to_end(key)
            return found[1], found[2], evicted
        primed = self._primed.pop(key, None)
        # no bytes primed for this very function: serialize here (may raise: nothing changes)
        data = primed[1] if primed is not None and primed[0] is fn else self._dumps(fn)
        self._ids += 1
        self._entries[key] = (self._holder(fn, key), self._ids, data)
        while len(self._entries) > self._limit:
            old_key, (_, old_id, _) = self._entries.popitem(last=False)
            evicted.append((old_key, old_id))
        return self._ids, data, evicted

    def _holder(self, fn: Any, key: int) -> Any:
        """What the entry keeps of ``fn``: itself, or a weak reference (see the module)."""
        if type(fn) in _STRONG:
            return fn
        dead = self._dead

        def died(_ref: weakref.ref[Any]) -> None:
            dead.append(key)   # (any thread, any lock held: only queue it)

        try:
            return weakref.ref(fn, died)
        except TypeError:   # cannot be weakly referenced: held, bounded by the LRU
            return fn

    def __len__(self) -> int:
        return len(self._entries)
