"""multitask.shared_memory: the stdlib's API, with a lifetime that follows its users (issue #17).

Lifetimes are checked in separate interpreters ("families": a process and what it forks), so each
has its own reaper and the test can watch a whole family end.  A reaper that outlives its family's
last process is waited for through a pidfd; a reaper of a family that is still alive acts when a
member exits, and has no channel back, so those checks wait (bounded) for the name to go.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import multitask as mp
from multitask._core import _shm
from multitask.shared_memory import ShareableList, SharedMemory

TIMEOUT = 30


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join(_shm.SHM_DIR, name))


def _wait_gone(name: str, timeout: float = TIMEOUT) -> bool:
    # No event to wait for (the reaper answers nobody): a bounded wait for the name to go.
    deadline = time.monotonic() + timeout
    while _exists(name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Family:
    """A fresh interpreter running ``code`` line by line from stdin (one command per line), so
    a test can drive it step by step: ``run("expr")`` returns ``repr`` of the result."""

    def __init__(self) -> None:
        driver = textwrap.dedent("""
            import sys, os, signal, time
            import multitask as mp
            from multitask._core import _shm
            from multitask.shared_memory import SharedMemory, ShareableList
            ns = dict(globals())
            for line in sys.stdin:
                try:
                    if line.startswith("!"):
                        out = exec(line[1:], ns) or "ok"
                    else:
                        out = repr(eval(line, ns))
                except BaseException as e:
                    out = "ERR " + type(e).__name__ + ": " + str(e)
                print(out.replace("\\n", " "), flush=True)
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", driver], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        assert out, self.stderr()
        return out

    def reaper(self) -> int:
        pid = int(self.run("_shm.reaper_pid"))
        assert pid > 0
        return pid

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read() if self.proc.stderr else ""

    def exit(self) -> str:
        """End the family's process normally; return its stderr."""
        _out, err = self.proc.communicate(timeout=TIMEOUT)
        return err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


def _wait_exit(pid: int, timeout: float = TIMEOUT) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


# -- the stdlib's API and its errors ------------------------------------------------------------

def test_create_attach_close_unlink_like_the_stdlib():
    a = SharedMemory(create=True, size=100)
    assert a.buf is not None   # open: None only once closed
    try:
        assert a.name.startswith("psm_") and a.size == 100 and len(a.buf) == 100
        assert repr(a) == f"SharedMemory({a.name!r}, size=100)"
        a.buf[:3] = b"abc"
        b = SharedMemory(a.name)
        assert b.buf is not None
        assert bytes(b.buf[:3]) == b"abc" and b.size == 100
        b.close()
        b.close()                      # twice is fine, as in the stdlib
        assert _exists(a.name)         # close() never unlinks
    finally:
        a.close()
        a.unlink()
    assert not _exists(a.name)
    with pytest.raises(FileNotFoundError):
        a.unlink()                     # the stdlib's error for a second unlink
    with pytest.raises(FileNotFoundError):
        SharedMemory(a.name)


def test_named_segment_and_its_leading_slash():
    name = f"mt_test_{os.getpid()}"
    a = SharedMemory(name, create=True, size=10)
    try:
        assert a.name == name
        with pytest.raises(FileExistsError):
            SharedMemory(name, create=True, size=10)
        b = SharedMemory("/" + name)   # shm_open ignores leading slashes; so do we
        assert b.name == name
        b.close()
    finally:
        a.close()
        a.unlink()


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"create": True, "size": 0}, ValueError),
    ({"create": True, "size": -1}, ValueError),
    ({"name": None}, ValueError),
    ({"name": "a/b", "create": True, "size": 8}, OSError),
    ({"name": "", "create": True, "size": 8}, OSError),
    ({"name": "x" * 300, "create": True, "size": 8}, OSError),
    ({"name": "mt-null\0a", "create": True, "size": 8}, ValueError),   # as the stdlib
    ({"name": "mt-null\0a"}, ValueError),
    ({"create": True, "size": 8, "track": "yes"}, TypeError),
])
def test_bad_arguments_raise_at_the_call(kwargs, exc):
    before = set(os.listdir(_shm.SHM_DIR))
    with pytest.raises(exc):
        SharedMemory(**kwargs)
    assert set(os.listdir(_shm.SHM_DIR)) == before   # nothing half-created


