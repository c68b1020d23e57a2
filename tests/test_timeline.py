"""The task timeline: a self-contained HTML page with every task drawn exactly once."""

from __future__ import annotations

import math
import os
import re
from collections import Counter

import pytest

from multitask.monitor.timeline import TaskRecord, render_timeline


def _records(n: int = 40, workers: int = 3) -> list[TaskRecord]:
    out = []
    free = [0.0] * workers
    for i in range(n):
        w = i % workers
        submitted = 10.0 + i * 0.001
        started = max(submitted, 10.0 + free[w]) + 0.0005
        finished = started + 0.01 + 0.001 * (i % 5)
        free[w] = finished - 10.0
        out.append(TaskRecord(task_id=1000 + i, worker=w, pid=500 + w,
                              function="__main__.crunch" if i % 4 else "app.<lambda>",
                              submitted=submitted, started=started, finished=finished,
                              ok=i % 13 != 5, items=1 + i % 3))
    return out


def _task_ids(page: str) -> Counter[int]:
    return Counter(int(m) for m in re.findall(r'data-task="(\d+)"', page))


def test_every_task_exactly_once(tmp_path):
    recs = _records()
    out = render_timeline(recs, tmp_path / "t.html", title="my <pool>")
    assert out == tmp_path / "t.html"
    page = out.read_text(encoding="utf-8")
    ids = _task_ids(page)
    assert sorted(ids) == sorted(r.task_id for r in recs)
    assert set(ids.values()) == {1}
    # tooltips name the function (escaped), duration and queue wait of each task
    assert page.count("<title>task ") == len(recs)
    assert "app.&lt;lambda&gt;" in page and "app.<lambda>" not in page
    assert "my &lt;pool&gt;" in page
    assert "waited" in page and "in queue" in page
    # failed tasks are drawn differently
    failed = [r for r in recs if not r.ok]
    assert failed
    for r in failed:
        bar = re.search(rf'<rect class="t" data-task="{r.task_id}"[^>]*>', page)
        assert bar is not None and 'fill="url(#hatch)"' in bar.group(0)
    ok_bar = re.search(rf'<rect class="t" data-task="{recs[1].task_id}"[^>]*>', page)
    assert ok_bar is not None and "hatch" not in ok_bar.group(0)


