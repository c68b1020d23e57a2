"""Pipe() and connections: the stdlib behaviour and the clear one-way errors."""

from __future__ import annotations

import multiprocessing.connection

import pytest

import multitask
from multitask.connection import Connection


def _echo(conn, other):
    other.close()  # a fork child inherits the parent's end too; without this, no EOF ever
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        conn.send(("echo", msg))
    conn.close()


def _writer(conn, n):
    for i in range(n):
        conn.send(i)
    conn.send_bytes(b"raw")
    conn.close()


def test_duplex_pipe_between_processes(ctx):
    a, b = ctx.Pipe()
    p = ctx.Process(target=_echo, args=(b, a))
    p.start()
    b.close()
    for msg in (1, "two", [3], {"four": 4}):
        a.send(msg)
        assert a.recv() == ("echo", msg)
    a.close()
    p.join(timeout=30)
    assert p.exitcode == 0


def test_one_way_pipe_between_processes(ctx):
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_writer, args=(w, 5))
    p.start()
    w.close()
    assert [r.recv() for _ in range(5)] == list(range(5))
    assert r.recv_bytes() == b"raw"
    assert r.poll(10)  # EOF makes the pipe readable
    with pytest.raises(EOFError):
        r.recv()
    r.close()
    p.join()


def test_one_way_pipe_errors_name_the_fix():
    r, w = multitask.Pipe(duplex=False)
    try:
        assert isinstance(r, Connection) and isinstance(r, multiprocessing.connection.Connection)
        with pytest.raises(OSError, match=r"read end of a one-way Pipe.*second one"):
            r.send(1)
        with pytest.raises(OSError, match=r"write end of a one-way Pipe.*first one"):
            w.recv()
        assert r.readable and not r.writable and w.writable and not w.readable
    finally:
        r.close()
        w.close()


def test_closed_connection_error():
    a, b = multitask.Pipe()
    a.close()
    b.close()
    with pytest.raises(OSError, match="closed"):
        a.send(1)
    with pytest.raises(OSError, match="closed"):
        b.poll()


def test_bytes_methods_and_poll_timeout():
    a, b = multitask.Pipe()
    with a, b:
        assert not b.poll(0.05)
        a.send_bytes(b"0123456789", 2, 3)
        assert b.recv_bytes() == b"234"
        a.send_bytes(b"hello")
        buf = bytearray(10)
        assert b.recv_bytes_into(buf) == 5
        assert bytes(buf[:5]) == b"hello"


def test_pipe_bad_input():
    with pytest.raises(TypeError, match="duplex"):
        multitask.Pipe("yes")  # type: ignore[arg-type]


def test_wait_on_connections():
    a, b = multitask.Pipe()
    with a, b:
        assert multitask.connection.wait([b], timeout=0.01) == []
        a.send(1)
        assert multitask.connection.wait([b], timeout=10) == [b]
