"""``Manager()``: a server process holding shared objects, reached through proxies.

:class:`SyncManager` is the stdlib's ``multiprocessing.managers.SyncManager`` (same proxies:
``Queue``, ``JoinableQueue``, ``dict``, ``list``, ``Namespace``, ``Value``, ``Array``, ``Lock``,
``RLock``, ``Semaphore``, ``BoundedSemaphore``, ``Event``, ``Condition``, ``Barrier``, ``Pool``),
with these differences:

* The server process is a :class:`multitask.Process`, so it gets the parent-death signal: a
  manager never outlives the program that started it, even when that program is SIGKILLed
  (the stdlib's server lingers until its next connection fails).
* The server only listens locally: a Unix socket (the default on Linux) or a loopback TCP
  address.  A non-loopback ``address`` raises ``ValueError``.  Every connection is
  authenticated with HMAC against ``authkey`` (default: the process's ``authkey``), as in the
  stdlib; a wrong key raises :class:`multitask.AuthenticationError`.
* Bad arguments raise at the call: ``Queue(maxsize="x")``, ``Semaphore(-1)``, ``Barrier(0)``.

A manager ``Queue`` can be handed to pool workers (seed 004's ``Manager().Queue()``): the proxy
pickles to its address, and workers authenticate with the inherited ``authkey``.

Blocking: ``Manager()`` blocks until the server is up (normally milliseconds); each proxy call
is a round trip to the server; ``shutdown()`` (or leaving the ``with`` block, or the manager
being garbage-collected) stops the server, waiting up to ``shutdown_timeout`` seconds before
terminating it.
"""

from __future__ import annotations

import inspect
import ipaddress
import multiprocessing
import socket
from multiprocessing import managers as _mpm_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

from ._core._errors import AuthenticationError

_mpm: Any = _mpm_module  # typeshed lacks the private names used here

__all__ = ["BaseManager", "BaseProxy", "DictProxy", "ListProxy", "Manager", "Namespace",
           "SetProxy", "SharedMemoryManager", "SyncManager", "Token"]

# The stdlib's: it serves SharedMemory blocks and unlinks them all at shutdown.
SharedMemoryManager = _mpm_module.SharedMemoryManager
BaseManager = _mpm_module.BaseManager
BaseProxy = _mpm_module.BaseProxy
Namespace = _mpm_module.Namespace
Token = _mpm_module.Token

if TYPE_CHECKING:  # typeshed's proxies are generic; at run time they cannot be subscripted
    _ListProxyBase = _mpm_module.ListProxy[Any]
    _DictProxyBase = _mpm_module.DictProxy[Any, Any]
else:
    _ListProxyBase = _mpm_module.ListProxy
    _DictProxyBase = _mpm_module.DictProxy

# BaseManager's shutdown_timeout is new in Python 3.11 (before it, the server was given 1 s,
# and 0.1 s after terminate()); on 3.10 multitask keeps the value and honours it itself.
_STDLIB_SHUTDOWN_TIMEOUT = "shutdown_timeout" in inspect.signature(
    _mpm.BaseManager.__init__).parameters