def test_is_the_stdlib_class():
    from multiprocessing import shared_memory as std

    a = SharedMemory(create=True, size=8)
    try:
        assert isinstance(a, std.SharedMemory)
    finally:
        a.close()
        a.unlink()


def test_track_false_on_every_version():
    a = SharedMemory(create=True, size=64, track=False)
    assert a.buf is not None   # open: None only once closed
    try:
        a.buf[:3] = b"abc"
        b = SharedMemory(a.name, track=False)
        assert b.buf is not None
        assert bytes(b.buf[:3]) == b"abc"
        b.close()
    finally:
        a.close()
        a.unlink()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pickled_to_a_child_by_every_start_method(method):
    ctx = mp.get_context(method)
    a = SharedMemory(create=True, size=16)
    assert a.buf is not None   # open: None only once closed
    try:
        with ctx.Pool(1) as pool:
            # the worker attaches by name, writes and closes; the segment stays for the parent
            assert pool.apply(_write_through, (a, b"hello")) == a.name
        assert bytes(a.buf[:5]) == b"hello"
        again = pickle.loads(pickle.dumps(a))
        assert isinstance(again, SharedMemory) and again.name == a.name
        again.close()
    finally:
        a.close()
        a.unlink()


def _write_through(shm: SharedMemory, data: bytes) -> str:
    assert shm.buf is not None
    shm.buf[: len(data)] = data
    shm.close()
    return shm.name


# -- lifetime: what the stdlib's tracker gets wrong ----------------------------------------------

def test_unrelated_process_keeps_it_after_its_creator_exits():
    """gh-82300: the stdlib unlinks the segment when its creator exits, under a user's feet."""
    creator, user = Family(), Family()
    creator.run("!s = SharedMemory(create=True, size=32); s.buf[:2] = b'ok'")
    name = creator.run("s.name").strip("'")
    assert user.run(f"!t = SharedMemory({name!r})") == "ok"
    creator_reaper = creator.reaper()
    err = creator.exit()
    assert _wait_exit(creator_reaper)                # the creator's family is gone entirely
    assert "leaked" not in err and "resource_tracker" not in err, err   # gh-116849
    assert _exists(name)
    assert user.run("bytes(t.buf[:2])") == "b'ok'"
    late = Family()                                  # and others can still attach by name
    assert late.run(f"!u = SharedMemory({name!r})") == "ok"
    assert late.run("bytes(u.buf[:2])") == "b'ok'"
    late_reaper = late.reaper()
    late.exit()
    assert _wait_exit(late_reaper)
    assert _exists(name)                             # `user` still has it open
    user_reaper = user.reaper()
    assert "leaked" not in user.exit()
    assert _wait_exit(user_reaper)
    assert not _exists(name)                         # its last user is gone


def test_reaped_after_its_only_user_is_killed():
    fam = Family()
    fam.run("!s = SharedMemory(create=True, size=32)")
    name = fam.run("s.name").strip("'")
    reaper = fam.reaper()
    fam.kill()
    assert _wait_exit(reaper)
    assert not _exists(name)


def test_reaped_when_a_member_dies_while_the_family_lives():
    fam = Family()
    try:
        fam.run("!q = mp.get_context('fork').SimpleQueue()")
        fam.run(r'!exec("def f(q):\n s = SharedMemory(create=True, size=8)\n q.put(s.name)\n'
                r' time.sleep(60)")')
        fam.run("!p = mp.get_context('fork').Process(target=f, args=(q,)); p.start()")
        name = fam.run("q.get()").strip("'")
        assert _exists(name)
        fam.run("!os.kill(p.pid, signal.SIGKILL); p.join()")
        assert _wait_gone(name)                      # reaped while the parent lives on
    finally:
        fam.exit()


