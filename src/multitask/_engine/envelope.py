"""The error envelope: how a task's exception crosses from a worker to the parent (one codec
for every backend that pickles: the process backend, Ray, Pipeline's process stages).

Wire form: ``pickle((exception bytes or None, formatted traceback, type name, text))``.  The
exception is pickled apart from its description, so that a parent which cannot unpickle it (its
class is unknown there, its ``__reduce__`` raises...) still gets the type name, message and the
worker's traceback: the outer layer holds only strings and bytes.  The parent re-raises the
original exception where it can, else a :class:`~multitask.RemoteError` with the same facts;
either way with the worker's traceback as ``__cause__`` (the stdlib's ``RemoteTraceback``).

The caller chooses the inner codec: the process backend's (pickle 5 with out-of-band buffers in
shared memory, cloudpickle fallback), or a plain in-band one where the bytes leave the machine
(Ray).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from .._core._errors import RemoteError, SerializationError, remote_traceback

__all__ = ["pack", "unpack"]


def pack(exc: BaseException, dumps: Callable[[Any], bytes], what: str | None = None) -> bytes:
    """Serialize ``exc`` (runs in the worker).  ``what``: the text to report instead of
    ``str(exc)`` (e.g. "the result could not be pickled").  Never raises for a bad exception:
    one that ``dumps`` refuses travels as its description only."""
    import traceback  # the zygote imports it before a replacement; lazy elsewhere

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tname = f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = what or str(exc)
    try:
        exc_bytes: bytes | None = dumps(exc)
    except BaseException:
        exc_bytes = None
    return pickle.dumps((exc_bytes, tb, tname, text), protocol=5)


def unpack(body: bytes, loads: Callable[[bytes], Any], *, here: str = "parent",
           there: str = "worker", unserializable: bool = False) -> BaseException:
    """Re-create a task's exception (runs in the parent), with the worker's traceback as
    ``__cause__``.  ``here``/``there`` name the two sides in the note added when the exception
    itself could not cross.  ``unserializable``: the task succeeded but its *result* could not be
    pickled -- a :class:`~multitask.SerializationError` whose cause is the pickling error.
    Never raises: the error is reported, never lost."""
    exc_bytes, tb, tname, text = pickle.loads(body)
    exc: Any = None
    note = ""
    if exc_bytes is not None:
        try:
            exc = loads(exc_bytes)
        except BaseException as err:
            note = f" (the exception could not be unpickled in the {here}: {err!r})"
            exc = None
    else:
        note = f" (the exception could not be pickled in the {there})"
    if unserializable:
        wrapped = SerializationError(text)
        wrapped.__cause__ = exc if isinstance(exc, BaseException) else remote_traceback(tb)
        if isinstance(exc, BaseException):
            exc.__cause__ = remote_traceback(tb)
        return wrapped
    if not isinstance(exc, BaseException):
        exc = RemoteError(f"{tname}: {text}{note}", type_name=tname, remote_traceback=tb)
    exc.__cause__ = remote_traceback(tb)
    result: BaseException = exc
    return result
