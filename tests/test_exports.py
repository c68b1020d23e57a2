"""The public surface: a small, explicit ``__all__`` that covers the stdlib's and does not drift."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import multitask

EXPECTED_BEYOND_STDLIB = {
    "AsyncResult",
    "ClosedError",
    "MultitaskError",
    "Pipeline",
    "PoolStatistics",
    "RemoteError",
    "SerializationError",
    "TaskTimeoutError",
    "WorkerDiedError",
    "WorkerStatistics",
    "shared_array",
}


def test_all_is_sorted_and_unique():
    assert multitask.__all__ == sorted(set(multitask.__all__))


def test_every_stdlib_name_is_exported():
    assert set(multiprocessing.__all__) <= set(multitask.__all__)


def test_exports_are_exactly_stdlib_plus_documented_extras():
    assert set(multitask.__all__) == set(multiprocessing.__all__) | EXPECTED_BEYOND_STDLIB


def test_every_exported_name_resolves():
    for name in multitask.__all__:
        assert getattr(multitask, name) is not None, name


def test_no_undeclared_public_attributes():
    public = {n for n in dir(multitask) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(multitask, n)).__name__ == "module"}
    assert public - modules - set(multitask.__all__) == set()


def test_exceptions_form_one_hierarchy_compatible_with_the_stdlib():
    for name in ("ProcessError", "BufferTooShort", "AuthenticationError", "TimeoutError",
                 "TaskTimeoutError", "WorkerDiedError", "RemoteError", "SerializationError",
                 "ClosedError"):
        assert issubclass(getattr(multitask, name), multitask.MultitaskError), name
    for name in ("ProcessError", "BufferTooShort", "AuthenticationError", "TimeoutError"):
        assert issubclass(getattr(multitask, name), getattr(multiprocessing, name)), name
    assert issubclass(multitask.TaskTimeoutError, TimeoutError)
    assert issubclass(multitask.ClosedError, ValueError)


def test_import_does_not_pull_numpy_or_ray():
    code = ("import sys, multitask; multitask.Pool; "
            "print('numpy' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "False"]
