# make train / make test / make bench: each sets up .venv when missing and
# reinstalls only when setup.cfg or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

# Two workers, one per core; a test module stays on one worker, so its
# module-scoped runs are trained once.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
