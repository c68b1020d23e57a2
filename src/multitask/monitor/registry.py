"""The registry of live multitask programs that ``multitask ps`` and ``multitask top`` read.

Writers and readers
-------------------
Every program that creates a pool or a process publishes one JSON file describing its pools
(``PoolStatistics.as_dict()``) and its plain processes, in a per-user directory::

    $XDG_RUNTIME_DIR/multitask/<pid>.json     (if XDG_RUNTIME_DIR is set)
    /tmp/multitask-<uid>/<pid>.json           (otherwise)

The directory is created 0700 and must be a real directory (not a symlink) owned by the current
user with no group/other permissions, or nothing is written or read (a warning says why).  Files
are 0600, written to a temporary name and renamed into place, so a reader sees an old or a new
entry, never half of one.  They hold JSON only -- never pickles -- so nothing planted there can run
code; a reader skips (with a :class:`RegistryWarning`, never an exception) any entry that is a
symlink, not ours, group/world-accessible, larger than :data:`MAX_ENTRY_BYTES`, not JSON, or of the
wrong shape, and silently deletes entries of programs that are no longer running.

Cost to the program
-------------------
Pools and processes register through :mod:`._hook`, which loads this module a moment after a
program's first registration (start-up stays as fast as the stdlib's).  Nothing happens on the
hot path but :func:`notify` (a flag test when a publish is already
pending).  One daemon thread per program, started by the first registration, waits for a
notification, snapshots the registered pools (``pool.statistics()``), writes the file, and then
rests :data:`MIN_INTERVAL` seconds (so it writes at most ~5 times a second however busy the pool
is); while anything is registered it also rewrites every :data:`REFRESH_INTERVAL` seconds so the
running time of long tasks stays current and pools that were garbage-collected disappear.  The
file is removed when the last registration goes away and at interpreter exit.  A forked child
starts with an empty registry and no thread.  ``MULTITASK_REGISTRY=0`` turns publishing off.

API for the rest of multitask: :func:`register_pool`, :func:`register_process`,
:func:`unregister`, :func:`notify`.  For readers: :func:`read_all`.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import stat
import sys
import threading
import time
import types
import typing
import warnings
import weakref
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from .._engine.stats import PoolStatistics

__all__ = [
    "FORMAT",
    "MAX_ENTRY_BYTES",
    "MIN_INTERVAL",
    "REFRESH_INTERVAL",
    "ProcessRecord",
    "ProgramEntry",
    "Registry",
    "RegistryWarning",
    "disabled",
    "notify",
    "read_all",
    "register_pool",
    "register_process",
    "registry_dir",
    "unregister",
]

FORMAT = "multitask-registry/1"
#: Entries larger than this are hostile or broken and are skipped unread.
MAX_ENTRY_BYTES = 4 * 1024 * 1024
#: Longest string accepted in an entry (function names, pool names, argv items).
MAX_STRING = 4096
#: Minimum seconds between two writes of a program's entry (the rate limit).
MIN_INTERVAL = 0.2
#: Seconds between rewrites while something is registered (keeps task durations current).
REFRESH_INTERVAL = 1.0


class RegistryWarning(UserWarning):
    """A registry directory or entry was unusable and was ignored (the reason is the message)."""


class _Pool(Protocol):
    name: str

    def statistics(self) -> PoolStatistics: ...


@dataclass(frozen=True)
class ProcessRecord:
    """A process registered by its program (a ``multitask.Process`` child, a zygote...)."""

    pid: int
    name: str
    role: str          # "process", "zygote", ...
    started: float     # time.time() when it was registered


@dataclass(frozen=True)
class ProgramEntry:
    """One running multitask program as read from the registry."""

    pid: int
    ppid: int
    create_time: float                  # psutil's start time of the program, to detect pid reuse
    argv: tuple[str, ...]
    executable: str
    cpu_count: int                      # multitask.cpu_count() in that program
    updated: float                      # time.time() of the write
    updated_monotonic: float            # time.monotonic() of the write (system-wide clock)
    pools: tuple[PoolStatistics, ...]
    processes: tuple[ProcessRecord, ...]


def disabled() -> bool:
    """True if ``MULTITASK_REGISTRY`` is set to ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get("MULTITASK_REGISTRY", "").strip().lower() in ("0", "false", "no", "off")


