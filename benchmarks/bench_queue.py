"""Queue workloads: P4 (1 -> 1 throughput, single and batched), the producers x consumers matrix
(after faster-fifo's own benchmark) and single-pair ping-pong latency.

Producers and consumers are stdlib ``fork`` processes for every implementation, so the only thing
that differs between rows is the queue.  Each child signals that it is ready and then waits on a
start event; the clock starts when the event is set, so process start-up is never timed.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from _harness import Config, Impl, Table, bar_ratio, per_op, rate

CTX = multiprocessing.get_context("fork")

QUEUE_KINDS = ["mp", "ff", "mt"]
QUEUE_LABELS = {
    "mp": "multiprocessing.Queue",
    "ff": "faster-fifo Queue",
    "mt": "multitask Queue",
    "pipe": "multiprocessing.Pipe",
}
FF_BYTES = 10_000_000  # faster-fifo's ring (its default is 1 MB); multitask uses its default
GET_TIMEOUT = 60.0


def make_queue(kind: str, nbytes: int | None = None) -> Any:
    if kind == "mp":
        return CTX.Queue()
    if kind == "ff":
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=nbytes or FF_BYTES)
    if kind == "mt":
        import multitask

        return multitask.Queue()
    raise ValueError(kind)


def q_get(q: Any, kind: str) -> Any:
    return q.get(timeout=GET_TIMEOUT) if kind == "ff" else q.get()


def q_get_many(q: Any, kind: str, k: int) -> list[Any]:
    if kind == "ff":
        return q.get_many(max_messages_to_get=k, timeout=GET_TIMEOUT)
    return q.get_many(k)


def _close(q: Any) -> None:
    close = getattr(q, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass


# ---- P4: 1 producer -> 1 consumer ------------------------------------------------------------


def _p4_producer(q: Any, n: int, batch: int, ready: Any, go: Any) -> None:
    batches = [list(range(i, min(n, i + batch))) for i in range(0, n, batch)] if batch else []
    ready.release()
    go.wait()
    if batch:
        for b in batches:
            q.put_many(b)
    else:
        put = q.put
        for i in range(n):
            put(i)


def p4_trial(kind: str, n: int, batch: int) -> float:
    q = make_queue(kind)
    if batch and not hasattr(q, "put_many"):
        raise AttributeError(f"{type(q).__name__} has no put_many")
    ready, go = CTX.Semaphore(0), CTX.Event()
    proc = CTX.Process(target=_p4_producer, args=(q, n, batch, ready, go))
    proc.start()
    try:
        ready.acquire()
        got = total = 0
        t0 = time.perf_counter()
        go.set()
        if batch:
            while got < n:
                items = q_get_many(q, kind, batch)
                got += len(items)
                total += sum(items)
        else:
            for _ in range(n):
                total += q_get(q, kind)
            got = n
        elapsed = time.perf_counter() - t0
        if got != n or total != n * (n - 1) // 2:
            raise AssertionError(f"received {got} messages, checksum {total}")
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        _close(q)
    return elapsed


def p4(cfg: Config) -> list[Table]:
    """P4: Queue throughput, 1 producer -> 1 consumer, small ints (single and batched)."""
    n = cfg.n(200_000, 20_000)
    batch = 1000
    impls = [
        Impl("multiprocessing.Queue put/get", p4_trial, {"kind": "mp", "n": n, "batch": 0},
             baseline=True),
        Impl("faster-fifo put/get", p4_trial, {"kind": "ff", "n": n, "batch": 0}),
        Impl("multitask Queue put/get", p4_trial, {"kind": "mt", "n": n, "batch": 0},
             bar=bar_ratio(3)),  # and ahead of faster-fifo: checked below
        Impl(f"faster-fifo put_many/get_many ({batch})", p4_trial,
             {"kind": "ff", "n": n, "batch": batch}),
        Impl(f"multitask put_many/get_many ({batch})", p4_trial,
             {"kind": "mt", "n": n, "batch": batch}, bar=bar_ratio(10)),
    ]
    table = cfg.run(
        "P4", f"Queue 1 producer -> 1 consumer, {n:_} small ints", rate(n, "msg/s"), impls,
        notes=["ratio vs multiprocessing.Queue put/get (also for the batched rows)",
               f"faster-fifo max_size_bytes={FF_BYTES:_}; multitask Queue() defaults"],
    ).with_ratio_header("vs mp.Queue")
    by_label = {r.label: r for r in table.rows}
    ff, mt = by_label["faster-fifo put/get"], by_label["multitask Queue put/get"]
    mt.bar_text = "≥ 3x, > faster-fifo"
    if mt.median is not None and ff.median is not None and mt.bar_ok is not None:
        mt.bar_ok = mt.bar_ok and mt.median < ff.median
    return [table]


# ---- producers x consumers matrix ----------------------------------------------------------


def _mx_producer(q: Any, start: int, count: int, ready: Any, go: Any) -> None:
    ready.release()
    go.wait()
    put = q.put
    for i in range(start, start + count):
        put(i)


def _mx_consumer(q: Any, kind: str, slot: int, counts: Any, sums: Any, ready: Any,
                 go: Any) -> None:
    ready.release()
    go.wait()
    n = s = 0
    while True:
        x = q_get(q, kind)
        if x is None:
            break
        n += 1
        s += x
    counts[slot] = n
    sums[slot] = s


def matrix_trial(kind: str, producers: int, consumers: int, n: int) -> float:
    q = make_queue(kind)
    per = n // producers
    n = per * producers
    ready, go = CTX.Semaphore(0), CTX.Event()
    counts = CTX.Array("q", consumers, lock=False)
    sums = CTX.Array("q", consumers, lock=False)
    prods = [CTX.Process(target=_mx_producer, args=(q, i * per, per, ready, go))
             for i in range(producers)]
    cons = [CTX.Process(target=_mx_consumer, args=(q, kind, j, counts, sums, ready, go))
            for j in range(consumers)]
    procs = prods + cons
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire()
        t0 = time.perf_counter()
        go.set()
        for p in prods:
            p.join()
        for _ in cons:
            q.put(None)
        for p in cons:
            p.join()
        elapsed = time.perf_counter() - t0
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"{len(bad)} producer/consumer processes failed: {bad[:3]}")
        if sum(counts) != n or sum(sums) != n * (n - 1) // 2:
            raise AssertionError(f"received {sum(counts)} of {n} messages")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        _close(q)
    return elapsed


MATRIX = [(1, 1), (1, 10), (10, 1), (3, 20), (20, 3), (20, 20)]


def matrix(cfg: Config) -> list[Table]:
    """MATRIX: producers x consumers (1x1 ... 20x20) through one queue, msg/s."""
    n = cfg.n(50_000, 5_000)
    tables = []
    for producers, consumers in MATRIX:
        impls = [
            Impl(QUEUE_LABELS[kind], matrix_trial,
                 {"kind": kind, "producers": producers, "consumers": consumers, "n": n},
                 baseline=kind == "mp")
            for kind in QUEUE_KINDS
        ]
        tables.append(cfg.run(
            f"Q{producers}x{consumers}",
            f"{producers} producer(s) x {consumers} consumer(s), {n:_} small ints, put/get",
            rate(n, "msg/s"), impls, default_repeat=3,
            notes=["timed from the start signal until every consumer has seen its end "
                   "sentinel; counts and checksums verified"] if (producers, consumers) == (1, 1)
            else [],
        ).with_ratio_header("vs mp.Queue"))
    return tables


# ---- ping-pong latency -----------------------------------------------------------------------


def _echo(a: Any, b: Any, kind: str) -> None:
    if kind == "pipe":
        while True:
            x = a.recv()
            if x is None:
                return
            b.send(x)
    while True:
        x = q_get(a, kind)
        if x is None:
            return
        b.put(x)


def pingpong_trial(kind: str, n: int) -> float:
    if kind == "pipe":
        a_recv, a_send = CTX.Pipe(duplex=False)
        b_recv, b_send = CTX.Pipe(duplex=False)
        child = CTX.Process(target=_echo, args=(a_recv, b_send, kind))
        child.start()

        def send(x: Any) -> None:
            a_send.send(x)

        def recv() -> Any:
            return b_recv.recv()
    else:
        qa, qb = make_queue(kind), make_queue(kind)
        child = CTX.Process(target=_echo, args=(qa, qb, kind))
        child.start()
        send = qa.put

        def recv() -> Any:
            return q_get(qb, kind)
    try:
        for i in range(100):  # warm-up (also waits for the child to be running)
            send(i)
            recv()
        t0 = time.perf_counter()
        for i in range(n):
            send(i)
            if recv() != i:
                raise AssertionError("out of order")
        elapsed = time.perf_counter() - t0
        send(None)
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    return elapsed


def pingpong(cfg: Config) -> list[Table]:
    """PINGPONG: single-pair round-trip latency through two queues."""
    n = cfg.n(10_000, 1_000)
    impls = [
        Impl(QUEUE_LABELS[kind], pingpong_trial, {"kind": kind, "n": n}, baseline=kind == "mp")
        for kind in [*QUEUE_KINDS, "pipe"]
    ]
    impls[-1].note = "reference: a raw pipe pair, no queue"
    return [
        cfg.run("PINGPONG", f"round trip parent -> child -> parent through two queues, {n:_}x",
                per_op(n, "µs / round trip"), impls).with_ratio_header("vs mp.Queue")
    ]
