"""Shared-memory ctypes objects: ``Value``, ``Array``, ``RawValue``, ``RawArray``.

The API and the synchronised wrappers (``.value``, indexing, slicing, ``get_lock()``,
``get_obj()``, ``.value``/``.raw`` of ``'c'`` arrays) are the stdlib's
``multiprocessing.sharedctypes``.  Differences:

* **Memory**: each object gets its own anonymous shared mapping (``memfd_create``, or an
  unlinked file in ``/dev/shm`` elsewhere) which is released -- mapping and descriptor -- when the
  object is garbage-collected.  The stdlib allocates from a process-wide heap whose first arenas
  (and their file descriptors) are never released.
* **Clear errors at the call**: an unknown typecode (``Value("zz", 1)``) raises ``TypeError``
  naming the valid typecodes; a negative size raises ``ValueError``; an initialiser of the wrong
  type or length raises ``TypeError``/``ValueError`` naming the typecode; ``lock=`` must be a bool
  or a lock.

Objects are shared with children by inheritance (``Process`` arguments), as in the stdlib;
sending one through a queue raises ``RuntimeError``.  Nothing here blocks except acquiring the
lock of a synchronised object.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import tempfile
import weakref
from collections.abc import Sequence
from multiprocessing import reduction as _reduction
from multiprocessing import sharedctypes as _mpsc_module
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

if TYPE_CHECKING:  # names for annotations only: nothing below runs, import time is unchanged
    from _ctypes import _CData
    from ctypes import Array as _CArray
    from ctypes import _SimpleCData, c_char
    from multiprocessing.sharedctypes import (
        Synchronized,
        SynchronizedArray,
        SynchronizedBase,
        SynchronizedString,
    )

    from .context import Context

    _T = TypeVar("_T")
    _CT = TypeVar("_CT", bound=_CData)

    # The typecodes of typecode_to_type, by the Python type of an element's value.
    _IntCode = Literal["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q"]
    _FloatCode = Literal["f", "d"]

    class _LockLike(Protocol):
        """What ``lock=`` accepts: anything with ``acquire`` and ``release`` (a multitask or
        stdlib ``Lock``/``RLock``, a manager's lock proxy...), as :func:`_lock_for` checks."""

        def acquire(self, *args: Any, **kwargs: Any) -> Any: ...

        def release(self) -> None: ...

_mpsc: Any = _mpsc_module  # typeshed lacks typecode_to_type/rebuild_ctype

__all__ = ["Array", "RawArray", "RawValue", "Value", "copy", "synchronized", "typecode_to_type"]

#: typecode -> ctypes type (the stdlib's table, the ``array`` module's codes)
typecode_to_type: dict[str, type] = dict(_mpsc.typecode_to_type)

_VALID = ", ".join(repr(k) for k in typecode_to_type)


class _SharedBuffer:
    """``size`` bytes of shared memory, inherited by fork children and passed to spawn children.

    Holds the file descriptor (needed to hand the memory to a spawn/forkserver child) until the
    object dies; the mapping is released by ``mmap``'s own deallocation once nothing views it.
    """

    def __init__(self, size: int, fd: int = -1) -> None:
        self.size = size
        if fd < 0:
            fd = _new_fd(max(size, 1))
        self.fd = fd
        self._finalizer = weakref.finalize(self, _close_fd, fd)
        self._map = mmap.mmap(fd, max(size, 1))

    def create_memoryview(self) -> memoryview:
        return memoryview(self._map)[: self.size]

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.context import assert_spawning

        assert_spawning(self)
        return (_rebuild_buffer, (self.size, _reduction.DupFd(self.fd)))


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _new_fd(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mt-sharedctypes", os.MFD_CLOEXEC)
    else:  # pragma: no cover - non-Linux
        d = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, name = tempfile.mkstemp(prefix=f"mt-{os.getpid()}-", dir=d)
        os.unlink(name)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def _rebuild_buffer(size: int, dupfd: Any) -> _SharedBuffer:
    return _SharedBuffer(size, dupfd.detach())


def _resolve_type(typecode_or_type: Any) -> Any:
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            raise TypeError(f"unknown typecode {typecode_or_type!r}; valid typecodes are "
                            f"{_VALID} (or pass a ctypes type such as ctypes.c_int)") from None
    if isinstance(typecode_or_type, type) and issubclass(
            typecode_or_type, (ctypes._SimpleCData, ctypes.Structure, ctypes.Union,
                               ctypes.Array)):
        if issubclass(typecode_or_type, ctypes._Pointer):  # pragma: no cover - defensive
            raise TypeError("pointer types cannot be shared between processes")
        return typecode_or_type
    raise TypeError(f"typecode_or_type must be a typecode ({_VALID}) or a ctypes type, "
                    f"not {typecode_or_type!r}")


def _new_value(type_: Any) -> Any:
    size = ctypes.sizeof(type_)
    wrapper = _SharedBuffer(size)
    return _mpsc.rebuild_ctype(type_, wrapper, None)


def _describe(typecode_or_type: Any) -> str:
    if isinstance(typecode_or_type, str):
        return f"typecode {typecode_or_type!r} ({typecode_to_type[typecode_or_type].__name__})"
    return str(typecode_or_type.__name__)


@overload
def RawValue(typecode_or_type: type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
def RawValue(typecode_or_type: str | type[_CData], *args: Any) -> Any:
    """A ctypes object in shared memory, initialised with ``*args``; no lock.

    Raises ``TypeError`` for an unknown typecode or an initialiser of the wrong type.
    """
    type_ = _resolve_type(typecode_or_type)
    obj = _new_value(type_)
    try:
        obj.__init__(*args)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot initialise a shared {_describe(typecode_or_type)} with "
                        f"{args!r}: {exc}") from None
    return obj


@overload
def RawArray(typecode_or_type: type[_CT],
             size_or_initializer: int | Sequence[Any]) -> _CArray[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...
def RawArray(typecode_or_type: str | type[_CData],
             size_or_initializer: int | Sequence[Any]) -> Any:
    """A ctypes array in shared memory: zeroed of length ``size``, or a copy of a sequence.

    Raises ``TypeError`` for an unknown typecode, a non-int/non-sequence ``size_or_initializer``
    or elements of the wrong type; ``ValueError`` for a negative size.
    """
    type_ = _resolve_type(typecode_or_type)
    if isinstance(size_or_initializer, bool):
        raise TypeError("size_or_initializer must be an int size or a sequence, not a bool")
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError(f"Array size must be >= 0, got {size_or_initializer}")
        if size_or_initializer > sys.maxsize // max(1, ctypes.sizeof(type_)):
            raise OverflowError(f"Array size {size_or_initializer} is too large")
        return _new_value(type_ * size_or_initializer)  # fresh memfd memory is zeroed
    try:
        length = len(size_or_initializer)
    except TypeError:
        raise TypeError("size_or_initializer must be an int size or a sequence (list, bytes, "
                        f"...), not {type(size_or_initializer).__name__}") from None
    result = _new_value(type_ * length)
    try:
        result.__init__(*size_or_initializer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot initialise a shared array of {_describe(typecode_or_type)} "
                        f"from {type(size_or_initializer).__name__}: {exc}") from None
    return result


def _lock_for(lock: bool | _LockLike | None, ctx: Context | None) -> _LockLike:
    if lock is True or lock is None:
        if ctx is None:
            from .context import _default_context

            ctx = _default_context.get_context()
        return ctx.RLock()
    if lock is False or not (hasattr(lock, "acquire") and hasattr(lock, "release")):
        raise NotALockError(f"lock must be True, False or a lock object (with "
                            f"acquire/release), not {lock!r}")
    return lock


class NotALockError(TypeError, AttributeError):
    """``lock=`` is neither a bool nor a lock.  A TypeError (the clear error), and also the
    AttributeError the stdlib raises there (``'str' object has no attribute 'acquire'``), so
    code written for either catches it."""


# Value and Array: lock=False returns the raw ctypes object; otherwise the stdlib's wrapper for
# it (typeshed's context.pyi says Synchronized for lock=False, which is not what runs).
@overload
def Value(typecode_or_type: type[_CT], *args: Any, lock: Literal[False],
          ctx: Context | None = None) -> _CT: ...
@overload
def Value(typecode_or_type: str, *args: Any, lock: Literal[False],
          ctx: Context | None = None) -> Any: ...
@overload
def Value(typecode_or_type: type[_SimpleCData[_T]], *args: Any,
          lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> Synchronized[_T]: ...
@overload
def Value(typecode_or_type: type[_CT], *args: Any, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedBase[_CT]: ...
@overload
def Value(typecode_or_type: _IntCode, *args: Any, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> Synchronized[int]: ...
@overload
def Value(typecode_or_type: _FloatCode, *args: Any, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> Synchronized[float]: ...
@overload
def Value(typecode_or_type: Literal["c"], *args: Any, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> Synchronized[bytes]: ...
@overload
def Value(typecode_or_type: Literal["u"], *args: Any, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> Synchronized[str]: ...
@overload
def Value(typecode_or_type: str, *args: Any, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> Synchronized[Any]: ...
@overload
def Value(typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True,
          ctx: Context | None = None) -> Any: ...
def Value(typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True,
          ctx: Context | None = None) -> Any:
    """A synchronised shared ctypes object (``.value``, ``get_lock()``, ``get_obj()``).

    ``lock=True`` (default) makes a new ``RLock``; ``lock=False`` returns the raw object; a lock
    object is used as given.  Raises as :func:`RawValue`, and ``TypeError`` for a bad ``lock``.
    """
    if lock is not False:
        lock = _lock_for(lock, ctx)
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return _mpsc.synchronized(obj, lock, ctx=ctx)


@overload
def Array(typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any], *,
          lock: Literal[False], ctx: Context | None = None) -> _CArray[_CT]: ...
@overload
def Array(typecode_or_type: str, size_or_initializer: int | Sequence[Any], *,
          lock: Literal[False], ctx: Context | None = None) -> Any: ...
@overload
def Array(typecode_or_type: type[c_char] | Literal["c"],
          size_or_initializer: int | Sequence[Any], *, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedString: ...
@overload
def Array(typecode_or_type: type[_SimpleCData[_T]], size_or_initializer: int | Sequence[Any],
          *, lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedArray[_T]: ...
@overload
def Array(typecode_or_type: type[_CData], size_or_initializer: int | Sequence[Any], *,
          lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedArray[Any]: ...
@overload
def Array(typecode_or_type: _IntCode, size_or_initializer: int | Sequence[Any], *,
          lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedArray[int]: ...
@overload
def Array(typecode_or_type: _FloatCode, size_or_initializer: int | Sequence[Any], *,
          lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedArray[float]: ...
@overload
def Array(typecode_or_type: Literal["u"], size_or_initializer: int | Sequence[Any], *,
          lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedArray[str]: ...
@overload
def Array(typecode_or_type: str, size_or_initializer: int | Sequence[Any], *,
          lock: Literal[True] | _LockLike = True,
          ctx: Context | None = None) -> SynchronizedArray[Any]: ...
@overload
def Array(typecode_or_type: str | type[_CData], size_or_initializer: int | Sequence[Any], *,
          lock: bool | _LockLike = True, ctx: Context | None = None) -> Any: ...
def Array(typecode_or_type: str | type[_CData], size_or_initializer: int | Sequence[Any], *,
          lock: bool | _LockLike = True, ctx: Context | None = None) -> Any:
    """A synchronised shared ctypes array (indexing, slicing, ``len``, ``get_lock()``).

    ``'c'`` arrays also have ``.value`` (bytes up to the first NUL) and ``.raw``.  Raises as
    :func:`RawArray`, and ``TypeError`` for a bad ``lock``.
    """
    if lock is not False:
        lock = _lock_for(lock, ctx)
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    return _mpsc.synchronized(obj, lock, ctx=ctx)


def copy(obj: _CT) -> _CT:
    """A new shared ctypes object with a copy of ``obj``'s contents."""
    new_obj: _CT = _new_value(type(obj))
    ctypes.pointer(new_obj)[0] = obj
    return new_obj


@overload
def synchronized(obj: _SimpleCData[_T], lock: _LockLike | None = None,
                 ctx: Context | None = None) -> Synchronized[_T]: ...
@overload
def synchronized(obj: _CArray[c_char], lock: _LockLike | None = None,
                 ctx: Context | None = None) -> SynchronizedString: ...
@overload
def synchronized(obj: _CArray[_SimpleCData[_T]], lock: _LockLike | None = None,
                 ctx: Context | None = None) -> SynchronizedArray[_T]: ...
@overload
def synchronized(obj: _CT, lock: _LockLike | None = None,
                 ctx: Context | None = None) -> SynchronizedBase[_CT]: ...
def synchronized(obj: _CData, lock: _LockLike | None = None,
                 ctx: Context | None = None) -> SynchronizedBase[Any]:
    """Wrap a shared ctypes object with a lock (the stdlib's wrappers)."""
    wrapper: SynchronizedBase[Any] = _mpsc.synchronized(obj, _lock_for(lock, ctx), ctx=ctx)
    return wrapper
