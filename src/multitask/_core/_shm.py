"""Named shared memory whose lifetime follows its users: the protocol under ``SharedMemory``.

The stdlib's resource tracker unlinks every segment a process created *or attached* (3.8-3.12)
when that process's tracker ends, whether or not other processes still use it, and warns that it
"leaked" (CPython gh-82300, gh-116849).  Here a segment is removed only when no process has it
open any more, and also when its last user crashed.  Who has it open is kept by the kernel, so a
crash cannot leave the count wrong:

* **a user holds a shared flock** on its descriptor of ``/dev/shm/<name>`` for as long as the
  segment is open in it (``close()`` or the process's death drops it -- the kernel releases a
  flock with the last descriptor of its open file, also on SIGKILL);
* **a reaper takes it exclusively, without waiting, before unlinking**: it succeeds only when no
  process holds the segment open, and while it holds it nobody can start using the segment;
* **a creator publishes a segment with its lock already held**: it creates and locks a file under
  a private name and then ``link``s it to the public one (``link`` fails if the name exists, the
  same ``O_EXCL`` guarantee as ``shm_open``), so no reaper can find a new segment unlocked;
* **an attacher checks, once it holds its shared lock, that the name still leads to the file it
  opened**: a reaper may have unlinked it between the ``open`` and the ``flock`` (then the segment
  is gone: ``FileNotFoundError``, as if it had been attached a moment later).

The reaper is one small process per family of processes (:func:`_reaper_fd`; a forked child
shares its parent's, a spawned or unrelated process starts its own), started with the first
tracked segment, and reading registrations ``+ pid dev ino name`` from a pipe whose write end every
process of the family holds.  When a registered pid exits (watched with a pidfd, no polling) it
tries to reap every segment that pid used; when the pipe reaches end of file (the whole family is
gone) it tries the remaining ones and exits.  ``unlink()`` says ``-`` so the reaper forgets the
name.  ``close()`` does not unlink: as in the stdlib, a process may create a segment, hand its
name on and close it, and the segment lives on while the process lives.

What is counted: processes using multitask's ``SharedMemory`` (any version, any start method,
related or not).  A process attached through the stdlib's class holds no lock and is not counted.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import selectors
import signal
import sys
import threading

__all__ = ["SHM_DIR", "Key", "attach", "closed", "create", "forget", "reap", "register",
           "shm_path"]

SHM_DIR = "/dev/shm"
_NAME_MAX = 255

_lock = threading.Lock()
_wfd = -1                        # this family's reaper pipe (write end), -1 before the first use
#: The pid of the reaper this process started (0: none; a forked child uses its parent's).
reaper_pid = 0
_open: dict[tuple[int, int, str], int] = {}   # segments open in this process -> handles


def shm_path(name: str) -> str:
    """The file of segment ``name`` (as ``shm_open`` resolves it: leading slashes ignored).

    Raises ``OSError(EINVAL)`` for a name that ``shm_open`` rejects (empty, or with a ``/``
    inside), ``OSError(ENAMETOOLONG)`` for one too long and ``ValueError`` for an embedded
    null character, like the stdlib (its ``shm_open`` is reached through a path argument).
    """
    bare = name.lstrip("/")
    if "\0" in bare:
        raise ValueError(f"embedded null character in shared memory name {name!r}")
    if not bare or "/" in bare:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), name)
    if len(os.fsencode(bare)) > _NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)
    return os.path.join(SHM_DIR, bare)


def create(name: str, size: int, mode: int = 0o600) -> int:
    """Create segment ``name`` of ``size`` bytes and return its descriptor, already holding the
    shared lock.  Raises ``FileExistsError`` if the name exists (as ``shm_open(O_EXCL)``)."""
    path = shm_path(name)
    tmp = os.path.join(SHM_DIR, f".mt-new-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.ftruncate(fd, size)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name) from None
    except BaseException:
        os.close(fd)
        raise
    finally:
        # The private name goes at once: only the public one may keep the segment alive.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return fd


def attach(name: str, writable: bool = True) -> int:
    """Open existing segment ``name`` and take the shared lock; return the descriptor.

    Blocks only while a reaper holds the segment (a few system calls).  Raises
    ``FileNotFoundError`` when there is no such segment, or it was reaped while this call opened it.
    """
    path = shm_path(name)
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not _same_file(fd, path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _same_file(fd: int, path: str) -> bool:
    st = os.fstat(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def reap(name: str, dev: int, ino: int) -> bool:
    """Unlink segment ``name`` if it is still the file ``(dev, ino)`` and no process has it open.
    Returns whether it did.  Never blocks."""
    try:
        path = shm_path(name)
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False          # gone already, or a name the reaper was not meant to see
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino):
            return False      # the name was unlinked and used again: not the segment we knew
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False      # someone still has it open
        if not _same_file(fd, path):
            return False
        os.unlink(path)       # under the exclusive lock: no attacher can be half-way in
        return True
    finally:
        os.close(fd)


# -- the client side: registering with this family's reaper ---------------------------------------

Key = tuple[int, int, str]   # (st_dev, st_ino, name): one segment, not one name


def register(name: str, st: os.stat_result) -> Key:
    """Tell the reaper that this process uses segment ``name`` (``st``: its descriptor's
    ``fstat``), so it is reaped after this process exits if nobody has it open then; return the
    segment's key for :func:`closed` and :func:`forget`.  Raises ``OSError`` if no reaper can be
    started."""
    key = (st.st_dev, st.st_ino, name.lstrip("/"))
    with _lock:
        _open[key] = _open.get(key, 0) + 1
        _send(f"+ {os.getpid()} {key[0]} {key[1]} {key[2]}\n")
    return key


def closed(key: Key) -> None:
    """This process closed one of its handles of the segment.  Nothing is sent: the reaper still
    tries the segment when this process exits (it may have handed the name on and closed it)."""
    with _lock:
        left = _open.get(key, 0) - 1
        if left > 0:
            _open[key] = left
        else:
            _open.pop(key, None)


def forget(key: Key) -> None:
    """Tell the reaper to forget the segment: this process unlinked it on purpose."""
    with _lock:
        try:
            _send(f"- {os.getpid()} {key[0]} {key[1]} {key[2]}\n")
        except OSError:
            pass              # no reaper could be reached: it has nothing to forget


def _send(line: str) -> None:
    """Write one registration (under ``_lock``).  A line is far below PIPE_BUF, so the writes
    of the family's processes never interleave.  A reaper that is gone (killed) is replaced, and
    told again about every segment this process has open."""
    data = line.encode()
    for attempt in (0, 1):
        fd = _reaper_fd()
        try:
            os.write(fd, data)
            return
        except BrokenPipeError:
            if attempt:
                raise
            _restart_reaper()


def _reaper_fd() -> int:
    global _wfd
    if _wfd < 0:
        _wfd = _start_reaper()
    return _wfd


def _restart_reaper() -> None:
    global _wfd
    if _wfd >= 0:
        os.close(_wfd)
    _wfd = _start_reaper()
    pid = os.getpid()
    for dev, ino, name in _open:
        os.write(_wfd, f"+ {pid} {dev} {ino} {name}\n".encode())


def _start_reaper() -> int:
    """Start this family's reaper (``python -I -S`` running this file: no site, no multitask
    import, ~10 ms once) in its own session, so the terminal's Ctrl-C does not reach it; return
    the write end of its pipe (close-on-exec: exec'd programs do not keep the reaper waiting)."""
    if not sys.executable:
        raise OSError(errno.ENOENT, "no Python executable to run the shared-memory reaper")
    rfd, wfd = os.pipe()
    global reaper_pid
    try:
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), "3"]
        reaper_pid = os.posix_spawn(sys.executable, argv, os.environ,
                                    file_actions=[(os.POSIX_SPAWN_DUP2, rfd, 3)], setsid=True)
    except BaseException:
        os.close(wfd)
        raise
    finally:
        os.close(rfd)
    return wfd


