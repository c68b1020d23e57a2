"""multitask._core._channel: the forked zygote's message pipes and process handle."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from multitask._core import _spawn
from multitask._core._channel import ForkedChild, channel_pair


def test_messages_arrive_whole_and_in_order():
    r, w = channel_pair()
    try:
        msgs = [("spawn", 1, "x" * n) for n in (0, 1, 100, 4000, 70_000)]

        def send_all() -> None:
            for m in msgs:
                w.send(m)

        sender = threading.Thread(target=send_all)
        sender.start()   # the 70 kB one does not fit the pipe: send blocks until recv reads
        got = [r.recv() for _ in msgs]
        sender.join(10)
        assert got == msgs
    finally:
        r.close()
        w.close()


def test_poll_and_eof():
    r, w = channel_pair()
    assert not r.poll(0)
    w.send(("exit",))
    assert r.poll(0)
    assert r.recv() == ("exit",)
    w.close()
    assert r.poll(1.0)    # EOF is readable
    with pytest.raises(EOFError):
        r.recv()
    r.close()
    r.close()             # idempotent
    with pytest.raises(OSError, match="closed"):
        r.recv()


def test_sends_from_many_threads_never_interleave():
    r, w = channel_pair()
    n, k = 8, 200

    def send(i: int) -> None:
        for j in range(k):
            w.send((i, j, "p" * (j % 300)))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    seen: dict[int, list[int]] = {i: [] for i in range(n)}
    for _ in range(n * k):
        i, j, pad = r.recv()
        assert pad == "p" * (j % 300)
        seen[i].append(j)
    for t in threads:
        t.join(10)
    assert all(v == list(range(k)) for v in seen.values())
    r.close()
    w.close()


def _exit_with(code):
    return code


def _raise():
    raise RuntimeError("boom in the child")


def _sys_exit(code):
    raise SystemExit(code)


@pytest.mark.parametrize(("target", "args", "code"), [
    (_exit_with, (0,), 0), (_exit_with, (7,), 7), (_exit_with, (None,), 0),
    (_raise, (), 1), (_sys_exit, (3,), 3), (_sys_exit, (None,), 0), (_sys_exit, ("bye",), 1),
])
def test_forked_child_exit_codes(target, args, code, capfd):
    child = ForkedChild(target, args, "t")
    try:
        assert child.wait(30) == code
        assert child.exitcode == code
    finally:
        child.close()
    if target is _raise:
        assert "boom in the child" in capfd.readouterr().err


def _sleep_forever(fd):
    os.write(fd, b"x")
    while True:
        time.sleep(60)


def test_forked_child_kill_wait_timeout_and_close():
    r, w = os.pipe()
    child = ForkedChild(_sleep_forever, (w,), "sleeper", close_in_child=(r,))
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        assert child.wait(0.05) is None and child.poll() is None
        child.kill()
        assert child.wait(30) == -signal.SIGKILL
        child.kill()    # after exit: nothing to signal, no error
    finally:
        os.close(r)
        child.close()
    child.close()


def test_forked_child_closes_what_it_is_told():
    r, w = os.pipe()
    child = ForkedChild(_exit_with, (0,), "t", close_in_child=(w,))
    os.close(w)
    try:
        assert os.read(r, 1) == b""     # no write end left open anywhere: EOF, not a hang
        assert child.wait(30) == 0
    finally:
        os.close(r)
        child.close()


def test_forked_child_is_reaped_in_background():
    child = ForkedChild(_exit_with, (5,), "t")
    _spawn.reap_in_background(child, child.sentinel)
    deadline = time.monotonic() + 30
    while child.returncode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.returncode == 5
    child.close()


def _identity(fd):
    import multiprocessing

    _spawn.adopt_identity("Someone-3", "TheParent", os.getppid(), fd, after_fork=True)
    me, parent = multiprocessing.current_process(), multiprocessing.parent_process()
    ok = (me.name == "Someone-3" and me.daemon and me.pid == os.getpid() and me.is_alive()
          and parent is not None
          and parent.name == "TheParent" and parent.pid == os.getppid() and parent.is_alive()
          and multiprocessing.active_children() == [])
    return 0 if ok else 9


def test_adopt_identity_makes_current_and_parent_process():
    r, w = os.pipe()
    child = ForkedChild(_identity, (r,), "t", close_in_child=(w,))
    os.close(r)
    try:
        assert child.wait(30) == 0
    finally:
        os.close(w)
        child.close()
