"""One soak run: a seeded random plan of operations on one pool, every outcome checked.

A run draws, from its seed alone: the kind of pool (fork, spawn, forkserver or the thread
backend), its size, ``maxtasksperchild`` and ``task_timeout``, 1-4 caller threads, and for each
thread a list of operations -- ``apply_async`` floods with and without callbacks, ``map``,
``map_async``, ``starmap``, ``imap``, ``imap_unordered`` of any size and chunk size, ``submit`` +
``as_completed``, and tasks that overrun ``task_timeout``.  Tasks sleep 0-5 ms and return 0 bytes
to 4 MiB.  On process pools a chaos thread SIGKILLs busy workers at random moments, and some
runs ``terminate()`` the pool at a random moment.  (The timings, and so the interleavings, are
the machine's: a seed replays the same plan, not the same race.)

What is checked, for every task (each has a unique token):

* its outcome: the right value (in order where the API promises order), or a failure the run
  explains -- ``WorkerDiedError`` only if a worker was killed, ``TaskTimeoutError`` only for a
  task meant to overrun (which must fail so), ``ClosedError``/``ValueError`` only after
  ``terminate()``; a task meant to overrun that succeeds is an error;
* exactly once: no token delivered twice (values, callbacks), none executed twice (the workers'
  execution log), every delivered value executed; without chaos, every task succeeded;
* no wait hangs: results are taken with timeouts, and a wait during which the pool completed
  nothing for ``BOUND`` seconds is a hang (reported with the pool's state and every thread's
  stack); a watchdog ends the process if the run as a whole overruns (``pool.map`` has no
  timeout);
* nothing leaks: child processes, file descriptors, ``/dev/shm`` entries.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import faulthandler
import functools
import itertools
import os
import random
import signal
import sys
import tempfile
import threading
import time
from typing import Any

import psutil

import multitask as mt
from multitask import ClosedError, TaskTimeoutError, WorkerDiedError

from . import tasks

KINDS = ("fork", "spawn", "forkserver", "thread")
# A wait is a hang when the pool completes nothing for BOUND seconds (a result queued behind a
# long, slow queue -- 300 000 tasks on workers recycled every 4 -- may take longer, and must).
BOUND = 60.0
RUN_BOUND = 600.0     # seconds a whole run may take (watchdog)
OVERRUN_TIMEOUT = 1.0  # the pool's task_timeout in runs that test it
_HELPERS = ("resource_tracker", "forkserver", "semaphore_tracker",
            "multitask/_core/_shm.py")   # the shared-memory reaper: one per family, for good


@dataclasses.dataclass
class Scale:
    """How big a run's operations are: ``short`` for make test, ``long`` for make soak."""

    ops_per_thread: tuple[int, int]
    flood: int
    map_items: int
    big_results: float   # chance that an operation carries a 4 MiB result


SCALES = {
    "short": Scale((2, 4), 3000, 2000, 0.1),
    "long": Scale((3, 7), 30000, 20000, 0.25),
}


@dataclasses.dataclass
class Report:
    seed: int
    kind: str
    ops: int = 0
    tasks: int = 0
    ok: int = 0
    died: int = 0
    timed_out: int = 0
    closed: int = 0
    kills: int = 0
    terminated: bool = False
    seconds: float = 0.0
    errors: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        state = "FAIL" if self.errors else "ok"
        return (f"soak seed={self.seed} kind={self.kind} {state}: ops={self.ops} "
                f"tasks={self.tasks} ok={self.ok} died={self.died} timed_out={self.timed_out} "
                f"closed={self.closed} kills={self.kills} terminated={self.terminated} "
                f"{self.seconds:.1f}s")


