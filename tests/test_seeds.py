# ruff: noqa: RUF001  -- the notes print fullwidth Chinese punctuation
"""The programs of the course notes (/work/shared/seeds), import changed to multitask.

Each script in ``tests/seeds/`` is a program from the notes with ``import multiprocessing``
replaced by ``import multitask`` and its sleeps shortened; it runs in a subprocess with a timeout
and its output is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SEEDS = Path(__file__).parent / "seeds"


def _run(name: str, timeout: float = 90) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, str(SEEDS / name)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=SEEDS)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout


def test_001_process_basic():
    assert _run("s001_process_basic.py").splitlines() == [
        "ddd", "name: Process-1 exitcode: 0 alive: False"]


def test_001_pool_apply_async_and_map():
    assert _run("s001_pool_map.py").splitlines() == [
        "[0, 1, 4, 9, 16] True", "[0, 1, 4, 9, 16, 25]", "49"]


def test_002_pipe():
    lines = _run("s002_pipe.py").splitlines()  # printed by the parent only: whole lines
    assert sorted(lines) == sorted(f"hello! {n}" for n in ("Tom", "Zack", "Abby", "Sam"))


def test_002_queue():
    assert _run("s002_queue.py").split() == [str(2 ** i) for i in range(10)]


def test_002_value():
    lines = _run("s002_value.py").splitlines()
    balance = int(lines[0].split(":")[1])
    expected = int(lines[1].split(":")[1])
    assert balance == expected


def test_003_fork_and_wait():
    out = _run("s003_fork_wait.py")
    assert "child: ppid matches True MainProcess" in out
    assert "parent reaped True status 3" in out
    assert "waitpid True 2" in out


def test_003_custom_process_class():
    lines = _run("s003_custom_class.py").splitlines()
    assert lines[:3] == ["run 0 True True", "run 1 True True", "run 2 True True"]
    assert lines[3] == "[0, 0, 0] ['MyProcess', 'MyProcess', 'MyProcess']"
    assert lines[4:] == ["run daemon True True", "daemon True"]


def test_003_array_and_semaphore():
    assert _run("s003_array_semaphore.py").splitlines() == [
        "1 2 3 4 5 ", "1000 [1, 2, 1000, 4, 5] b'world'", "sem 3", "sem 3"]


def test_003_nice():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base > 9:
        pytest.skip("already nicer than 9")
    assert _run("s003_nice.py").strip() == "child nice 9"


def test_004_pid():
    lines = _run("s004_pid.py").splitlines()
    assert lines[0].startswith("父进程pid: ")
    assert lines[1].startswith("子进程运行中，pid=")
    assert lines[2] == "子进程将要结束..."
    assert lines[0].split(":")[1].strip() != lines[1].split("=")[1].rstrip(".")


def test_004_two_loops():
    out = _run("s004_loop.py")
    assert out.count("---1---") == 3 and out.count("---2---") == 3


def test_004_bounded_queue():
    assert _run("s004_queue.py").splitlines() == [
        "False", "True", "消息队列已满，现有消息数量：3", "消息列队已满，现有消息数量：3",
        "消息1", "消息2", "消息3"]


def test_004_pool_without_main_guard():
    # workers print concurrently: print() writes the text and the newline separately, so
    # lines can interleave; count in the whole output
    out = _run("s004_pool.py")
    assert out.count("---start---") == 1
    assert out.rstrip().endswith("---end---")
    assert out.count("开始执行") == 10
    assert out.count("执行完毕") == 10


def test_004_manager_queue_with_pool():
    lines = _run("s004_manager_queue.py").splitlines()
    got = [line.split("：")[1] for line in lines if "reader从Queue获取到消息" in line]
    assert got == list("itcast")
    assert lines[-1].endswith(" End")
