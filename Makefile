# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv, install the package, its test tools and the offline assets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxinterp-installed
# data sets kept as plain files (SST-2, AG News): the shared data folder beside the checkout, unless set already
JAXINTERP_DATA ?= $(abspath ../shared/data)
export JAXINTERP_DATA

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
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) .cache results
