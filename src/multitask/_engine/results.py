"""Result objects handed to the caller: AsyncResult, MapResult and the imap iterators.

Every result is completed exactly once, by whichever thread settles the backend's results -- a
caller blocked in ``get()``/``next()`` of the same pool, or the result thread (process backend:
leader/follower) -- or by ``terminate``, through ``_set``.  Waiting uses a one-shot latch (a Lock
released on completion), which is cheaper than the stdlib's Event+Condition and is interruptible
by Ctrl-C.

Errors are never lost: a failed result that nobody retrieved -- no ``get()``, ``successful()`` or
``exception()`` call and no ``error_callback`` -- is logged on the ``"multitask"`` logger at ERROR,
with the worker's traceback, when the result object is garbage-collected or its pool is joined or
terminated (whichever comes first; it is logged once).  The stdlib drops such errors silently
(seed 004: "errors in a pool are not shown").
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._core import _interrupts
from .._core._errors import TimeoutError
from .log import logger

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")


_PENDING = object()


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(f"timeout must be non-negative or None, not {timeout!r}")
    return float(timeout)


def format_remote(exc: BaseException) -> str:
    """The text we log for an unretrieved failure: the exception plus the worker's traceback."""
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class AsyncResult(Generic[T]):
    """The result of ``Pool.apply_async`` (and the base of ``map_async``'s MapResult).

    ``get(timeout)`` blocks until the result is ready and returns it or raises the task's
    exception (with the worker's traceback as ``__cause__``); it raises
    :class:`multitask.TimeoutError` if not ready in time.  ``wait``, ``ready`` and ``successful``
    behave as in the stdlib.  Beyond the stdlib, an AsyncResult can be awaited from asyncio
    (``value = await pool.apply_async(f, (x,))``) and an unretrieved failure is logged instead of
    vanishing.
    """

    __slots__ = (
        "__weakref__",
        "_callback",
        "_error_callback",
        "_latch",
        "_pool_ref",
        "_retrieved",
        "_success",
        "_tb",
        "_value",
        "_waiters",
    )

    def __init__(self, pool_ref: Any = None,
                 callback: Callable[[Any], object] | None = None,
                 error_callback: Callable[[BaseException], object] | None = None) -> None:
        self._latch = threading.Lock()
        self._latch.acquire()
        self._value: Any = _PENDING
        self._success = False
        self._tb: Any = None
        self._retrieved = error_callback is not None
        self._callback = callback
        self._error_callback = error_callback
        self._pool_ref = pool_ref
        self._waiters: list[Callable[[AsyncResult[Any]], None]] | None = None

    # -- the stdlib API ----------------------------------------------------------------------
    def ready(self) -> bool:
        """True once the task finished (successfully or not).  Never blocks."""
        return self._value is not _PENDING

    def successful(self) -> bool:
        """True if the task returned without raising.  Raises ValueError if not ready yet."""
        if self._value is _PENDING:
            raise ValueError(f"{self!r} not ready")
        self._retrieved = True
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Block until ready or until ``timeout`` seconds passed (None: no limit).

        While it waits, the calling thread may read and settle the pool's results itself
        (the process backend's leader/follower scheme): that is what makes a round trip fast.
        """
        timeout = _check_timeout(timeout)
        if self._value is not _PENDING:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        pool = self._pool_ref
        if pool is not None and pool._lead(self.ready, deadline):
            if self._value is not _PENDING:
                return
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        got = self._latch.acquire(True, -1 if timeout is None else timeout)
        if got:
            self._latch.release()

    def get(self, timeout: float | None = None) -> T:
        """Return the result, or raise the task's exception.

        Blocks until the task is done or ``timeout`` seconds passed; raises
        :class:`multitask.TimeoutError` in the latter case.  A task that failed because its worker
        died raises :class:`multitask.WorkerDiedError`; one that ran past its ``task_timeout``
        raises :class:`multitask.TaskTimeoutError`.
        """
        self.wait(timeout)
        if self._value is _PENDING:
            raise TimeoutError(f"result not ready after {timeout} s")
        self._retrieved = True
        if self._success:
            value: T = self._value
            return value
        raise self._value.with_traceback(self._tb)

    # -- beyond the stdlib ---------------------------------------------------------------------
    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (None if it succeeded); blocks like ``get``."""
        self.wait(timeout)
        if self._value is _PENDING:
            raise TimeoutError(f"result not ready after {timeout} s")
        self._retrieved = True
        return None if self._success else self._value

    def add_done_callback(self, fn: Callable[[AsyncResult[Any]], None]) -> None:
        """Call ``fn(self)`` when done (at once if already done), in the completing thread."""
        if self._value is not _PENDING:
            fn(self)
            return
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fn)
        # Completion may have raced with the append; _set drains waiters after publishing.
        if self._value is not _PENDING and fn in self._waiters:
            self._waiters.remove(fn)
            fn(self)

    def __await__(self) -> Generator[Any, None, T]:
        if self._value is _PENDING:
            import asyncio  # here, not at module level: it costs ~30 ms to import

            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()

            def wake(_: AsyncResult[Any]) -> None:
                loop.call_soon_threadsafe(_resolve, fut)

            self.add_done_callback(wake)
            yield from fut.__await__()
        return self.get()

    # -- completion (result thread) ------------------------------------------------------------
    def _set(self, success: bool, value: Any) -> None:
        if self._value is not _PENDING:
            return
        # As in the stdlib, the callback has run by the time get() returns.
        cb = self._callback if success else self._error_callback
        if cb is not None:
            try:
                cb(value)
            except BaseException:  # a raising callback must not kill the result thread
                logger.exception("multitask: %s raised in the result thread",
                                 "callback" if success else "error_callback")
        self._success = success
        self._value = value
        if not success:
            # Raised again by every get() with this traceback: re-raising an exception object
            # prepends the raiser's frames to the traceback it has, so without it each get() --
            # and each result sharing one exception (terminate fails them all with one) -- would
            # grow it: after terminate() with 300 000 results outstanding, tracebacks of ~10^5
            # frames, formatted for every unretrieved one (found by the soak, issue #16).
            self._tb = value.__traceback__
        self._latch.release()
        pool = self._pool_ref
        if pool is not None:
            pool._kick()   # a caller reading results for this one must look again
        waiters, self._waiters = self._waiters, None
        if waiters:
            for fn in waiters:
                try:
                    fn(self)
                except BaseException:
                    logger.exception("multitask: done-callback raised")

    def _report_unretrieved(self, when: str) -> None:
        if self._value is _PENDING or self._success or self._retrieved:
            return
        self._retrieved = True
        exc = self._value
        logger.error("multitask: a task failed and its error was never retrieved (%s):\n%s",
                     when, format_remote(exc))

    def __del__(self) -> None:
        try:
            self._report_unretrieved("result garbage-collected")
        except Exception:
            pass

    def __repr__(self) -> str:
        state = ("pending" if self._value is _PENDING
                 else "ok" if self._success else f"failed: {type(self._value).__name__}")
        return f"<{type(self).__name__} {state}>"


