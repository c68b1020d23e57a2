"""A small crawler built on ``multitask.Pipeline`` (seed 000: fetch -> process -> store -> show).

It never touches the internet: it serves the bundled shop in ``examples/site/`` with
``http.server`` on 127.0.0.1 (in a background thread, each request delayed a little to behave
like a real network), then crawls it depth by depth::

    python examples/crawler.py [--db shop.sqlite] [--delay 0.05] [--progress]

The pipeline, one stage per step of the notes:

1. **fetch** — 8 *threads* download pages.  Waiting for the network releases the GIL, so threads
   are enough for I/O (the GIL lesson); a missing page (HTTP 404) is *skipped* and collected in
   ``pipeline.errors`` instead of stopping the crawl.
2. **parse** — 2 *processes* pick the title, links, price and tags out of the HTML with regular
   expressions (the regex review at the top of seed 000: ``re.compile``, named groups,
   ``findall``, ``sub``, ``split``).  Parsing is CPU work, so it gets processes.
3. **store** — 1 thread writes each page into SQLite (one writer: SQLite serialises writes
   anyway).
4. **show** — the main program reads the database back and prints a summary table.

Links found on a page become the next depth's input, until no new page is found.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multitask as mp

SITE_DIR = Path(__file__).resolve().parent / "site"

# -- the regular expressions (seed 000's review) ------------------------------------------------

# Named groups: m.group("title").  re.S lets "." cross newlines, re.I ignores case.
TITLE_RE = re.compile(r"<title>(?P<title>.*?)</title>", re.S | re.I)
# findall with one group returns just that group: every href of the page.
LINK_RE = re.compile(r"""<a\s+[^>]*?href=["'](?P<href>[^"'#]+)["']""", re.I)
# A price like ¥1,299.00 or $12.50: the currency sign and the amount in two named groups.
PRICE_RE = re.compile(r"(?P<currency>[$¥€])\s*(?P<amount>\d{1,3}(?:,\d{3})*(?:\.\d{1,2})?)")
TAGS_RE = re.compile(r'<p class="tags">\s*tags:\s*(?P<tags>[^<]*)</p>', re.I)
TAG_RE = re.compile(r"<[^>]+>")        # sub() removes every tag to get the plain text
SPACES_RE = re.compile(r"\s+")
SPLIT_RE = re.compile(r"\s*[,;]\s*")   # split() tags on commas *or* semicolons
SITE_SUFFIX_RE = re.compile(r"\s*\|\s*Multitask Shop$")


@dataclass
class Page:
    """What the parse stage extracts from one HTML page."""

    url: str
    title: str
    price: float | None = None
    currency: str | None = None
    tags: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    words: int = 0


def fetch(url: str) -> tuple[str, str]:
    """Stage 1 (threads): download ``url``; HTTPError (e.g. 404) propagates."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return url, resp.read().decode("utf-8")


def parse(fetched: tuple[str, str]) -> Page:
    """Stage 2 (processes): pick title, price, tags and links out of the HTML."""
    url, html = fetched
    m = TITLE_RE.search(html)
    title = SITE_SUFFIX_RE.sub("", m.group("title").strip()) if m else url
    page = Page(url=url, title=title)
    price = PRICE_RE.search(html)
    if price:
        page.currency = price.group("currency")
        page.price = float(price.group("amount").replace(",", ""))
    tags = TAGS_RE.search(html)
    if tags:
        page.tags = [t for t in SPLIT_RE.split(tags.group("tags").strip()) if t]
    page.links = sorted({urllib.parse.urljoin(url, href) for href in LINK_RE.findall(html)})
    text = SPACES_RE.sub(" ", TAG_RE.sub(" ", html)).strip()
    page.words = len(text.split(" "))
    return page


SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    url      TEXT PRIMARY KEY,
    title    TEXT NOT NULL,
    price    REAL,
    currency TEXT,
    tags     TEXT NOT NULL,
    links    INTEGER NOT NULL,
    words    INTEGER NOT NULL
)
"""


class Store:
    """Stage 3 (one thread): write each :class:`Page` into SQLite; returns it for the next depth.

    The connection is opened lazily in the worker thread (sqlite3 objects belong to the thread
    that made them); :meth:`close` closes it.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        with sqlite3.connect(db_path) as conn:
            conn.execute(SCHEMA)
        conn.close()

    def __call__(self, page: Page) -> Page:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self.db_path, check_same_thread=False)
            self._conn.execute(
                "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?, ?, ?)",
                (page.url, page.title, page.price, page.currency, ",".join(page.tags),
                 len(page.links), page.words))
            self._conn.commit()
        return page

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# -- the local web site ------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)  # behave like a real, slow-ish network
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_site(site_dir: Path = SITE_DIR, delay: float = 0.05) -> Iterator[str]:
    """Serve ``site_dir`` on 127.0.0.1 (a free port) in a background thread; yield its base URL."""
    handler = type("Handler", (_QuietHandler,), {"delay": delay})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site_dir)))
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- the crawl ---------------------------------------------------------------------------------


