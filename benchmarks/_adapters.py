"""One small adapter per pool implementation, so each workload is written once.

Every adapter is created (and warmed up: workers started, the task function imported) *outside*
the timed region, with 2 workers.  ``kind`` names are the row keys used by every pool workload.

- ``stdlib``   ``multiprocessing.Pool`` (fork context: the Linux default on Python < 3.14)
- ``cf``       ``concurrent.futures.ProcessPoolExecutor`` (fork context)
- ``mpire``    ``mpire.WorkerPool(start_method="fork", keep_alive=True)``
- ``loky``     ``loky.get_reusable_executor`` (loky's own fork+exec start method, cloudpickle)
- ``pebble``   ``pebble.ProcessPool`` (fork context)
- ``multitask`` ``multitask.Pool`` (the library's default start method)

``map`` uses the stdlib's automatic chunk size rule (``ceil(n / (4 * workers))``) for the
executors whose default chunk size is 1 (``cf``, ``loky``, ``pebble``); the pools that choose a
chunk size themselves (stdlib, mpire, multitask) are left to choose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import as_completed
from typing import Any

# Imported here, as the harness imports multiprocessing: a program imports its library once at
# the top, so P7 times what Pool() itself costs (including the modules it loads on first use)
# for every implementation alike, not the library's top-level import.
import multitask

WORKERS = 2

POOL_KINDS = ["stdlib", "cf", "mpire", "loky", "pebble", "multitask"]

LABELS = {
    "stdlib": "stdlib multiprocessing.Pool",
    "cf": "concurrent.futures ProcessPool",
    "mpire": "mpire WorkerPool",
    "loky": "loky reusable executor",
    "pebble": "pebble ProcessPool",
    "multitask": "multitask Pool",
    "loky-fresh": "loky fresh ProcessPoolExecutor",
    "multitask-fork": "multitask Pool (fork context)",
}


def stdlib_chunksize(n: int, workers: int = WORKERS) -> int:
    return max(1, math.ceil(n / (4 * workers)))


def _warm(x: int) -> int:
    return x


def _drain(futures: list[Any]) -> int:
    n = 0
    for f in as_completed(futures):
        f.result()
        n += 1
    return n


class PoolAdapter:
    kind = "?"

    def map(self, fn: Callable[[Any], Any], items: list[Any] | range) -> list[Any]:
        raise NotImplementedError

    def imap_unordered_count(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> int:
        """Consume an unordered stream of results with chunk size 1; return how many came."""
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One round trip: submit one task and wait for its result."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def warm_up(self, fn: Callable[[Any], Any] = _warm, arg: Any = 0, mode: str = "map") -> None:
        """Start the workers and import the workload's module in them, using the same call the
        workload will time (mpire with keep_alive mixes up its helpers when map and
        imap_unordered alternate, so each workload warms up with its own call only)."""
        if mode == "map":
            self.map(fn, [arg] * (WORKERS * 4))
        elif mode == "imap":
            self.imap_unordered_count(fn, [arg] * (WORKERS * 4))
        elif mode == "call":
            for _ in range(WORKERS * 2):
                self.call(fn, arg)
        else:
            raise ValueError(mode)


class StdlibPool(PoolAdapter):
    kind = "stdlib"

    def __init__(self) -> None:
        import multiprocessing

        self.pool = multiprocessing.get_context("fork").Pool(WORKERS)

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def imap_unordered_count(self, fn, items):
        return sum(1 for _ in self.pool.imap_unordered(fn, items, chunksize=1))

    def call(self, fn, *args):
        return self.pool.apply_async(fn, args).get()

    def close(self):
        self.pool.close()
        self.pool.join()


class _ExecutorAdapter(PoolAdapter):
    """concurrent.futures-style executors: no imap_unordered, so submit + as_completed."""

    ex: Any

    def map(self, fn, items):
        return list(self.ex.map(fn, items, chunksize=stdlib_chunksize(len(items))))

    def imap_unordered_count(self, fn, items):
        return _drain([self.ex.submit(fn, x) for x in items])

    def call(self, fn, *args):
        return self.ex.submit(fn, *args).result()

    def close(self):
        self.ex.shutdown(wait=True)


class CfPool(_ExecutorAdapter):
    kind = "cf"

    def __init__(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))


class LokyPool(_ExecutorAdapter):
    kind = "loky"

    def __init__(self) -> None:
        import loky

        self.ex = loky.get_reusable_executor(max_workers=WORKERS, timeout=300)


class LokyFreshPool(_ExecutorAdapter):
    """A fresh (not reused) loky executor, for start-up cost (P7)."""

    kind = "loky-fresh"

    def __init__(self) -> None:
        import loky

        self.ex = loky.ProcessPoolExecutor(max_workers=WORKERS)


class MpirePool(PoolAdapter):
    kind = "mpire"

    def __init__(self) -> None:
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=WORKERS, start_method="fork", keep_alive=True)

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def imap_unordered_count(self, fn, items):
        return sum(1 for _ in self.pool.imap_unordered(fn, items, chunk_size=1))

    def call(self, fn, *args):
        return self.pool.apply_async(fn, args=args).get()

    def close(self):
        self.pool.stop_and_join()


class PebblePool(PoolAdapter):
    kind = "pebble"

    def __init__(self) -> None:
        import multiprocessing

        from pebble import ProcessPool

        self.pool = ProcessPool(max_workers=WORKERS, context=multiprocessing.get_context("fork"))

    def map(self, fn, items):
        return list(self.pool.map(fn, items, chunksize=stdlib_chunksize(len(items))).result())

    def imap_unordered_count(self, fn, items):
        return _drain([self.pool.submit(fn, None, x) for x in items])

    def call(self, fn, *args):
        return self.pool.submit(fn, None, *args).result()

    def close(self):
        self.pool.close()
        self.pool.join()


class MultitaskPool(PoolAdapter):
    kind = "multitask"
    method: str | None = None

    def __init__(self) -> None:
        if self.method is None:
            self.pool = multitask.Pool(WORKERS)
        else:
            self.pool = multitask.get_context(self.method).Pool(WORKERS)

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def imap_unordered_count(self, fn, items):
        return sum(1 for _ in self.pool.imap_unordered(fn, items, chunksize=1))

    def call(self, fn, *args):
        return self.pool.apply_async(fn, args).get()

    def close(self):
        self.pool.close()
        self.pool.join()


class MultitaskForkPool(MultitaskPool):
    kind = "multitask-fork"
    method = "fork"


_ADAPTERS: dict[str, type[PoolAdapter]] = {
    "stdlib": StdlibPool,
    "cf": CfPool,
    "mpire": MpirePool,
    "loky": LokyPool,
    "pebble": PebblePool,
    "multitask": MultitaskPool,
    "loky-fresh": LokyFreshPool,
    "multitask-fork": MultitaskForkPool,
}


def open_pool(
    kind: str, warm_fn: Callable[[Any], Any] | None = _warm, arg: Any = 0, mode: str = "map"
) -> PoolAdapter:
    """Create the pool of ``kind`` and (unless ``warm_fn`` is None) warm it up: ``mode`` is the
    call the workload times ("map", "imap" or "call")."""
    pool = _ADAPTERS[kind]()
    if warm_fn is not None:
        try:
            pool.warm_up(warm_fn, arg, mode)
        except BaseException:
            pool.close()
            raise
    return pool
