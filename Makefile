# TuneScout: `make run` serves the API, `make test` runs the whole suite, `make lint` checks style.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
# Test music: tracks of Debian's drascula-music, and query clips cut from them.
CORPUS := $(CACHE)/corpus_small
QUERIES := $(CACHE)/queries_guard
CLIP_ARGS := --seed 1 --lengths 1,5 --degradations clean,noise0 --queried-tracks 16 --negatives 6 --jobs 2

.PHONY: run test lint check-package venv system-deps corpus servers bench clean

# Pins from requirements-dev.txt; installing the project with them in one step checks that the
# ranges in pyproject.toml admit the pinned versions.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -e ".[dev]"
	touch $@

venv: system-deps $(VENV)/.installed

system-deps:
	@bash scripts/install_system_deps.sh

run: venv
	$(PY) -m tunescout serve --host 127.0.0.1 --port $${TUNESCOUT_PORT:-5000}

$(CORPUS)/tracks.csv: scripts/fetch_test_music.py
	$(PYTHON) scripts/fetch_test_music.py $(CORPUS)

$(QUERIES)/ground_truth.csv: $(CORPUS)/tracks.csv scripts/make_test_clips.py | $(VENV)/.installed
	$(PY) scripts/make_test_clips.py $(CORPUS) $(QUERIES) $(CLIP_ARGS)

corpus: venv $(QUERIES)/ground_truth.csv

servers:
	@bash scripts/start_servers.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A wheel of the tree, installed with its base dependencies only into a fresh venv, serves /api/health.
check-package: venv
	bash scripts/check_package.sh $(PY)

test: venv corpus servers
	TUNESCOUT_REQUIRE_ALL=$${TUNESCOUT_REQUIRE_ALL:-1} $(PY) -m pytest -q tests

# BENCH_ARGS names the clips, e.g. a bigger set made with the same two scripts:
#   python3 scripts/fetch_test_music.py /tmp/music --package drascula-music --package singularity-music
#   .venv/bin/python scripts/make_test_clips.py /tmp/music /tmp/clips --lengths 1,2,5,10 --queried-tracks 30
#   make bench BENCH_ARGS="--queries /tmp/clips"
bench: venv
	$(PY) bench/quality.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CACHE) data
