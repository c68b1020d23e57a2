"""The task timeline: a self-contained HTML page with every task drawn exactly once."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from typing import Any

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


def _pool_class() -> Any:
    try:
        import multitask.pool as pool_pkg
    except ImportError:
        return None
    return getattr(pool_pkg, "Pool", None)


def _square(x: int) -> int:
    return x * x


@pytest.mark.skipif(_pool_class() is None, reason="multitask.pool.Pool has not landed yet")
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
