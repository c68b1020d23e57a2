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
    "ProcessPoolExecutor",
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


# Submodules of the stdlib package that are start-method machinery, not something a program
# imports: multitask's contexts start processes with these very classes.
INTERNAL_SUBMODULES = {
    "popen_fork": "the fork start method's Popen class",
    "popen_forkserver": "the forkserver start method's Popen class",
    "popen_spawn_posix": "the spawn start method's Popen class",
    "popen_spawn_win32": "Windows only",
    "resource_sharer": "the helper thread behind reduction.DupFd",
}


def _stdlib_submodules() -> list[str]:
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(multiprocessing.__path__)
             if not m.name.startswith("_")]
    return [*sorted(names), "dummy.connection"]


def test_every_public_stdlib_submodule_has_a_twin_with_its_names():
    """`from multitask.<sub> import <name>` works wherever `from multiprocessing.<sub> import
    <name>` does (issue #17): every public submodule, every name of its __all__."""
    import importlib

    missing = []
    for sub in _stdlib_submodules():
        if sub in INTERNAL_SUBMODULES:
            continue
        std = importlib.import_module(f"multiprocessing.{sub}")
        names = getattr(std, "__all__", None)
        assert names is not None, f"multiprocessing.{sub} has no __all__: say what counts"
        ours = importlib.import_module(f"multitask.{sub}")
        missing += [f"multitask.{sub}.{n}" for n in names if not hasattr(ours, n)]
    assert not missing, missing


def test_internal_submodules_are_still_internal():
    """The exclusions above must name real stdlib modules (a rename would hide a gap)."""
    assert set(INTERNAL_SUBMODULES) <= set(_stdlib_submodules())


def test_thread_pool_and_dummy_pool_are_multitask_thread_pools():
    from multitask.dummy import Pool as DummyPool
    from multitask.pool import ThreadPool

    with ThreadPool(2) as tp:
        assert tp.map(abs, [-1, -2]) == [1, 2]
        assert tp.statistics().backend == "thread"
    with DummyPool(2) as dp:
        assert isinstance(dp, ThreadPool)
        assert dp.apply(abs, (-3,)) == 3
