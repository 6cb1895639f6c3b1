# TuneScout: `make run` serves the API, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)
CACHE := .cache
CORPUS := $(CACHE)/corpus_small
QUERIES := $(CACHE)/queries_guard

.PHONY: run test venv system-deps corpus servers bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: system-deps $(VENV)/.installed

system-deps:
	@bash scripts/install_system_deps.sh

run: venv
	$(PY) -m tunescout serve --host 127.0.0.1 --port $${TUNESCOUT_PORT:-5000}

$(CORPUS)/tracks.csv:
	CORPUS_PACKAGES=drascula-music bash $(SHARED)/corpus/fetch_corpus.sh $(abspath $(CORPUS))
	rm -rf $(CORPUS)/debs

$(QUERIES)/ground_truth.csv: $(CORPUS)/tracks.csv
	$(PY) $(SHARED)/corpus/make_queries.py --tracks $(CORPUS)/tracks --out $(QUERIES) \
	    --seed 7 --lengths 1,5 --degradations clean,noise0 --max-tracks 16 --auto-negatives 6 --jobs 2

corpus: venv $(QUERIES)/ground_truth.csv

servers:
	@bash scripts/start_servers.sh

test: venv corpus servers
	TUNESCOUT_REQUIRE_ALL=$${TUNESCOUT_REQUIRE_ALL:-1} $(PY) -m pytest -q tests

bench: venv
	$(PY) bench/quality.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CACHE) data
