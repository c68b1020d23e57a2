"""``__main__`` functions sent by value that still live in the receiver's ``__main__``.

A function of the program's ``__main__`` that the receiving process may not have under its name
(defined after the pool's zygote or the fork helper was forked; or, under spawn/forkserver,
whatever the worker's re-import of the script made) travels by value, with cloudpickle.  Plain
cloudpickle gives every function it rebuilds a *private* copy of the globals it uses: an
``initializer`` that sets a global and the task that reads it then see two different
namespaces, and the task finds ``None`` -- a pattern the stdlib supports under every start
method, because its workers resolve ``__main__`` functions by name in their own ``__main__``.

:class:`MainFunction` is the stand-in that is pickled instead.  The receiver
(:func:`rebuild`) uses its own ``__main__`` function of that name when it has the same code (a
spawn worker's re-import), and otherwise rebinds the by-value function to its ``__main__``'s
namespace, adding the globals it carried only where that namespace has no such name yet -- what
a fork of the program would have given it.  Functions are matched by code, so a name the
receiver binds to something else is never taken for the sender's.
"""

from __future__ import annotations

import pickle
import sys
import types
from typing import Any

__all__ = ["MainFunction", "functions_now", "rebuild", "wants_stand_in"]


def functions_now() -> dict[str, Any]:
    """``__main__``'s functions by name, as bound now: what a child forked now has."""
    main = sys.modules.get("__main__")
    if main is None:
        return {}
    return {k: v for k, v in vars(main).items() if type(v) is types.FunctionType}


def wants_stand_in(fn: Any, known: dict[str, Any]) -> bool:
    """Whether ``fn`` is a ``__main__`` function the receiver does not hold as ``known``
    (``__main__``'s functions when the receiver was forked)."""
    return (isinstance(fn, types.FunctionType) and fn.__module__ == "__main__"
            and known.get(fn.__qualname__) is not fn)


class MainFunction:
    """Pickles as :func:`rebuild` of the function's name and its cloudpickle; callable as the
    function itself where no pickling happens (a zygote forked with it in its arguments)."""

    __slots__ = ("fn",)

    def __init__(self, fn: types.FunctionType) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        import cloudpickle  # only for functions that need it (start-up time)

        return (rebuild, (self.fn.__qualname__, cloudpickle.dumps(self.fn, protocol=5)))


def rebuild(qualname: str, data: bytes) -> Any:
    """In the receiver: the function, living in this process's ``__main__`` (see the module's
    docstring).  Raises what unpickling the function raises."""
    fn = pickle.loads(data)
    main = sys.modules.get("__main__")
    if main is None or not isinstance(fn, types.FunctionType):
        return fn
    ns = vars(main)
    own = ns.get(qualname)
    if isinstance(own, types.FunctionType) and own.__code__ == fn.__code__:
        return own   # the worker's own (a spawn worker's re-import of the script)
    return _into(fn, ns, {})


def _into(fn: types.FunctionType, ns: dict[str, Any],
          done: dict[int, types.FunctionType]) -> types.FunctionType:
    """``fn`` rebound to the namespace ``ns``, and the ``__main__`` functions among the globals
    it carried too (a task calling a helper function that reads the same global)."""
    if fn.__globals__ is ns:
        return fn
    if id(fn) in done:
        return done[id(fn)]
    new = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
    done[id(fn)] = new
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    new.__annotations__ = fn.__annotations__
    new.__dict__.update(fn.__dict__)
    for name, value in fn.__globals__.items():
        if name in ns or name.startswith("__"):
            continue   # the receiver's own value wins: state an initializer set, its builtins
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            value = _into(value, ns, done)
        ns[name] = value
    if "<" not in fn.__qualname__ and "." not in fn.__qualname__:
        ns.setdefault(fn.__qualname__, new)   # later messages may then name it
    return new
