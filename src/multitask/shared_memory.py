"""Named shared memory between processes: ``SharedMemory`` and ``ShareableList``.

The stdlib's :mod:`multiprocessing.shared_memory`, without its lifetime bugs, on every version:

* **Unlinked when its last user is gone, never while one has it open.**  The stdlib's resource
  tracker unlinks a segment when the process that created *or attached* it (3.8-3.12) exits,
  while other processes still use it, and warns that it "leaked" (CPython gh-82300,
  gh-116849).  Here a segment is unlinked once every process that used it has exited -- normally
  or by a crash, SIGKILL included -- and none still has it open; between related processes or
  unrelated ones attaching by name.  No "leaked shared_memory" warning is printed.  The protocol
  (kernel flocks counting the users, a small reaper process per family) is in
  :mod:`multitask._core._shm`.
* ``close()`` and ``unlink()`` mean what they mean in the stdlib: ``close()`` drops this handle
  (the segment lives on: a process may create one, hand its name on and close it), ``unlink()``
  removes the name at once.  Calling ``unlink()`` as the stdlib's documentation asks stays
  correct; it is only no longer needed after a crash.
* ``track=`` (3.13) on every version: ``track=False`` keeps the segment out of the automatic
  clean-up entirely -- the program must ``unlink()`` it -- while the handle still counts as a user,
  so no other process's clean-up removes it while it is open.

Differences from the stdlib: segments live in ``/dev/shm`` (Linux); a process attached through
the stdlib's own class is not counted as a user; the first segment a process uses starts its
reaper (~10 ms, like the stdlib's tracker).  For arrays sent to a Pool's workers,
:func:`multitask.shared_array` is simpler still (anonymous memory, no name to manage).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from multiprocessing import resource_tracker as _tracker
from multiprocessing import shared_memory as _std
from typing import Any, TypeVar, cast, overload

from multitask._core import _shm

__all__ = ["ShareableList", "SharedMemory"]

# The stdlib's naming of anonymous segments, used through its module (so code that patches
# ``multiprocessing.shared_memory._make_filename``, as CPython's tests do, patches ours too).
_SHM_NAME_PREFIX: str = _std._SHM_NAME_PREFIX  # type: ignore[attr-defined]
_USE_POSIX = True


class SharedMemory(_std.SharedMemory):
    """:class:`multiprocessing.shared_memory.SharedMemory`, reference-counted across processes.

    ``SharedMemory(name=None, create=False, size=0, *, track=True)``.  Raises ``ValueError`` for a
    bad size or a missing name (as the stdlib), ``FileExistsError`` when creating a name that
    exists, ``FileNotFoundError`` when attaching to one that does not, ``OSError`` for a name the
    system rejects.  Never blocks, except for the moment a reaper examines the segment.
    """

    _key: _shm.Key | None = None     # set when the reaper was told about this handle
    _counted = False                 # this handle is open and counted in _shm's registry

    def __init__(self, name: str | None = None, create: bool = False, size: int = 0, *,
                 track: bool = True) -> None:
        if not isinstance(track, bool):
            raise TypeError(f"track must be a bool, not {type(track).__name__}")
        if not isinstance(size, int) or not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create and size == 0:
            raise ValueError("'size' must be a positive number different from zero")
        if name is None and not create:
            raise ValueError("'name' can only be None if create=True")
        self._track = track
        if create:
            self._flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
            while True:
                bare: str = _std._make_filename() if name is None else name  # type: ignore[attr-defined]
                try:
                    fd = _shm.create(bare, size, 0o600)
                except FileExistsError:
                    if name is None:
                        continue   # a random name taken: draw another (as the stdlib)
                    raise
                break
        else:
            bare = cast(str, name)   # not None: checked above
            try:
                fd = _shm.attach(bare)
            except FileNotFoundError:
                # A subclass whose ``_flags`` include O_CREAT attaches or creates (the stdlib
                # honours its class's flags; CPython's tests rely on it).
                if not self._flags & os.O_CREAT or not size:
                    raise
                fd = _shm.create(bare, size, 0o600)
                create = True
        self._fd = fd
        self._name = "/" + bare.lstrip("/")
        try:
            st = os.fstat(fd)
            self._size = size = st.st_size
            self._mmap = mmap.mmap(fd, size)
            if track:
                self._key = _shm.register(self._name, st)
                self._counted = True
        except BaseException:
            if create:
                self._remove_name()
            self.close()
            raise
        self._buf = memoryview(self._mmap)

    def close(self) -> None:
        """Drop this handle: its mapping (the ``buf`` views must be released first, as in the
        stdlib: ``BufferError`` otherwise) and its descriptor, which stops this handle counting as
        a user.  The segment itself lives on; it is reaped when no process uses it any more."""
        super().close()
        if self._counted:
            self._counted = False
            _shm.closed(self._key)  # type: ignore[arg-type]

    def unlink(self) -> None:
        """Remove the segment's name now (processes that have it mapped keep the memory), as
        the stdlib's ``unlink()``.  Raises ``FileNotFoundError`` if the name is gone already."""
        self._remove_name()
        if self._key is not None:
            _shm.forget(self._key)

    def _remove_name(self) -> None:
        os.unlink(_shm.shm_path(self._name))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (self.name, self._track))


def _attach(name: str, track: bool) -> SharedMemory:
    """Unpickling: attach to the segment by name, tracked as the sender's was."""
    return SharedMemory(name, track=track)


# The item types a ShareableList holds (typeshed's constraint).
_SLT = TypeVar("_SLT", int, float, bool, str, bytes, None)


class ShareableList(_std.ShareableList[_SLT]):
    """:class:`multiprocessing.shared_memory.ShareableList` stored in a multitask
    :class:`SharedMemory` (``.shm``), so it has the same lifetime: reaped when its last user is
    gone.  The list's layout is the stdlib's, so a stdlib process can read it by name.

    The stdlib builds the list in its own segment class; the new list's segment is taken over at
    once (attached as a multitask segment, the stdlib's handle closed and taken back from its
    resource tracker).  Until then -- the constructor's few microseconds -- only a process that
    guessed the name could attach to it and, by exiting, have it reaped.
    """

    @overload
    def __init__(self, sequence: None = None, *, name: str | None = None) -> None: ...
    @overload
    def __init__(self, sequence: Iterable[_SLT], *, name: str | None = None) -> None: ...
    def __init__(self, sequence: Iterable[_SLT] | None = None, *,
                 name: str | None = None) -> None:
        # typeshed's __init__ is overloaded on sequence=None, and mypy matches neither overload
        # with the union through super() of a value-restricted TypeVar
        super().__init__(sequence, name=name)  # type: ignore[arg-type]
        std = self.shm
        self.shm = SharedMemory(std.name)
        std.close()
        _tracker.unregister(std._name, "shared_memory")  # type: ignore[attr-defined]
