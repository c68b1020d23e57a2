"""`multitask top` in a real terminal (tmux): its screen, `q`, and exit when the program ends.

Needs the `tmux` binary (Debian/Ubuntu package `tmux`); skipped without it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_ps import FAKE_POOL_PROGRAM

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Tmux:
    """A private tmux server (own socket) with one 160x45 window running *command*."""

    def __init__(self, tmp: Path) -> None:
        self.socket = str(tmp / "tmux.sock")

    def run(self, *args: str) -> str:
        res = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        # -d: detached; tmux daemonises its server, so it is not a child of the test.
        subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d",
                        "-x", "160", "-y", "45", command], env=env, check=True, timeout=30)

    def screen(self) -> str:
        return self.run("capture-pane", "-p")

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared on screen:\n{text}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


@pytest.fixture
def watched(tmp_path):
    """The fake-pool program of test_cli_ps, publishing to a private registry."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("MULTITASK_REGISTRY", None)
    script = tmp_path / "watched.py"
    script.write_text(FAKE_POOL_PROGRAM)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    kids = json.loads(proc.stdout.readline())
    yield proc, kids, env
    proc.stdin.close()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def _top_command(*args: str) -> str:
    top = shlex.join([sys.executable, "-m", "multitask", "top", *args])
    # Print the exit status where the test can see it, then keep the pane open for capture.
    return f"sh -c '{top}; echo TOP-EXITED-$?; sleep 60'"


def test_top_shows_program_and_quits_on_q(tmux, watched):
    proc, (busy, idle, stopped), env = watched
    tmux.start(_top_command("--interval", "0.3"), env)
    screen = tmux.wait_for(f"pid {proc.pid}")
    screen = tmux.wait_for("tasks/s")
    # The program registers its pool, then its plain process: the first published entry may
    # hold only the pool, so wait for the view to show the process too.
    screen = tmux.wait_for("store-1")
    assert "multitask top" in screen and "press q to quit" in screen
    assert "pool crawler" in screen
    for pid in (busy, idle, stopped):
        assert str(pid) in screen, screen
    assert "__main__.fetch" in screen and "idle" in screen
    assert "store-1" in screen
    tmux.run("send-keys", "q")
    screen = tmux.wait_for("TOP-EXITED-0")
    assert "press q to quit" not in screen  # the live view is gone, the terminal restored


def test_top_exits_when_watched_program_ends(tmux, watched):
    proc, (busy, _idle, _stopped), env = watched
    tmux.start(_top_command("--pid", str(proc.pid), "--interval", "0.3"), env)
    screen = tmux.wait_for(str(busy))
    assert f"pid {proc.pid}" in screen
    proc.stdin.close()  # the watched program ends (and removes its entry)
    proc.wait(20)
    screen = tmux.wait_for("TOP-EXITED-0")
    assert f"program {proc.pid} ended" in screen


def test_top_unknown_pid_fails(tmux, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    tmux.start(_top_command("--pid", str(dead.pid)), env)
    screen = tmux.wait_for("TOP-EXITED-1")
    assert f"no process {dead.pid}" in screen


def test_top_throughput_and_utilisation_helpers():
    from multitask.monitor.top import _History

    h = _History()
    assert h.throughput((1, "p"), 100.0, 0) is None  # one snapshot: no rate yet
    assert h.throughput((1, "p"), 100.0, 0) is None  # same snapshot again: still none
    assert h.throughput((1, "p"), 101.0, 50) == pytest.approx(50.0)
    assert h.throughput((1, "p"), 102.0, 150) == pytest.approx(75.0)
    assert h.throughput((1, "p"), 110.0, 150) == pytest.approx(0.0, abs=1e-9)  # window slid
    assert h.busy_share((1, 2), 0.0, True) == 1.0
    assert h.busy_share((1, 2), 1.0, False) == 0.5
    assert h.busy_share((1, 2), 9.0, False) == 0.0  # old samples fell out of the window


BUSY_POOL_PROGRAM = """
import os, sys, time, multitask as mt
def parked_for_top(path):
    while not os.path.exists(path):
        time.sleep(0.05)
if __name__ == "__main__":
    with mt.Pool(1) as pool:
        r = pool.apply_async(parked_for_top, (sys.argv[1],))
        print("ready", flush=True)
        r.get(timeout=120)
"""


def test_top_s_shows_the_stack_of_a_busy_worker(tmux, tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("MULTITASK_REGISTRY", None)
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", BUSY_POOL_PROGRAM, str(go)],
                            stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None   # Popen made a pipe
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        tmux.start(_top_command("--pid", str(proc.pid), "--interval", "0.3"), env)
        tmux.wait_for("parked_for_top")       # the worker's current task, from the registry
        assert "stacks of busy workers (most" not in tmux.screen()
        tmux.run("send-keys", "s")
        screen = tmux.wait_for("stacks of busy workers (most")
        screen = tmux.wait_for("in parked_for_top")   # a frame line of faulthandler's dump
        assert "File " in screen
        tmux.run("send-keys", "q")
        tmux.wait_for("TOP-EXITED-0")
    finally:
        go.touch()
        proc.wait(60)
        proc.stdout.close()
