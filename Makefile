# The two commands a newcomer needs are `make demo` and `make test`; both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the package definition or the C transport changes.
DEPS   := pyproject.toml src/multitask/_core/_ringbuf.c

.PHONY: demo test lint typecheck pytest bench bytecode clean install soak cpython-suite

$(VENV)/.installed-dev: $(DEPS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory bytecode
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(VENV)/.installed-dev

demo: $(VENV)/.installed-dev
	$(BIN)/python -m multitask demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

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

bench: $(VENV)/.installed-bench bytecode
	$(BIN)/python benchmarks/run.py

# An editable install leaves the sources uncompiled, and PYTHONDONTWRITEBYTECODE (set on some
# machines) stops Python from caching them: every process would recompile multitask on import
# (~40 ms), which start-up benchmarks would count.  compileall writes the caches regardless.
bytecode:
	$(BIN)/python -m compileall -q src/multitask

clean:
	rm -rf $(VENV) build src/*.egg-info src/multitask/_core/*.so
