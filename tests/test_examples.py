"""The examples run for real: copy_halves, the UDP chat room, the crawler (and its database)."""

from __future__ import annotations

import filecmp
import importlib.util
import itertools
import os
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- copy_halves -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("size", "parts"), [(0, 2), (1, 2), (3, 5), (1_000_003, 2),
                                             (1_000_003, 5), (7 * 1024 * 1024 + 13, 3)])
def test_copy_halves_is_byte_identical(tmp_path, size, parts):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(os.urandom(size))
    dst.write_bytes(b"stale content that must disappear" * 100)
    result = run_example(str(EXAMPLES / "copy_halves.py"), str(src), str(dst),
                         "--parts", str(parts))
    assert result.returncode == 0, result.stderr
    assert dst.stat().st_size == size
    assert filecmp.cmp(src, dst, shallow=False)
    assert f"with {parts} processes" in result.stdout


@pytest.mark.timeout(120)
def test_copy_halves_200_mb(tmp_path):
    src, dst = tmp_path / "big.bin", tmp_path / "copy.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(200):  # every MiB differs, so a misplaced block is detected
            f.write(i.to_bytes(4, "little") + block[4:])
        f.write(b"odd tail")
    for parts in ("2", "5"):
        dst.unlink(missing_ok=True)
        result = run_example(str(EXAMPLES / "copy_halves.py"), str(src), str(dst),
                             "--parts", parts, timeout=100)
        assert result.returncode == 0, result.stderr
        assert filecmp.cmp(src, dst, shallow=False)


