"""Run one of CPython's suites against the stdlib or multitask; see __init__.

    python -m cpython --target multitask --method fork --json out.json [--types processes]
    python -m cpython --suite futures --target multitask --method fork --json out.json

``--suite multiprocessing`` (the default) is ``test._test_multiprocessing`` (cpython/suite.py);
``--suite futures`` the process-pool tests of ``test.test_concurrent_futures``
(cpython/futures_suite.py).  Exit status 0 when the run completed (whatever its failures:
comparing is compare.py's job), 2 when the interpreter's ``test`` package lacks the suite, 3 when
the run was abandoned because a test would not stop (``--test-timeout``; the JSON then has the
outcomes so far, that test's being "hang").
"""

from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import gc
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import unittest
from collections.abc import Callable

SUITES = {"multiprocessing": ("test._test_multiprocessing", "cpython.suite"),
          "futures": ("test.test_concurrent_futures", "cpython.futures_suite")}


class _Recorder(unittest.TextTestResult):
    outcomes: dict[str, str] = {}
    errors_text: dict[str, str] = {}   # the traceback of each failure or error (cut to 4000)
    watchdog: _Watchdog | None = None

    def startTest(self, test):
        super().startTest(test)
        if self.watchdog is not None:
            self.watchdog.start(test.id())

    def stopTest(self, test):
        if self.outcomes.get(test.id()) in ("fail", "error"):
            # A test that failed leaves its locals in a reference cycle (its traceback's frames
            # <-> an exception a Future holds), so a pool it never got to shut down runs on
            # until a collection -- into the module clean-up, whose resource_tracker._stop()
            # then waits for that pool's workers: one failure became a second one (a hang)
            # in the next fixture, on either target.  Collect it now, where it belongs.
            gc.collect()
        if self.watchdog is not None:   # what runs next: class and module fixtures, cleanups
            self.watchdog.start(f"fixtures after {test.id()}")
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = "fail"
        self.errors_text[test.id()] = "".join(traceback.format_exception(*err))[-4000:]

    def addError(self, test, err):
        super().addError(test, err)
        test_id = getattr(test, "id", lambda: str(test))()
        self.outcomes[test_id] = "error"
        self.errors_text[test_id] = "".join(traceback.format_exception(*err))[-4000:]

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcomes[test.id()] = "xfail"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes[test.id()] = "xpass"


class TestTimeout(Exception):
    """Raised in the main thread in a test that has run longer than ``--test-timeout``."""


# The watchdog's timer runs in a process of its own: a thread in the harness would change what it
# measures (multitask's Pool, under fork, starts its workers through the forkserver when a thread
# it does not own is running).  It reads "s <label>" (a test or its fixtures began) and "x" (the
# run ended) on stdin; it exits when that closes or the harness is gone.
_WATCHER = """
import os, select, sys, time
pid, seconds, dump, hit = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
label, deadline, strikes, buf = None, None, 0, b""
while os.getppid() == pid:
    wait = 5.0 if deadline is None else min(5.0, max(0.0, deadline - time.monotonic()))
    if select.select([0], [], [], wait)[0]:
        data = os.read(0, 65536)
        if not data:
            break
        *lines, buf = (buf + data).split(b"\\n")
        for line in lines:
            cmd, _, rest = line.partition(b" ")
            label, strikes = rest.decode(errors="replace"), 0
            deadline = time.monotonic() + seconds if cmd == b"s" else None
    elif deadline is not None and time.monotonic() >= deadline:
        strikes += 1
        sys.stderr.write(f"\\n=== --test-timeout: {label} has run {strikes * seconds:.0f} s; "
                         "every thread's stack:\\n")
        sys.stderr.flush()
        os.kill(pid, dump)
        time.sleep(0.5)
        os.kill(pid, hit)
        deadline = time.monotonic() + seconds
"""