@dataclass
class CrawlReport:
    pages: int
    failed: list[tuple[str, str]]   # (url, error) of pages that could not be fetched/parsed
    depths: int
    seconds: float


def crawl(start_url: str, db_path: str, *, fetchers: int = 8, parsers: int = 2,
          progress: bool | None = False) -> CrawlReport:
    """Crawl every page reachable from ``start_url`` on the same site into ``db_path``.

    Blocks until done.  Pages that fail (404...) are listed in the report, not raised.
    """
    site = urllib.parse.urljoin(start_url, "/")
    store = Store(db_path)
    pipeline = (mp.Pipeline(progress=progress, name="crawler")
                .stage(fetch, workers=fetchers, kind="thread", ordered=False, on_error="skip",
                       name="fetch")
                .stage(parse, workers=parsers, kind="process", ordered=False, on_error="skip",
                       name="parse")
                .stage(store, workers=1, kind="thread", ordered=False, name="store"))
    seen = {start_url}
    frontier = [start_url]
    failed: list[tuple[str, str]] = []
    depths = 0
    start = time.perf_counter()
    try:
        while frontier:
            depths += 1
            found: set[str] = set()
            for page in pipeline.run(frontier):
                found.update(link for link in page.links if link.startswith(site))
            failed += [(str(e.item), f"{type(e.exception).__name__}: {e.exception}")
                       for e in pipeline.errors]
            frontier = sorted(found - seen)
            seen |= found
    finally:
        store.close()
    return CrawlReport(pages=len(seen) - len(failed), failed=failed, depths=depths,
                       seconds=time.perf_counter() - start)


def summary(db_path: str) -> list[tuple[str, int, str, str]]:
    """Read the database back: per category (currency), products, cheapest and dearest."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT currency, COUNT(*), MIN(price), MAX(price) FROM pages "
            "WHERE price IS NOT NULL GROUP BY currency ORDER BY currency").fetchall()
    conn.close()
    return [(cur, n, f"{cur}{lo:,.2f}", f"{cur}{hi:,.2f}") for cur, n, lo, hi in rows]


def print_report(db_path: str, report: CrawlReport) -> None:
    """Print what was crawled and the database summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with sqlite3.connect(db_path) as conn:
        products = conn.execute(
            "SELECT title, price, currency, tags FROM pages WHERE price IS NOT NULL "
            "ORDER BY price DESC LIMIT 5").fetchall()
        total = conn.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
    conn.close()
    table = Table(title=f"{total} pages in {Path(db_path).name}: products per currency")
    for col in ("currency", "products", "cheapest", "dearest"):
        table.add_column(col)
    for row in summary(db_path):
        table.add_row(row[0], str(row[1]), row[2], row[3])
    console.print(table)
    top = Table(title="the five dearest products (by number, whatever the currency)")
    for col in ("title", "price", "tags"):
        top.add_column(col)
    for title, price, cur, tags in products:
        top.add_row(title, f"{cur}{price:,.2f}", tags)
    console.print(top)
    console.print(f"crawled {report.pages} pages over {report.depths} depths in "
                  f"{report.seconds:.2f}s; {len(report.failed)} failed: "
                  + ", ".join(f"{url} ({err})" for url, err in report.failed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="crawl the bundled shop into SQLite")
    parser.add_argument("--db", default="shop.sqlite", help="SQLite file (default shop.sqlite)")
    parser.add_argument("--delay", type=float, default=0.05,
                        help="seconds the local server waits per request (default 0.05)")
    parser.add_argument("--progress", action="store_true", help="force the progress display")
    args = parser.parse_args(argv)
    Path(args.db).unlink(missing_ok=True)
    with serve_site(delay=args.delay) as base_url:
        report = crawl(base_url + "index.html", args.db, progress=True if args.progress else None)
    print_report(args.db, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
