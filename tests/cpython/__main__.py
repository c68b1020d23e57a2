"""Run CPython's ``test._test_multiprocessing`` against the stdlib or multitask; see __init__.

    python -m cpython --target multitask --method fork --json out.json [--types processes]

Exit status 0 when the run completed (whatever its failures: comparing is compare.py's job), 2
when the interpreter has no ``test`` package.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
import unittest


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
        import test._test_multiprocessing
    except ImportError as exc:
        print(f"this interpreter has no test package ({exc}); install python3-test or use a "
              "python.org/pyenv build", file=sys.stderr)
        return 2
    os.environ["MT_CPYTHON_TARGET"] = args.target   # children (spawn) build the same module
    os.environ["MT_CPYTHON_METHOD"] = args.method
    os.environ["MT_CPYTHON_TYPES"] = args.types
    import importlib

    module = importlib.import_module("cpython.suite")
    waits = []
    if args.target == "multitask":
        from .compare import load_allowlist

        waits = [p for p, reason in load_allowlist() if reason.startswith("[waits]")]
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for _name, obj in sorted(vars(module).items()):
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase):
            for test in loader.loadTestsFromTestCase(obj):
                assert isinstance(test, unittest.TestCase)   # a TestCase's suite holds no suites
                if any(fnmatch.fnmatchcase(test.id(), p) for p in waits):
                    continue   # see allowlist.txt: "[waits]"
                if args.pattern is None or args.pattern in test.id():
                    suite.addTest(test)
    module.setUpModule()
    t0 = time.monotonic()
    try:
        # typeshed types resultclass as taking the raw stream; the runner passes its wrapper of
        # it (_WritelnDecorator), which is what TextTestResult's __init__ is typed to take.
        runner = unittest.TextTestRunner(resultclass=_Recorder,  # type: ignore[arg-type]
                                         verbosity=0, stream=sys.stderr)
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
