# The two commands a newcomer needs are `make demo` and `make test`; both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the package definition or the C transport changes.
DEPS   := pyproject.toml src/multitask/_core/_ringbuf.c

.PHONY: demo test lint typecheck pytest bench bytecode clean install soak cpython-suite matrix \
        matrix-short matrix-one cpython-futures

$(VENV)/.installed-dev: $(DEPS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	$(MAKE) --no-print-directory bytecode
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,bench]'
	touch $@

install: $(VENV)/.installed-dev

demo: $(VENV)/.installed-dev
	$(BIN)/python -m multitask demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples

# Two passes: src/ strict ([tool.mypy] in pyproject.toml), then tests/ with check_untyped_defs
# (tests/mypy.ini: test bodies are checked against the typed API, without annotating every test).
typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy
	$(BIN)/mypy --config-file tests/mypy.ini

# Two pytest processes: the Ray-backed tests run on their own, because a process that has been a
# Ray driver must not fork the children the other tests start (tests/conftest.py, marker "ray").
pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not ray"
	$(BIN)/python -m pytest -m ray

test: lint typecheck pytest

# The long soak (issue #16): random seeds for SOAK_MINUTES; `make soak SEED=n` replays one run
# (add SOAK_SCALE=short SOAK_KIND=fork to replay a failure of tests/test_soak.py).  make test
# runs the short form (tests/test_soak.py).
SOAK_MINUTES ?= 30
SOAK_SCALE   ?= long
soak: $(VENV)/.installed-dev
	PYTHONPATH=tests $(BIN)/python -m soak --scale $(SOAK_SCALE) \
	    $(if $(SEED),--seed $(SEED),--minutes $(SOAK_MINUTES)) $(if $(SOAK_KIND),--kind $(SOAK_KIND))

# CPython's own multiprocessing suite (test._test_multiprocessing of this interpreter), on the
# stdlib and on multitask, for every start method; compared against tests/cpython/allowlist.txt.
CPYTHON_METHODS ?= fork spawn forkserver
cpython-suite: $(VENV)/.installed-dev
	mkdir -p build
	cd tests && for m in $(CPYTHON_METHODS); do for t in stdlib multitask; do \
	    ../$(BIN)/python -m cpython --target $$t --method $$m --json ../build/cpython-$$t-$$m.json \
	    2> ../build/cpython-$$t-$$m.log || exit 1; done; done
	cd tests && ../$(BIN)/python -m cpython.compare ../build/cpython-*.json
	$(MAKE) --no-print-directory cpython-futures

# CPython's concurrent.futures suite (issue #18): the process-pool tests of this interpreter's
# test.test_concurrent_futures (tests/cpython/futures_suite.py), on the stdlib and on
# multitask.futures, for every start method; compared against tests/cpython/allowlist-futures.txt.
# $(call futures_runs,PYTHON,METHODS,NAME): its JSON and logs in build/NAME-<target>-<method>.*;
# an interpreter whose test package has no test_concurrent_futures (a partial one, as pyenv's
# 3.11.7 and 3.12.1 on the project's machine) is reported and skipped.
futures_runs = cd tests && if ! ../$(1) -c 'import test.test_concurrent_futures' 2>/dev/null; \
    then echo "CPython's concurrent.futures suite skipped: the test package of $(1) has no" \
    "test_concurrent_futures"; else for m in $(2); do for t in stdlib multitask; do \
    ../$(1) -m cpython --suite futures --target $$t --method $$m --json \
    ../build/$(3)-$$t-$$m.json 2> ../build/$(3)-$$t-$$m.log || { echo "$(3) $$t $$m failed:" \
    "see build/$(3)-$$t-$$m.log"; exit 1; }; done; done; \
    ../$(1) -m cpython.compare $(foreach m,$(2),../build/$(3)-*-$(m).json); fi
cpython-futures: $(VENV)/.installed-dev
	mkdir -p build
	$(call futures_runs,$(BIN)/python,$(CPYTHON_METHODS),futures)

# Every supported Python (issue #17): for each of MATRIX_PYTHONS that is installed -- python3.X on
# PATH if it runs (a pyenv shim may name a version that is not selected), else a pyenv build --
# a venv .venv-3.X with .[dev] (no Ray: the optional extra), then on that interpreter pytest
# -m "not ray", CPython's multiprocessing suite under fork and its concurrent.futures suite under
# fork, spawn and forkserver, stdlib against multitask (tests/cpython; JSON and logs in build/).  pytest's own copy of that comparison (tests/test_cpython_suite.py) is
# deselected there, since the harness just ran it.  A version that is not installed is reported
# and skipped; the first failure stops the run.  The editable installs share src/: each
# interpreter builds and imports its own _ringbuf.cpython-3X-*.so.
MATRIX_PYTHONS ?= 3.10 3.11 3.12 3.13
PYENV_ROOT     ?= $(HOME)/.pyenv
comma := ,
python_for = $(firstword $(foreach p,$(shell command -v python$(1) 2>/dev/null) \
    $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python),$(if $(filter True,$(shell $(p) -c \
    'import sys; print(sys.version_info[:2] == ($(subst .,$(comma),$(1))))' 2>/dev/null)),$(p))))
