"""The stdlib's shared-memory heap (``BufferWrapper``), for code that uses it directly.
multitask's own ``Value``/``Array``/``RawArray`` do not allocate from it: each object gets its own
mapping, released with the object (see :mod:`multitask.sharedctypes`).

Twin of :mod:`multiprocessing.heap`: ``import multitask.heap`` where a program imported
the stdlib's.
"""

from __future__ import annotations

from multiprocessing.heap import *  # noqa: F403
from multiprocessing.heap import __all__ as _all

__all__ = list(_all)
