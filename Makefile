# One command to run, one to test. Both create the virtual environment when it is missing.
VENV ?= .venv
PYTHON ?= python3
# The image installs without the dev tools and without an editable link.
EXTRAS ?= [dev]
EDITABLE ?= -e
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
# torch is installed first and pinned: the CPU machines this project is developed on carry
# these wheels locally; the Dockerfile overrides TORCH_INDEX to take the CPU-only build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=

.PHONY: install run test lint typecheck pytest docs bench fuzz soak clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(PIP) install $(EDITABLE) '.$(EXTRAS)'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/mmr serve --host $(HOST) --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# The browser tests' axe-core, pinned in tests/ui/package-lock.json, where npm is installed;
# without it (or without Chromium) those tests are skipped and say so. CI never skips them.
UI_DEPS := tests/ui/node_modules/.installed
$(UI_DEPS): tests/ui/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the search page's accessibility scan (tests/ui) is skipped"; fi

pytest: install $(UI_DEPS)
	$(VENV)/bin/pytest

# The manual (docs/, mkdocs.yml) into site/: strict, so a broken link or anchor fails.
docs: install
	$(VENV)/bin/mkdocs build --strict

test: lint typecheck pytest docs

# The full benchmark (tens of minutes; 1M vectors): results in bench/results/.
# Smaller runs: $(PY) -m bench --quick, or --only search --sizes 10000,100000.
bench: install
	$(PY) -m bench

# Schemathesis against a live server, every check and the stateful phase, on SQLite and
# Postgres (tests run a short one): FUZZ_EXAMPLES cases per operation, seed FUZZ_SEED.
FUZZ_EXAMPLES ?= 1000
FUZZ_SEED ?= 19
fuzz: install
	$(PY) -m tests.fuzz.run --max-examples $(FUZZ_EXAMPLES) --seed $(FUZZ_SEED)

# Crash safety at length (docs/reliability.md): SOAK_ROUNDS kill -9 rounds of a real server
# under concurrent writers on SQLite and on Postgres, then SOAK_PG_RESTARTS restarts of a
# private Postgres under writes, then SOAK_REPLICA_ROUNDS kill -9 rounds of three servers and
# a worker on one database (docs/replicas.md). The test suite runs a few rounds of each.
SOAK_ROUNDS ?= 100
SOAK_PG_RESTARTS ?= 10
SOAK_REPLICA_ROUNDS ?= 20
soak: install
	SOAK_ROUNDS=$(SOAK_ROUNDS) SOAK_PG_RESTARTS=$(SOAK_PG_RESTARTS) \
	SOAK_REPLICA_ROUNDS=$(SOAK_REPLICA_ROUNDS) $(VENV)/bin/pytest -s -q \
		tests/app/test_crash.py::test_sigkill_under_writes_loses_nothing_acknowledged \
		tests/app/test_pg_restart.py \
		tests/app/test_replicas.py::test_three_servers_and_a_worker_one_killed_and_restarted_all_answer_as_sql

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site tests/ui/node_modules
