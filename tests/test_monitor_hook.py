"""multitask.monitor._hook: registrations are queued until the registry is loaded, then handed over.

Each test runs in a fresh interpreter: the hook's state is per program (and the registry may
already be loaded in the test process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import gc, os, sys
from multitask.monitor import _hook

class Child:                      # anything with an int pid, weakly referenceable
    def __init__(self, pid, name):
        self.pid, self.name = pid, name

def handed_over():
    t = _hook._thread
    assert t is not None
    t.join(10)
    assert not t.is_alive()
    from multitask.monitor import registry
    return sorted(rec.name for _, rec in registry._default._procs.values())
"""


def _run(body: str, env: dict[str, str] | None = None) -> str:
    import os

    code = PRELUDE + textwrap.dedent(body)
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=full_env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_registration_is_queued_then_handed_over_after_the_delay():
    out = _run("""
        a = Child(os.getpid(), "kept")
        _hook.register_process(a)
        assert "multitask.monitor.registry" not in sys.modules   # nothing loaded at start-up
        _hook.notify()                                          # a no-op until then
        print(handed_over())
        _hook.unregister(a)                                     # now goes straight through
        from multitask.monitor import registry
        print(len(registry._default._procs))
    """)
    assert out.splitlines() == ["['kept']", "0"]


def test_gone_or_unregistered_before_the_hand_over_is_never_published():
    out = _run("""
        keep, gone, dropped = (Child(os.getpid(), n) for n in ("keep", "gone", "dropped"))
        for c in (keep, gone, dropped):
            _hook.register_process(c)
        _hook.unregister(dropped)
        del gone
        gc.collect()
        print(handed_over())
    """)
    assert out == "['keep']"


@pytest.mark.parametrize("value", ["0", "off"])
def test_disabled_registry_starts_no_thread(value):
    out = _run("""
        _hook.register_process(Child(os.getpid(), "x"))
        print(_hook._thread, "multitask.monitor.registry" in sys.modules)
    """, env={"MULTITASK_REGISTRY": value})
    assert out == "None False"


def test_deferred_registration_waits_for_start_pending():
    out = _run("""
        first, second = Child(os.getpid(), "first"), Child(os.getpid(), "second")
        _hook.register_process(first, deferred=True)
        started_by_register = _hook._thread is not None
        _hook.start_pending()
        # registered while the hand-over thread waits: handed over with the first
        _hook.register_process(second, deferred=True)
        print(started_by_register, handed_over())
    """)
    assert out == "False ['first', 'second']"


def test_start_pending_without_registrations_starts_nothing():
    out = _run("""
        _hook.start_pending()
        print(_hook._thread)
    """)
    assert out == "None"


def test_a_pool_is_handed_over_by_its_watcher_not_by_pool():
    # Pool() itself starts only the watcher thread; the registry's hand-over thread is
    # started from there (a thread start costs the caller ~1-3 ms on a busy 2-core machine).
    out = _run("""
        import threading
        import multitask
        started = []
        real_start = threading.Thread.start
        def start(self):
            started.append((self.name, threading.current_thread().name))
            real_start(self)
        threading.Thread.start = start
        pool = multitask.get_context("fork").Pool(2, name="handed")
        from_pool_call = [n for n, by in started if by == "MainThread"]
        queued = sorted(what for what, _, _ in _hook._queued.values())
        assert pool.apply(abs, (-3,)) == 3
        pool.close()
        pool.join()     # the watcher has ended: it started the hand-over thread before
        print(from_pool_call, queued, dict(started)["multitask-registry-start"])
    """)
    assert out == ("['multitask-watcher'] ['register_pool', 'register_process'] "
                   "multitask-watcher")
