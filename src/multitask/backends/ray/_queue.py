"""A Queue that works across Ray nodes: the ``multitask.Queue`` method set on
``ray.util.queue.Queue``."""

from __future__ import annotations

import queue as _queue
import time
from collections.abc import Iterable
from typing import Any

import ray
import ray.exceptions
import ray.util.queue

from ..._core._errors import ClosedError


class RayQueue:
    """``multitask.Queue``'s method set on a Ray actor (``ray.util.queue.Queue``).

    Use it to pass items between tasks running on different Ray nodes; it pickles as a handle to
    the actor, so it can be passed as a task argument.  ``put``/``get`` block (on the actor) as
    ``multitask.Queue``'s do and raise :class:`queue.Full` / :class:`queue.Empty`; each call is
    a Ray round trip (~0.5 ms), so prefer ``put_many``/``get_many`` for many small items.  On one
    machine the shared-memory ``multitask.Queue`` is faster by orders of magnitude and also works
    with Ray actors there.  ``close()`` stops the actor (only the creator's ``close`` does).
    """

    def __init__(self, maxsize: int = 0, *, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if not ray.is_initialized():
            raise RuntimeError("RayQueue needs Ray: create a Pool(backend='ray') or call "
                               "ray.init() first")
        self._q = ray.util.queue.Queue(max(0, maxsize), actor_options=actor_options)
        self._maxsize = max(0, maxsize)
        self._owner = True
        self._closed = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_queue, (self._q, self._maxsize))

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("Queue is closed")

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Blocks while the queue is full (up to ``timeout``); raises queue.Full after it."""
        self._check()
        self._q.put(obj, block=block, timeout=timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Blocks while the queue is empty (up to ``timeout``); raises queue.Empty after it."""
        self._check()
        return self._q.get(block=block, timeout=timeout)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = None) -> None:
        """Put every item in order, in one round trip when they all fit.

        If they do not, falls back to one blocking ``put`` each; raises queue.Full (with
        ``put_count``, as ``multitask.Queue.put_many``) if not all could be put in time.
        """
        self._check()
        items = list(items)
        try:
            self._q.put_nowait_batch(items)
            return
        except ray.util.queue.Full:
            if not block:
                exc = _queue.Full("the queue cannot take every item now")
                exc.put_count = 0  # type: ignore[attr-defined]
                raise exc
        deadline = None if timeout is None else time.monotonic() + timeout
        for i, item in enumerate(items):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._q.put(item, block=True, timeout=left)
            except ray.util.queue.Full:
                exc = _queue.Full(f"only {i} of {len(items)} items were put before the timeout")
                exc.put_count = i  # type: ignore[attr-defined]
                raise exc

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """At least one item (waiting up to ``timeout``) and at most ``max_items``."""
        self._check()
        if isinstance(max_items, bool) or not isinstance(max_items, int):
            raise TypeError(f"max_items must be an int, not {type(max_items).__name__}")
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        first = self._q.get(block=True, timeout=timeout)
        n = min(max_items - 1, self._q.qsize())
        rest = self._q.get_nowait_batch(n) if n > 0 else []
        return [first, *rest]

    def qsize(self) -> int:
        self._check()
        return int(self._q.qsize())

    def empty(self) -> bool:
        self._check()
        return bool(self._q.empty())

    def full(self) -> bool:
        self._check()
        return bool(self._q.full())

    def close(self) -> None:
        """No more use from this handle; the creator's close also stops the queue's actor."""
        if self._closed:
            return
        self._closed = True
        if self._owner:
            try:
                self._q.shutdown()
            except Exception:  # Ray already shut down
                pass

    def join_thread(self) -> None:
        """Nothing to join: there is no feeder thread (puts complete before they return)."""

    def cancel_join_thread(self) -> None:
        """Nothing to cancel (no feeder thread)."""


def _rebuild_queue(q: Any, maxsize: int) -> RayQueue:
    self = RayQueue.__new__(RayQueue)
    self._q = q
    self._maxsize = maxsize
    self._owner = False
    self._closed = False
    return self
