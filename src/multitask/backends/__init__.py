"""Backends: where a front end's tasks actually run.

Each module implements the :class:`~multitask._engine.backend.Backend` contract (read it there:
what a backend is given, what it must report, what it must never do)::

    Pool(backend="process")   multitask.backends.process   worker processes on shared-memory rings
    Pool(backend="thread")    multitask.backends.thread    threads in this process (I/O-bound work)
    Pool(backend="ray")       multitask.backends.ray       Ray actors, one machine or a cluster

The default is ``"process"``, or the value of the environment variable ``MULTITASK_BACKEND``.
Layering: a backend imports ``multitask._engine`` and ``multitask._core`` (and the monitor's
hook), never a front end (``multitask.pool``); ``tests/test_layers.py`` checks it.
"""

from __future__ import annotations

from .._engine.backend import BACKENDS, Backend, default_backend, load_backend

__all__ = ["BACKENDS", "Backend", "default_backend", "load_backend"]
