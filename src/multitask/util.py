"""Logging and finalisation helpers (``Finalize``, ``get_logger``, ``log_to_stderr``,
``register_after_fork``...): the stdlib's, which are sound; multitask's processes run the stdlib's
after-fork hooks and finalizers, so they work with multitask's ``Process`` and ``Pool``.

Twin of :mod:`multiprocessing.util`: ``import multitask.util`` where a program imported
the stdlib's.
"""

from __future__ import annotations

from multiprocessing.util import *  # noqa: F403
from multiprocessing.util import __all__ as _all

__all__ = list(_all)