matrix_found = $(foreach v,$(MATRIX_PYTHONS),$(if $(call python_for,$(v)),$(v)))
matrix_missing = $(filter-out $(matrix_found),$(MATRIX_PYTHONS))
default_version = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

.venv-%/.installed-dev: $(DEPS)
	@py="$(call python_for,$*)"; [ -n "$$py" ] || { echo "Python $* is not installed"; exit 1; }; \
	    echo "$@: $$py"; set -x; $$py -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[dev]'
	.venv-$*/bin/python -m compileall -q src/multitask
	touch $@

# One interpreter of the matrix: MATRIX_V=3.X, MATRIX_PYTEST=<pytest arguments>.  The
# concurrent.futures suite runs for every start method (issue #18: ~1 min per method and target).
MATRIX_FUTURES_METHODS ?= fork spawn forkserver
MATRIX_PYTEST ?= -m "not ray" --deselect tests/test_cpython_suite.py
matrix-one: .venv-$(MATRIX_V)/.installed-dev
	@.venv-$(MATRIX_V)/bin/python -c 'import sys, multitask._core._ringbuf as r; \
	    tag = "cpython-%d%d" % sys.version_info[:2]; assert tag in r.__file__, r.__file__; \
	    print("Python", sys.version.split()[0], "imports", r.__file__.rsplit("/", 1)[1])'
	mkdir -p build
	cd tests && for t in stdlib multitask; do ../.venv-$(MATRIX_V)/bin/python -m cpython \
	    --target $$t --method fork --json ../build/matrix-$(MATRIX_V)-$$t-fork.json \
	    2> ../build/matrix-$(MATRIX_V)-$$t-fork.log || exit 1; done
	cd tests && ../.venv-$(MATRIX_V)/bin/python -m cpython.compare \
	    ../build/matrix-$(MATRIX_V)-*-fork.json
	$(call futures_runs,.venv-$(MATRIX_V)/bin/python,$(MATRIX_FUTURES_METHODS),matrix-futures-$(MATRIX_V))
	.venv-$(MATRIX_V)/bin/python -m pytest -q $(MATRIX_PYTEST)

matrix:
	@$(foreach v,$(matrix_missing),echo "matrix: Python $(v) is not installed; skipped";)
	@[ -n "$(matrix_found)" ] || { echo "matrix: none of $(MATRIX_PYTHONS) is installed"; exit 1; }
	@set -e; for v in $(matrix_found); do echo "=== matrix: Python $$v ==="; \
	    $(MAKE) --no-print-directory matrix-one MATRIX_V=$$v; done
	@echo "matrix: passed on $(matrix_found)$(if $(matrix_missing), (not installed: $(matrix_missing)))"

# The short form .ci/run runs after make test: every installed version but the one make test
# used, each with CPython's suite under fork and a subset of our modules that covers each layer
# (the C ring, queues, processes, pools and their faults, managers, the public API's exports).
MATRIX_SHORT_TESTS ?= tests/test_ring.py tests/test_queues.py tests/test_process.py \
    tests/test_pool.py tests/test_pool_faults.py tests/test_managers.py tests/test_exports.py \
    tests/test_context.py tests/test_synchronize.py tests/test_sharedctypes.py
matrix-short:
	@$(MAKE) --no-print-directory matrix \
	    MATRIX_PYTHONS="$(filter-out $(default_version),$(MATRIX_PYTHONS))" \
	    MATRIX_PYTEST='-m "not ray" $(MATRIX_SHORT_TESTS)'

bench: $(VENV)/.installed-bench bytecode
	$(BIN)/python benchmarks/run.py

# An editable install leaves the sources uncompiled, and PYTHONDONTWRITEBYTECODE (set on some
# machines) stops Python from caching them: every process would recompile multitask on import
# (~40 ms), which start-up benchmarks would count.  compileall writes the caches regardless.
bytecode:
	$(BIN)/python -m compileall -q src/multitask

clean:
	rm -rf $(VENV) .venv-3.* build src/*.egg-info src/multitask/_core/*.so
