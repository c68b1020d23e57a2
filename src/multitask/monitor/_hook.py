"""The registry's front door for pools and processes: free at start-up.

Loading :mod:`.registry` (json, dataclasses, pathlib; psutil at its first write) and starting its
publisher thread cost ~10 ms of a program's first ``Pool()`` or ``Process.start()`` -- as much as
the stdlib's whole Pool start on a 2-core machine, where the publisher's work also competes with
the new workers for the CPU and with the caller for the GIL.  So registrations made before the
registry is loaded are queued here, and one short-lived thread hands them over after
:data:`FIRST_DELAY` seconds.  A pool or process gone by then is never published (a blink is not
worth a line in ``multitask ps``).  Once the registry is loaded, every call goes straight to it.

Never raises into the program (observability must not break the computation) and never blocks
beyond a short internal lock.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

#: Seconds from a program's first registration to loading the registry and its first write.
FIRST_DELAY = 1.0

_lock = threading.Lock()
_queued: dict[int, tuple[str, Any, dict[str, Any]]] = {}   # id(obj) -> (call, ref, kwargs)
_thread: threading.Thread | None = None
_registry: Any = None      # the registry module, once handed over


def _disabled() -> bool:
    # The same rule as registry.disabled(), without importing it.
    return os.environ.get("MULTITASK_REGISTRY", "").strip().lower() in ("0", "false", "no", "off")


def register_pool(pool: Any, *, deferred: bool = False) -> None:
    """Publish ``pool``.  ``deferred``: do not start the hand-over thread here; the caller
    promises a :func:`start_pending` from a thread of its own."""
    _call("register_pool", pool, {}, deferred)


def register_process(proc: Any, *, role: str = "process", name: str | None = None,
                     deferred: bool = False) -> None:
    """Publish the child ``proc`` (see :func:`register_pool` for ``deferred``)."""
    _call("register_process", proc, {"role": role, "name": name}, deferred)


def start_pending() -> None:
    """Start the hand-over thread if registrations wait for it: called by a thread of a
    caller that registered with ``deferred=True`` -- a pool's watcher, so that ``Pool()``
    itself does not wait for one more thread to start (~1-3 ms on a busy 2-core machine,
    where the new workers hold both cores)."""
    global _thread
    with _lock:
        if _registry is None and _thread is None and _queued:
            _thread = _start_hand_over()


def unregister(obj: Any) -> None:
    reg = _registry
    if reg is not None:
        _safely(reg.unregister, obj)
        return
    with _lock:
        _queued.pop(id(obj), None)


def notify() -> None:
    """Something changed (the hot-path call): a global test until the registry is loaded."""
    reg = _registry
    if reg is not None:
        reg.notify()


def _call(what: str, obj: Any, kwargs: dict[str, Any], deferred: bool = False) -> None:
    global _thread
    reg = _registry
    if reg is not None:
        _safely(getattr(reg, what), obj, **kwargs)
        return
    if _disabled():
        return
    try:
        ref: Any = weakref.ref(obj)
    except TypeError:
        ref = lambda: obj  # noqa: E731 -- no weakref support: kept until handed over
    with _lock:
        if _registry is None:
            _queued[id(obj)] = (what, ref, kwargs)
            if _thread is None and not deferred:
                _thread = _start_hand_over()
            return
    _call(what, obj, kwargs)   # loaded meanwhile


def _start_hand_over() -> threading.Thread:
    thread = threading.Thread(target=_hand_over, name="multitask-registry-start", daemon=True)
    thread.start()
    return thread


def _hand_over() -> None:
    global _registry
    time.sleep(FIRST_DELAY)   # a deliberate delay (see the module docstring), not a poll
    try:
        from . import registry
    except Exception as exc:  # pragma: no cover - a broken install: publish nothing
        _debug("loading the registry failed: %s", exc)
        return
    with _lock:
        items = list(_queued.values())
        _queued.clear()
        _registry = registry
    for what, ref, kwargs in items:
        obj = ref()
        if obj is not None:
            _safely(getattr(registry, what), obj, **kwargs)


def _safely(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        _debug("registry %s failed: %s", getattr(fn, "__name__", fn), exc)


def _debug(msg: str, *args: Any) -> None:
    import logging

    logging.getLogger("multitask").debug(msg, *args)


def _after_fork_in_child() -> None:
    # A fork child starts with an empty registry and no threads; a hand-over thread that was
    # waiting in the parent does not exist here.
    global _lock, _thread
    _lock = threading.Lock()
    _queued.clear()
    if _registry is None:
        _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
