"""The thread versions of the multiprocessing API (the notes' thread lesson, old crawlers):
the stdlib's ``multiprocessing.dummy``, except that ``Pool`` is multitask's
:class:`~multitask.pool.ThreadPool` -- the thread backend, with everything a multitask Pool
promises (errors never swallowed, ``task_timeout``, statistics, ``multitask ps``) -- instead of
the stdlib's ``ThreadPool``.

``Process`` is a thread (``DummyProcess``), ``Queue`` is :class:`queue.Queue`, the locks are
:mod:`threading`'s, ``Manager()`` returns this module (as in the stdlib).
"""

from __future__ import annotations

from collections.abc import Iterable
from multiprocessing.dummy import *  # noqa: F403
from multiprocessing.dummy import __all__ as _all
from multiprocessing.dummy import connection  # noqa: F401
from typing import Any

from ..pool import ThreadPool


def Pool(processes: int | None = None, initializer: Any = None,  # type: ignore[no-redef]
         initargs: Iterable[Any] = ()) -> ThreadPool:
    """A pool of ``processes`` threads (default: the CPU count): a
    :class:`multitask.pool.ThreadPool`."""
    return ThreadPool(processes, initializer, initargs)


__all__ = list(_all)