def registry_dir() -> Path:
    """The registry directory for the current user (it may not exist yet)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "multitask"
    return Path(f"/tmp/multitask-{os.getuid()}")


class _Unsafe(Exception):
    """The registry directory failed verification (internal; turned into a warning)."""


def _open_dir(path: Path, *, create: bool) -> int | None:
    """Open the registry directory and verify it is ours; return its fd (caller closes).

    Returns None if it does not exist and *create* is false.  Raises :class:`_Unsafe` if it is a
    symlink, not a directory, not owned by us or accessible by others; OSError if it cannot be
    created.
    """
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # O_NOFOLLOW refuses a symlink in the last component: someone may have planted
        # /tmp/multitask-<uid> -> somewhere of theirs before our first run.
        fd = os.open(path, flags)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        raise _Unsafe(f"registry directory {path} is not a plain directory ({exc.strerror})")
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise _Unsafe(f"registry directory {path} is owned by uid {st.st_uid}, not by us")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise _Unsafe(f"registry directory {path} has mode {stat.S_IMODE(st.st_mode):o}, "
                          "expected 700")
    except BaseException:
        os.close(fd)
        raise
    return fd


# ------------------------------------------------------------------------------------------------
# validation of JSON entries against the dataclasses above (so a reader trusts nothing it reads)

class _Invalid(Exception):
    pass


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _check(tp: Any, value: Any, where: str) -> Any:
    """*value* converted to *tp* (lists -> tuples, dicts -> dataclasses), or raise _Invalid."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        if value is None:
            return None
    elif origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check(arg, value, where)
            except _Invalid:
                continue
    elif tp is bool:
        if type(value) is bool:
            return value
    elif tp is int:
        if type(value) is int:
            return value
    elif tp is float:
        if type(value) in (int, float):
            return float(value)
    elif tp is str:
        if type(value) is str and len(value) <= MAX_STRING:
            return value
    elif origin is tuple:
        args = typing.get_args(tp)
        if type(value) is list and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    elif isinstance(tp, type) and is_dataclass(tp) and type(value) is dict:
        return _from_dict(tp, value, where)
    raise _Invalid(f"{where}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    # Unknown keys are ignored and missing keys with a default take it, so a newer or older
    # multitask's entries still read; any key present must have the right type.
    hints = _hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _check(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _Invalid(f"{where}: missing {f.name!r}")
    return cls(**kwargs)


def parse_entry(raw: bytes, *, expect_pid: int | None = None) -> ProgramEntry:
    """Parse and validate one entry's bytes.  Raises ValueError (with the reason) if invalid."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({exc.__class__.__name__}: {exc})"[:300])
    if type(data) is not dict:
        raise ValueError("not a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown format {str(data.get('format'))[:40]!r}")
    try:
        entry: ProgramEntry = _from_dict(ProgramEntry, data, "entry")
    except _Invalid as exc:
        raise ValueError(str(exc))
    except RecursionError:
        raise ValueError("too deeply nested")
    if expect_pid is not None and entry.pid != expect_pid:
        raise ValueError(f"entry is for pid {entry.pid}, file name says {expect_pid}")
    return entry


# ------------------------------------------------------------------------------------------------
# readers

def _alive(pid: int, create_time: float) -> bool:
    """True if *pid* is the very process that wrote the entry and has not exited."""
    try:
        import psutil  # lazily: ~15 ms that every program would pay at import

        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 1.0:
            return False  # the pid was reused by another process
        alive: bool = proc.status() != psutil.STATUS_ZOMBIE  # psutil has no types: Any
        return alive
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists but hidden from us: not ours to delete


def _read_entry(dfd: int, name: str) -> bytes:
    """Read *name* in the directory *dfd* after checking it is a safe regular file of ours."""
    # O_NONBLOCK: a planted FIFO must not hang the reader; O_NOFOLLOW: no symlinks.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dfd)
    except OSError as exc:
        raise ValueError(f"cannot be opened safely ({exc.strerror})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid != os.getuid():
            raise ValueError(f"owned by uid {st.st_uid}, not by us")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ValueError(f"mode {stat.S_IMODE(st.st_mode):o}, expected 600")
        if st.st_size > MAX_ENTRY_BYTES:
            raise ValueError(f"{st.st_size} bytes, more than the {MAX_ENTRY_BYTES} allowed")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_ENTRY_BYTES:  # grew while we read it
                raise ValueError(f"more than the {MAX_ENTRY_BYTES} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _unlink(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass  # another reader cleaned it first


def read_all(directory: str | os.PathLike[str] | None = None) -> list[ProgramEntry]:
    """Every live program's entry, sorted by pid.  Never raises for bad registry contents.

    Entries of programs that are no longer running (or whose pid was reused) are deleted.  Unsafe
    or malformed entries, and an unsafe directory, are skipped with a :class:`RegistryWarning`.
    Blocks only for the file reads.
    """
    path = Path(directory) if directory is not None else registry_dir()
    try:
        dfd = _open_dir(path, create=False)
    except _Unsafe as exc:
        warnings.warn(f"multitask registry ignored: {exc}", RegistryWarning, stacklevel=2)
        return []
    if dfd is None:
        return []
    out: list[ProgramEntry] = []
    try:
        for name in sorted(os.listdir(dfd)):
            if name.startswith(".") and name.endswith(".tmp"):
                _clean_temp(dfd, name)
                continue
            stem, _, ext = name.partition(".")
            if ext != "json" or not stem.isdigit():
                continue
            pid = int(stem)
            try:
                entry = parse_entry(_read_entry(dfd, name), expect_pid=pid)
            except ValueError as exc:
                warnings.warn(f"multitask registry entry {path / name} skipped: {exc}",
                              RegistryWarning, stacklevel=2)
                continue
            if not _alive(entry.pid, entry.create_time):
                _unlink(dfd, name)
                continue
            out.append(entry)
    finally:
        os.close(dfd)
    return out


def _clean_temp(dfd: int, name: str) -> None:
    """Delete a writer's temporary file if its writer is gone (it crashed between write and
    rename); temp names are ``.<pid>.<n>.tmp``."""
    parts = name.split(".")
    import psutil  # lazily: ~15 ms that every program would pay at import

    if len(parts) == 4 and parts[1].isdigit() and not psutil.pid_exists(int(parts[1])):
        _unlink(dfd, name)


# ------------------------------------------------------------------------------------------------
# the writer side

_counter = itertools.count()


def _cpu_count() -> int:
    # multitask.cpu_count() when the context module is loaded; importing it here would pull the
    # Pool into the monitor (the Pool imports us), so otherwise use what it is defined as.
    ctx = sys.modules.get("multitask.context")
    fn = getattr(ctx, "cpu_count", None)
    if fn is not None:
        try:
            return int(fn())
        except Exception:
            pass
    return os.cpu_count() or 1


class Registry:
    """The publishing half of the registry for one program (normally the module's default one).

    *directory* overrides :func:`registry_dir` (tests use it).  All methods are thread-safe and
    never raise because of the registry's storage: a failure to publish is reported once with a
    :class:`RegistryWarning` and publishing stops.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        # Also the after-fork handler: a forked child starts from nothing (the parent's lock may
        # have been held by the parent's publisher thread, which does not exist in the child).
        self._lock = threading.Lock()        # guards the registration tables only
        self._write_lock = threading.Lock()  # orders the final rename against removal at exit
        self._publish_lock = threading.Lock()  # one snapshot-and-write at a time
        self._event = threading.Event()
        self._halt = threading.Event()       # set by close()/exit: cuts the rate-limit rest short
        # True means "a publish is already pending or nobody is listening": notify() is a no-op.
        self._pending = True
        self._pools: dict[int, weakref.ReferenceType[Any]] = {}
        self._procs: dict[int, tuple[Any, ProcessRecord]] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self._closed = False
        self._broken = False
        self._file: str | None = None        # name of our entry once written
        self._owner = os.getpid()
        self._create_time: float | None = None
        self.writes = 0                      # number of entries written (for tests/diagnostics)

    # -- registration ------------------------------------------------------------------------

    def register_pool(self, pool: _Pool) -> None:
        """Publish *pool* until it is unregistered or garbage-collected.  Keeps a weak reference;
        ``pool.statistics()`` is called from the publisher thread.  Never blocks."""
        if disabled() or self._broken:
            return
        with self._lock:
            self._pools[id(pool)] = weakref.ref(pool)
        self._start()

    def register_process(self, proc: Any, *, role: str = "process", name: str | None = None,
                         ) -> None:
        """Publish the child process *proc* (anything with a ``pid``; ``name`` if present).

        Kept until :func:`unregister` (or until *proc* is garbage-collected, if it can be weakly
        referenced).  Never blocks.
        """
        if disabled() or self._broken:
            return
        pid = getattr(proc, "pid", None)
        if type(pid) is not int:
            raise TypeError(f"register_process() needs an object with an int pid, got {pid!r}")
        record = ProcessRecord(pid=pid, name=str(name or getattr(proc, "name", "") or pid),
                               role=role, started=time.time())
        try:
            ref: Any = weakref.ref(proc)
        except TypeError:
            ref = lambda: proc  # noqa: E731 -- no weakref support: held until unregistered
        with self._lock:
            self._procs[id(proc)] = (ref, record)
        self._start()

    def unregister(self, obj: Any) -> None:
        """Stop publishing *obj* (a pool or a process); unknown objects are ignored."""
        with self._lock:
            found = self._pools.pop(id(obj), None) is not None
            found = self._procs.pop(id(obj), None) is not None or found
        if found:
            self._wake()

    def notify(self) -> None:
        """Ask for a publish soon (coalesced, rate-limited).  Costs a flag test when one is
        already pending; never blocks."""
        if self._pending:
            return
        self._pending = True
        self._event.set()

    def _wake(self) -> None:
        self._pending = True
        self._event.set()

    # -- the publisher thread ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._run, name="multitask-registry",
                                                daemon=True)
                self._thread.start()
                if self is _default:
                    atexit.register(self._atexit)
        self._wake()

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._lock:
                busy = bool(self._pools or self._procs)
            self._event.wait(REFRESH_INTERVAL if busy else None)
            if self._stop:
                return
            self._event.clear()
            self._pending = False  # from here on a notify() sets the event again
            # Rate limit: at most one write per MIN_INTERVAL; notifications meanwhile coalesce.
            delay = last + MIN_INTERVAL - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)
            if self._stop:
                return
            last = time.monotonic()
            try:
                self.publish()
            except Exception as exc:  # never let the thread die loudly inside a user program
                self._broken = True
                warnings.warn(f"multitask registry: publishing stopped: {exc!r}",
                              RegistryWarning, stacklevel=1)
                return

    def snapshot(self) -> dict[str, Any] | None:
        """The JSON-ready entry for this program now, or None if nothing is registered.

        Calls ``statistics()`` on each registered pool (which takes the pool's lock briefly).
        """
        with self._lock:
            pools = list(self._pools.items())
            procs = list(self._procs.items())
        pool_dicts = []
        for key, ref in pools:
            pool = ref()
            if pool is None:
                with self._lock:
                    self._pools.pop(key, None)
                continue
            try:
                stats = pool.statistics()
            except Exception:
                continue  # a pool mid-shutdown may refuse; it will unregister itself
            pool_dicts.append(stats.as_dict())
        records = []
        for key, (pref, record) in procs:
            if pref() is None:
                with self._lock:
                    self._procs.pop(key, None)
                continue
            records.append(record.__dict__.copy())
        if not pool_dicts and not records:
            return None
        if self._create_time is None:
            import psutil  # lazily: ~15 ms that every program would pay at import

            self._create_time = psutil.Process().create_time()
        return {
            "format": FORMAT,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "create_time": self._create_time,
            "argv": [str(a)[:MAX_STRING] for a in sys.argv[:64]],
            "executable": sys.executable[:MAX_STRING],
            "cpu_count": _cpu_count(),
            "updated": time.time(),
            "updated_monotonic": time.monotonic(),
            "pools": pool_dicts,
            "processes": records,
        }

    def _dir(self) -> Path:
        # Fixed at the first publish: a program's entry must not move (nor be left behind in an
        # old place) if its environment changes later.
        if self._directory is None:
            self._directory = registry_dir()
        return self._directory

    def publish(self) -> None:
        """Write (or remove, if nothing is registered) this program's entry now, synchronously.

        Raises OSError or :class:`RegistryWarning`-worthy errors to the caller (the publisher
        thread turns them into one warning).
        """
        if os.getpid() != self._owner:
            return
        # Snapshot and write as one step: otherwise the publisher thread's older snapshot could
        # be renamed over a newer one written meanwhile (a process registered just before an
        # explicit publish() vanished from the entry).
        with self._publish_lock:
            self._publish()

    def _publish(self) -> None:
        entry = self.snapshot()
        path = self._dir()
        try:
            dfd = _open_dir(path, create=entry is not None)
        except _Unsafe as exc:
            raise RuntimeError(str(exc))
        if dfd is None:
            return
        final = f"{os.getpid()}.json"
        try:
            if entry is None:
                with self._write_lock:
                    if self._file is not None:
                        _unlink(dfd, self._file)
                        self._file = None
                return
            data = json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()
            tmp = f".{os.getpid()}.{next(_counter)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
            renamed = False
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                # Only the rename is under the lock, so a write already in flight cannot undo the
                # removal done at exit (which sets _closed under the same lock).
                with self._write_lock:
                    if not self._closed:
                        os.rename(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
                        renamed = True
                        self._file = final
                        self.writes += 1
            finally:
                if not renamed:
                    _unlink(dfd, tmp)
        finally:
            os.close(dfd)

    def close(self) -> None:
        """Stop the publisher thread (waiting up to 2 s for it) and remove this program's entry.
        Registrations are forgotten.  Used at exit and by tests."""
        self._stop = True
        self._event.set()
        self._halt.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self._remove_file()
        with self._lock:
            self._pools.clear()
            self._procs.clear()

    def _atexit(self) -> None:
        self._stop = True
        self._event.set()
        self._halt.set()
        self._remove_file()

    def _remove_file(self) -> None:
        if os.getpid() != self._owner:
            return
        # Bounded wait: at exit, never hang on a lock a frozen daemon thread might hold.
        got = self._write_lock.acquire(timeout=1.0)
        try:
            self._closed = True
            if self._file is not None:
                try:
                    os.unlink(self._dir() / self._file)
                except OSError:
                    pass
                self._file = None
        finally:
            if got:
                self._write_lock.release()


_instances: weakref.WeakSet[Registry] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reg in list(_instances):
        reg._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_default = Registry()


def register_pool(pool: _Pool) -> None:
    """Publish *pool* (weakly referenced; needs ``.name`` and ``.statistics()``).  See
    :meth:`Registry.register_pool`."""
    _default.register_pool(pool)


def register_process(proc: Any, *, role: str = "process", name: str | None = None) -> None:
    """Publish the child process *proc*.  See :meth:`Registry.register_process`."""
    _default.register_process(proc, role=role, name=name)


def unregister(obj: Any) -> None:
    """Stop publishing *obj* (a pool or a process)."""
    _default.unregister(obj)


def notify() -> None:
    """Tell the publisher something changed.  The hot-path call: a global lookup and a flag test
    when a publish is already pending (or nothing is registered); never blocks."""
    reg = _default
    if reg._pending:
        return
    reg._pending = True
    reg._event.set()