def _check_local(address: Any) -> None:
    if address is None or isinstance(address, str):
        return  # None: arbitrary Unix socket; str: a Unix socket path
    if not (isinstance(address, tuple) and len(address) == 2):
        raise TypeError(f"address must be None, a Unix socket path or a (host, port) tuple, "
                        f"not {address!r}")
    host = address[0]
    if host == "localhost":
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            raise ValueError(f"cannot resolve manager host {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"a multitask manager only listens locally (a Unix socket or "
                         f"127.0.0.1), not on {host!r}: anyone who can reach it and knows the "
                         "authkey can run code in it")


def _check_count(value: object, what: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")


class SyncManager(_mpm_module.SyncManager):
    """The stdlib ``SyncManager``, local-only, with a parent-death signal on its server.

    ``ctx`` defaults to multitask's default context.  Raises ``ValueError`` for a non-local
    ``address``, ``TypeError`` for a non-bytes ``authkey``.
    """

    # set by BaseManager.__init__ (untyped in typeshed)
    _address: Any
    _authkey: Any
    _state: Any
    _serializer: str

    def __init__(self, address: Any = None, authkey: bytes | None = None,
                 serializer: str = "pickle", ctx: Any = None, *,
                 shutdown_timeout: float = 1.0) -> None:
        _check_local(address)
        if authkey is not None and not isinstance(authkey, bytes):
            raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
        if serializer not in _mpm.listener_client:
            raise ValueError(f"serializer must be one of {sorted(_mpm.listener_client)}, "
                             f"not {serializer!r}")
        if ctx is None:
            from .context import _default_context

            ctx = _default_context.get_context()
        if _STDLIB_SHUTDOWN_TIMEOUT:
            super().__init__(address, authkey, serializer, ctx,  # type: ignore[call-arg]
                             shutdown_timeout=shutdown_timeout)
        else:   # Python 3.10
            super().__init__(address, authkey, serializer, ctx)
            self._shutdown_timeout = shutdown_timeout

    def start(self, initializer: Any = None, initargs: Any = ()) -> None:
        """Start the server process (blocks until it listens)."""
        super().start(initializer, initargs)
        if not _STDLIB_SHUTDOWN_TIMEOUT:
            # Python 3.10's start() registers the finalizer without the timeout: register it
            # again with it (same exit priority), so that shutdown() waits shutdown_timeout.
            self.shutdown.cancel()
            self.shutdown = _mpm.util.Finalize(
                self, type(self)._finalize_manager,
                args=(self._process, self._address,  # type: ignore[attr-defined]
                      self._authkey, self._state,
                      self._Client, self._shutdown_timeout),  # type: ignore[attr-defined]
                exitpriority=0)

    def connect(self) -> None:
        """Connect to an already running server; ``AuthenticationError`` on a wrong authkey."""
        _listener, client = _mpm.listener_client[self._serializer]
        failure = None
        try:
            conn = client(self._address, authkey=self._authkey)
        except multiprocessing.AuthenticationError as exc:  # the stdlib's
            failure = str(exc)
        # raised outside the except block so the failed socket (referenced from the stdlib's
        # traceback frames) is released now, not at the next garbage collection
        if failure is not None:
            raise AuthenticationError(f"the manager at {self._address!r} rejected the "
                                      f"authkey: {failure}")
        _mpm.dispatch(conn, None, "dummy")
        conn.close()
        self._state.value = _mpm.State.STARTED

    @staticmethod
    def _finalize_manager(process: Any, address: Any, authkey: Any, state: Any, _Client: Any,
                          shutdown_timeout: float) -> None:
        # The stdlib keeps the stopped server's Process (and its sentinel pipes) until the
        # manager object is collected; release them as soon as the server is gone (join()
        # after that is a no-op: see join).
        if _STDLIB_SHUTDOWN_TIMEOUT:
            _mpm_module.SyncManager._finalize_manager(  # type: ignore[attr-defined]
                process, address, authkey, state, _Client, shutdown_timeout)
        else:
            _finalize_server(process, address, authkey, state, _Client, shutdown_timeout)
        if not process.is_alive():
            process.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process to exit; at once if it has (also after shutdown, which
        released it: the stdlib joins a stopped server again there -- CPython's tests do)."""
        process = getattr(self, "_process", None)
        if process is not None and getattr(process, "_closed", False):
            return
        super().join(timeout)

    # -- proxies with argument checks (the server would otherwise fail later, remotely) ---

    def Queue(self, maxsize: int = 0) -> Any:
        """A proxy to a ``queue.Queue`` in the server (``queue.Full``/``queue.Empty``)."""
        _check_count(maxsize, "maxsize")
        return super().Queue(maxsize)

    def JoinableQueue(self, maxsize: int = 0) -> Any:
        """Same as :meth:`Queue` (``queue.Queue`` already has ``task_done``/``join``)."""
        _check_count(maxsize, "maxsize")
        return super().JoinableQueue(maxsize)

    def Semaphore(self, value: int = 1) -> Any:
        """A proxy to a ``threading.Semaphore`` in the server."""
        _check_count(value, "Semaphore value")
        return super().Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> Any:
        """A proxy to a ``threading.BoundedSemaphore`` in the server."""
        _check_count(value, "BoundedSemaphore value")
        return super().BoundedSemaphore(value)

    def Barrier(self, parties: int, action: Any = None,
                timeout: float | None = None) -> Any:
        """A proxy to a ``threading.Barrier`` in the server."""
        _check_count(parties, "parties", 1)
        return super().Barrier(parties, action, timeout)

    def Value(self, typecode: str, value: Any, lock: bool = True) -> Any:
        """A proxy to a value in the server (``.value``); the typecode is only recorded."""
        if not isinstance(typecode, str):
            raise TypeError(f"typecode must be a str, not {type(typecode).__name__}")
        return super().Value(typecode, value, lock)  # type: ignore[call-arg]

    def Array(self, typecode: str, sequence: Any, lock: bool = True) -> Any:
        """A proxy to an ``array.array(typecode, sequence)`` in the server."""
        import array

        try:
            array.array(typecode, sequence)  # validate here, not remotely
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Array({typecode!r}, ...): {exc}") from None
        return super().Array(typecode, sequence, lock)  # type: ignore[call-arg]

    if TYPE_CHECKING:
        # Registered at run time (below, with SyncManager.register): declared here so that a
        # user's type checker sees multitask's proxies and Python 3.14's shared set.
        def list(self, sequence: Iterable[Any] = ..., /) -> ListProxy: ...
        def dict(self, *args: Any, **kwargs: Any) -> DictProxy: ...
        def set(self, iterable: Iterable[Any] = ..., /) -> SetProxy: ...


# ---- Python 3.14's additions, on every version ------------------------------------------------
# 3.14 gave the list proxy clear() and copy(), the dict proxy the | operators, fromkeys() and
# reversed(), and SyncManager a shared set.  Code written for 3.14 runs here on 3.10-3.13 (on
# 3.14 the stdlib's own are equivalent).


class ListProxy(_ListProxyBase):
    """The stdlib's list proxy, plus ``clear()`` and ``copy()`` (3.14)."""

    _exposed_ = tuple(dict.fromkeys((*_mpm.ListProxy._exposed_, "clear", "copy")))

    if TYPE_CHECKING:   # forwarded at run time (see _forward below)
        def clear(self) -> None: ...
        def copy(self) -> list[Any]: ...


class DictProxy(_DictProxyBase):
    """The stdlib's dict proxy, plus ``|``, ``|=``, ``fromkeys()`` and ``reversed()`` (3.14)."""

    _exposed_ = tuple(dict.fromkeys((*_mpm.DictProxy._exposed_, "__or__", "__ror__", "__ior__",
                                     "__reversed__", "fromkeys")))
    _method_to_typeid_ = {**getattr(_mpm.DictProxy, "_method_to_typeid_", {}),
                          "__reversed__": "Iterator"}

    def __ior__(self, other: Any) -> DictProxy:
        self._callmethod("update", (other,))
        return self

    def __or__(self, other: Any) -> dict[Any, Any]:
        # typeshed says _callmethod returns None; it returns the remote call's result
        return self._callmethod("__or__", (other,))  # type: ignore[func-returns-value,return-value]

    def __ror__(self, other: Any) -> dict[Any, Any]:
        # typeshed says _callmethod returns None; it returns the remote call's result
        return self._callmethod("__ror__", (other,))  # type: ignore[func-returns-value,return-value]

    def __reversed__(self) -> Any:
        return self._callmethod("__reversed__")

    if TYPE_CHECKING:   # forwarded at run time (see _forward below)
        def fromkeys(self, iterable: Iterable[Any], value: Any = None, /) -> dict[Any, Any]: ...


_SET_METHODS = (
    "__and__", "__contains__", "__ge__", "__gt__", "__iter__", "__le__", "__len__", "__lt__",
    "__or__", "__rand__", "__ror__", "__rsub__", "__rxor__", "__sub__", "__xor__",
    "add", "clear", "copy", "difference", "difference_update", "discard", "intersection",
    "intersection_update", "isdisjoint", "issubset", "issuperset", "pop", "remove",
    "symmetric_difference", "symmetric_difference_update", "union", "update",
)


class SetProxy(BaseProxy):
    """A proxy for a ``set`` in the manager's process (``manager.set()``, Python 3.14): the
    set's methods and operators; ``|=``, ``&=``, ``-=``, ``^=`` update it in place there."""

    _exposed_ = _SET_METHODS
    _method_to_typeid_ = {"__iter__": "Iterator"}

    def _call(self, name: str, *args: Any) -> Any:
        return self._callmethod(name, args)

    def __ior__(self, other: Iterable[Any]) -> SetProxy:
        self._callmethod("update", (other,))
        return self

    def __iand__(self, other: Iterable[Any]) -> SetProxy:
        self._callmethod("intersection_update", (other,))
        return self

    def __isub__(self, other: Iterable[Any]) -> SetProxy:
        self._callmethod("difference_update", (other,))
        return self

    def __ixor__(self, other: Iterable[Any]) -> SetProxy:
        self._callmethod("symmetric_difference_update", (other,))
        return self

    if TYPE_CHECKING:   # forwarded at run time (see _forward below): the set's own methods
        def add(self, item: Any, /) -> None: ...
        def discard(self, item: Any, /) -> None: ...
        def remove(self, item: Any, /) -> None: ...
        def pop(self) -> Any: ...
        def clear(self) -> None: ...
        def copy(self) -> set[Any]: ...
        def update(self, *others: Iterable[Any]) -> None: ...
        def union(self, *others: Iterable[Any]) -> set[Any]: ...
        def intersection(self, *others: Iterable[Any]) -> set[Any]: ...
        def difference(self, *others: Iterable[Any]) -> set[Any]: ...
        def symmetric_difference(self, other: Iterable[Any], /) -> set[Any]: ...
        def intersection_update(self, *others: Iterable[Any]) -> None: ...
        def difference_update(self, *others: Iterable[Any]) -> None: ...
        def symmetric_difference_update(self, other: Iterable[Any], /) -> None: ...
        def isdisjoint(self, other: Iterable[Any], /) -> bool: ...
        def issubset(self, other: Iterable[Any], /) -> bool: ...
        def issuperset(self, other: Iterable[Any], /) -> bool: ...
        def __contains__(self, item: object, /) -> bool: ...
        def __len__(self) -> int: ...
        def __iter__(self) -> Iterator[Any]: ...
        def __or__(self, other: Iterable[Any], /) -> set[Any]: ...
        def __and__(self, other: Iterable[Any], /) -> set[Any]: ...
        def __sub__(self, other: Iterable[Any], /) -> set[Any]: ...
        def __xor__(self, other: Iterable[Any], /) -> set[Any]: ...


def _forward(name: str) -> Any:
    def method(self: Any, *args: Any) -> Any:
        return self._callmethod(name, args)

    method.__name__ = name
    return method


for _cls, _names in ((SetProxy, _SET_METHODS), (ListProxy, ("clear", "copy")),
                     (DictProxy, ("fromkeys",))):
    for _name in _names:
        setattr(_cls, _name, _forward(_name))
del _cls, _names, _name

SyncManager.register("list", list, ListProxy)
SyncManager.register("dict", dict, DictProxy)
SyncManager.register("set", set, SetProxy)


def _finalize_server(process: Any, address: Any, authkey: Any, state: Any, _Client: Any,
                     shutdown_timeout: float) -> None:
    """Python 3.10's stop of a manager's server, with 3.11's timeouts: ask it to shut down,
    give it ``shutdown_timeout`` seconds, then terminate it, then kill it."""
    if process.is_alive():
        try:
            conn = _Client(address, authkey=authkey)
            try:
                _mpm.dispatch(conn, None, "shutdown")
            finally:
                conn.close()
        except Exception:
            pass   # already stopping, or unreachable: terminate() below
        process.join(timeout=shutdown_timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout=shutdown_timeout)
            if process.is_alive():
                process.kill()
                process.join()
    state.value = _mpm.State.SHUTDOWN
    _mpm.BaseProxy._address_to_local.pop(address, None)


def Manager(*, ctx: Any = None) -> SyncManager:
    """Start a :class:`SyncManager` server process and return the manager (blocks until up).

    Use it as a context manager, or call ``shutdown()``; it is also shut down when garbage
    collected and at exit.  Raises ``OSError`` if the server cannot be started.
    """
    m = SyncManager(ctx=ctx)
    m.start()
    return m