ApplyResult = AsyncResult  # the stdlib's name


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MapResult(AsyncResult[list[Any]]):
    """The result of ``map_async``/``starmap_async``: a list in input order.

    Fails as a whole with the first error of any chunk (as the stdlib does); the chunks not yet
    started are then not run.
    """

    __slots__ = ("_items", "_lock", "_remaining")

    def __init__(self, pool_ref: Any, length: int, callback: Any = None,
                 error_callback: Any = None) -> None:
        super().__init__(pool_ref, callback, error_callback)
        self._items: list[Any] = [None] * length
        self._remaining = length
        self._lock = threading.Lock()
        if length == 0:
            self._set(True, self._items)

    def _deliver(self, start: int, ok: bool, values: Any, n: int) -> bool:
        """Store one chunk; returns False if the whole result is now failed."""
        if self._value is not _PENDING:
            return self._success
        if not ok:
            self._set(False, values)
            return False
        with self._lock:
            self._items[start:start + n] = values
            self._remaining -= n
            done = self._remaining == 0
        if done:
            self._set(True, self._items)
        return True


class IMapIterator(Iterator[T]):
    """The iterator returned by ``imap`` (ordered) and ``imap_unordered``.

    ``next(timeout=None)`` blocks until the next result is available (``multitask.TimeoutError``
    after ``timeout``).  A failed task raises its exception at its position; iteration may
    continue after it (the stdlib stops when chunksize > 1).
    """

    def __init__(self, ordered: bool, pool_ref: Any = None) -> None:
        self._ordered = ordered
        # Critical sections take ``_lock`` itself (``with self._lock``), never the Condition: a
        # Condition's __enter__/__exit__ are Python functions, where CPython checks for a pending
        # Ctrl-C on entry -- a KeyboardInterrupt raised as __exit__ starts would leave the lock
        # held for ever (every later next(), and the thread delivering results, block on it).
        # A Lock's own __enter__/__exit__ are C: nothing can run between them and the with.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # (ok, values or the exception, items, the exception's traceback as delivered: see
        # AsyncResult._set for why it is kept)
        self._ready: collections.deque[tuple[bool, Any, int, Any]] = collections.deque()
        self._by_start: dict[int, tuple[bool, Any, int, Any]] = {}
        self._next_start = 0
        self._chunk: Any = None             # the chunk being yielded, and the next position in it
        self._pos = 0
        self._length: int | None = None    # total items, once known
        self._yielded = 0                   # items yielded or skipped (failed chunks)
        self._pool_ref = pool_ref
        self._unretrieved: list[BaseException] = []
        self._stop_at: int | None = None   # the input iterable failed here (see _stop)
        # next()'s held-back regions need multitask's SIGINT handler in place; lead() installs
        # it, but a consumer that never has to wait never leads (a Ctrl-C would then drop a
        # chunk popped off _ready).  A no-op outside the main thread.
        if pool_ref is not None:
            _interrupts.install()

    def _set_length(self, n: int) -> None:
        with self._lock:
            self._length = n if self._stop_at is None else min(n, self._stop_at)
            self._cond.notify_all()
        self._kick()

    def _stop(self, at: int, exc: BaseException) -> None:
        """The input iterable raised: ``exc`` is raised after the results of positions
        ``0..at-1`` and iteration ends there; results for later positions are dropped (ordered:
        as the stdlib's imap, which never forms the chunk the failure fell in)."""
        with self._lock:
            self._stop_at = at
            if self._length is not None:
                self._length = min(self._length, at)
        self._deliver(at, False, exc, 0)

    def _deliver(self, start: int, ok: bool, values: Any, n: int) -> bool:
        tb = None if ok else values.__traceback__
        with self._lock:
            if self._ordered:
                if self._stop_at is not None and start >= self._stop_at and n:
                    return True   # past the iterable's failure (see _stop)
                self._by_start[start] = (ok, values, n, tb)
                while self._next_start in self._by_start:
                    item = self._by_start.pop(self._next_start)
                    self._ready.append(item)
                    self._next_start += item[2]
            else:
                self._ready.append((ok, values, n, tb))
            self._cond.notify()
        self._kick()
        return True

    def _kick(self) -> None:
        pool = self._pool_ref
        if pool is not None:
            pool._kick()

    def _available(self) -> bool:
        """Something for next() to return or raise (read without the lock: a hint)."""
        return bool(self._ready) or (self._length is not None and self._yielded >= self._length)

    def __iter__(self) -> IMapIterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        timeout = _check_timeout(timeout)
        while True:
            chunk = self._chunk
            if chunk is not None:
                # No call between taking the item and returning it: CPython raises a pending
                # KeyboardInterrupt only at calls and loop ends, so none can drop the item here.
                i = self._pos
                if i < len(chunk):
                    self._pos = i + 1
                    item: T = chunk[i]
                    # not kept once handed out: the consumer alone decides how long it lives
                    # (an ``del obj`` in the loop frees it; CPython bpo-14406)
                    chunk[i] = None
                    return item
                self._chunk = None
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self._available() and self._pool_ref is not None:
                # Read the pool's results in this thread while waiting (leader/follower).
                self._pool_ref._lead(self._available, deadline)
            # A Ctrl-C is held back while this thread waits for the lock (the thread delivering
            # results holds it only briefly) and is raised inside the with block, which
            # releases the lock however it is left (see __init__).
            _interrupts.enter()
            with self._lock:
                _interrupts.end()
                while not self._ready:
                    if self._length is not None and self._yielded >= self._length:
                        raise StopIteration
                    if deadline is None:
                        self._cond.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"no result within {timeout} s")
                        self._cond.wait(left)
                # Popping the chunk and keeping it must not be cut by a Ctrl-C in between
                # (the chunk would be lost): held back until both are done.
                _interrupts.enter()
                try:
                    ok, values, n, tb = self._ready.popleft()
                    self._yielded += n
                    if ok:
                        # (a list of its own: next() clears each slot it hands out)
                        self._chunk = values if type(values) is list else list(values)
                        self._pos = 0
                finally:
                    _interrupts.end()
            if not ok:
                raise values.with_traceback(tb)

    __next__ = next

    def next_run(self, timeout: float | None = None) -> list[T]:
        """The next result and every result after it already here in the same chunk, at once
        (one call per chunk instead of one per item: ``Executor.map``).  Raises as
        :meth:`next`; the results are no longer kept here."""
        first = self.next(timeout)
        chunk = self._chunk
        if chunk is None or self._pos >= len(chunk):
            return [first]
        i = self._pos
        run = [first, *chunk[i:]]
        self._pos = len(chunk)
        self._chunk = None
        return run
