"""multitask.Pipeline: exactly-once delivery, error policies, crashes, backpressure, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from _procs import alive

import multitask
from multitask import Pipeline, WorkerDiedError
from multitask._core import _errors
from multitask.pipeline import ItemError

# The stdlib's multiprocessing.pool.RemoteTraceback, which typeshed does not declare (the
# module's lazy __getattr__ is typed object): Any, to use it in isinstance.
RemoteTraceback: Any = _errors.RemoteTraceback


def square(x: int) -> int:
    return x * x


def fail_on_13(x: int) -> int:
    if x == 13:
        raise ValueError(f"bad item {x}")
    return x


def sleep_then_return(x: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)
    return x


def exit_cleanly_on_7(x: int) -> int:
    if x == 7:
        os._exit(0)   # exit code 0, but without the worker's "done"
    return x


def kill_self_on_7(x: int) -> int:
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.timeout(120)
def test_100k_items_three_mixed_stages_arrive_exactly_once():
    offset = 1_000_000
    pipe = (Pipeline()
            .stage(square, workers=2, kind="process", ordered=False, batch_size=64)
            .stage(lambda x: x + offset, workers=2, kind="thread", ordered=False, batch_size=64)
            .stage(lambda x: (x - offset, os.getpid()), workers=2, kind="process",
                   ordered=False, batch_size=64))
    out = pipe.run_all(range(100_000))
    values = sorted(v for v, _ in out)
    assert values == sorted(i * i for i in range(100_000))
    pids = {pid for _, pid in out}
    assert len(pids) == 2 and os.getpid() not in pids  # really ran in both worker processes
    stats = pipe.statistics()
    assert [(s.items_in, s.items_out, s.items_failed) for s in stats] == [(100_000, 100_000, 0)] * 3
    assert all(s.in_flight == 0 and s.alive == 0 for s in stats)
    assert pipe.errors == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kinds", [("process", "thread"), ("thread", "process")])
def test_ordered_stages_keep_input_order(kinds):
    def jitter(x: int) -> int:
        time.sleep(0.001 * (x % 3))
        return x

    pipe = (Pipeline()
            .stage(jitter, workers=3, kind=kinds[0], ordered=True)
            .stage(lambda x: -x, workers=2, kind=kinds[1], ordered=True))
    assert list(pipe.run(range(300))) == [-i for i in range(300)]


@pytest.mark.timeout(60)
def test_iterate_pipeline_with_constructor_source_and_rerun():
    pipe = Pipeline(range(10)).stage(square, workers=2)
    assert list(pipe) == [i * i for i in range(10)]
    assert pipe.run_all(range(3)) == [0, 1, 4]  # a pipeline can run again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["process", "thread"])
def test_on_error_raise_stops_with_the_items_exception(kind):
    pipe = Pipeline().stage(fail_on_13, workers=2, kind=kind).stage(square, kind="thread")
    with pytest.raises(ValueError, match="bad item 13") as info:
        pipe.run_all(range(1000))
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "fail_on_13" in cause.tb and "ValueError: bad item 13" in cause.tb
    assert pipe.statistics()[0].items_failed == 1
    assert all(s.alive == 0 for s in pipe.statistics())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["process", "thread"])
def test_on_error_skip_collects_failures_and_goes_on(kind):
    pipe = Pipeline().stage(fail_on_13, workers=2, kind=kind, on_error="skip")
    out = pipe.run_all(range(100))
    assert out == [i for i in range(100) if i != 13]
    assert len(pipe.errors) == 1
    err = pipe.errors[0]
    assert isinstance(err, ItemError)
    assert err.item == 13 and err.stage == "fail_on_13"
    assert isinstance(err.exception, ValueError)
    assert "ValueError: bad item 13" in err.traceback
    stats = pipe.statistics()[0]
    assert (stats.items_in, stats.items_out, stats.items_failed) == (100, 99, 1)


@pytest.mark.timeout(60)
def test_unpicklable_result_fails_only_that_item():
    def make(x: int):
        return threading.Lock() if x == 3 else x

    pipe = (Pipeline().stage(make, kind="thread")
            .stage(lambda x: x, kind="process", on_error="skip"))
    assert pipe.run_all(range(6)) == [0, 1, 2, 4, 5]
    assert isinstance(pipe.errors[0].exception, multitask.SerializationError)


@pytest.mark.timeout(60)
def test_source_exception_is_raised():
    def source():
        yield 1
        raise KeyError("source broke")

    with pytest.raises(KeyError, match="source broke"):
        Pipeline().stage(square, workers=2).run_all(source())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_sigkilled_worker_surfaces_worker_died_error(on_error):
    pipe = Pipeline().stage(kill_self_on_7, workers=2, on_error=on_error)
    start = time.monotonic()
    with pytest.raises(WorkerDiedError) as info:
        pipe.run_all(range(50))
    assert time.monotonic() - start < 10
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.signal == signal.SIGKILL
    assert "kill_self_on_7" in str(info.value)
    assert all(s.alive == 0 for s in pipe.statistics())


@pytest.mark.timeout(60)
def test_a_worker_exiting_with_code_0_before_its_done_is_a_death():
    # The watcher reports the exit behind everything the worker put on its out-queue, so an
    # exit not preceded by "done" is a death even with code 0 (no grace period to wait out).
    pipe = Pipeline().stage(exit_cleanly_on_7, workers=2)
    with pytest.raises(WorkerDiedError) as info:
        pipe.run_all(range(50))
    assert info.value.exitcode == 0 and info.value.signal is None
    assert "exit_cleanly_on_7" in str(info.value)
    assert all(s.alive == 0 for s in pipe.statistics())


@pytest.mark.timeout(60)
def test_clean_runs_leave_no_thread_behind():
    before = set(threading.enumerate())
    for kind in ("process", "thread"):
        assert Pipeline().stage(square, workers=2, kind=kind).run_all(range(200)) == [
            x * x for x in range(200)]
    assert set(threading.enumerate()) <= before


@pytest.mark.timeout(60)
def test_worker_killed_from_outside_while_busy():
    pipe = Pipeline().stage(sleep_then_return, workers=2)
    it = pipe.run(range(1000))
    assert next(it) == 0
    victim = pipe.statistics()[0].pids[1]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerDiedError) as info:
        for _ in it:
            pass
    assert info.value.pid == victim


@pytest.mark.timeout(90)
def test_memory_stays_bounded_when_last_stage_is_slow():
    pulled = 0

    def source():
        nonlocal pulled
        for i in range(400):
            pulled += 1
            yield i

    pipe = (Pipeline()
            .stage(square, workers=2, kind="process", maxsize=4)
            .stage(lambda x: x, workers=2, kind="thread", maxsize=3)
            .stage(lambda x: sleep_then_return(x, 0.005), workers=1, kind="thread",
                   maxsize=2))
    bound = sum(s.maxsize + s.workers * s.batch_size for s in pipe._specs)
    assert bound == (4 + 2) + (3 + 2) + (2 + 1)
    yielded = 0
    worst = 0
    for _ in pipe.run(source()):
        yielded += 1
        worst = max(worst, pulled - yielded)
    assert yielded == 400
    # Items pulled from the source but not yet yielded: at most every stage full, plus the one
    # item the feeder holds while it waits for room.
    assert worst <= bound + 1
    for s in pipe.statistics():
        assert s.max_in_flight <= s.capacity
    assert pipe.statistics()[0].max_in_flight == pipe.statistics()[0].capacity  # it did fill


@pytest.mark.timeout(60)
def test_breaking_out_early_stops_everything():
    pipe = Pipeline().stage(square, workers=2).stage(lambda x: x, kind="thread", workers=2)
    it = pipe.run(range(10**9))
    for i, value in enumerate(it):
        assert value == i * i
        if i == 20:
            break
    it.close()
    assert all(s.alive == 0 for s in pipe.statistics())


def test_bad_arguments_raise_clearly():
    with pytest.raises(TypeError):
        Pipeline().stage(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        Pipeline().stage(square, kind="fiber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        Pipeline().stage(square, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        Pipeline().stage(square, workers=0)
    with pytest.raises(ValueError, match="maxsize"):
        Pipeline().stage(square, maxsize=0)
    with pytest.raises(ValueError, match="at least one stage"):
        Pipeline().run_all([1])
    with pytest.raises(TypeError, match="no source"):
        list(Pipeline().stage(square))


SIGINT_SCRIPT = textwrap.dedent("""
    import sys, time
    import multitask as mp

    def slow(x):
        time.sleep(0.05)
        return x

    def drain(pipe):
        for i, _ in enumerate(pipe.run(range(10**6))):
            if i == 5:
                print("running", [s.pids for s in pipe.statistics()][0], flush=True)

    if __name__ == "__main__":
        pipe = mp.Pipeline(progress=False).stage(slow, workers=2).stage(
            lambda x: x, kind="thread", workers=2)
        # (the loop in a function: CPython 3.12+ may leave a loop's closing JUMP_BACKWARD,
        # where a signal is checked, outside the enclosing try; see test_pool_signals)
        try:
            drain(pipe)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
""")


@pytest.mark.timeout(60)
def test_ctrl_c_stops_a_running_pipeline_cleanly(tmp_path):
    script = tmp_path / "ctrlc.py"
    script.write_text(SIGINT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("running"), proc.stderr.read()  # type: ignore[union-attr]
        worker_pids = [int(p) for p in line.split("(")[1].split(")")[0].split(",") if p.strip()]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err
    assert "interrupted" in out
    assert "Traceback" not in err  # workers ignore SIGINT: no traceback spam
    for pid in worker_pids:  # no orphans
        assert not alive(pid), f"worker {pid} survived"


@pytest.mark.timeout(60)
def test_every_start_method_runs_closures(start_method):
    factor = 3  # a closure: sent with cloudpickle, also under spawn/forkserver
    pipe = Pipeline(context=start_method).stage(lambda x: x * factor, workers=2, ordered=True)
    assert pipe.run_all(range(20)) == [i * 3 for i in range(20)]
