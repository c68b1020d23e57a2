"""Contexts: start methods, the default, and every public name bound to a context."""

from __future__ import annotations

import multiprocessing

import pytest

import multitask
from multitask import context as mtcontext
from multitask import queues as mtqueues

_METHODS = ["Process", "current_process", "parent_process", "active_children", "cpu_count",
            "Pipe", "Queue", "SimpleQueue", "JoinableQueue", "Pool", "Manager", "Lock", "RLock",
            "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier", "Value", "Array",
            "RawValue", "RawArray", "freeze_support", "get_logger", "log_to_stderr",
            "set_executable", "set_forkserver_preload", "allow_connection_pickling"]


@pytest.mark.parametrize("name", _METHODS)
def test_context_has_every_method(ctx, name):
    assert callable(getattr(ctx, name))
    assert callable(getattr(multitask, name))


def test_get_context_per_method(ctx, start_method):
    assert ctx.get_start_method() == start_method
    assert multitask.get_context(start_method) is ctx
    assert ctx.get_context() is ctx
    assert issubclass(ctx.Process, multitask.Process)
    assert issubclass(ctx.Process, multiprocessing.process.BaseProcess)
    assert ctx.Process._start_method == start_method


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown start method 'threads'"):
        multitask.get_context("threads")
    with pytest.raises(TypeError):
        multitask.get_context(3)  # type: ignore[call-overload]


def test_all_start_methods():
    methods = multitask.get_all_start_methods()
    assert methods[0] == "fork"
    assert set(methods) == {"fork", "spawn", "forkserver"}


def test_default_context_set_once():
    default = mtcontext.DefaultContext(mtcontext._concrete_contexts["fork"])
    assert default.get_start_method(allow_none=True) is None
    default.set_start_method("spawn")
    assert default.get_start_method() == "spawn"
    assert default.get_context().get_start_method() == "spawn"
    with pytest.raises(RuntimeError, match="already been set"):
        default.set_start_method("fork")
    default.set_start_method("forkserver", force=True)
    assert default.get_start_method() == "forkserver"
    default.set_start_method(None, force=True)
    assert default.get_start_method(allow_none=True) is None
    with pytest.raises(ValueError):
        default.set_start_method("bogus")


def test_concrete_context_refuses_set_start_method(ctx):
    with pytest.raises(ValueError, match="concrete context"):
        ctx.set_start_method("fork")


def test_module_default_is_fork():
    assert multitask.get_start_method() == "fork"
    assert multitask.get_context().get_start_method() == "fork"


def test_cpu_count_matches_core(ctx):
    from multitask._core._spawn import cpu_count

    assert ctx.cpu_count() == cpu_count() >= 1


def test_contexts_pickle_to_themselves(ctx):
    import pickle

    assert pickle.loads(pickle.dumps(ctx)) is ctx


def test_misc_bad_input():
    with pytest.raises(TypeError):
        multitask.set_executable(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        multitask.set_forkserver_preload("multitask")
    assert multitask.get_logger() is multiprocessing.get_logger()
    multitask.freeze_support()
    multitask.allow_connection_pickling()


def test_queue_and_pool_delegate_with_context(ctx):
    q = ctx.Queue(3)
    try:
        assert isinstance(q, mtqueues.Queue)
        q.put(1)
        assert q.get(timeout=10) == 1
    finally:
        q.close()
        q.join_thread()


def _report_start_method(q):
    q.put(multitask.get_start_method(allow_none=True))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_inherits_its_parents_default_start_method(method):
    """As the stdlib (whose spawn preparation data carries it): without this a spawned child's
    own processes would start by multitask's default (fork) instead of the method chosen."""
    saved = multitask.get_start_method(allow_none=True)
    multitask.set_start_method(method, force=True)
    try:
        q = multitask.Queue()
        p = multitask.Process(target=_report_start_method, args=(q,))
        p.start()
        assert q.get(timeout=60) == method
        p.join(60)
        assert p.exitcode == 0
        q.close()
    finally:
        multitask.set_start_method(saved, force=True)
