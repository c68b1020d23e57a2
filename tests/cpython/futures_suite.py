"""The process-pool tests of CPython's concurrent.futures suite, for one target and start method.

Imports ``test.test_concurrent_futures`` from the running interpreter's ``test`` package -- never
a copy: on 3.10 and 3.11 one module, on 3.12+ a package whose ``test_*`` submodules hold the
tests and whose ``util`` holds the executor mixins -- and selects the test classes built on the
process-pool mixin of ``MT_CPYTHON_METHOD`` (``ProcessPoolForkMixin``, ``ProcessPoolSpawnMixin``
or ``ProcessPoolForkserverMixin``; on every version most of them are made by
``create_executor_tests``), plus the process-pool tests written without a mixin (``OTHERS``).
The thread-pool and ``Future`` tests are not selected: they do not involve a process pool.

With ``MT_CPYTHON_TARGET=multitask`` (set by ``python -m cpython --suite futures``) the classes are
bound to ``multitask.futures.ProcessPoolExecutor`` first, everywhere a test makes a process pool:

- the three mixins' ``executor_type`` (the generated classes inherit it); the tests still pass
  the *stdlib's* context (``mp_context=self.get_context()``), as a ported program may;
- the module global ``futures`` of each test module becomes a view of ``concurrent.futures``
  whose ``ProcessPoolExecutor`` is multitask's (some tests call ``futures.ProcessPoolExecutor``
  directly), everything else -- ``wait``, ``as_completed``, ``process.BrokenProcessPool``,
  ``process._ExecutorManagerThread`` -- being the stdlib's own;
- the tests that run a child interpreter (``assert_python_ok``, code that says ``from
  concurrent.futures import ProcessPoolExecutor``) get the same binding at the top of the child's
  code, as a program that changed its import would have.

``tests()`` returns the selected tests; their classes stay in CPython's modules, whose own
``setUpModule`` the unittest runner calls.  Spawned and forkserver workers import those modules
to unpickle the tests' functions: they need no binding (a worker only runs the function).
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import os
import pkgutil
import types
import unittest
from collections.abc import Callable
from typing import Any

TARGET = os.environ.get("MT_CPYTHON_TARGET", "stdlib")
METHOD = os.environ.get("MT_CPYTHON_METHOD", "fork")
MODULE = "test.test_concurrent_futures"

MIXINS = {"fork": "ProcessPoolForkMixin", "spawn": "ProcessPoolSpawnMixin",
          "forkserver": "ProcessPoolForkserverMixin"}
# Process-pool tests of the suite that are not built on a mixin: class -> {method: test}.
# FailingInitializerResourcesTest (3.12+, gh-104090) runs the spawn or forkserver
# FailingInitializer test class inside it (so: bound like them), then checks that the stdlib's
# resource tracker exits cleanly.
OTHERS = {"FailingInitializerResourcesTest": {"spawn": "test_spawn",
                                               "forkserver": "test_forkserver"}}


def modules() -> tuple[types.ModuleType, list[types.ModuleType]]:
    """The module that defines the mixins, and the modules that hold the tests."""
    top = importlib.import_module(MODULE)
    if not hasattr(top, "__path__"):   # 3.10, 3.11: a single module
        return top, [top]
    found = [importlib.import_module(f"{MODULE}.{info.name}")
             for info in pkgutil.iter_modules(top.__path__) if info.name.startswith("test_")]
    return importlib.import_module(f"{MODULE}.util"), sorted(found, key=lambda m: m.__name__)


class FuturesView(types.ModuleType):
    """``concurrent.futures`` with another ``ProcessPoolExecutor``; any other name is the
    stdlib's (looked up when used, so names imported later are there too)."""

    def __init__(self, executor: type) -> None:
        super().__init__(concurrent.futures.__name__)
        self.ProcessPoolExecutor = executor

    def __getattr__(self, name: str) -> Any:
        return getattr(concurrent.futures, name)


def child_prelude(executor: type) -> str:
    """The line put before a child interpreter's code: ``concurrent.futures``' executor is
    ``executor`` (under its own name too, which the tests format into the code)."""
    return (f"import concurrent.futures as _cf, {executor.__module__} as _mt; "
            f"_cf.ProcessPoolExecutor = _cf.{executor.__name__} = _mt.{executor.__qualname__}\n")


def bind_child(run: Callable[..., Any], executor: type) -> Callable[..., Any]:
    """``run`` (script_helper.assert_python_ok) with the executor bound in the ``-c`` code."""
    prelude = child_prelude(executor)

    @functools.wraps(run)
    def bound(*args: Any, **env: Any) -> Any:
        argv = list(args)
        if "-c" in argv[:-1]:
            i = argv.index("-c") + 1
            argv[i] = prelude + argv[i]
        return run(*argv, **env)

    return bound


def bind_multitask(mixins: types.ModuleType, tests: list[types.ModuleType]) -> type:
    """Point every process pool the selected tests make at multitask's executor."""
    from multitask.futures import ProcessPoolExecutor

    for name in MIXINS.values():
        getattr(mixins, name).executor_type = ProcessPoolExecutor
    view = FuturesView(ProcessPoolExecutor)
    for module in tests:
        if vars(module).get("futures") is concurrent.futures:
            module.futures = view   # type: ignore[attr-defined]
        run = vars(module).get("assert_python_ok")
        if callable(run):
            module.assert_python_ok = bind_child(run, ProcessPoolExecutor)  # type: ignore[attr-defined]
    return ProcessPoolExecutor


def tests(loader: unittest.TestLoader | None = None) -> list[unittest.TestCase]:
    """The selected tests, module by module (so each module's fixtures run once), then by class
    and test name."""
    from test import support

    support.verbose = False   # as under regrtest without -v (True only prints each test's time)
    loader = loader or unittest.TestLoader()
    mixins, test_modules = modules()
    executor = bind_multitask(mixins, test_modules) if TARGET == "multitask" else None
    mixin = getattr(mixins, MIXINS[METHOD])
    out: list[unittest.TestCase] = []
    for module in test_modules:
        for name, obj in sorted(vars(module).items()):
            if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                    and obj.__module__ == module.__name__):
                continue
            if issubclass(obj, mixin):
                # Never run the stdlib's executor under the multitask target unnoticed.
                assert executor is None or getattr(obj, "executor_type", None) is executor, obj
                names = None
            elif name in OTHERS:
                names = {OTHERS[name][METHOD]} if METHOD in OTHERS[name] else set()
            else:
                continue
            for test in loader.loadTestsFromTestCase(obj):
                assert isinstance(test, unittest.TestCase)   # a TestCase's suite holds no suites
                if names is None or test._testMethodName in names:
                    out.append(test)
    return out
