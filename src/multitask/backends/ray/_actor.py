"""What runs in the Ray actors: the worker class, its function table, and the codecs both
sides use for big arrays and errors."""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
import types
from typing import Any

import cloudpickle
import ray
import ray.exceptions
import ray.util.queue

from ..._engine import envelope
from ..._engine.codes import ST_OK, ST_RAISED
from ..._engine.jobs import MODE_CALL, MODE_MAP

# Arrays at least this large travel through the object store by an explicit ray.put.
_BIG_ARRAY_BYTES = 1 << 20

class _Big:
    """Marks where a large array was replaced by its object-store reference."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Big, (self.ref,))


class _RayWorker:
    """One pool worker.  Ray runs its methods one at a time, in the order they were called."""

    def __init__(self) -> None:
        self._funcs: dict[int, Any] = {}
        # One namespace per module whose functions arrive by value (see _adopt).
        self._namespaces: dict[str, dict[str, Any]] = {}

    def setup(self, initializer: bytes | None, initargs: tuple[Any, ...], nice: int | None,
              cpu_affinity: Any) -> tuple[int, str, bytes | None]:
        """Apply settings, run the initializer; (pid, host, error info or None)."""
        try:
            if nice is not None or cpu_affinity is not None:
                from .._core import _spawn

                _spawn.apply_child_settings(nice, cpu_affinity)
            if initializer is not None:
                _adopt(pickle.loads(initializer), self._namespaces)(*initargs)
        except BaseException as exc:
            return os.getpid(), socket.gethostname(), _error_info(exc)
        return os.getpid(), socket.gethostname(), None

    def run(self, fid: int, fbytes: bytes | None, mode: int,
            data: Any) -> tuple[int, Any, float, float]:
        """Run one task: (status, value or error info, seconds started, seconds finished)."""
        t0 = time.monotonic()
        try:
            if fbytes is not None:
                self._funcs[fid] = _adopt(pickle.loads(fbytes), self._namespaces)
            fn = self._funcs[fid]
            data = _resolve_big(mode, data)
            if mode == MODE_CALL:
                value = fn(*data[0], **data[1])
            elif mode == MODE_MAP:
                value = list(map(fn, data))
            else:
                value = [fn(*a) for a in data]
        except BaseException as exc:
            return ST_RAISED, _error_info(exc), t0, time.monotonic()
        return ST_OK, value, t0, time.monotonic()

    def forget(self, fid: int) -> None:
        self._funcs.pop(fid, None)


_RemoteWorker = ray.remote(_RayWorker)


def _adopt(fn: Any, namespaces: dict[str, dict[str, Any]]) -> Any:
    """Re-bind a function that arrived by value to its module's one namespace in this actor.

    cloudpickle gives every separately pickled by-value function its own copy of its module's
    globals, so an initializer's ``global CONFIG; CONFIG = ...`` would be invisible to the tasks
    (the pattern of the notes).  A worker process of the process backend has one ``__main__``;
    this gives an actor the same, per module: names a function brings are added (values already
    there -- set by the initializer -- are kept), and the function reads and writes ``shared``.
    Functions imported by name (their module is importable here) are returned unchanged.
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    module = fn.__module__ or "__main__"
    real = sys.modules.get(module)
    if real is not None and getattr(real, "__dict__", None) is fn.__globals__:
        return fn
    shared = namespaces.get(module)
    if shared is None:
        shared = namespaces[module] = {"__name__": module, "__builtins__": __builtins__}
    return _rebind(fn, shared)


def _rebind(fn: Any, shared: dict[str, Any]) -> Any:
    old = fn.__globals__
    if old is shared:
        return fn
    for name, value in list(old.items()):
        if name in shared or name in ("__builtins__", "__name__"):
            continue
        if (isinstance(value, types.FunctionType) and value.__globals__ is old
                and value is not fn):
            shared[name] = None    # placeholder: breaks cycles between helpers
            value = _rebind(value, shared)
        shared[name] = value
    new = types.FunctionType(fn.__code__, shared, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__dict__.update(fn.__dict__)
    if shared.get(fn.__name__) is fn or fn.__name__ not in shared:
        shared[fn.__name__] = new
    return new


def _error_info(exc: BaseException) -> bytes:
    """The engine's error envelope, with an in-band codec (the bytes may leave the machine)."""
    return envelope.pack(exc, _inband_dumps)


def _inband_dumps(obj: Any) -> bytes:
    data: bytes = cloudpickle.dumps(obj, protocol=5)
    return data


def _remote_exception(info: bytes) -> BaseException:
    """Re-create a task's exception in the driver, with the actor's traceback as __cause__."""
    return envelope.unpack(info, pickle.loads, here="driver", there="actor")


def _resolve_big(mode: int, data: Any) -> Any:
    """Swap _Big markers for the arrays (zero-copy, read-only views of the object store)."""
    if mode == MODE_CALL:
        args, kwargs = data
        if any(isinstance(a, _Big) for a in args) or any(
                isinstance(v, _Big) for v in kwargs.values()):
            args = tuple(ray.get(a.ref) if isinstance(a, _Big) else a for a in args)
            kwargs = {k: ray.get(v.ref) if isinstance(v, _Big) else v for k, v in kwargs.items()}
        return args, kwargs
    if mode == MODE_MAP:
        if any(isinstance(x, _Big) for x in data):
            return [ray.get(x.ref) if isinstance(x, _Big) else x for x in data]
        return data
    out = []
    for item in data:
        if any(isinstance(a, _Big) for a in item):
            item = tuple(ray.get(a.ref) if isinstance(a, _Big) else a for a in item)
        out.append(item)
    return out


