"""Run CPython's ``test._test_multiprocessing`` against the stdlib or multitask; see __init__.

    python -m cpython --target multitask --method fork --json out.json [--types processes]

Exit status 0 when the run completed (whatever its failures: comparing is compare.py's job), 2
when the interpreter has no ``test`` package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
import unittest


def bind_multitask(T: types.ModuleType) -> None:
    """Point the suite's process- and manager-type mixins at multitask's objects."""
    import multitask
    import multitask.connection

    for name, value in vars(T.ProcessesMixin).items():
        if name.startswith("_") or name == "TYPE":
            continue
        ours = getattr(multitask, name, None)
        if ours is None:
            continue
        if isinstance(value, staticmethod):
            setattr(T.ProcessesMixin, name, staticmethod(ours))
        elif isinstance(value, (type, types.ModuleType)):
            setattr(T.ProcessesMixin, name, ours)
    T.ProcessesMixin.connection = multitask.connection
    T.ManagerMixin.Process = multitask.Process

    def setUpClass(cls):
        T.BaseMixin.setUpClass.__func__(cls)
        cls.manager = multitask.Manager()

    T.ManagerMixin.setUpClass = classmethod(setUpClass)


class _Recorder(unittest.TextTestResult):
    outcomes: dict[str, str] = {}

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = "fail"

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[getattr(test, "id", lambda: str(test))()] = "error"

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcomes[test.id()] = "xfail"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes[test.id()] = "xpass"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cpython")
    ap.add_argument("--target", choices=("stdlib", "multitask"), required=True)
    ap.add_argument("--method", choices=("fork", "spawn", "forkserver"), required=True)
    ap.add_argument("--types", default="processes,manager",
                    help="comma-separated test types: processes, manager, threads")
    ap.add_argument("--json", required=True)
    ap.add_argument("-k", dest="pattern", default=None, help="only tests whose id contains it")
    args = ap.parse_args(argv)
    try:
        import test._test_multiprocessing as T
    except ImportError as exc:
        print(f"this interpreter has no test package ({exc}); install python3-test or use a "
              "python.org/pyenv build", file=sys.stderr)
        return 2
    if args.target == "multitask":
        bind_multitask(T)
    module = types.ModuleType("cpython_suite")
    sys.modules["cpython_suite"] = module
    wanted = set(args.types.split(","))
    for type_ in wanted:
        T.install_tests_in_module_dict(vars(module), args.method, only_type=type_)
    # the module-level tests (not per type) once
    T.install_tests_in_module_dict(vars(module), args.method, exclude_types=True)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for _name, obj in sorted(vars(module).items()):
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase):
            for test in loader.loadTestsFromTestCase(obj):
                if args.pattern is None or args.pattern in test.id():
                    suite.addTest(test)
    module.setUpModule()
    t0 = time.monotonic()
    try:
        runner = unittest.TextTestRunner(resultclass=_Recorder, verbosity=0, stream=sys.stderr)
        runner.run(suite)
    finally:
        module.tearDownModule()
    with open(args.json, "w") as f:
        json.dump({"target": args.target, "method": args.method, "python": sys.version,
                   "seconds": time.monotonic() - t0, "outcomes": _Recorder.outcomes}, f,
                  indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
