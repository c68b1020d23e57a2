"""CPython's own multiprocessing test suite, run against multitask (issue #17).

``python -m cpython --target multitask --method fork`` (with ``tests`` on ``sys.path``; ``make
cpython-suite`` runs every target and method and compares them) imports
``test._test_multiprocessing`` from the running interpreter's ``test`` package -- never a copy --
binds its ``processes`` and ``manager`` test mixins to multitask, builds the test classes with
CPython's own ``install_tests_in_module_dict`` and runs them, writing one outcome per test.
"""
