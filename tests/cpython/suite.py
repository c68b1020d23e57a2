"""The test classes of CPython's multiprocessing suite, built for one target and start method.

A real module (spawned and forkserver children import it to unpickle the tests' methods), which
builds itself from ``MT_CPYTHON_TARGET`` (``stdlib`` or ``multitask``), ``MT_CPYTHON_METHOD``
and ``MT_CPYTHON_TYPES`` (set by ``python -m cpython``; children inherit them), binding the
mixins to multitask first when asked.
"""

from __future__ import annotations

import inspect
import os
import types
from typing import Any

import test._test_multiprocessing as T

TARGET = os.environ.get("MT_CPYTHON_TARGET", "stdlib")
METHOD = os.environ.get("MT_CPYTHON_METHOD", "fork")
TYPES = os.environ.get("MT_CPYTHON_TYPES", "processes,manager").split(",")


def bind_multitask() -> None:
    """Point the suite's process- and manager-type mixins at multitask's objects."""
    import multitask
    import multitask.connection
    import multitask.shared_memory

    for name, value in list(vars(T.ProcessesMixin).items()):
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
    # The shared-memory tests use the module's global ``shared_memory``: multitask's twin.
    T.shared_memory = multitask.shared_memory
    T.ManagerMixin.Process = multitask.Process

    def set_up_class(cls: Any) -> None:   # T.ManagerMixin (the suite's, untyped) or a subclass
        T.BaseMixin.setUpClass.__func__(cls)
        cls.manager = multitask.Manager()

    T.ManagerMixin.setUpClass = classmethod(set_up_class)


if TARGET == "multitask":
    bind_multitask()
if "only_type" in inspect.signature(T.install_tests_in_module_dict).parameters:
    for _type in TYPES:
        T.install_tests_in_module_dict(globals(), METHOD, only_type=_type)
    T.install_tests_in_module_dict(globals(), METHOD, exclude_types=True)
else:   # Python 3.10: it installs every type; drop the classes of the types not asked for
    T.install_tests_in_module_dict(globals(), METHOD)
    for _name, _obj in list(globals().items()):
        if isinstance(_obj, type) and any(
                issubclass(_obj, getattr(T, t.capitalize() + "Mixin"))
                for t in {"processes", "threads", "manager"} - set(TYPES)):
            del globals()[_name]

if TARGET == "multitask":
    _stdlib_set_up = globals()["setUpModule"]

    def setUpModule() -> None:
        """The suite's set-up sets the *stdlib's* start method; a program that changed its
        import sets multitask's (``mp.set_start_method``), so the processes multitask starts
        use the method under test, not multitask's default."""
        import multitask

        _stdlib_set_up()
        multitask.set_start_method(METHOD, force=True)
        multitask.set_forkserver_preload(T.PRELOAD)