def test_not_reaped_while_any_process_has_it_open():
    holder, creator = Family(), Family()
    try:
        creator.run("!s = SharedMemory(create=True, size=8)")
        name = creator.run("s.name").strip("'")
        holder.run(f"!h = SharedMemory({name!r})")
        reaper = creator.reaper()
        creator.kill()                               # its creator crashes...
        assert _wait_exit(reaper)                    # ...and its reaper has looked at it
        assert _exists(name)                         # but `holder` has it open
        holder.run("!h.close()")
        assert _exists(name)                         # closed but alive: reaped at its exit
        reaper = holder.reaper()
    finally:
        holder.exit()
    assert _wait_exit(reaper)
    assert not _exists(name)


def test_track_false_is_never_reaped_but_protects_while_open():
    owner, other = Family(), Family()
    owner.run("!s = SharedMemory(create=True, size=8, track=False)")
    name = owner.run("s.name").strip("'")
    try:
        other.run(f"!t = SharedMemory({name!r})")     # tracked: its family would reap...
        other_reaper = other.reaper()
        other.exit()
        assert _wait_exit(other_reaper)
        assert _exists(name)                          # ...but `owner` has it open
        owner.run("!s.close()")
        owner.exit()
        assert _exists(name)                          # untracked: the program owns its lifetime
    finally:
        os.unlink(os.path.join(_shm.SHM_DIR, name))


def test_a_killed_reaper_is_replaced():
    fam = Family()
    try:
        fam.run("!a = SharedMemory(create=True, size=8)")
        first = fam.reaper()
        os.kill(first, signal.SIGKILL)
        assert _wait_exit(first)
        fam.run("!b = SharedMemory(create=True, size=8)")   # EPIPE -> a new reaper, told of a
        second = fam.reaper()
        assert second != first
        names = [fam.run("a.name").strip("'"), fam.run("b.name").strip("'")]
    finally:
        fam.kill()
    assert _wait_exit(second)
    assert not any(_exists(n) for n in names)


def test_many_users_coming_and_going_never_lose_it():
    """Attachers race a reaper: each of them sees the data or a clean FileNotFoundError after
    the segment was legitimately reaped -- and while one has it open, it stays."""
    keeper = Family()
    keeper.run("!s = SharedMemory(create=True, size=8); s.buf[:1] = b'k'")
    name = keeper.run("s.name").strip("'")
    try:
        fams = [Family() for _ in range(4)]
        for _ in range(5):
            for f in fams:
                assert f.run(f"!t = SharedMemory({name!r})") == "ok"
            for f in fams:
                assert f.run("bytes(t.buf[:1])") == "b'k'"
                f.run("!t.close()")
        reapers = [f.reaper() for f in fams]
        for f in fams:
            f.kill()
        assert all(_wait_exit(r) for r in reapers)
        assert _exists(name)                          # keeper still has it open
    finally:
        keeper_reaper = keeper.reaper()
        keeper.exit()
    assert _wait_exit(keeper_reaper)
    assert not _exists(name)


# -- ShareableList -------------------------------------------------------------------------------

def test_shareable_list_lives_in_a_multitask_segment():
    # Mixed types, as the stdlib's own example: typeshed's value-restricted TypeVar (kept by
    # ShareableList) admits one type per list unless told Any; and typeshed declares no
    # __iter__ (iteration goes by __getitem__) -- hence the ignores on list() below.
    sl: ShareableList[Any] = ShareableList([1, 2.5, "x", b"y", None, True])
    try:
        assert isinstance(sl.shm, SharedMemory)
        assert list(sl) == [1, 2.5, "x", b"y", None, True]  # type: ignore[call-overload]
        sl[0] = 7
        other = ShareableList(name=sl.shm.name)
        assert other[0] == 7 and isinstance(other.shm, SharedMemory)
        copy = pickle.loads(pickle.dumps(sl))
        assert list(copy) == list(sl)  # type: ignore[call-overload]
        other.shm.close()
        copy.shm.close()
    finally:
        sl.shm.close()
        sl.shm.unlink()


def test_shareable_list_reaped_with_its_family():
    fam = Family()
    fam.run("!sl = ShareableList(list(range(5)))")
    name = fam.run("sl.shm.name").strip("'")
    reaper = fam.reaper()
    err = fam.exit()
    assert "leaked" not in err, err
    assert _wait_exit(reaper)
    assert not _exists(name)
