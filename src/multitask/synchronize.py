"""Process-shared synchronisation primitives: the stdlib's, with argument checking.

``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``, ``Condition``, ``Event`` and ``Barrier``
are subclasses of the stdlib's ``multiprocessing.synchronize`` classes, which are built on POSIX
named semaphores (``SemLock``) and are sound; they are shared with children by inheritance (as
``Process`` arguments), not through queues.  What multitask adds:

* Bad arguments raise at the call: ``Semaphore(-1)`` -> ``ValueError`` (the stdlib creates a
  semaphore it then cannot use), ``Semaphore("3")``/``Barrier(0)`` -> ``TypeError``/``ValueError``.
* ``ctx`` is optional (default: multitask's default context).

Blocking: ``acquire()``/``wait()`` block until available or ``timeout``; nothing else blocks.
A lock created in a ``fork`` context cannot be given to a ``spawn``/``forkserver`` child
(``RuntimeError`` from the stdlib, as there).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from multiprocessing import synchronize as _mps
from typing import Any

__all__ = ["Barrier", "BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore"]

# The largest value a POSIX semaphore may hold (SEM_VALUE_MAX on Linux).
_SEM_VALUE_MAX: int = _mps.SEM_VALUE_MAX  # type: ignore[attr-defined]


def _ctx(ctx: Any) -> Any:
    if ctx is None:
        from .context import _default_context

        return _default_context.get_context()
    return ctx


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    if value > _SEM_VALUE_MAX:
        raise ValueError(f"{what} must be <= {_SEM_VALUE_MAX} (SEM_VALUE_MAX), got {value}")
    return value


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")


class _ForkContextCheck:
    """Python 3.10's ``SemLock`` lets a lock made in a ``fork`` context be pickled for a
    ``spawn``/``forkserver`` child, which then fails to rebuild it (its name was unlinked when
    it was made: ``FileNotFoundError`` in the child).  3.11 raises ``RuntimeError`` in the parent
    instead; this does the same on 3.10 (a no-op where the stdlib checks)."""

    def __init__(self, *args: Any, ctx: Any, **kwargs: Any) -> None:
        super().__init__(*args, ctx=ctx, **kwargs)  # type: ignore[call-arg]
        if not hasattr(self, "_is_fork_ctx"):   # Python 3.10
            self._mt_fork_ctx = ctx.get_start_method() == "fork"

    def __getstate__(self) -> Any:
        if getattr(self, "_mt_fork_ctx", False) and sys.platform != "win32":
            _mps.context.assert_spawning(self)   # type: ignore[attr-defined]
            raise RuntimeError("A SemLock created in a fork context is being shared with a "
                               "process in a spawn context. This is not supported. Please use "
                               "the same context to create multiprocessing objects and "
                               "Process.")
        return super().__getstate__()  # type: ignore[misc]


class Lock(_ForkContextCheck, _mps.Lock):
    """A non-recursive lock shared between processes (``acquire(block=True, timeout=None)``)."""

    def __init__(self, *, ctx: Any = None) -> None:
        super().__init__(ctx=_ctx(ctx))


class RLock(_ForkContextCheck, _mps.RLock):
    """A recursive lock shared between processes; only its owner may release it."""

    def __init__(self, *, ctx: Any = None) -> None:
        super().__init__(ctx=_ctx(ctx))


class Semaphore(_ForkContextCheck, _mps.Semaphore):
    """A counter shared between processes; ``acquire`` blocks at 0, ``get_value()`` reads it.

    Raises ``TypeError`` for a non-int ``value``, ``ValueError`` for a negative one.
    """

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        super().__init__(_check_count(value, "Semaphore value"), ctx=_ctx(ctx))


class BoundedSemaphore(_ForkContextCheck, _mps.BoundedSemaphore):
    """A :class:`Semaphore` whose ``release()`` raises ``ValueError`` above the initial value."""

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        super().__init__(_check_count(value, "BoundedSemaphore value"), ctx=_ctx(ctx))


class Condition(_mps.Condition):
    """A condition variable shared between processes, over ``lock`` (default a new RLock).

    Raises ``TypeError`` if ``lock`` is not a multiprocessing ``Lock``/``RLock``.  ``wait()``
    blocks until notified or ``timeout``.
    """

    def __init__(self, lock: _mps.Lock | _mps.RLock | None = None, *, ctx: Any = None) -> None:
        if lock is not None and not isinstance(lock, _mps.SemLock):
            raise TypeError("Condition(lock) needs a multiprocessing Lock or RLock, not "
                            f"{type(lock).__name__} (a threading lock cannot cross processes)")
        super().__init__(lock, ctx=_ctx(ctx))

    def wait(self, timeout: float | None = None) -> bool:
        _check_timeout(timeout)
        return bool(super().wait(timeout))


class Event(_mps.Event):
    """An event flag shared between processes; ``wait(timeout)`` blocks until it is set."""

    def __init__(self, *, ctx: Any = None) -> None:
        super().__init__(ctx=_ctx(ctx))

    def wait(self, timeout: float | None = None) -> bool:
        _check_timeout(timeout)
        return bool(super().wait(timeout))


class Barrier(_mps.Barrier):
    """A barrier for ``parties`` processes (``threading.Barrier`` semantics, shared state).

    Raises ``TypeError``/``ValueError`` unless ``parties`` is a positive int, ``TypeError`` if
    ``action`` is not callable.  ``wait()`` blocks until all parties arrive or ``timeout``
    (``threading.BrokenBarrierError`` then).
    """

    def __init__(self, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None, *, ctx: Any = None) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int):
            raise TypeError(f"parties must be an int, not {type(parties).__name__}")
        if parties < 1:
            raise ValueError(f"parties must be >= 1, got {parties}")
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None, not {type(action).__name__}")
        _check_timeout(timeout)
        # The stdlib allocates the barrier's state from multiprocessing.heap, whose arena file
        # descriptors are never released; use a per-object shared buffer instead.
        import struct

        from .sharedctypes import _SharedBuffer

        wrapper = _SharedBuffer(struct.calcsize("i") * 2)
        cond = Condition(ctx=_ctx(ctx))
        self.__setstate__((parties, action, timeout, cond, wrapper))  # type: ignore[attr-defined]
        self._state = 0
        self._count = 0
