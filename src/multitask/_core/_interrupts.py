"""Holding back Ctrl-C while something that must not be cut in half is done.

A thread that took results out of a ring (a pool caller reading its own results, see
``multitask.backends.process``) must settle all of them: a KeyboardInterrupt raised half-way
would drop the rest, and a later ``get()`` of those tasks would wait forever.  The same holds
for popping an item off an iterator's queue and storing it.  Such a region runs between
:func:`enter` (or a ``Ring._lead_get`` that took messages: it enters in C, before any Python
code can run) and :func:`end`.

Python cannot mask a signal for one region, and swapping the SIGINT handler around every
region costs two ``sigaction`` calls (~10 us each on a loaded VM, per task round trip).  So
:func:`install` puts :func:`handler` in place of Python's *default* SIGINT handler, once: it
behaves exactly like the default one (raises KeyboardInterrupt) except inside a region, where
the Ctrl-C is noted and raised by :func:`end` as soon as the region is over.  A program's own
SIGINT handler is never replaced (a Ctrl-C in a region is then the program's to handle).

Only the main thread receives KeyboardInterrupt, and only the main thread can install a
handler; the state is per process (reset in a fork child).
"""

from __future__ import annotations

import _signal
import os
import signal
from typing import Any

from . import _ringbuf

enter = _ringbuf._defer_enter


def end() -> None:
    """Leave a region; raise KeyboardInterrupt now if a Ctrl-C was held back in it."""
    if _ringbuf._defer_exit():
        signal.default_int_handler(signal.SIGINT, None)


def handler(signum: int, frame: Any) -> None:
    """multitask's SIGINT handler: the default behaviour, except inside a region."""
    if _ringbuf._defer_note():
        return
    signal.default_int_handler(signum, frame)


def install() -> bool:
    """Make :func:`handler` the SIGINT handler if Python's default one is installed (call from
    the main thread).  True if it is in place."""
    # _signal's getsignal: the handler as it is.  signal.getsignal wraps it through an enum
    # lookup that fails for a function (~3 us, paid by every caller that leads: a round trip).
    current = _signal.getsignal(signal.SIGINT)
    if current is handler:
        return True
    if current is not signal.default_int_handler:
        return False
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:   # not the main thread of the main interpreter
        return False
    return True


os.register_at_fork(after_in_child=_ringbuf._defer_reset)
