"""Pickling helpers (``ForkingPickler``, ``register``, ``send_handle``/``recv_handle``,
``sendfds``/``recvfds``, ``DupFd``): the stdlib's.  multitask's connections and queues pickle with
``ForkingPickler``, so reducers registered here apply to them too.

Twin of :mod:`multiprocessing.reduction`: ``import multitask.reduction`` where a program imported
the stdlib's.
"""

from __future__ import annotations

from multiprocessing.reduction import *  # noqa: F403
from multiprocessing.reduction import __all__ as _all

__all__ = list(_all)
