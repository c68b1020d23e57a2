"""The flagship demonstration run by ``make demo`` (``python -m multitask demo``).

Two small programs, each run twice — once the plain serial way, once with multitask — with the
time of each and the speed-up, explained for someone who has never used processes:

1. **A crawler** (``examples/crawler.py``): fetch the pages of a small shop served on
   127.0.0.1, parse them with regular expressions, store them in SQLite, read the database back.
   Fetching is waiting on the network, so threads overlap the waits (the GIL is released while
   waiting); parsing is CPU work, so it runs in processes.
2. **A CPU-bound job**: count the primes below a limit, in chunks.  Threads would not help here
   (the GIL lets one thread compute at a time); processes each have their own interpreter and
   really use every core.

It blocks until done (about 10-30 s on 2 cores) and returns 0, or 1 if a result was wrong.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["count_primes", "main"]

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def count_primes(bounds: tuple[int, int]) -> int:
    """Count the primes ``p`` with ``lo <= p < hi`` by trial division (deliberately CPU-bound)."""
    lo, hi = bounds
    count = 0
    for n in range(max(lo, 2), hi):
        if n < 4:
            count += 1
            continue
        if n % 2 == 0:
            continue
        for d in range(3, math.isqrt(n) + 1, 2):
            if n % d == 0:
                break
        else:
            count += 1
    return count


def _chunks(limit: int, parts: int) -> list[tuple[int, int]]:
    step = -(-limit // parts)
    return [(lo, min(lo + step, limit)) for lo in range(0, limit, step)]


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("  {task.description:<26}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _load_crawler() -> ModuleType | None:
    path = _EXAMPLES / "crawler.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("multitask_example_crawler", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    # Registered so the parse stage's functions pickle by reference for the worker processes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _crawl_serially(crawler: Any, start_url: str, db_path: str) -> int:
    """The crawl without multitask: one page at a time, fetch then parse then store."""
    import urllib.error
    import urllib.parse

    site = urllib.parse.urljoin(start_url, "/")
    store = crawler.Store(db_path)
    seen, frontier, stored = {start_url}, [start_url], 0
    try:
        while frontier:
            found: set[str] = set()
            for url in frontier:
                try:
                    page = store(crawler.parse(crawler.fetch(url)))
                except urllib.error.HTTPError:
                    continue
                stored += 1
                found.update(link for link in page.links if link.startswith(site))
            frontier = sorted(found - seen)
            seen |= found
    finally:
        store.close()
    return stored


def _demo_crawler(console: Console, workdir: str) -> bool:
    crawler = _load_crawler()
    if crawler is None:
        console.print("[yellow]examples/crawler.py is not here (installed without the "
                      "repository), skipping the crawler part.")
        return True
    console.rule("[bold]1. A crawler: fetch → parse → store → show")
    console.print(
        "A small web shop (28 pages, one link to a missing page) is served on 127.0.0.1; every "
        "request takes 50 ms, like a real network. The crawler downloads every page, picks the "
        "title, price and tags out of the HTML with regular expressions, and stores them in an "
        "SQLite database. Then it reads the database back and shows it.\n")
    serial_db = os.path.join(workdir, "serial.sqlite")
    parallel_db = os.path.join(workdir, "shop.sqlite")
    with crawler.serve_site(delay=0.05) as base:
        start = time.perf_counter()
        with console.status("  serial: one page after the other..."):
            serial_pages = _crawl_serially(crawler, base + "index.html", serial_db)
        serial_s = time.perf_counter() - start
        console.print(f"  serial:    {serial_pages} pages in {serial_s:.2f}s")
        console.print("  multitask: Pipeline(fetch: 8 threads → parse: 2 processes → "
                      "store: 1 thread)")
        report = crawler.crawl(base + "index.html", parallel_db, progress=True)
    console.print(f"  multitask: {report.pages} pages in {report.seconds:.2f}s "
                  f"([bold green]{serial_s / report.seconds:.1f}x faster[/])")
    crawler.print_report(parallel_db, report)
    console.print(
        "\n[bold]Why faster:[/] most of a crawler's time is spent [italic]waiting[/] for the "
        "network. Eight fetching threads wait at the same time (a waiting thread gives up "
        "Python's GIL, so the others can run), while two processes parse. The missing page did "
        "not stop the crawl: the fetch stage uses on_error=\"skip\", which collects failures "
        "in pipeline.errors and goes on.\n")
    same: bool = crawler.summary(serial_db) == crawler.summary(parallel_db)
    if not same:
        console.print("[red]  the serial and parallel databases differ!")
    return same and serial_pages == report.pages


def _demo_primes(console: Console, limit: int, parts: int, timeline: str | None) -> bool:
    import multitask as mp

    console.rule("[bold]2. A CPU-bound job: counting primes")
    chunks = _chunks(limit, parts)
    workers = max(2, min(mp.cpu_count(), 4))
    console.print(f"Count the prime numbers below {limit:,}, cut into {len(chunks)} chunks. "
                  "Pure computation: no waiting at all.\n")
    with _progress(console) as progress:
        task = progress.add_task("serial (1 process)", total=len(chunks))
        start = time.perf_counter()
        serial = 0
        for chunk in chunks:
            serial += count_primes(chunk)
            progress.advance(task)
        serial_s = time.perf_counter() - start
    how, parallel, parallel_s = _parallel_primes(chunks, workers, console, timeline)
    speedup = serial_s / parallel_s
    table = Table(title=f"primes below {limit:,}")
    for col in ("run", "primes found", "seconds", "speed-up"):
        table.add_column(col)
    table.add_row("serial, 1 process", f"{serial:,}", f"{serial_s:.2f}", "1.0x")
    table.add_row(f"{how}, {workers} processes", f"{parallel:,}", f"{parallel_s:.2f}",
                  f"[bold green]{speedup:.1f}x")
    console.print(table)
    why = (f"each worker is a separate process with its own Python interpreter, so {workers} "
           "chunks are computed at the same time on different CPU cores. With threads, "
           "Python's GIL would let only one of them compute at a time and there would be no "
           "speed-up.")
    if speedup >= 1.2:
        console.print(f"\n[bold]Why faster:[/] {why}\n")
    else:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        console.print(
            f"\n[bold]Why it should be faster:[/] {why} [bold yellow]Not this time:[/] this "
            f"machine's {os.cpu_count()} CPU cores are busy with other programs (load average "
            f"{load:.1f}), so the workers had no free core to run on. On an idle machine "
            f"expect close to {workers}x.\n")
    if serial != parallel:
        console.print("[red]  serial and parallel counts differ!")
    return serial == parallel


def _parallel_primes(chunks: list[tuple[int, int]], workers: int, console: Console,
                     timeline: str | None) -> tuple[str, int, float]:
    """Count with ``multitask.Pool.imap_unordered`` and draw the pool's task timeline."""
    import multitask as mp

    start = time.perf_counter()
    with mp.Pool(workers) as pool:
        total = sum(pool.imap_unordered(count_primes, chunks, progress=True))
        elapsed = time.perf_counter() - start
        stats = pool.statistics()
        done = ", ".join(f"worker {w.index} (pid {w.pid}): {w.tasks_done} chunks"
                         for w in stats.workers)
        console.print(f"  who did what: {done}")
        if timeline:
            path = pool.timeline(timeline)
            console.print(f"  a timeline of every chunk (which worker ran it, when, how long) "
                          f"is in [bold]{path}[/] -- open it in a browser.")
    return "Pool.imap_unordered", total, elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the demonstration; returns the exit status (0: every result checked out)."""
    parser = argparse.ArgumentParser(prog="multitask demo", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2_000_000,
                        help="count primes below this (default 2000000)")
    parser.add_argument("--chunks", type=int, default=80, help="chunks of work (default 80)")
    parser.add_argument("--skip-crawler", action="store_true", help="only the CPU-bound job")
    parser.add_argument("--timeline", default="multitask-demo-timeline.html",
                        help="where to write the pool's task timeline ('' for none)")
    args = parser.parse_args(argv)
    console = Console()
    start = time.perf_counter()
    console.print("[bold]multitask demo[/]: the same work done serially, then with several "
                  "workers, timed.\n")
    ok = True
    with tempfile.TemporaryDirectory(prefix="multitask-demo-") as workdir:
        if not args.skip_crawler:
            ok = _demo_crawler(console, workdir) and ok
        ok = _demo_primes(console, args.limit, args.chunks, args.timeline or None) and ok
    console.rule()
    console.print(f"Done in {time.perf_counter() - start:.1f}s. "
                  + ("Every result matched its serial run." if ok
                     else "[red]Some results did not match![/]"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
