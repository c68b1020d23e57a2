"""The program's fork helper: a copy of the program, taken by ``import multitask`` while the
program had no other thread, that forks children (a pool's zygote) on request.  Issue #21.

Part of ``multitask._core``: imports nothing from the rest of the package.

Why.  Forking a process in which another thread runs can deadlock the child on a lock that
thread held (CPython gh-84559: the stdio buffers, logging, a C library's own locks such as
OpenBLAS's); Python 3.12 warns about it and 3.14 makes forkserver the default.  A Pool created
in such a program therefore started its zygote through the stdlib's forkserver: a new
interpreter that re-imports ``__main__`` (~40-60 ms), then every worker imported cloudpickle
for its first task (~30 ms more), ~4x the stdlib Pool's start-up.  A copy of the program taken
before any thread existed holds no foreign lock, so forking *it* is safe at any later moment,
and costs a fork.  ``docs/design.md`` ("The fork helper") has the measurements.

What the helper has is the program as it was at ``import multitask``: the modules imported by
then (and, from its first request on, what it warms: the pool's worker code, cloudpickle and
the library modules the program had imported by the time of a request), not the
functions ``__main__`` defines later (those travel by value, as for spawn) nor its later
imports (a worker imports them when it unpickles something that needs them, as under spawn).
A Pool in a program with no foreign thread is still forked from the program itself, the most
complete snapshot; the helper is only for programs where that is unsafe.

Data flow of one request (:meth:`ForkHelper.fork`)::

    program --[socket: 8-byte length + fds (SCM_RIGHTS), then the pickle]--> helper
        the pickle: (target, args, name); each fd argument is an _Fd(i) marker
    helper: fork -> child closes the helper's fds, replaces the markers by the received fds,
            os._exit(target(*args))
    helper --[socket: pid (8 bytes) + the child's pidfd]--> program   => HelperChild
    helper, on SIGCHLD: waitpid, writes the exit code (4 bytes) on the child's status pipe

Lifetime.  The helper is a grandchild (double fork), so the program's ``os.wait()`` never
sees it (seed 003 teaches ``os.wait()``: a helper child would make it block for ever).  It
exits when the program does: EOF on the "alive" pipe whose only write end the program holds
(its children close their copies at fork).  It ignores SIGINT, SIGTERM and SIGHUP sent to the
whole process group, as the zygote does, and closes every fd it inherited but 0-2 (a socket the
program closes later must not stay open in it).  ``MULTITASK_FORK_HELPER=0`` turns it off.
"""

from __future__ import annotations

import atexit
import collections
import io
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from . import _mainfn
from ._channel import run_child

__all__ = ["ForkHelper", "HelperArgumentsError", "HelperChild", "HelperError", "get",
           "start_at_import"]

_LEN = struct.Struct("!Q")
_PID = struct.Struct("!q")
_CODE = struct.Struct("!i")
#: exit code reported for a child whose helper died before it could report the real one
UNKNOWN_EXIT = 255
#: seconds the program waits for one answer of the helper (its first one may wait for the
#: imports it warms: well under a second)
ANSWER_TIMEOUT = 60.0


class HelperError(OSError):
    """The helper is gone or refused a request (the caller falls back to another start)."""


class HelperArgumentsError(HelperError):
    """A request's target or arguments cannot be pickled outside a spawn (e.g. a stdlib Queue);
    the helper itself is fine."""