class _Run:
    def __init__(self, seed: int, scale: Scale, kind: str | None) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.scale = scale
        drawn = self.rng.choice(KINDS)   # drawn even when forced: the same plan follows
        self.kind = kind or drawn
        self.report = Report(seed, self.kind)
        fd, self.log = tempfile.mkstemp(prefix="multitask-soak-", suffix=".log")
        os.close(fd)
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self.delivered: collections.Counter[int] = collections.Counter()
        self.callbacks: collections.Counter[int] = collections.Counter()
        self.overruns: set[int] = set()
        self.oks: set[int] = set()
        self.unlogged: set[int] = set()   # flood_fast's tasks: no execution log
        self.unknown_fail = 0          # failures not tied to one token (a whole map failed)
        self.terminated = threading.Event()
        self.aborted = threading.Event()   # a hang was found: the run stops
        self.stop = threading.Event()
        self.kills = 0

    # -- plan ------------------------------------------------------------------------------
    def task_args(self, rng: random.Random, big: bool) -> tuple[str, int, float, int]:
        token = next(self._tokens)
        seconds = 0.0 if rng.random() < 0.6 else rng.uniform(0, 0.005)
        r = rng.random()
        size = 0 if r < 0.3 else rng.randrange(1, 200) if r < 0.9 else rng.randrange(1, 1 << 16)
        if big and rng.random() < 0.002:
            size = 4 << 20
        return self.log, token, seconds, size

    def plan_op(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        s = self.scale
        big = rng.random() < s.big_results
        kind = rng.choice(["flood", "flood_cb", "flood_fast", "map", "map_async", "starmap",
                           "imap", "imap_unordered", "submit", "overrun"])
        n = rng.choice([0, 1, 2, 7, rng.randrange(1, 100), rng.randrange(1, s.map_items + 1)])
        if kind.startswith("flood"):
            n = rng.choice([1, rng.randrange(1, 200), rng.randrange(1, s.flood + 1)])
        if kind == "flood_fast":   # issue #16's workload: instant tasks, as many as possible
            n = rng.randrange(1, 10 * s.flood + 1)
        chunksize = rng.choice([None, 1, 2, rng.randrange(1, 64)])
        if kind in ("imap", "imap_unordered") and chunksize is None:
            chunksize = 1
        return kind, {"n": n, "chunksize": chunksize, "big": big}

    # -- outcomes --------------------------------------------------------------------------
    def ok(self, token: int, value: Any, size: int) -> None:
        with self._lock:
            self.delivered[token] += 1
            self.oks.add(token)
            self.report.ok += 1
            if value != (token, b"r" * size):
                self.error(f"task {token}: wrong value {value!r:.80}")
            if token in self.overruns:
                self.error(f"task {token} should have overrun task_timeout but succeeded")

    def failed(self, token: int | None, exc: BaseException) -> None:
        if isinstance(exc, mt.TimeoutError) and not isinstance(exc, TaskTimeoutError):
            # not under _lock: hang() terminates the pool, which runs callbacks (they take it)
            self.hang(f"task {token}: no result, and the pool completed nothing for {BOUND} s")
            return
        with self._lock:
            if token is not None:
                self.delivered[token] += 1
            else:
                self.unknown_fail += 1
            if isinstance(exc, TaskTimeoutError):
                self.report.timed_out += 1
                if token is not None and token not in self.overruns:
                    self.error(f"task {token}: unexpected {exc!r}")
            elif isinstance(exc, WorkerDiedError):
                self.report.died += 1   # checked against the kills at the end
            elif isinstance(exc, ClosedError | ValueError) and self.terminated.is_set():
                self.report.closed += 1
            else:
                self.error(f"task {token}: unexpected {type(exc).__name__}: {exc}")

    def error(self, msg: str) -> None:
        self.report.errors.append(msg)

    def hang(self, msg: str) -> None:
        """A wait overran its bound: report it with the pool's state and every thread's stack,
        once, then end the run (terminate: every other wait ends at once)."""
        self.report.errors.append("HANG " + msg)
        if self.aborted.is_set():
            return
        self.aborted.set()
        if self.pool is not None:
            try:
                sys.stderr.write(f"{self.pool.statistics()}\n")
            except BaseException as exc:   # the report must go on
                sys.stderr.write(f"(statistics failed: {exc!r})\n")
        faulthandler.dump_traceback(all_threads=True)
        self.terminated.set()   # what fails from now on is the hang's consequence
        if self.pool is not None:
            self.pool.terminate()

    def waiting(self, get: Any, *args: Any) -> Any:
        """``get(*args, timeout=BOUND)`` until it returns, as long as the pool makes progress:
        mt.TimeoutError only when it completed nothing during a whole BOUND."""
        while True:
            done = self.completed()
            try:
                return get(*args, timeout=BOUND)
            except mt.TimeoutError:
                if self.completed() == done or self.terminated.is_set():
                    raise

    def completed(self) -> int:
        try:
            assert self.pool is not None   # None (before or after a run) counts as -1 too
            return self.pool.statistics().completed
        except BaseException:
            return -1

    # -- operations ------------------------------------------------------------------------
    def run_op(self, kind: str, n: int, chunksize: int | None, big: bool,
               rng: random.Random) -> None:
        pool = self.pool
        fast = kind == "flood_fast"
        if fast:
            kind = "flood"
        if kind == "overrun":   # one task, and only where the pool has a task_timeout
            n = 1 if self.timeout is not None else 0
        args = [self.task_args(rng, big) for _ in range(n)]
        if fast:
            args = [(a[0], a[1], 0.0, 0) for a in args]
            self.unlogged.update(a[1] for a in args)
        with self._lock:
            self.report.ops += 1
            self.report.tasks += n
        try:
            getattr(self, "op_" + kind)(pool, args, chunksize)
        except (ClosedError, ValueError) as exc:
            if not self.terminated.is_set():
                self.error(f"{kind}: {type(exc).__name__}: {exc}")

    def op_flood(self, pool: Any, args: list[Any], _: Any, callbacks: bool = False) -> None:
        rs = []
        for a in args:
            kw = {}
            if callbacks:
                kw = {"callback": functools.partial(self._cb, a[1]),
                      "error_callback": functools.partial(self._cb, a[1])}
            if a[1] in self.unlogged:
                rs.append((a, pool.apply_async(tasks.fast, (a[1],), **kw)))
            else:
                rs.append((a, pool.apply_async(tasks.work2, a, **kw)))
        for a, r in rs:
            try:
                self.ok(a[1], self.waiting(r.get), a[3])
            except BaseException as exc:
                self.failed(a[1], exc)
            if callbacks and self.callbacks[a[1]] != 1:
                self.error(f"task {a[1]}: {self.callbacks[a[1]]} callbacks before get()")

    def op_flood_cb(self, pool: Any, args: list[Any], chunksize: Any) -> None:
        self.op_flood(pool, args, chunksize, callbacks=True)

    def _cb(self, token: int, _value: Any) -> None:
        with self._lock:
            self.callbacks[token] += 1

    def _whole(self, args: list[Any], call: Any) -> None:
        """A call that returns the whole list in order, or fails as a whole."""
        try:
            values = call()
        except BaseException as exc:
            if isinstance(exc, mt.TimeoutError):
                self.hang(f"map of {len(args)}: no result, and the pool completed nothing "
                          f"for {BOUND} s")
            for _ in args[:1]:
                self.failed(None, exc)
            return
        if len(values) != len(args):
            self.error(f"map of {len(args)} returned {len(values)} values")
        for a, v in zip(args, values, strict=False):
            self.ok(a[1], v, a[3])

    def op_map(self, pool: Any, args: list[Any], chunksize: Any) -> None:
        self._whole(args, lambda: pool.map(tasks.work, args, chunksize))

    def op_map_async(self, pool: Any, args: list[Any], chunksize: Any) -> None:
        self._whole(args, lambda: self.waiting(pool.map_async(tasks.work, args, chunksize).get))

    def op_starmap(self, pool: Any, args: list[Any], chunksize: Any) -> None:
        self._whole(args, lambda: self.waiting(
            pool.starmap_async(tasks.work2, args, chunksize).get))

    def op_imap(self, pool: Any, args: list[Any], chunksize: Any, ordered: bool = True) -> None:
        it = (pool.imap if ordered else pool.imap_unordered)(tasks.work, args, chunksize)
        where = {a[1]: i for i, a in enumerate(args)}
        seen = 0          # ordered: the position the next value must have
        gap = False       # a failure came: it stood for one chunk, of unknown length
        values = failures = 0
        while True:
            try:
                token, value = self.waiting(it.next)
            except StopIteration:
                break
            except BaseException as exc:
                self.failed(None, exc)
                failures += 1
                gap = True
                if isinstance(exc, ClosedError | mt.TimeoutError) or failures > len(args):
                    return
                continue
            values += 1
            i = where.get(token, -1)
            if i < 0:
                self.error(f"imap gave a task it was not given: {token}")
                continue
            if ordered and (i < seen or (i > seen and not gap)):
                self.error(f"imap: position {seen} gave the task of position {i}")
            seen = i + 1
            gap = False
            self.ok(token, (token, value), args[i][3])
        if not failures and values != len(args):
            self.error(f"imap of {len(args)} yielded {values}")

    def op_imap_unordered(self, pool: Any, args: list[Any], chunksize: Any) -> None:
        self.op_imap(pool, args, chunksize, ordered=False)

    def op_submit(self, pool: Any, args: list[Any], _: Any) -> None:
        futs = {pool.submit(tasks.work2, *a): a for a in args}
        left = set(futs)
        while left:
            done = self.completed()
            try:
                for f in concurrent.futures.as_completed(left, timeout=BOUND):
                    left.discard(f)
                    a = futs[f]
                    exc = f.exception()
                    if exc is None:
                        self.ok(a[1], f.result(), a[3])
                    else:
                        self.failed(a[1], exc)
            except concurrent.futures.TimeoutError:
                if self.completed() == done and not self.terminated.is_set():
                    self.hang(f"as_completed: {len(left)} of {len(args)} not done, and the "
                              f"pool completed nothing for {BOUND} s")
                    return

    def op_overrun(self, pool: Any, args: list[Any], _: Any) -> None:
        if not args:
            return
        token = args[0][1]
        with self._lock:
            self.overruns.add(token)
        r = pool.apply_async(tasks.overrun, (self.log, token, OVERRUN_TIMEOUT * 3))
        try:
            self.ok(token, self.waiting(r.get), 0)
        except BaseException as exc:
            self.failed(token, exc)

    # -- chaos -----------------------------------------------------------------------------
    def chaos(self, kills: int, terminate_after: float | None) -> None:
        assert self.pool is not None   # run() starts this thread after making its pool
        rng = random.Random(self.seed ^ 0x5EED)
        start = time.monotonic()
        while not self.stop.is_set():
            wait = rng.uniform(0.05, 1.0)
            if terminate_after is not None:
                wait = min(wait, max(0.0, start + terminate_after - time.monotonic()))
            if self.stop.wait(wait):
                return
            if terminate_after is not None and time.monotonic() >= start + terminate_after:
                self.terminated.set()
                self.report.terminated = True
                self.pool.terminate()
                return
            if self.kills < kills:
                # Only workers that have run a task: one killed before it is ready breaks the
                # pool by design (it would die the same way again: see _on_death).
                victims = [w.pid for w in self.pool.statistics().workers
                           if w.pid and w.tasks_done > 0 and w.state in ("busy", "idle")]
                if victims:
                    try:
                        os.kill(rng.choice(victims), signal.SIGKILL)
                        self.kills += 1
                    except ProcessLookupError:
                        pass

    # -- the run ---------------------------------------------------------------------------
    def execute(self) -> Report:
        rng = self.rng
        procs = rng.randrange(1, 4)
        mtpc = rng.choice([None, None, None, rng.randrange(1, 50)])
        self.timeout = rng.choice([None, None, OVERRUN_TIMEOUT])
        nthreads = rng.randrange(1, 5)
        plans = [[self.plan_op(rng) for _ in range(rng.randrange(*self.scale.ops_per_thread))]
                 for _ in range(nthreads)]
        if mtpc is not None:
            # a fork every `mtpc` tasks: keep the run within the watchdog's bound
            for plan in plans:
                for _, kw in plan:
                    kw["n"] = min(kw["n"], 2000 * mtpc)
        kills = rng.choice([0, 0, 1, 3]) if self.kind != "thread" else 0
        terminate_after = rng.uniform(0.0, 3.0) if rng.random() < 0.15 else None
        seeds = [rng.randrange(1 << 30) for _ in plans]
        print(f"soak seed={self.seed} kind={self.kind} processes={procs} "
              f"maxtasksperchild={mtpc} task_timeout={self.timeout} threads={nthreads} "
              f"ops={sum(map(len, plans))} kills<={kills} terminate_after={terminate_after}",
              flush=True)
        before = _resources()
        t0 = time.monotonic()
        faulthandler.dump_traceback_later(RUN_BOUND, exit=True)
        self.pool = None
        try:
            if self.kind == "thread":
                self.pool = mt.Pool(procs, maxtasksperchild=mtpc, task_timeout=self.timeout,
                                    backend="thread")
            else:
                self.pool = mt.get_context(self.kind).Pool(
                    procs, maxtasksperchild=mtpc, task_timeout=self.timeout)
            callers = [threading.Thread(target=self._caller, args=(plan, random.Random(s)),
                                        name=f"soak-caller-{i}")
                       for i, (plan, s) in enumerate(zip(plans, seeds, strict=True))]
            chaos = None
            if kills or terminate_after is not None:
                chaos = threading.Thread(target=self.chaos, args=(kills, terminate_after),
                                         name="soak-chaos")
                chaos.start()
            for t in callers:
                t.start()
            for t in callers:
                t.join()
            self.stop.set()
            if chaos is not None:
                chaos.join()
            if self.terminated.is_set():
                self.pool.join()
            else:
                self.pool.close()
                self.pool.join()
        finally:
            if self.pool is not None:
                self.pool.terminate()
            faulthandler.cancel_dump_traceback_later()
            tasks.close_logs()   # the thread backend's tasks ran here
        self.report.seconds = time.monotonic() - t0
        self.report.kills = self.kills
        self.check_once()
        self.check_leaks(before)
        os.unlink(self.log)
        return self.report

    def _caller(self, plan: list[tuple[str, dict[str, Any]]], rng: random.Random) -> None:
        for kind, kw in plan:
            if self.terminated.is_set() and rng.random() < 0.5:
                break
            try:
                self.run_op(kind, rng=rng, **kw)
            except BaseException as exc:
                self.error(f"{kind}: raised {type(exc).__name__}: {exc}")

    def check_once(self) -> None:
        with open(self.log, "rb") as f:
            ran = collections.Counter(int(line) for line in f.read().split())
        twice = [t for t, c in ran.items() if c > 1]
        if twice:
            self.error(f"{len(twice)} tasks ran more than once, e.g. {twice[:5]}")
        dup = [t for t, c in self.delivered.items() if c > 1]
        if dup:
            self.error(f"{len(dup)} tasks delivered more than once, e.g. {dup[:5]}")
        # every value delivered came from exactly one execution (a failure may never have run:
        # its worker was killed, or the pool terminated, before it started)
        r = self.report
        bad = [t for t in self.oks if ran[t] != 1 and t not in self.unlogged]
        if bad:
            self.error(f"{len(bad)} tasks delivered a value but ran {ran[bad[0]]} times, "
                       f"e.g. {bad[:5]}")
        if r.died and not self.kills:
            self.error(f"{r.died} WorkerDiedError without any worker killed")
        chaos = self.kills or self.terminated.is_set()
        if not chaos and r.ok + r.timed_out != r.tasks:
            self.error(f"{r.tasks} tasks, {r.ok} succeeded, {r.timed_out} timed out, "
                       f"{r.died + r.closed + self.unknown_fail} failed, without chaos")

    def check_leaks(self, before: tuple[set[int], set[str]]) -> None:
        deadline = time.monotonic() + 10.0
        while True:
            kids = _children()
            if not kids or time.monotonic() > deadline:
                break
            psutil.wait_procs(kids, timeout=0.2)
        if kids:
            self.error(f"child processes left: {[(k.pid, _cmd(k)) for k in kids]}")
            for k in kids:
                try:
                    k.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(kids, timeout=5)
        # Threads of the pool close their descriptors as they end: look again until the bound.
        while True:
            fds, shm = _resources()
            new_fds = {fd for fd in fds - before[0] if not _is_helper_fd(fd)}
            new_shm = {n for n in shm - before[1] if n.startswith(("mt-", "mt_", "psm_"))}
            if not (new_fds or new_shm) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if new_fds:
            self.error(f"file descriptors left open: {sorted(new_fds)}")
        if new_shm:
            self.error(f"/dev/shm entries left: {sorted(new_shm)[:5]}")


def _is_helper_fd(fd: int) -> bool:
    """The stdlib's session helpers' pipes, opened by their first user, stay open."""
    from multiprocessing import forkserver, resource_tracker

    rt = getattr(resource_tracker._resource_tracker, "_fd", None)
    fs = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    # the stack-dump FIFO (one per process, for good); the shared-memory reaper's pipe
    from multitask._core import _shm, _stacks

    return fd in (rt, fs, _stacks._state.get("fd"), _shm._wfd)


def _children() -> list[psutil.Process]:
    out = []
    for child in psutil.Process().children(recursive=True):
        if not any(h in _cmd(child) for h in _HELPERS):
            out.append(child)
    return out


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return "?"


def _resources() -> tuple[set[int], set[str]]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    try:
        shm = set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        shm = set()
    return fds, shm


def run(seed: int, scale: str = "short", kind: str | None = None) -> Report:
    """One run; its report lists every error (empty: all checks held)."""
    return _Run(seed, SCALES[scale], kind).execute()
