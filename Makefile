# `make run` and `make test` set everything up on a fresh machine, then do their job.
# torch and torchvision are pinned by constraints.txt so set-up never downloads another build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opscope-installed
BENCH_STAMP := $(VENV)/.opscope-bench-installed

.PHONY: run test clean bench-overhead bench-peers bench-zoo bench-memory bench-training

run: $(STAMP)
	$(VENV)/bin/opscope profile resnet18

test: $(STAMP)
	$(PY) -m pytest

# Benchmarks (benchmarks/README.md): each prints a table of ratios measured in one run.
bench-overhead: $(STAMP)
	$(PY) benchmarks/overhead.py

bench-peers: $(BENCH_STAMP)
	$(PY) benchmarks/peers.py

bench-zoo: $(STAMP)
	$(PY) benchmarks/zoo.py --cpu

bench-memory: $(STAMP)
	$(PY) benchmarks/memory.py

bench-training: $(STAMP)
	$(PY) benchmarks/training.py

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev,plot,pandas,timm,hf,bench]'
	touch $(BENCH_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev,plot,pandas,timm,hf]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