class _Watchdog:
    """Stops a test that overruns ``seconds``: every thread's stack goes to stderr (faulthandler)
    and ``TestTimeout`` is raised in the main thread (the test's error, unless the test catches
    it); if the same test is still running ``seconds`` later that happens once more (its
    tear-down may hang too), and at a third time the run is given up: ``abandon(label)``.
    Between two tests it watches the class and module fixtures the same way (``fixtures after
    <test id>``: an error there is the fixture's, which compare.py counts as a regression).  The
    timer is a child process (_WATCHER) that signals this one; the signals are real-time ones
    that neither multitask nor the suites use."""

    DUMP = signal.SIGRTMIN + 7
    SIGNAL = signal.SIGRTMIN + 6

    def __init__(self, seconds: float, abandon: Callable[[str], None]) -> None:
        self.seconds = seconds
        self.abandon = abandon
        self.label = ""
        self.started = 0.0
        self.strikes = 0
        self.running = False
        faulthandler.register(self.DUMP, file=sys.stderr, all_threads=True, chain=False)
        signal.signal(self.SIGNAL, self._raise)
        read, self.pipe = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHER, str(os.getpid()), str(seconds), str(int(self.DUMP)),
             str(int(self.SIGNAL))], stdin=read)
        os.close(read)

    def _raise(self, signum, frame):
        # Not for a test that began as the signal came (the timer had not heard of it yet).
        if not self.running or time.monotonic() - self.started < 0.9 * self.seconds:
            return
        self.strikes += 1
        if self.strikes >= 3:
            self.abandon(self.label)
        raise TestTimeout(f"{self.label} still running after {self.strikes * self.seconds:.0f} s "
                          "(--test-timeout; every thread's stack is in the log)")

    def _send(self, line: str) -> None:
        try:
            os.write(self.pipe, (line.replace("\n", " ") + "\n").encode())
        except OSError:   # the timer is gone (killed): the run goes on unwatched
            pass

    def start(self, label: str) -> None:
        self.running = False
        self.label, self.started, self.strikes = label, time.monotonic(), 0
        self._send(f"s {label}")
        self.running = True

    def stop(self) -> None:
        self.running = False
        self._send("x")
        os.close(self.pipe)
        self.proc.wait()
        faulthandler.unregister(self.DUMP)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cpython")
    ap.add_argument("--suite", choices=tuple(SUITES), default="multiprocessing")
    ap.add_argument("--target", choices=("stdlib", "multitask"), required=True)
    ap.add_argument("--method", choices=("fork", "spawn", "forkserver"), required=True)
    ap.add_argument("--types", default="processes,manager",
                    help="comma-separated test types: processes, manager, threads")
    ap.add_argument("--json", required=True)
    ap.add_argument("-k", dest="pattern", default=None, help="only tests whose id contains it")
    ap.add_argument("-v", dest="verbosity", action="store_const", const=2, default=0,
                    help="name each test on stderr as it runs")
    ap.add_argument("--test-timeout", type=float, default=None, metavar="SECONDS",
                    help="stop a test that runs longer (see _Watchdog); 0: never. Default: "
                         "120 for --suite futures, 0 for multiprocessing")
    args = ap.parse_args(argv)
    tests_module, suite_module = SUITES[args.suite]
    try:
        __import__(tests_module)
    except ImportError as exc:
        print(f"this interpreter's test package has no {tests_module} ({exc}); install "
              "python3-test or use a python.org/pyenv build with its whole test suite",
              file=sys.stderr)
        return 2
    os.environ["MT_CPYTHON_TARGET"] = args.target   # children (spawn) build the same module
    os.environ["MT_CPYTHON_METHOD"] = args.method
    os.environ["MT_CPYTHON_TYPES"] = args.types
    import importlib

    module = importlib.import_module(suite_module)
    waits = []
    if args.target == "multitask":
        from .compare import ALLOWLISTS, load_allowlist

        waits = [p for p, reason in load_allowlist(ALLOWLISTS[args.suite])
                 if reason.startswith("[waits]")]
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    if args.suite == "multiprocessing":
        found: list[unittest.TestCase] = []
        for _name, obj in sorted(vars(module).items()):
            if isinstance(obj, type) and issubclass(obj, unittest.TestCase):
                for test in loader.loadTestsFromTestCase(obj):
                    assert isinstance(test, unittest.TestCase)   # a TestCase's suite holds none
                    found.append(test)
    else:   # the classes stay in CPython's modules, whose setUpModule the runner calls
        found = module.tests(loader)
    for test in found:
        if any(fnmatch.fnmatchcase(test.id(), p) for p in waits):
            continue   # see the allowlist: "[waits]"
        if args.pattern is None or args.pattern in test.id():
            suite.addTest(test)
    if args.suite == "multiprocessing":
        module.setUpModule()
    t0 = time.monotonic()

    def write(hung: str | None = None) -> None:
        outcomes = dict(_Recorder.outcomes)
        if hung is not None:
            outcomes[hung] = "hang"
        data = {"suite": args.suite, "target": args.target, "method": args.method,
                "python": sys.version, "seconds": time.monotonic() - t0, "outcomes": outcomes,
                "errors": _Recorder.errors_text}
        if hung is not None:
            data["abandoned_at"] = hung
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)

    def abandon(test: str) -> None:
        write(test)
        print(f"\n=== --test-timeout: {test} would not stop; run abandoned", file=sys.stderr,
              flush=True)
        os._exit(3)

    timeout = args.test_timeout
    if timeout is None:
        timeout = 120.0 if args.suite == "futures" else 0.0
    watchdog = _Recorder.watchdog = _Watchdog(timeout, abandon) if timeout > 0 else None
    hung = None
    try:
        # typeshed types resultclass as taking the raw stream; the runner passes its wrapper of
        # it (_WritelnDecorator), which is what TextTestResult's __init__ is typed to take.
        runner = unittest.TextTestRunner(resultclass=_Recorder,  # type: ignore[arg-type]
                                         verbosity=args.verbosity, stream=sys.stderr)
        runner.run(suite)
    except TestTimeout as exc:   # it came where unittest does not catch (between its steps)
        hung = watchdog.label if watchdog is not None else None
        print(f"\n=== {exc}: run abandoned", file=sys.stderr)
    finally:
        if watchdog is not None:
            watchdog.stop()
        if args.suite == "multiprocessing":
            module.tearDownModule()
    write(hung)
    return 0 if hung is None else 3


if __name__ == "__main__":
    sys.exit(main())
