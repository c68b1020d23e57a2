"""``Process``: the stdlib ``multiprocessing.Process``, without orphans or zombies.

``multitask.Process`` subclasses :class:`multiprocessing.process.BaseProcess`, so
``multiprocessing.current_process()``, ``multiprocessing.active_children()`` and ours agree, and
it starts children with the stdlib's Popen classes (fork, spawn, forkserver).  Differences from
the stdlib, each fixing a known problem:

* **No orphans** (CPython gh-80180): every child arranges, before ``run()``, to be killed when
  its parent dies (:func:`multitask._core._spawn.set_parent_death_signal`), so SIGKILLing the
  parent takes its children with it within a moment.
* **No zombies**: a started child is registered with a background reaper that collects its exit
  status as soon as it exits; ``exitcode`` stays readable, ``join()`` still works.
* **Clear errors**: ``start()`` twice, ``join()`` before ``start()``, setting ``daemon`` after
  ``start()`` raise :class:`multitask.ProcessError` with a message (the stdlib uses bare
  ``assert``, which ``python -O`` even removes); using a closed process raises
  :class:`multitask.ClosedError` (a ``ValueError``, as in the stdlib); bad constructor arguments
  raise ``TypeError``/``ValueError`` at the constructor, not in the child.
* **Names**: ``Process-N`` for processes of every context (the stdlib's contexts name them
  ``ForkProcess-N``, ``SpawnProcess-N``...), ``<Subclass>-N`` for subclasses.
* **Extras**: ``nice=`` and ``cpu_affinity=`` keywords; ``state`` and ``cpu_percent()`` for
  introspection (psutil).

Daemon children are terminated when the parent exits normally (the stdlib's atexit handler,
kept).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from multiprocessing import process as _mpprocess_module
from typing import TYPE_CHECKING, Any

from ._core import _spawn
from ._core._errors import ClosedError, ProcessError

# the stdlib's private process registry (_children, _current_process, _cleanup), untyped
_mpprocess: Any = _mpprocess_module

__all__ = [
    "BaseProcess",
    "ForkProcess",
    "ForkServerProcess",
    "Process",
    "SpawnProcess",
    "active_children",
    "current_process",
    "parent_process",
]

# The stdlib's base class, which multitask's Process derives from (isinstance checks agree).
BaseProcess = _mpprocess_module.BaseProcess

if TYPE_CHECKING:
    import psutil

# psutil's status strings (psutil.STATUS_*) -> the letter `ps` shows.  psutil itself is imported
# on first use: it costs ~15 ms, paid by every program that imports multitask otherwise.
_STATE_LETTERS = {
    "running": "R",
    "sleeping": "S",
    "disk-sleep": "D",
    "stopped": "T",
    "tracing-stop": "t",
    "zombie": "Z",
    "dead": "X",
    "idle": "I",
    "parked": "P",
}


# --------------------------------------------------------------------------------------------
# Popen classes: the stdlib's, with a locked poll() so the background reaper and join() can
# race safely (without it, join() can see ECHILD after the reaper's waitpid and return with
# returncode still None).
# --------------------------------------------------------------------------------------------

class _LockedPollMixin:
    returncode: int | None

    def _init_lock(self) -> None:
        self._poll_lock = threading.Lock()

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        with self._poll_lock:
            # a mixin: super() is the stdlib Popen class after it in the MRO
            code: int | None = super().poll(flag)  # type: ignore[misc]
            return code


_POPEN: dict[str, type] = {}


def _popen_class(method: str) -> type | None:
    """The Popen class for ``method``, built on first use: importing the forkserver and spawn
    machinery (~10 ms: tempfile, shutil, runpy...) only when that method is used."""
    cls = _POPEN.get(method)
    if cls is not None:
        return cls
    if method == "fork":
        from multiprocessing import popen_fork as mod
    elif method == "spawn":
        from multiprocessing import popen_spawn_posix as mod  # type: ignore[no-redef]
    elif method == "forkserver":
        from multiprocessing import popen_forkserver as mod  # type: ignore[no-redef]
    else:
        return None

    class _Popen(_LockedPollMixin, mod.Popen):
        def __init__(self, process_obj: Any) -> None:
            self._init_lock()
            if method == "fork":   # 3.12's fork-with-threads warning, for threads not ours
                with _spawn.fork_warning_for_foreign_threads():
                    super().__init__(process_obj)
            else:
                super().__init__(process_obj)

    _Popen.__name__ = _Popen.__qualname__ = f"_{method.capitalize()}Popen"
    _POPEN[method] = _Popen
    return _Popen


def _registry_call(what: str, proc: Any) -> None:
    """Publish/unpublish a child for ``multitask ps``; observability never breaks a program."""
    from .monitor import _hook  # queues until the registry is loaded; never raises

    getattr(_hook, what)(proc)


def _public_class_name(cls: type) -> str:
    for klass in cls.__mro__:
        if not klass.__dict__.get("_context_bound", False):
            return str(klass.__name__)
    return "Process"  # pragma: no cover


def _default_start_method() -> str:
    from . import context

    return str(context._default_context.get_context().get_start_method())


class Process(_mpprocess_module.BaseProcess):
    """A child process running ``target(*args, **kwargs)`` (or a subclass's ``run()``).

    Same constructor as the stdlib, plus two keywords:

    ``nice``  absolute niceness of the child (-20..19, higher = lower priority), set in the child
        before ``run()``; lowering it below the parent's needs privilege, checked by ``start()``.
    ``cpu_affinity``  CPUs the child may run on (e.g. ``[0]``), set before ``run()``.

    Raises at construction: ``TypeError`` if ``target`` is not callable, ``args`` is not
    iterable, ``kwargs`` is not a mapping or ``name`` is not a string; ``ValueError`` for a bad
    ``nice``/``cpu_affinity``.  ``group`` must be ``None`` (as in the stdlib).
    """

    #: start method of this class; ``None`` means "the default context's, looked up at start()"
    _start_method: str | None = None
    # attributes set by BaseProcess.__init__ (untyped in typeshed)
    _parent_pid: int
    _popen: Any
    _config: dict[str, Any]
    _identity: tuple[int, ...]
    _closed: bool
    _name: str
    _target: Any
    _args: Any
    _kwargs: Any
    _sentinel: int

    def __init__(self, group: None = None, target: Callable[..., Any] | None = None,
                 name: str | None = None, args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *, daemon: bool | None = None,
                 nice: int | None = None, cpu_affinity: Iterable[int] | None = None) -> None:
        if group is not None:
            raise ValueError("group argument must be None (process groups are not supported)")
        if target is not None and not callable(target):
            raise TypeError(f"target must be callable, not {type(target).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise TypeError(f"args must be a tuple of arguments, not {type(args).__name__} "
                            "(for one argument write args=(x,))")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        if daemon is not None and not isinstance(daemon, bool):
            raise TypeError(f"daemon must be True, False or None, not {daemon!r}")
        self._nice = _spawn.validate_nice(nice)
        self._cpu_affinity = _spawn.validate_cpu_affinity(cpu_affinity)
        self._from_main_thread = True
        self._launch_method = ""
        self._psutil: psutil.Process | None = None
        super().__init__(None, target, name, tuple(args), dict(kwargs), daemon=daemon)
        if name is None:
            self._name = (_public_class_name(type(self)) + "-"
                          + ":".join(str(i) for i in self._identity))

    # -- state checks ------------------------------------------------------------------------

    def _check_closed(self) -> None:
        if self._closed:
            raise ClosedError(f"process object {self._name!r} is closed; create a new Process")

    def _check_parent(self, what: str) -> None:
        if self._parent_pid != os.getpid():
            raise ProcessError(f"can only {what} a child process of this process "
                               f"({self._name!r} belongs to pid {self._parent_pid})")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child; returns once it exists (fork) or has been launched (spawn).

        Raises :class:`ClosedError` if closed, :class:`ProcessError` if already started, if this
        object was created by another process, or if called in a daemonic process;
        ``PermissionError`` if ``nice`` asks for more priority than allowed.
        """
        self._check_closed()
        if self._popen is not None:
            raise ProcessError(f"cannot start a process twice ({self._name!r} was started "
                               f"as pid {self._popen.pid}); create a new Process")
        self._check_parent("start")
        if _mpprocess._current_process._config.get("daemon"):
            raise ProcessError("daemonic processes are not allowed to have children "
                               "(set daemon=False on the parent to let it start processes)")
        _spawn.check_nice_allowed(self._nice)
        method = self._start_method or _default_start_method()
        popen_cls = _popen_class(method)
        if popen_cls is None:
            raise ValueError(f"unknown start method {method!r}")
        # PR_SET_PDEATHSIG fires when the forking *thread* dies: only rely on it when we fork
        # from the main thread; otherwise the child watches its parent sentinel instead.
        self._from_main_thread = threading.current_thread() is threading.main_thread()
        self._launch_method = method
        _mpprocess._cleanup()
        self._popen = popen_cls(self)
        self._sentinel = self._popen.sentinel
        # Avoid a refcycle if the target holds the process object (bpo-30775), as the stdlib.
        del self._target, self._args, self._kwargs
        _mpprocess._children.add(self)
        if method != "forkserver":
            # forkserver children are the forkserver's children: it reaps them, not us.
            _spawn.reap_in_background(self._popen, self._popen.sentinel)
        _registry_call("register_process", self)

    def _bootstrap(self, parent_sentinel: int | None = None) -> int:
        # Runs in the child, before run().  Failure here is reported like a failure in run().
        try:
            self._child_setup(parent_sentinel)
        except BaseException:
            import sys
            import traceback

            sys.stderr.write(f"Process {self._name}: setup failed\n")
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        # BaseProcess._bootstrap is private, so not in typeshed
        code: int = super()._bootstrap(parent_sentinel)  # type: ignore[misc]
        return code

    def _child_setup(self, parent_sentinel: int | None) -> None:
        if self._launch_method != "forkserver":
            # set_parent_death_signal exits at once if the parent already died (then our
            # ppid is no longer _parent_pid): the race between fork and prctl.
            if self._from_main_thread or parent_sentinel is None:
                _spawn.set_parent_death_signal(self._parent_pid)
            else:
                _spawn.set_parent_death_signal(self._parent_pid, sentinel=parent_sentinel,
                                               method="sentinel")
        else:
            # forkserver: our OS parent is the forkserver (which exits when the real parent is
            # gone); also watch the real parent through the sentinel it holds open.
            ppid = os.getppid()
            if _spawn.parent_death_signal_supported():
                _spawn.set_parent_death_signal(ppid)
            if parent_sentinel is not None:
                _spawn.set_parent_death_signal(ppid, sentinel=parent_sentinel,
                                               method="sentinel")
        _spawn.apply_child_settings(self._nice, self._cpu_affinity)
        # The child's default start method is its parent's, as in the stdlib (whose spawn
        # preparation data carries it); a forked child has inherited it already.
        method = self._start_method or (None if self._launch_method == "fork"
                                        else self._launch_method)
        if method is not None:
            from . import context

            context._force_start_method(method)

    def join(self, timeout: float | None = None) -> None:
        """Block until the child exits or ``timeout`` seconds pass (``None``: no limit).

        Returns ``None`` either way (check ``exitcode``/``is_alive()``).  Raises
        :class:`ClosedError` if closed, :class:`ProcessError` if not started or not our child,
        ``TypeError``/``ValueError`` for a bad timeout.
        """
        self._check_closed()
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
            timeout = max(0.0, float(timeout))
        self._check_parent("join")
        if self._popen is None:
            raise ProcessError(f"cannot join {self._name!r}: it was never started "
                               "(call start() first)")
        res = self._popen.wait(timeout)
        if res is not None:
            # Reaped: the background reaper lets go of the popen now, so that a joined
            # Process is collectable at once, as the stdlib's (CPython's test_finalize).
            _spawn.stop_reaping(self._popen)
            _mpprocess._children.discard(self)
            _registry_call("unregister", self)

    def is_alive(self) -> bool:
        """True between ``start()`` and the child's exit.  Never blocks; reaps if finished."""
        self._check_closed()
        if self is _mpprocess._current_process:
            return True
        self._check_parent("test")
        if self._popen is None:
            return False
        if self._popen.poll() is None:
            return True
        _mpprocess._children.discard(self)
        return False

    def terminate(self) -> None:
        """Send SIGTERM (no-op if the child already exited).  Raises ClosedError/ProcessError."""
        self._check_closed()
        if self._popen is None:
            raise ProcessError(f"cannot terminate {self._name!r}: it was never started")
        self._popen.terminate()

    def kill(self) -> None:
        """Send SIGKILL (no-op if the child already exited).  Raises ClosedError/ProcessError."""
        self._check_closed()
        if self._popen is None:
            raise ProcessError(f"cannot kill {self._name!r}: it was never started")
        self._popen.kill()

    def interrupt(self) -> None:
        """Send SIGINT (Python 3.14's ``Process.interrupt``, on every version): a Python child
        with the default handler raises ``KeyboardInterrupt`` where it is, so its ``finally``
        blocks and ``with`` exits run.  No-op if it already exited.  Raises
        ClosedError/ProcessError."""
        self._check_closed()
        if self._popen is None:
            raise ProcessError(f"cannot interrupt {self._name!r}: it was never started")
        if self._popen.returncode is None and self._popen.poll() is None:
            try:
                os.kill(self._popen.pid, signal.SIGINT)
            except ProcessLookupError:   # exited between the poll and the signal
                pass

    def close(self) -> None:
        """Release the process's resources (sentinel fd); afterwards most uses raise ClosedError.

        Raises ``ValueError`` (as the stdlib) if the child is still running.
        """
        if self._popen is not None:
            if self._popen.poll() is None:
                raise ValueError(f"cannot close {self._name!r} while it is still running; "
                                 "call join() or terminate() first")
            _spawn.stop_reaping(self._popen)
            _registry_call("unregister", self)
            self._popen.close()
            self._popen = None
            del self._sentinel
            _mpprocess._children.discard(self)
        self._closed = True

    # -- attributes --------------------------------------------------------------------------

    @property
    def daemon(self) -> bool:
        """Whether the child is terminated when the parent exits.  Settable only before start."""
        return bool(self._config.get("daemon", False))

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        if self._popen is not None:
            raise ProcessError(f"cannot set daemon on {self._name!r}: the process has already "
                               "started; set it before start() or pass daemon= to Process()")
        if not isinstance(daemonic, bool):
            raise TypeError(f"daemon must be True or False, not {daemonic!r}")
        self._config["daemon"] = daemonic

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, not {type(name).__name__}")
        self._name = name

    @property
    def nice(self) -> int | None:
        """The niceness requested for the child (``None``: inherited)."""
        return self._nice

    @property
    def cpu_affinity(self) -> frozenset[int] | None:
        """The CPUs requested for the child (``None``: inherited)."""
        return self._cpu_affinity

    def _live_psutil(self) -> psutil.Process | None:
        import psutil

        if self._popen is None or self._popen.returncode is not None:
            return None
        pid = self._popen.pid
        if self._psutil is None or self._psutil.pid != pid:
            try:
                self._psutil = psutil.Process(pid)
            except psutil.Error:
                return None
        return self._psutil

    @property
    def state(self) -> str | None:
        """The child's OS state letter as ``ps`` shows it: R, S, D, T, Z...; never blocks.

        ``None`` if not started or already reaped.  Not in the stdlib.
        """
        self._check_closed()
        proc = self._live_psutil()
        if proc is None:
            return None
        import psutil

        try:
            return _STATE_LETTERS.get(proc.status(), "?")
        except psutil.Error:
            return None

    def cpu_percent(self, interval: float | None = None) -> float | None:
        """CPU use of the child in percent of one CPU (psutil semantics; may exceed 100).

        With ``interval=None`` compares with the previous call (the first call returns 0.0);
        otherwise blocks for ``interval`` seconds.  ``None`` if not started or already exited.
        Not in the stdlib.
        """
        self._check_closed()
        proc = self._live_psutil()
        if proc is None:
            return None
        import psutil

        try:
            return float(proc.cpu_percent(interval))
        except psutil.Error:
            return None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_psutil"] = None
        return state


class ForkProcess(Process):
    """A :class:`Process` that always uses the ``fork`` start method (``get_context('fork')``)."""

    _start_method = "fork"
    _context_bound = True


class SpawnProcess(Process):
    """A :class:`Process` that always uses the ``spawn`` start method."""

    _start_method = "spawn"
    _context_bound = True


class ForkServerProcess(Process):
    """A :class:`Process` that always uses the ``forkserver`` start method."""

    _start_method = "forkserver"
    _context_bound = True


def current_process() -> _mpprocess_module.BaseProcess:
    """The process object of the calling process (the same object the stdlib returns)."""
    return _mpprocess_module.current_process()


def parent_process() -> _mpprocess_module.BaseProcess | None:
    """The parent's process object in a child (``None`` in the main process), as the stdlib."""
    return _mpprocess_module.parent_process()


def active_children() -> list[_mpprocess_module.BaseProcess]:
    """Live children of this process (stdlib's and multitask's), reaping finished ones."""
    return _mpprocess_module.active_children()
