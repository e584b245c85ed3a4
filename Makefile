# The two commands of the README: `make run` (the server) and `make test` (everything CI runs).
# Both set up .venv first, so they work on a fresh clone: `make run` with the server's locked
# dependencies only (requirements.txt), `make test` with the dev tools added to the same venv
# (requirements-dev.txt). Each stamp re-installs when its lock file changes; pip adds and
# changes packages but never removes one a lock dropped: `rm -rf .venv` for exactly the locks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-run run test lint format lock bench soak screenshots conformance

install-run: $(VENV)/.installed-run
install: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-run requirements.txt requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# The locks, from the top-level lists (requirements.in, requirements-dev.in). pip-compile keeps
# the versions already locked unless told otherwise: `make lock LOCK_FLAGS=--upgrade` (all), or
# `LOCK_FLAGS="--upgrade-package flask"`. Never run by the other targets: commit its output.
# The locks name no package index (pip's own configuration, or a platform's, decides where from).
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links $(LOCK_FLAGS)
lock: install
	$(PIP_COMPILE) -o requirements.txt requirements.in
	$(PIP_COMPILE) -o requirements-dev.txt requirements-dev.in

run: install-run
	$(BIN)/gunicorn -k gevent wsgi:app

test: install lint
	$(BIN)/python -m pytest

# ruff, and the import contracts of pyproject.toml (the walls between the realtime layer and the chat).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmark sitting behind the README's figures (about 30 minutes; server on CPU 0, load on CPU 1).
# Fan-out and latency are driven by bench/loadgen (C), the other modes by bench/load.py.
bench: install bench/loadgen
	$(BIN)/python bench/run.py fanout --n 1000 --servers plain,chat,chat-redis,chat-redis-2w --generator c
	$(BIN)/python bench/run.py fanout --n 100 --servers plain,chat --generator c
	$(BIN)/python bench/run.py ingest --n 100 --servers chat --generator c
	$(BIN)/python bench/run.py latency --n 1000 --rate 20 --generator c
	$(BIN)/python bench/run.py storm --n 1000 --servers plain,chat+echo,chat
	taskset -c 1 $(BIN)/python bench/storm_pair.py 3000
	$(BIN)/python bench/run.py flood --rate 10 --servers chat,chat+limits
	$(BIN)/python bench/run.py idle --n 5000 --room-size 0
	$(BIN)/python bench/run.py idle --n 10000 --room-size 0
	$(BIN)/python bench/run.py fanout --n 1000 --servers plain+deflate,chat+deflate
	$(BIN)/python bench/run.py rooms --n 2000 --room-size 5 --servers chat,chat-redis-8w
	$(BIN)/python bench/run.py rooms --n 10000 --room-size 5 --big 1000 --rate 10 --servers chat
	$(BIN)/python bench/history.py
	$(BIN)/python bench/sweep.py --rooms 2000

# The compiled load generator (C11, libc and Linux's epoll only: gcc from Debian's packages).
bench/loadgen: bench/loadgen.c
	cc -O2 -Wall -Wextra -o bench/loadgen bench/loadgen.c

# The churn test of the suite, ten times longer (20,000 connect-chat-close cycles, a few minutes).
soak: install
	SOAK_CYCLES=20000 $(BIN)/python -m pytest -s --timeout 1200 tests/integration/test_soak.py -k churn

# The README's pictures, taken by a browser test (desktop and phone, light and dark).
screenshots: install
	$(BIN)/python -m pytest -q tests/browser/test_conversation.py -k screenshots
	mkdir -p docs/screenshots && cp test-artifacts/desktop-light.png test-artifacts/desktop-dark.png \
		test-artifacts/phone-light.png test-artifacts/phone-dark.png test-artifacts/rooms-unread.png \
		test-artifacts/new-messages.png docs/screenshots/

# Every Autobahn case of sections 12 and 13 (permessage-deflate), not only those the suite runs (about 7 minutes).
conformance: install
	AUTOBAHN_DEFLATE_CASES=all $(BIN)/python -m pytest --timeout 1200 tests/integration/test_conformance.py -k deflate
