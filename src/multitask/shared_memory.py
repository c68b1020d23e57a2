"""Named shared memory between processes: ``SharedMemory`` and ``ShareableList``.

The stdlib's :mod:`multiprocessing.shared_memory`, with ``track=`` (added in Python 3.13)
accepted on every version: ``SharedMemory(name, create=False, size=0, *, track=True)``.  With
``track=False`` the segment is not registered with the stdlib's resource tracker, so the tracker
neither unlinks it when this process exits -- the stdlib's lifetime bug for segments that other,
unrelated processes still use (CPython gh-82300) -- nor warns about it as "leaked" (gh-116849);
the program then owns the segment's lifetime and must call :meth:`SharedMemory.unlink` exactly
once.  ``track=True`` (the default) is the stdlib's behaviour.

For arrays sent to a Pool's workers, prefer :func:`multitask.shared_array`, whose segments are
released when the last process using them lets go (reference-counted, also after crashes).
"""

from __future__ import annotations

import sys
from multiprocessing import shared_memory as _std
from typing import Any

__all__ = ["ShareableList", "SharedMemory"]

ShareableList = _std.ShareableList

if sys.version_info >= (3, 13):
    SharedMemory = _std.SharedMemory
else:
    class SharedMemory(_std.SharedMemory):
        """:class:`multiprocessing.shared_memory.SharedMemory` with 3.13's ``track=``."""

        def __init__(self, name: str | None = None, create: bool = False, size: int = 0, *,
                     track: bool = True) -> None:
            if not isinstance(track, bool):
                raise TypeError(f"track must be a bool, not {type(track).__name__}")
            super().__init__(name, create, size)
            self._track = track
            if not track:
                # The stdlib registers every segment it creates *or attaches* (3.8-3.12); take
                # it back at once, so the tracker never unlinks or reports it.
                from multiprocessing import resource_tracker

                resource_tracker.unregister(self._name, "shared_memory")  # type: ignore[attr-defined]

        def unlink(self) -> None:
            """Remove the segment's name (once, by one process); the memory lives on while any
            process still has it mapped."""
            if getattr(self, "_track", True):
                super().unlink()
                return
            import _posixshmem

            _posixshmem.shm_unlink(self._name)  # type: ignore[attr-defined]

        def __reduce__(self) -> tuple[Any, ...]:
            return (_attach, (self.name, getattr(self, "_track", True)))


def _attach(name: str, track: bool) -> Any:
    """Unpickling: attach to the segment, tracked as the sender's was."""
    return SharedMemory(name, track=track)
