"""The function cache: each function a front end submits is serialized once and known to the
workers by a small id, so a task carries the id, not the function.

A backend keeps one :class:`FunctionCache` and, per worker, the set of ids that worker has
been sent.  Dispatch asks :meth:`FunctionCache.entry` for the function's id and bytes; a worker
that lacks the id gets the bytes ahead of the task.  The cache holds at most ``limit``
functions (least recently used out first): a program that submits a new closure per call must
not grow the parent -- or the workers, which the backend tells to forget each evicted id.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

__all__ = ["FunctionCache"]


class FunctionCache:
    """``id(fn)`` -> (fn, small id, serialized fn), LRU, at most ``limit`` entries.

    Not thread-safe: the backend calls it under its dispatch lock.  ``dumps`` raises for a
    function that cannot be serialized (the caller fails that task); nothing is cached then.
    """

    def __init__(self, dumps: Callable[[Any], bytes], limit: int = 256) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._dumps = dumps
        self._limit = limit
        self._entries: collections.OrderedDict[int, tuple[Any, int, bytes]] = (
            collections.OrderedDict())
        self._ids = 0

    def entry(self, fn: Any) -> tuple[int, bytes, list[tuple[int, int]]]:
        """``(fid, serialized fn, evicted)``; ``evicted`` lists ``(id(old fn), old fid)`` of the
        functions dropped to make room, for the backend to forget (per-function measurements,
        the workers' copies)."""
        key = id(fn)
        found = self._entries.get(key)
        if found is not None:   # the entry keeps fn alive, so its id is not reused meanwhile
            self._entries.move_to_end(key)
            return found[1], found[2], []
        data = self._dumps(fn)   # may raise: then nothing changes
        self._ids += 1
        self._entries[key] = (fn, self._ids, data)
        evicted: list[tuple[int, int]] = []
        while len(self._entries) > self._limit:
            old_key, (_, old_id, _) = self._entries.popitem(last=False)
            evicted.append((old_key, old_id))
        return self._ids, data, evicted

    def __len__(self) -> int:
        return len(self._entries)