class _Fd:
    """Marker for the i-th fd of a request, in its pickled arguments."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Fd, (self.i,))


class HelperChild:
    """A child the helper forked: the subset of a ``Popen`` the pool uses (``pid``,
    ``sentinel``, ``poll``/``wait``/``kill``/``close``), like ``_channel.ForkedChild``.

    It is the helper's child, not this process's: the helper reaps it and reports its exit
    code; ``sentinel`` is a pidfd (readable exactly when the child has exited).  ``pid`` and
    ``sentinel`` are known once the helper has answered: the first to read either waits for
    that answer (see :meth:`ForkHelper.fork`).  If the helper could not fork it (or died
    first), the child reads as one that exited at once with :data:`UNKNOWN_EXIT`."""

    def __init__(self, helper: ForkHelper, status_r: int, name: str) -> None:
        self.name = name
        self.returncode: int | None = None
        self._helper = helper
        self._pid: int | None = None
        self._pidfd = -1
        self._status_r = status_r
        self._lock = threading.Lock()

    def _answered(self, pid: int, pidfd: int) -> None:
        # by ForkHelper, under its lock
        self._pid = pid
        if pidfd < 0:   # not forked: an fd that is readable at once stands for its exit
            r, w = os.pipe()
            os.close(w)
            pidfd = r
            self.returncode = UNKNOWN_EXIT
        self._pidfd = pidfd

    @property
    def pid(self) -> int:
        if self._pid is None:
            self._helper._wait_answer(self)
        return self._pid  # type: ignore[return-value]

    @property
    def sentinel(self) -> int:
        if self._pid is None:
            self._helper._wait_answer(self)
        return self._pidfd

    @property
    def exitcode(self) -> int | None:
        return self.poll()

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The exit code, or None while it runs (``flag=0``: wait for the exit)."""
        sentinel = self.sentinel
        with self._lock:
            if self.returncode is not None or sentinel < 0:
                return self.returncode
            if not select.select([sentinel], [], [], None if flag == 0 else 0)[0]:
                return None
            # Exited: the helper writes the code as soon as it has reaped it.  Bounded wait --
            # a helper killed in between never writes, and the code is then unknown.
            code = UNKNOWN_EXIT
            if select.select([self._status_r], [], [], 5.0)[0]:
                try:
                    data = os.read(self._status_r, _CODE.size)
                except OSError:
                    data = b""
                if len(data) == _CODE.size:
                    code = _CODE.unpack(data)[0]
            self.returncode = code
            return code

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, waiting up to ``timeout`` seconds (None: for ever)."""
        sentinel = self.sentinel
        if (self.returncode is None and sentinel >= 0
                and not select.select([sentinel], [], [], timeout)[0]):
            return None
        return self.poll()

    join = wait

    def is_alive(self) -> bool:
        return self.poll() is None

    def kill(self) -> None:
        sentinel = self.sentinel
        if self.returncode is not None or sentinel < 0:
            return
        try:
            signal.pidfd_send_signal(sentinel, signal.SIGKILL)  # never a reused pid
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Release the fds (the child may still run; the helper reaps it)."""
        self.sentinel  # noqa: B018 -- the answer holds an fd too: take it first
        with self._lock:
            for fd in (self._pidfd, self._status_r):
                if fd >= 0:
                    os.close(fd)
            self._pidfd = self._status_r = -1


