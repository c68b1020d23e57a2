"""Twin of :mod:`multiprocessing.dummy.connection`: ``Listener``, ``Client`` and ``Pipe`` over
in-process queues (for threads), the stdlib's.
"""

from __future__ import annotations

from multiprocessing.dummy.connection import *  # noqa: F403
from multiprocessing.dummy.connection import __all__ as _all

__all__ = list(_all)
