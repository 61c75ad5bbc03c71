# `make run` and `make test` set everything up on a fresh machine, then do their job.
# torch and torchvision are pinned by constraints.txt so set-up never downloads another build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opscope-installed

.PHONY: run test clean

run: $(STAMP)
	$(VENV)/bin/opscope profile resnet18

test: $(STAMP)
	$(PY) -m pytest

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