def test_copy_halves_part_bounds_cover_the_file():
    spec = importlib.util.spec_from_file_location("copy_halves", EXAMPLES / "copy_halves.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for size in (0, 1, 2, 9, 10, 11, 12345):
        for parts in (1, 2, 3, 5, 16):
            bounds = mod.part_bounds(size, parts)
            assert len(bounds) == parts
            assert bounds[0][0] == 0 and bounds[-1][1] == size
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [e - s for s, e in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_copy_halves_reports_a_missing_source(tmp_path):
    result = run_example(str(EXAMPLES / "copy_halves.py"), str(tmp_path / "nope"),
                         str(tmp_path / "out"))
    assert result.returncode == 1
    assert "copy_halves:" in result.stderr


# -- chat --------------------------------------------------------------------------------------


class _Proc:
    """A subprocess whose stdout lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out; saw {self.seen}") from None
            self.seen.append(line)
            if predicate(line):
                return line

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def stop(self) -> None:
        """Kill it if still running, reap it and close its pipes (no zombie, no fd left)."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self.reader.join(5)
        for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass


@pytest.mark.timeout(90)
def test_chat_room_three_clients_each_see_exactly_the_others_lines():
    server = _Proc(str(EXAMPLES / "chat" / "server.py"), "--port", "0")
    clients: dict[str, _Proc] = {}
    try:
        line = server.wait_for(lambda s: "listening on" in s)
        port = line.rsplit(":", 1)[1]
        names = ["alice", "bob", "carol"]
        for name in names:
            clients[name] = _Proc(str(EXAMPLES / "chat" / "client.py"), name, "--port", port)
            clients[name].wait_for(lambda s, n=name: s == f"*** you joined the room as {n}")
        # Everyone is in: the first two saw the later ones join.
        clients["alice"].wait_for(lambda s: s == "*** carol joined")
        clients["bob"].wait_for(lambda s: s == "*** carol joined")
        said = {name: [f"hello {i} from {name}" for i in range(3)] for name in names}
        for name in names:
            stdin = clients[name].popen.stdin
            assert stdin is not None
            for text in said[name]:
                stdin.write(text + "\n")
                stdin.flush()
        expected = {name: sorted(f"{other}: {text}" for other in names if other != name
                                 for text in said[other]) for name in names}
        for name in names:
            got: list[str] = []
            while len(got) < len(expected[name]):
                got.append(clients[name].wait_for(lambda s: not s.startswith("***")))
            assert sorted(got) == expected[name]
            for other in names:  # each sender's lines arrive in the order they were said
                mine = [g for g in got if g.startswith(f"{other}: ")]
                assert mine == [f"{other}: {t}" for t in said[other]] or other == name
        # Leave one by one: the others are told, and each client exits by itself.
        for name in names:
            stdin = clients[name].popen.stdin
            assert stdin is not None
            stdin.write("quit\n")
            stdin.flush()
            assert clients[name].popen.wait(timeout=15) == 0
            for other in names[names.index(name) + 1:]:
                clients[other].wait_for(lambda s, n=name: s == f"*** {n} left")
        for name in names:  # nobody saw a message line that was not expected
            messages = [s for s in clients[name].drain() if not s.startswith("***")]
            assert sorted(messages) == expected[name]
    finally:
        for proc in clients.values():
            proc.stop()
        server.popen.terminate()
        server.stop()


@pytest.mark.timeout(60)
def test_chat_name_taken_is_refused():
    server = _Proc(str(EXAMPLES / "chat" / "server.py"), "--port", "0")
    first = None
    try:
        port = server.wait_for(lambda s: "listening on" in s).rsplit(":", 1)[1]
        first = _Proc(str(EXAMPLES / "chat" / "client.py"), "dave", "--port", port)
        first.wait_for(lambda s: "joined the room" in s)
        second = run_example(str(EXAMPLES / "chat" / "client.py"), "dave", "--port", port)
        assert second.returncode == 1
        assert "taken" in second.stderr
    finally:
        if first is not None:
            assert first.popen.stdin is not None
            first.popen.stdin.close()  # end of input: leaves the room
            first.popen.wait(timeout=15)
            first.stop()
        server.popen.terminate()
        server.stop()


# -- crawler -----------------------------------------------------------------------------------


def _load_crawler():
    spec = importlib.util.spec_from_file_location("crawler_example", EXAMPLES / "crawler.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # so worker processes can unpickle its functions
    spec.loader.exec_module(mod)
    return mod


def test_crawler_regexes_parse_a_page():
    crawler = _load_crawler()
    html = (EXAMPLES / "site" / "p03.html").read_text()
    page = crawler.parse(("http://127.0.0.1:1/p03.html", html))
    assert page.title == "Operating Systems in Pictures"
    assert (page.currency, page.price) == ("¥", 67.0)
    assert page.tags == ["classic", "small", "large"]
    assert page.links == ["http://127.0.0.1:1/books.html", "http://127.0.0.1:1/index.html",
                          "http://127.0.0.1:1/p04.html"]
    assert crawler.PRICE_RE.search("costs $2,384.00 now").groupdict() == {
        "currency": "$", "amount": "2,384.00"}


@pytest.mark.timeout(90)
def test_crawler_fills_the_database(tmp_path):
    db = tmp_path / "shop.sqlite"
    result = run_example(str(EXAMPLES / "crawler.py"), "--db", str(db), "--delay", "0",
                         timeout=80)
    assert result.returncode == 0, result.stderr
    assert "1 failed" in result.stdout and "discontinued.html" in result.stdout
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT url, title, price, currency, tags, links FROM pages").fetchall()
        by_file = {url.rsplit("/", 1)[1]: row for url, *row in rows}
        per_currency = conn.execute("SELECT currency, COUNT(*) FROM pages "
                                    "WHERE price IS NOT NULL GROUP BY currency").fetchall()
    finally:
        conn.close()
    site_pages = {p.name for p in (EXAMPLES / "site").glob("*.html")}
    assert set(by_file) == site_pages  # every page exactly once, the missing one not at all
    assert len(rows) == 28
    assert sorted(per_currency) == [("$", 8), ("¥", 8), ("€", 8)]
    assert by_file["p03.html"] == ["Operating Systems in Pictures", 67.0, "¥",
                                   "classic,small,large", 3]
    assert by_file["index.html"][:4] == ["Multitask Shop", None, None, ""]
    assert by_file["gadgets.html"][4] == 10  # 8 products, the missing page, home
    for name in site_pages:  # titles match what the HTML says
        title = re.search(r"<title>(.*?)(?: \| Multitask Shop)?</title>",
                          (EXAMPLES / "site" / name).read_text())
        assert title is not None and by_file[name][0] == title.group(1)


# -- the demo ----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_demo_runs_and_reports_speedups(tmp_path):
    timeline = tmp_path / "timeline.html"
    result = run_example("-c", "import sys, multitask._demo as d; "
                         "sys.exit(d.main(['--limit', '200000', '--chunks', '20', "
                         f"'--timeline', {str(timeline)!r}]))",
                         timeout=110)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert timeline.exists() and "<svg" in timeline.read_text()
    assert "who did what" in out
    assert "28 pages" in out and "faster" in out
    assert "primes below 200,000" in out and "17,984" in out  # pi(200000)
    assert "Every result matched its serial run." in out
