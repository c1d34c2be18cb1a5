# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv, install the package, its test tools and the offline assets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxinterp-installed
# data sets kept as plain files (SST-2, AG News): the shared data folder beside the checkout, unless set already
JAXINTERP_DATA ?= $(abspath ../shared/data)
export JAXINTERP_DATA

# jaxlib 0.10's CPU compiler has crashed a test worker (a segmentation fault inside XLA's compile or its executable
# serialisation) a few times in the thousands of programs a test run compiles, late in a long-lived worker, never the
# same test twice. A crashed test runs once more on a fresh worker; an ordinary failure is never rerun.
CRASH_RERUN := --reruns 1 --only-rerun "crashed while running"

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m jaxinterp assets install all
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m jaxinterp demo

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q $(CRASH_RERUN)

clean:
	rm -rf $(VENV) .cache results