class ForkHelper:
    """The program's side of the helper (see the module docstring).  Thread-safe."""

    def __init__(self, sock: socket.socket, alive_w: int,
                 main_functions: dict[str, Any], modules: frozenset[str]) -> None:
        self._pid = 0   # read from the helper's first message, on first use
        # No wait on the helper is unbounded: a helper that does not answer within this is
        # taken for gone (its pending children read as exited; a pool fails, it does not hang)
        sock.settimeout(ANSWER_TIMEOUT)
        self._sock = sock
        self._alive_w = alive_w
        self._lock = threading.Lock()
        self._dead = False
        self._unanswered: collections.deque[HelperChild] = collections.deque()
        #: ``__main__``'s functions when the helper was forked: a child of the helper has
        #: exactly these (a pool sends them by reference while they are still bound there)
        self.main_functions = main_functions
        #: names of the modules the helper had when it was forked
        self.modules = modules

    @property
    def alive(self) -> bool:
        return not self._dead

    @property
    def pid(self) -> int:
        """The helper's pid (waits for its first message: at most the fork's duration)."""
        with self._lock:
            self._hello()
            return self._pid

    def _hello(self) -> None:
        # under _lock
        if self._pid == 0 and not self._dead:
            try:
                self._pid = _PID.unpack(_recv_exact(self._sock, _PID.size))[0]
            except (OSError, EOFError) as exc:
                self._dead = True
                raise HelperError(f"the fork helper has exited ({exc})") from exc

    def fork(self, target: Callable[..., Any], args: tuple[Any, ...], fds: Iterable[int],
             name: str = "multitask-child") -> HelperChild:
        """Have the helper fork a child that runs ``target(*args)`` with ``fds`` (duplicated
        into it; an argument ``fd_arg(i)`` becomes the child's copy of ``fds[i]``).

        Sends the request and returns without waiting for the helper, which may still be
        forking an earlier request's child: the child's ``pid`` and
        ``sentinel`` wait for its answer.  ``target`` and ``args`` are pickled here (by
        reference where pickle can, cloudpickle otherwise).  Raises :class:`HelperError` if
        the helper is known to be gone or ``target``/``args`` cannot be pickled outside a
        spawn (the caller starts the child another way)."""
        if self._dead:
            raise HelperError("the fork helper has exited")
        fds = list(fds)
        # What a fork would have copied and the helper's copy has as it was at import: the
        # working directory, the environment and sys.path (as spawn's preparation data).
        # ... and the standard streams of now, passed as fds: the helper holds none of the
        # program's (a `python prog.py | head` must see EOF when the program exits, not when
        # the helper does), and a program that redirected fd 1 since gets it redirected.
        std = [n for n in (0, 1, 2) if _is_open(n)]
        state = (os.getcwd(), dict(os.environ), list(sys.path), self._preload(), std)
        # two pickles: the state is applied before the call is unpickled (which may import
        # from a directory the program added to sys.path after the import)
        try:
            payload = pickle.dumps(state) + _dumps((target, args, name), self.main_functions)
        except Exception as exc:
            # e.g. a stdlib Queue or Lock in a pool's initargs: those pickle only while a
            # child is being spawned (context.assert_spawning); the caller starts the child
            # another way, and the helper is fine for the next request
            raise HelperArgumentsError(
                f"the child's arguments cannot be sent to the fork helper: "
                f"{type(exc).__name__}: {exc}") from exc
        status_r, status_w = os.pipe()
        child = HelperChild(self, status_r, name)
        try:
            with self._lock:
                if self._dead:
                    raise HelperError("the fork helper has exited")
                try:
                    socket.send_fds(self._sock, [_LEN.pack(len(payload))],
                                    [*fds, status_w, *std])
                    self._sock.sendall(payload)
                except OSError as exc:
                    self._dead = True
                    raise HelperError(f"the fork helper has exited ({exc})") from exc
                self._unanswered.append(child)
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return child

    def _preload(self) -> list[str]:
        """The library modules (stdlib, site-packages) this program has imported since the
        helper was forked, for the helper to import too (top-level names; not the program's
        own modules, whose import may do anything)."""
        global _library_dirs
        if _library_dirs is None:
            import sysconfig

            paths = sysconfig.get_paths()
            _library_dirs = tuple({os.path.join(paths[k], "") for k in
                                   ("stdlib", "platstdlib", "purelib", "platlib") if k in paths})
        out = []
        for name, module in list(sys.modules.items()):
            if "." in name or name in self.modules or name.startswith("_"):
                continue
            origin = getattr(module, "__file__", None)
            if isinstance(origin, str) and origin.startswith(_library_dirs):
                out.append(name)
        return out

    def _wait_answer(self, child: HelperChild) -> None:
        """Read the helper's answers, in the order of the requests, until ``child``'s."""
        with self._lock:
            while child._pid is None:
                first = self._unanswered[0]
                pid, pidfd = -1, -1
                if not self._dead:
                    try:
                        self._hello()
                        data, got, _flags, _addr = socket.recv_fds(self._sock, _PID.size, 1)
                        data += _recv_exact(self._sock, _PID.size - len(data))
                        pid = _PID.unpack(data)[0]
                        if pid > 0 and got:
                            pidfd = got[0]
                        else:
                            for fd in got:
                                os.close(fd)
                    except (OSError, EOFError):
                        self._dead = True
                self._unanswered.popleft()
                first._answered(pid, pidfd)

    def close(self) -> None:
        """At the program's exit: close the socket (the helper exits on its EOF)."""
        with self._lock:
            self._dead = True
            self._sock.close()
            if self._alive_w >= 0:
                os.close(self._alive_w)
            self._alive_w = -1

    def close_in_child(self) -> None:
        """In a child forked from this program: drop the program's ends (the helper is the
        program's, not the child's; the child holding ``alive_w`` would keep it alive)."""
        self._dead = True
        self._unanswered.clear()
        fds, self._alive_w = (self._sock.detach(), self._alive_w), -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def fd_arg(i: int) -> Any:
    """The placeholder, in :meth:`ForkHelper.fork`'s ``args``, for the child's copy of
    ``fds[i]`` (an int fd there)."""
    return _Fd(i)


