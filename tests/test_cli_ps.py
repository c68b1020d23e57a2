"""`multitask ps`, run as a separate process, sees another program's pools and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from multitask import cli

# A program that publishes a pool whose "workers" are real sleeping children (so their OS state is
# real) plus one plain process that it stops with SIGSTOP.  It prints its children's pids, then
# runs until its stdin is closed.
FAKE_POOL_PROGRAM = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    from multitask.monitor import registry
    from multitask._engine.stats import PoolStatistics, TaskInfo, WorkerStatistics

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            for _ in range(3)]
    t0 = time.monotonic()

    class FakePool:
        name = "crawler"
        def statistics(self):
            now = time.monotonic()
            ws = (WorkerStatistics(0, kids[0].pid, "busy", 5, 1,
                                   TaskInfo(7, "__main__.fetch", t0, now - t0, 4), time.time()),
                  WorkerStatistics(1, kids[1].pid, "idle", 3, 0, None, time.time()),
                  WorkerStatistics(2, None, "starting", 0, 0, None, time.time()))
            return PoolStatistics("crawler", "process", "running", 3, ws, 10, 8, 1, 1, 1, 0,
                                  time.time())

    class Child:
        pid = kids[2].pid
        name = "store-1"

    pool, child = FakePool(), Child()
    registry.register_pool(pool)
    registry.register_process(child)
    os.kill(kids[2].pid, signal.SIGSTOP)
    print(json.dumps([k.pid for k in kids]), flush=True)
    try:
        sys.stdin.read()
    finally:
        for k in kids:
            k.kill()
            k.wait()
""")

PROCESS_PROGRAM = textwrap.dedent("""
    import sys, time
    import multitask as mp
    from multitask.monitor import registry

    def sleeper():
        time.sleep(120)

    if __name__ == "__main__":
        procs = [mp.Process(target=sleeper, name=f"sleeper-{i}") for i in range(2)]
        for p in procs:
            p.start()
            registry.register_process(p)  # idempotent if Process already registers itself
        print(" ".join(str(p.pid) for p in procs), flush=True)
        try:
            sys.stdin.read()
        finally:
            for p in procs:
                p.kill()
                p.join()
""")

POOL_PROGRAM = textwrap.dedent("""
    import sys, time
    import multitask as mp

    def slow(i):
        time.sleep(120)
        return i

    if __name__ == "__main__":
        with mp.Pool(2) as pool:
            results = [pool.apply_async(slow, (i,)) for i in range(2)]
            print("started", flush=True)
            sys.stdin.read()
""")


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """Environment with a private registry, shared by the watched program and `ps`."""
    e = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    e.pop("MULTITASK_REGISTRY", None)
    return e


