"""Spawn start-method helpers (``freeze_support``, ``set_executable``, ``get_executable``,
``get_command_line``...): the stdlib's; multitask starts spawned children through them.

Twin of :mod:`multiprocessing.spawn`: ``import multitask.spawn`` where a program imported
the stdlib's.
"""

from __future__ import annotations

from multiprocessing.spawn import *  # noqa: F403
from multiprocessing.spawn import __all__ as _all

__all__ = list(_all)
