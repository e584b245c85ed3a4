# The two commands of the README: `make run` (the server) and `make test` (everything CI runs).
# Both set up .venv from the requirements first, so they work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench soak screenshots conformance

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: install
	$(BIN)/gunicorn -k gevent wsgi:app

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmark sitting behind the README's figures (about 30 minutes; server on CPU 0, load on CPU 1).
bench: install
	$(BIN)/python bench/run.py fanout --n 1000 --servers plain,chat,chat-redis,chat-redis-2w
	$(BIN)/python bench/run.py fanout --n 100 --servers plain,chat
	$(BIN)/python bench/run.py latency --n 1000 --rate 20
	$(BIN)/python bench/run.py storm --n 1000
	$(BIN)/python bench/run.py idle --n 5000 --room-size 0
	$(BIN)/python bench/run.py idle --n 10000 --room-size 0
	$(BIN)/python bench/run.py fanout --n 1000 --servers plain+deflate,chat+deflate
	$(BIN)/python bench/history.py

# The churn test of the suite, ten times longer (20,000 connect-chat-close cycles, a few minutes).
soak: install
	SOAK_CYCLES=20000 $(BIN)/python -m pytest -s --timeout 1200 tests/integration/test_soak.py -k churn

# The README's pictures, taken by a browser test (desktop and phone, light and dark).
screenshots: install
	$(BIN)/python -m pytest -q tests/browser/test_conversation.py -k screenshots
	mkdir -p docs/screenshots && cp test-artifacts/desktop-light.png test-artifacts/desktop-dark.png \
		test-artifacts/phone-light.png test-artifacts/phone-dark.png docs/screenshots/

# Every Autobahn case of sections 12 and 13 (permessage-deflate), not only those the suite runs (about 7 minutes).
conformance: install
	AUTOBAHN_DEFLATE_CASES=all $(BIN)/python -m pytest --timeout 1200 tests/integration/test_conformance.py -k deflate
