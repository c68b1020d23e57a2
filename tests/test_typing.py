"""The public factories are typed: mypy sees ``mp.Queue()`` as ``multitask.queues.Queue[Any]``
and so on, not ``Any`` -- and so reports a wrong use of what they return (issue #20).

Runs mypy (its API, in this process) on a small user program, under ``--strict`` as a user's CI
might; the cache lives in build/ so a warm run takes a second or two (cold: up to a minute).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[1]

# Each line ending in "# -> T" must reveal exactly T; each ending in "# error: code" must be
# reported with that error code; nothing else may be reported.
PROGRAM = textwrap.dedent('''\
    import ctypes
    from typing import Any

    import multitask as mp


    def square(x: int) -> int:
        return x * x


    reveal_type(mp.Pool())  # -> multitask.pool._pool.Pool
    reveal_type(mp.Queue())  # -> multitask.queues.Queue[Any]
    reveal_type(mp.SimpleQueue())  # -> multitask.queues.SimpleQueue[Any]
    reveal_type(mp.JoinableQueue())  # -> multitask.queues.JoinableQueue[Any]
    reveal_type(mp.Lock())  # -> multitask.synchronize.Lock
    reveal_type(mp.RLock())  # -> multitask.synchronize.RLock
    reveal_type(mp.Semaphore(2))  # -> multitask.synchronize.Semaphore
    reveal_type(mp.BoundedSemaphore(2))  # -> multitask.synchronize.BoundedSemaphore
    reveal_type(mp.Condition())  # -> multitask.synchronize.Condition
    reveal_type(mp.Event())  # -> multitask.synchronize.Event
    reveal_type(mp.Barrier(2))  # -> multitask.synchronize.Barrier
    reveal_type(mp.Value("i", 0))  # -> multiprocessing.sharedctypes.Synchronized[int]
    reveal_type(mp.Value("d", 0.5))  # -> multiprocessing.sharedctypes.Synchronized[float]
    reveal_type(mp.Value(ctypes.c_int, 0))  # -> multiprocessing.sharedctypes.Synchronized[int]
    reveal_type(mp.Value(ctypes.c_int, 0, lock=False))  # -> ctypes.c_int
    reveal_type(mp.Array("d", 3))  # -> multiprocessing.sharedctypes.SynchronizedArray[float]
    reveal_type(mp.Array("c", 3))  # -> multiprocessing.sharedctypes.SynchronizedString
    reveal_type(mp.Array(ctypes.c_int, 3, lock=False))  # -> _ctypes.Array[ctypes.c_int]
    reveal_type(mp.RawValue(ctypes.c_double))  # -> ctypes.c_double
    reveal_type(mp.Manager())  # -> multitask.managers.SyncManager
    reveal_type(mp.Manager().list())  # -> multitask.managers.ListProxy
    reveal_type(mp.Manager().list().copy())  # -> list[Any]
    reveal_type(mp.Manager().dict().fromkeys("ab"))  # -> dict[Any, Any]
    reveal_type(mp.Manager().set())  # -> multitask.managers.SetProxy
    reveal_type(mp.Manager().set() & {1})  # -> set[Any]
    reveal_type(2 in mp.Manager().set())  # -> bool
    reader, writer = mp.Pipe()
    reveal_type(reader)  # -> multitask.connection.Connection
    reveal_type(writer)  # -> multitask.connection.Connection
    reveal_type(mp.Process(target=square, args=(1,)))  # -> multitask.process.Process
    reveal_type(mp.current_process())  # -> multiprocessing.process.BaseProcess
    reveal_type(mp.get_context("spawn"))  # -> multitask.context.SpawnContext
    reveal_type(mp.get_context("fork").Queue())  # -> multitask.queues.Queue[Any]
    reveal_type(mp.get_start_method())  # -> str
    reveal_type(mp.get_logger())  # -> logging.Logger
    reveal_type(mp.Value("i", 0).value)  # -> int
    reveal_type(mp.Array("d", 3)[0])  # -> float

    ints: mp.queues.Queue[int] = mp.Queue()
    reveal_type(ints.get())  # -> int
    timeout_error: type[Exception] = mp.TimeoutError

    mp.Queue().put_nowait()  # error: call-arg
    mp.Lock().acquire(timeout="x")  # error: arg-type
    mp.Value("i", 0).value = "x"  # error: assignment
    ints.put("x")  # error: arg-type
    mp.Pipe()[0].poll("soon")  # error: arg-type
    mp.Manager().set().issubset(3)  # error: arg-type
''')


def _expectations() -> tuple[dict[int, str], dict[int, str]]:
    reveals: dict[int, str] = {}
    errors: dict[int, str] = {}
    for lineno, line in enumerate(PROGRAM.splitlines(), 1):
        if m := re.search(r"# -> (.+)$", line):
            reveals[lineno] = m.group(1)
        elif m := re.search(r"# error: ([\w-]+)$", line):
            errors[lineno] = m.group(1)
    return reveals, errors


@pytest.mark.timeout(300)  # a cold mypy run (no cache in build/) can take a minute
def test_factories_have_their_real_types(tmp_path: Path) -> None:
    program = tmp_path / "user_program.py"
    program.write_text(PROGRAM)
    config = tmp_path / "mypy.ini"  # the user's settings, not this repository's [tool.mypy]
    config.write_text("[mypy]\nstrict = True\n")
    cache = ROOT / "build" / "mypy-cache-test-typing"
    stdout, stderr, _status = mypy_api.run([
        "--config-file", str(config), "--cache-dir", str(cache), "--no-error-summary",
        "--show-error-codes", "--hide-error-context", str(program),
    ])
    assert not stderr, stderr

    revealed: dict[int, str] = {}
    reported: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        m = re.match(r".*user_program\.py:(\d+): (note|error): (.*)$", line)
        assert m, f"unexpected mypy output: {line}"
        lineno, kind, message = int(m.group(1)), m.group(2), m.group(3)
        if kind == "note" and (r := re.match(r'Revealed type is "(.*)"$', message)):
            revealed[lineno] = r.group(1)
        elif kind == "error":
            code = re.search(r"\[([\w-]+)\]$", message)
            reported.setdefault(lineno, []).append(code.group(1) if code else message)

    reveals, errors = _expectations()
    lines = PROGRAM.splitlines()
    for lineno, expected in reveals.items():
        assert revealed.get(lineno) == expected, (lines[lineno - 1], revealed.get(lineno))
    for lineno, want in errors.items():
        assert want in reported.get(lineno, []), (lines[lineno - 1], reported.get(lineno))
    unexpected = {lines[n - 1]: codes for n, codes in reported.items() if n not in errors}
    assert not unexpected, unexpected
