"""multitask.monitor.view: the rows ``multitask ps``/``top`` show."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from multitask.monitor import view
from multitask.monitor.procinfo import proc_info
from multitask.monitor.registry import ProgramEntry


def _entry(argv: tuple[str, ...]) -> ProgramEntry:
    return ProgramEntry(pid=os.getpid(), ppid=os.getppid(),
                        create_time=psutil.Process().create_time(), argv=argv,
                        executable=sys.executable, cpu_count=1, updated=time.time(),
                        updated_monotonic=time.monotonic(), pools=(), processes=())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("argv", [(), ("-c",), ("",)])
def test_program_without_a_script_is_named_by_its_command_line(argv: tuple[str, ...]) -> None:
    # `python -c ...` registers argv ("-c",) (a tuple, as read back from the registry): the row
    # shows the process's command line instead.  Found by mypy --strict (a tuple was compared
    # with lists, so the name was "-c").
    info = proc_info(os.getpid())
    assert info is not None
    [program] = view.build([_entry(argv)])
    assert program.main.name == (info.command[:100] or sys.executable)


@pytest.mark.timeout(30)
def test_program_with_a_script_is_named_by_its_argv() -> None:
    [program] = view.build([_entry(("app.py", "--fast"))])
    assert program.main.name == "app.py --fast"
