"""The stdlib's resource tracker (``ensure_running``, ``register``, ``unregister``).  multitask's
own segments (rings, ``shared_array``) do not depend on it: a pool forked from its parent starts no
tracker at all and its zygote sweeps the pool's segments after a crash (docs/design.md).

Twin of :mod:`multiprocessing.resource_tracker`: ``import multitask.resource_tracker`` where a
program imported
the stdlib's.
"""

from __future__ import annotations

from multiprocessing.resource_tracker import *  # noqa: F403
from multiprocessing.resource_tracker import __all__ as _all

__all__ = list(_all)
