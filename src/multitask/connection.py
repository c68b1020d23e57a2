"""``Pipe()`` and its connections: the stdlib's, with errors that say what to do.

``Connection`` subclasses :class:`multiprocessing.connection.Connection` (same methods: ``send``,
``recv``, ``poll``, ``send_bytes``, ``recv_bytes``, ``recv_bytes_into``, ``close``, ``fileno``,
context manager) and is sound; only the error messages change:

* ``send`` on the read end of ``Pipe(duplex=False)`` (the *first* connection) says so and names
  the fix; the stdlib raises a bare ``OSError("connection is read-only")``.  The type stays
  :class:`OSError` so code catching the stdlib's error still works.
* using a closed connection raises ``OSError`` naming the connection as closed.

Blocking: ``recv``/``recv_bytes`` block until a message arrives (``EOFError`` once the other end
is closed and drained), ``poll(timeout)`` up to ``timeout``; ``send`` blocks while the OS pipe
buffer is full.  Connections can be passed to children as ``Process`` arguments (all start
methods).  ``wait`` is re-exported from the stdlib.
"""

from __future__ import annotations

import socket
from multiprocessing import connection as _mpc
from multiprocessing import reduction as _reduction
from multiprocessing.connection import (
    Client,
    Listener,
    wait,
)
from typing import Any

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]

#: The address families this platform supports (the stdlib's list: "AF_INET", "AF_UNIX"...).
families = _mpc.families  # type: ignore[attr-defined]


class Connection(_mpc.Connection):
    """One end of a :func:`Pipe`.  See the module docstring for the differences."""

    _handle: int | None
    _readable: bool
    _writable: bool

    def _check_closed(self) -> None:
        if self._handle is None:
            raise OSError("this connection is closed (close() was called on it); "
                          "it cannot be used any more")

    def _check_readable(self) -> None:
        if not self._readable:
            raise OSError("cannot recv() on the write end of a one-way Pipe(duplex=False): "
                          "the first connection returned is the read end, the second the write "
                          "end -- recv() on the first one, or use Pipe() (duplex) to talk both "
                          "ways")

    def _check_writable(self) -> None:
        if not self._writable:
            raise OSError("cannot send() on the read end of a one-way Pipe(duplex=False): "
                          "the first connection returned is the read end, the second the write "
                          "end -- send() on the second one, or use Pipe() (duplex) to talk both "
                          "ways")


def _reduce_connection(conn: Connection) -> tuple[Any, ...]:
    df = _reduction.DupFd(conn.fileno())
    return _rebuild_connection, (df, conn.readable, conn.writable)


def _rebuild_connection(df: Any, readable: bool, writable: bool) -> Connection:
    return Connection(df.detach(), readable, writable)


_reduction.register(Connection, _reduce_connection)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Return two connected :class:`Connection` objects.

    ``duplex=True`` (default): both ends send and receive (a socket pair).  ``duplex=False``:
    ``(read_end, write_end)`` over an OS pipe.  Never blocks.  Raises ``TypeError`` if
    ``duplex`` is not a bool, ``OSError`` if the OS is out of descriptors.
    """
    if not isinstance(duplex, int):
        raise TypeError(f"duplex must be True or False, not {duplex!r}")
    if duplex:
        s1, s2 = socket.socketpair()
        s1.setblocking(True)
        s2.setblocking(True)
        return Connection(s1.detach()), Connection(s2.detach())
    import os

    fd1, fd2 = os.pipe()
    return Connection(fd1, writable=False), Connection(fd2, readable=False)
