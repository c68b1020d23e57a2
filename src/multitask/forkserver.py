"""Forkserver helpers: the stdlib's (``set_forkserver_preload``, ``ensure_running``...).

multitask's ``"forkserver"`` start method (``get_context("forkserver")``) is the stdlib's
forkserver, so ``set_forkserver_preload`` here preloads modules for multitask's children too.
Twin of :mod:`multiprocessing.forkserver`.
"""

from __future__ import annotations

from multiprocessing.forkserver import *  # noqa: F403
from multiprocessing.forkserver import __all__ as _all

__all__ = list(_all)
