# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv, install the package, its test tools and the offline assets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxinterp-installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m jaxinterp assets install all
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m jaxinterp demo

test: install
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) .cache results