def test_self_contained(tmp_path):
    page = render_timeline(_records(), tmp_path / "t.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "@import" not in page and "url(http" not in page
    # the only URLs are XML namespace identifiers, which are never fetched
    assert set(re.findall(r"https?://[^\s\"']+", page)) <= {"http://www.w3.org/2000/svg"}


def test_utilisation_and_queue_wait_figures(tmp_path):
    # two workers, each busy for the whole second; one task waited 0.5 s
    recs = [TaskRecord(1, 0, 11, "f", 0.0, 0.0, 1.0, True),
            TaskRecord(2, 1, 12, "f", 0.0, 0.0, 0.5, True),
            TaskRecord(3, 1, 12, "f", 0.0, 0.5, 1.0, True)]
    page = render_timeline(recs, tmp_path / "u.html").read_text(encoding="utf-8")
    assert "100.0%</b><span>pool utilisation" in page
    assert page.count("100.0%</td></tr>") == 2  # both workers' rows
    assert "max <b>500.0 ms</b>" in page
    assert "3.00/s" in page or "3.0/s" in page


def test_partial_utilisation(tmp_path):
    recs = [TaskRecord(1, 0, 11, "f", 0.0, 0.0, 1.0, True),
            TaskRecord(2, 1, 12, "f", 0.0, 0.0, 0.25, False)]
    page = render_timeline(recs, tmp_path / "p.html").read_text(encoding="utf-8")
    assert "62.5%</b><span>pool utilisation" in page
    assert "25.0%</td></tr>" in page
    assert "<b>1</b><span>failed" in page


def test_replaced_worker_is_marked(tmp_path):
    recs = [TaskRecord(1, 0, 11, "f", 0.0, 0.0, 1.0, False),
            TaskRecord(2, 0, 99, "f", 0.0, 1.1, 2.0, True)]
    page = render_timeline(recs, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "worker 0 replaced: pid 11 → 99" in page
    assert "11, 99" in page


def test_empty_and_degenerate(tmp_path):
    page = render_timeline([], tmp_path / "e.html").read_text(encoding="utf-8")
    assert "No tasks were recorded" in page
    # zero-length and clock-skewed tasks still draw, once each
    recs = [TaskRecord(1, 0, 1, "f", 5.0, 5.0, 5.0, True),
            TaskRecord(2, 0, 1, "f", 6.0, 5.0, 4.0, True)]
    page = render_timeline(recs, tmp_path / "d.html").read_text(encoding="utf-8")
    assert _task_ids(page) == Counter({1: 1, 2: 1})
    assert "nan" not in page.lower().replace("nanosecond", "")


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="TaskRecord"):
        render_timeline([(1, 0, 1, "f", 0.0, 0.0, 1.0, True)], tmp_path / "x.html")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite"):
        render_timeline([TaskRecord(1, 0, 1, "f", 0.0, math.nan, 1.0, True)],
                        tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
    with pytest.raises(OSError):
        render_timeline(_records(3), tmp_path / "no" / "such" / "dir" / "x.html")


def test_written_atomically_without_leftovers(tmp_path):
    out = tmp_path / "t.html"
    out.write_text("old")
    render_timeline(_records(5), out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(os.listdir(tmp_path)) == ["t.html"]
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_many_tasks(tmp_path):
    recs = _records(5000, workers=4)
    page = render_timeline(recs, tmp_path / "big.html").read_text(encoding="utf-8")
    ids = _task_ids(page)
    assert len(ids) == 5000 and set(ids.values()) == {1}


def _square(x: int) -> int:
    return x * x


def test_real_pool_timeline(tmp_path):
    import multitask as mp

    with mp.Pool(2) as pool:
        assert pool.map(_square, range(200), chunksize=10) == [x * x for x in range(200)]
        records = pool.timeline()
        path = pool.timeline(tmp_path / "pool.html")
    assert len(records) == 20  # one record per chunk
    assert sum(r.items for r in records) == 200
    page = path.read_text(encoding="utf-8")
    ids = _task_ids(page)
    assert sorted(ids) == sorted(r.task_id for r in records)
    assert set(ids.values()) == {1}
    assert "_square" in page


# ---- where the time went (issue #19) -----------------------------------------------------------

def _rec(task_id, worker, submitted, dispatched, started, finished, settled, fn="m.f", items=1):
    from multitask.monitor.timeline import TaskRecord

    return TaskRecord(task_id, worker, 100 + worker, fn, submitted, started, finished, True,
                      items, dispatched, settled)


def test_analyze_splits_each_task_into_its_phases():
    from multitask.monitor.timeline import analyze

    # task 2 was sent at 1.0 but its worker was busy with task 1 until 3.0: waiting, not sending
    a = analyze([_rec(1, 0, 0.0, 0.5, 1.0, 3.0, 3.5), _rec(2, 0, 0.0, 1.0, 3.25, 4.0, 4.5)])
    p1, p2 = sorted(a.phases, key=lambda p: p.record.task_id)
    assert (p1.queue, p1.send, p1.run, p1.receive) == (0.5, 0.5, 2.0, 0.5)
    assert (p2.queue, p2.send, p2.run, p2.receive) == (3.0, 0.25, 0.75, 0.5)
    assert a.totals == {"queue": 3.5, "send": 0.75, "run": 2.75, "receive": 1.0}


def test_analyze_flags_stragglers_and_suggests_a_chunk_size():
    from multitask.monitor.timeline import analyze

    recs = []
    t = 0.0
    for i in range(400):   # 10 us of work, 200 us in transit each way
        recs.append(_rec(i, i % 2, t, t, t + 0.0002, t + 0.00021, t + 0.00041))
        t += 0.0005
    recs.append(_rec(999, 0, t, t, t + 0.0002, t + 0.5, t + 0.5002))   # a straggler
    a = analyze(recs)
    assert [p.record.task_id for p in a.stragglers] == [999]
    assert len(a.suggestions) == 1 and "chunksize=" in a.suggestions[0]
    assert "m.f" in a.suggestions[0]


def test_pool_timeline_exports_chrome_trace_and_html_with_phases(tmp_path):
    import json

    import multitask as mt

    with mt.get_context("fork").Pool(2) as pool:
        pool.map(abs, range(-300, 0), chunksize=1)
        trace = pool.timeline(tmp_path / "run.json")
        page = pool.timeline(tmp_path / "run.html")
        records = pool.timeline()
    data = json.loads(trace.read_text())
    runs = [e for e in data["traceEvents"] if e.get("ph") == "X" and e["cat"] == "run"]
    assert len(runs) == len(records) == 300
    assert {e["name"] for e in runs} == {"builtins.abs"}
    names = {e["args"]["name"] for e in data["traceEvents"] if e.get("name") == "thread_name"}
    assert names == {"worker 0", "worker 1"}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in runs)
    assert all(r.dispatched is not None and r.settled is not None for r in records)
    assert all(r.submitted <= r.dispatched <= r.settled for r in records)
    html_text = page.read_text()
    assert "Where the time went" in html_text
    assert all(f'data-phase="{k}"' in html_text for k in ("queue", "send", "run", "receive"))


def _chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


# Appended to a copy of the page: the browser's own layout, written into the DOM for --dump-dom.
_MEASURE = """<script>
window.addEventListener("load", () => {
  const bars = [...document.querySelectorAll("rect.t")];
  const drawn = bars.filter(b => { const r = b.getBoundingClientRect();
                                   return r.width > 0 && r.height > 0; }).length;
  const phases = [...document.querySelectorAll("[data-phase]")]
    .reduce((s, e) => s + e.getBoundingClientRect().width, 0);
  const box = document.querySelector("[data-phases]").getBoundingClientRect().width;
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({bars: bars.length, drawn, phases, box,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    svgs: [...document.querySelectorAll("svg")].map(s => s.getBoundingClientRect().height)});
  document.body.appendChild(out);
});
</script>"""


def test_timeline_page_renders_in_a_real_headless_browser(tmp_path):
    """The HTML as a browser lays it out: every bar drawn with a size, the phase bar filling its
    box, nothing wider than the window, and a screenshot that is not blank."""
    import json
    import re
    import struct
    import subprocess

    import multitask as mt

    browser = _chromium()
    if browser is None:
        pytest.skip("needs a Chromium (Debian: apt-get install chromium; .ci/run installs it "
                    "where it can)")
    with mt.get_context("fork").Pool(2) as pool:
        pool.map(abs, range(-400, 0), chunksize=3)
        pool.apply(abs, (-1,))
        page = pool.timeline(tmp_path / "run.html")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout)
    assert found, dom.stderr[-2000:]
    m = json.loads(found.group(1).replace("&quot;", '"'))
    assert m["bars"] == m["drawn"] > 0
    assert abs(m["phases"] - m["box"]) < 2 and m["box"] > 500
    assert m["overflow"] <= 0
    assert all(h > 40 for h in m["svgs"])
    shot = tmp_path / "timeline.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 1600)
    assert len(data) > 40_000   # a blank page compresses to a few KiB; this one has a chart