def _after_fork_child() -> None:
    # The child shares the parent's reaper (the inherited write end keeps it running) but has
    # registered nothing itself: what it inherited open stays counted by the kernel's lock, and is
    # reaped at the latest when the whole family is gone.
    global _lock
    _lock = threading.Lock()
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)


# -- the reaper process ---------------------------------------------------------------------------

_PRUNE_AT = 1024


def _exists(item: tuple[int, int, str]) -> bool:
    try:
        st = os.stat(shm_path(item[2]))
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == item[:2]


def _reaper_main(fd: int) -> None:
    """Read registrations until every writer is gone; reap what each exited process used."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    entries: dict[int, set[tuple[int, int, str]]] = {}
    pidfds: dict[int, int] = {}
    bound: dict[int, int] = {}   # pid -> entries it may have before they are pruned
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ, None)
    pending = b""

    def done(pid: int) -> None:
        pfd = pidfds.pop(pid, None)
        if pfd is not None:
            sel.unregister(pfd)
            os.close(pfd)
        bound.pop(pid, None)
        for dev, ino, name in entries.pop(pid, ()):
            reap(name, dev, ino)

    while True:
        for key, _ in sel.select():
            if key.data is not None:
                done(key.data)
                continue
            data = os.read(fd, 65536)
            if not data:
                for pid in list(entries):
                    done(pid)
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                try:
                    op, spid, sdev, sino, name = raw.decode().split(" ", 4)
                    pid, item = int(spid), (int(sdev), int(sino), name)
                except ValueError:
                    continue
                if op == "-":
                    entries.get(pid, set()).discard(item)
                    continue
                mine = entries.setdefault(pid, set())
                mine.add(item)
                if len(mine) > bound.get(pid, _PRUNE_AT):
                    # A long-lived process attaching to one fresh segment after another: forget
                    # those whose name is gone already, so the reaper's memory follows what exists.
                    mine -= {it for it in mine if not _exists(it)}
                    bound[pid] = max(_PRUNE_AT, 2 * len(mine))
                if pid not in pidfds:
                    try:
                        pfd = os.pidfd_open(pid)
                    except ProcessLookupError:
                        done(pid)          # exited before its message was read
                        continue
                    pidfds[pid] = pfd
                    sel.register(pfd, selectors.EVENT_READ, pid)


if __name__ == "__main__":
    _reaper_main(int(sys.argv[1]))