class Program:
    def __init__(self, source: str, env: dict[str, str], tmp: Path) -> None:
        script = tmp / "watched_program.py"
        script.write_text(source)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=tmp)
        self.pid = self.proc.pid

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def program(env, tmp_path):
    started: list[Program] = []

    def start(source: str) -> Program:
        p = Program(source, env, tmp_path)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def ps(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "multitask", "ps", *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res


def ps_json(env: dict[str, str], pid: int) -> list[dict[str, Any]]:
    return [r for r in json.loads(ps(env, "--json").stdout) if r["program"] == pid]


def wait_rows(env, pid: int, ok, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Poll `ps --json` until *ok(rows)* holds; return the last rows either way."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ps_json(env, pid)
        if ok(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _state_of(rows, pid):
    return next(r for r in rows if r["pid"] == pid)


def test_ps_json_lists_fake_pool_workers_and_process(env, program):
    prog = program(FAKE_POOL_PROGRAM)
    busy_pid, idle_pid, stopped_pid = json.loads(prog.readline())

    rows = wait_rows(env, prog.pid, lambda rs: len(rs) == 4
                     and _state_of(rs, stopped_pid)["state"].startswith("T"))
    assert sorted(r["pid"] for r in rows) == sorted([prog.pid, busy_pid, idle_pid, stopped_pid])
    for r in rows:
        assert {"pid", "ppid", "state", "role"} <= r.keys()
    main = _state_of(rows, prog.pid)
    assert main["role"] == "main" and main["ppid"] == os.getpid()
    assert main["state"][0] in "SR"
    assert main["cpu_count"] >= 1
    busy, idle = _state_of(rows, busy_pid), _state_of(rows, idle_pid)
    assert busy["role"] == idle["role"] == "worker"
    assert busy["pool"] == idle["pool"] == "crawler"
    assert (busy["worker"], idle["worker"]) == (0, 1)
    assert busy["ppid"] == idle["ppid"] == prog.pid
    assert busy["state"][0] == idle["state"][0] == "S"  # blocked in sleep()
    assert busy["task_state"] == "busy" and idle["task_state"] == "idle"
    assert busy["task"] == "__main__.fetch" and busy["task_items"] == 4
    assert busy["task_running_for"] > 0 and idle["task"] is None
    assert (busy["tasks_done"], busy["tasks_failed"]) == (5, 1)
    assert busy["rss"] > 0 and busy["nice"] == 0
    stopped = _state_of(rows, stopped_pid)
    assert stopped["role"] == "process" and stopped["name"] == "store-1"
    assert stopped["state"][0] == "T"

    table = ps(env).stdout
    for needle in (str(prog.pid), str(busy_pid), str(idle_pid), str(stopped_pid),
                   "pool crawler", "__main__.fetch", "busy", "idle", "store-1"):
        assert needle in table, (needle, table)

    tree = ps(env, "--tree").stdout
    assert f"{prog.pid} S" in tree or f"{prog.pid} R" in tree
    assert f"{busy_pid} S" in tree and "worker 0 of pool crawler" in tree
    assert f"{stopped_pid} T" in tree and "process store-1" in tree
    assert tree.index(str(prog.pid)) < tree.index(str(busy_pid))

    assert ps(env, "--json", "--pid", str(prog.pid)).stdout.count('"role"') == 4
    assert json.loads(ps(env, "--json", "--pid", "1").stdout) == []

    prog.stop()
    assert ps_json(env, prog.pid) == []  # removed at exit


def test_ps_sees_real_multitask_processes(env, program):
    prog = program(PROCESS_PROGRAM)
    a, b = map(int, prog.readline().split())
    rows = wait_rows(env, prog.pid, lambda rs: {a, b} <= {r["pid"] for r in rs})
    assert {a, b} <= {r["pid"] for r in rows}
    for pid in (a, b):
        r = _state_of(rows, pid)
        assert r["role"] == "process" and r["name"].startswith("sleeper-")
        assert r["state"][0] == "S" and r["ppid"] == prog.pid
    os.kill(a, signal.SIGSTOP)
    rows = wait_rows(env, prog.pid, lambda rs: _state_of(rs, a)["state"].startswith("T"))
    assert _state_of(rows, a)["state"][0] == "T"
    os.kill(a, signal.SIGCONT)


def test_ps_with_no_programs(env):
    assert json.loads(ps(env, "--json").stdout) == []
    assert "no running multitask programs" in ps(env).stdout


def test_console_script(env):
    script = Path(sys.executable).with_name("multitask")
    assert script.exists(), f"{script}: the console script of [project.scripts] is missing"
    res = subprocess.run([str(script), "ps", "--json"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout) == []


def test_ps_with_real_busy_pool_and_replaced_worker(env, program):
    prog = program(POOL_PROGRAM)
    assert prog.readline().strip() == "started"

    def workers(rows):
        return sorted((r for r in rows if r["role"] == "worker"), key=lambda r: r["worker"])

    rows = wait_rows(env, prog.pid, lambda rs: [w["task_state"] for w in workers(rs)]
                     == ["busy", "busy"])
    ws = workers(rows)
    assert [w["task_state"] for w in ws] == ["busy", "busy"], rows
    assert all("slow" in (w["task"] or "") for w in ws)
    assert all(w["state"][0] == "S" for w in ws)  # busy in the pool, asleep for the OS
    old = {w["pid"] for w in ws}
    assert len(old) == 2

    victim = ws[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced(rs):
        w = workers(rs)
        return (len(w) == 2 and victim not in {x["pid"] for x in w}
                and sorted(x["task_state"] for x in w) == ["busy", "idle"])

    rows = wait_rows(env, prog.pid, replaced)
    ws = workers(rows)
    assert replaced(rows), rows
    new_pid = next(w["pid"] for w in ws if w["pid"] not in old)
    assert _state_of(rows, new_pid)["task_state"] == "idle"
    assert _state_of(rows, new_pid)["state"][0] in "SR"


def test_demo_subcommand_calls_demo_main(monkeypatch):
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("multitask._demo")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined,func-returns-value]
    monkeypatch.setitem(sys.modules, "multitask._demo", fake)
    assert cli.main(["demo", "--quick", "x"]) == 0
    assert seen == [["--quick", "x"]]


def test_demo_subcommand_when_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "multitask._demo", None)  # makes the import fail
    assert cli.main(["demo"]) == 1
    assert "multitask._demo" in capsys.readouterr().err


def test_bench_subcommand(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "find_bench_script", lambda: None)
    assert cli.main(["bench"]) == 1
    assert "source checkout" in capsys.readouterr().err
    script = tmp_path / "benchmarks" / "run.py"
    script.parent.mkdir()
    script.write_text("import sys; sys.exit(len(sys.argv) - 1 + 40)")  # exit 42 for 2 args
    monkeypatch.setattr(cli, "find_bench_script", lambda: script)
    assert cli.main(["bench", "--only", "P1"]) == 42


def test_bench_script_found_in_checkout():
    found = cli.find_bench_script()
    expected = Path(cli.__file__).resolve().parents[2] / "benchmarks" / "run.py"
    assert found == (expected if expected.is_file() else None)


def test_no_subcommand_prints_help(capsys):
    assert cli.main([]) == 2
    assert "ps" in capsys.readouterr().out