class _Pickler(pickle.Pickler):
    """Pickles by reference the ``__main__`` functions the helper has (its ``__main__`` is the
    program's at import), and the others by value into the child's ``__main__``: an
    initializer the script defined after ``import multitask`` (see ``_mainfn``)."""

    def __init__(self, file: Any, known: dict[str, Any]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._known = known

    def reducer_override(self, obj: Any) -> Any:
        if _mainfn.wants_stand_in(obj, self._known):
            return _mainfn.MainFunction(obj).__reduce__()
        return NotImplemented


def _dumps(obj: Any, known: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    try:
        _Pickler(buf, known).dump(obj)
        return buf.getvalue()
    except (pickle.PicklingError, TypeError, AttributeError):
        import cloudpickle

        return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("the fork helper closed its socket")
        out += chunk
    return out


# --------------------------------------------------------------------------------------------
# Starting it (in the program) and the helper's own loop
# --------------------------------------------------------------------------------------------

_helper: ForkHelper | None = None
_library_dirs: tuple[str, ...] | None = None


def get() -> ForkHelper | None:
    """This program's helper, or None (never started, exited, or this is a child process)."""
    helper = _helper
    return helper if helper is not None and helper.alive else None


def _after_fork_in_child() -> None:
    global _helper
    helper, _helper = _helper, None
    if helper is not None:
        helper.close_in_child()


def start_at_import(warm: tuple[str, ...] = ()) -> None:
    """Fork the helper if this is a program's main process, alone in it (no other thread),
    on Linux with pidfds, and ``MULTITASK_FORK_HELPER`` is not ``0``.  The helper imports
    ``warm`` (module names) when its first request comes (see :func:`_serve`).
    Blocks for the double fork (~1-2 ms);
    never raises (no helper then)."""
    global _helper
    if _helper is not None or os.environ.get("MULTITASK_FORK_HELPER", "1") == "0":
        return
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return
    if threading.active_count() != 1 or threading.current_thread() is not threading.main_thread():
        return
    mpp = sys.modules.get("multiprocessing.process")
    if mpp is not None:
        me = mpp.current_process()
        # a child of a program (spawn/forkserver re-import __main__ with _inheriting set, and
        # give every child a parent_process): its program already has its helper
        if getattr(me, "_inheriting", False) or mpp.parent_process() is not None:
            return
    main_functions = _mainfn.functions_now()
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        alive_r, alive_w = os.pipe()
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):   # nothing buffered is written twice
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        pid = os.fork()
    except OSError:
        for fd in (ours.detach(), theirs.detach(), alive_r, alive_w):
            os.close(fd)
        return
    if pid == 0:   # the intermediate: fork the helper and exit at once
        code = 1
        try:
            if os.fork() == 0:
                code = 0
                try:
                    _serve(theirs.detach(), alive_r, (ours.fileno(), alive_w), warm)
                finally:
                    os._exit(1)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    os.close(alive_r)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:   # pragma: no cover - someone reaped it (SIGCHLD ignored)
        pass
    _helper = ForkHelper(ours, alive_w, main_functions, frozenset(sys.modules))
    # Registered at import, so run after the exit handlers of what the program set up later
    # (a pool created in one of those can still use the helper).
    atexit.register(_helper.close)


def _serve(sock_fd: int, alive_r: int, parents: tuple[int, int], warm: tuple[str, ...]) -> NoReturn:
    """The helper's loop (a single thread): fork on request, reap, exit with the program."""
    for fd in parents:
        os.close(fd)
    # The program's standard streams are not kept (see ForkHelper.fork): each child gets the
    # program's of the moment.
    devnull = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(devnull, n)
    keep = {0, 1, 2, sock_fd, alive_r}
    for fd in _open_fds():
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    # the program's own handlers, which a child gets back (see _serve_one)
    handlers: dict[int, Any] = {signum: signal.getsignal(signum)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    comm = _get_name()
    _set_name(b"mt-fork-helper")
    sock = socket.socket(fileno=sock_fd)
    sock.sendall(_PID.pack(os.getpid()))   # the hello: ForkHelper.pid
    # ``warm`` is imported when the first request arrives, before its child is forked (so the
    # child and its workers inherit it), never at start: at start it would take ~30 ms of CPU
    # from every program, most of which never need the helper (measured: 8-12 ms more wall
    # time for a short script on this 2-core machine, where the program and its first pool's
    # workers run then).  Imported after the request instead, each worker of the first pool
    # imports cloudpickle itself, and its first map took 55-73 ms instead of ~25.  The modules
    # a request names (preload: what the program has imported since) are imported after it
    # is answered, for the next pools.
    to_warm: list[str] = []
    status: dict[int, int] = {}   # child pid -> write end of its status pipe
    while True:
        ready = select.select([sock_fd, alive_r, wake_r], [], [])[0]
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        _reap(status)
        if alive_r in ready:   # the program has exited
            os._exit(0)
        if sock_fd in ready:
            for name in warm:
                _import(name)
            warm = ()
            try:
                to_warm += _serve_one(sock, status, (sock_fd, alive_r, wake_r, wake_w),
                                      handlers, comm)
            except (OSError, EOFError):
                os._exit(0)
            # one module per turn, so that a waiting request is served first
            while to_warm and not select.select([sock_fd, alive_r, wake_r], [], [], 0)[0]:
                _import(to_warm.pop(0))


def _serve_one(sock: socket.socket, status: dict[int, int], own: tuple[int, ...],
               handlers: dict[int, Any], comm: bytes) -> list[str]:
    """Fork the child of one request; the modules the program has that the helper should
    import (the request's ``preload``)."""
    head, fds, _flags, _addr = socket.recv_fds(sock, _LEN.size, 64)
    if not head:
        raise EOFError
    head += _recv_exact(sock, _LEN.size - len(head))
    payload = _recv_exact(sock, _LEN.unpack(head)[0])
    try:
        _cwd, _environ, _path, preload, std = pickle.loads(payload)   # the first pickle
    except Exception:
        preload, std = [], []
    split = len(fds) - len(std) - 1
    child_fds, status_w, std_fds = fds[:split], fds[split], fds[split + 1:]
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        sock.sendall(_PID.pack(-(exc.errno or 1)))
        return []
    if pid == 0:
        def setup() -> tuple[Callable[..., Any], tuple[Any, ...]]:
            signal.set_wakeup_fd(-1)
            for signum, handler in handlers.items():   # the program's, as a fork has them
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            for fd in (*own, status_w, *status.values()):
                os.close(fd)
            _set_name(comm)
            for n, fd in zip(std, std_fds, strict=True):
                os.dup2(fd, n)
                os.close(fd)
            stream = io.BytesIO(payload)
            cwd, environ, path, _preload, _std = pickle.load(stream)
            os.chdir(cwd)
            if environ != os.environ:
                os.environ.clear()
                os.environ.update(environ)
            sys.path[:] = path
            target, args, _name = pickle.load(stream)
            return target, tuple(child_fds[a.i] if type(a) is _Fd else a for a in args)

        run_child(setup)
    for fd in (*child_fds, *std_fds):
        os.close(fd)
    status[pid] = status_w
    try:
        pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except OSError:  # pragma: no cover - it cannot be gone: we have not reaped it
        pidfd = -1
    try:
        socket.send_fds(sock, [_PID.pack(pid)], [pidfd] if pidfd >= 0 else [])
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return [m for m in preload if isinstance(m, str)]


def _import(name: str) -> None:
    if name not in sys.modules:
        try:
            __import__(name)
        except Exception:   # a worker that needs it imports it (or fails there)
            pass


def _reap(status: dict[int, int]) -> None:
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status.pop(pid, -1)
        if fd >= 0:
            try:
                os.write(fd, _CODE.pack(os.waitstatus_to_exitcode(st)))
            except OSError:
                pass
            os.close(fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover
        return []


def _get_name() -> bytes:
    try:
        with open("/proc/self/comm", "rb") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover
        return b"python"


def _set_name(name: bytes) -> None:
    """``ps``/``top`` show the helper as ``mt-fork-helper`` (through /proc/self/comm, best
    effort); its children get the program's name back."""
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(name)
    except OSError:
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
