# Vigil: `make demo` runs the main job on the embedded stack; `make test` runs the tests.
# Both create the virtualenv themselves (idempotently: only when requirements change).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip --disable-pip-version-check -q

.PHONY: help venv browser postgres lint format test demo down bench lock clean

help:
	@echo "make demo   - start the embedded stack and run the whole loop through Airflow"
	@echo "make down   - stop the embedded stack"
	@echo "make test   - run the test suite (installs what it needs)"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make lint   - ruff: lint rules and the formatter's check (CI runs it before the tests)"
	@echo "make format - apply the formatter and the safe lint fixes"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian's chromium for the browser tests (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Debian's PostgreSQL server binaries: the embedded Airflow keeps its metadata in a private cluster
# (tasks/stack/metadb.py: started and stopped by the stack, unix socket only), and tests/infra runs the
# compose file's MLflow service against a real PostgreSQL initialised by docker/postgres/init-mlflow-db.sh.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: venv browser postgres
	$(BIN)/python -m pytest

demo: venv postgres
	$(BIN)/vigil demo

down: venv
	$(BIN)/vigil stack down

bench: venv
	@export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1; for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Re-resolve requirements.in into the pinned requirements.txt.
lock:
	rm -rf /tmp/vigil-lock && $(PYTHON) -m venv /tmp/vigil-lock
	/tmp/vigil-lock/bin/pip install -q -r requirements.in
	{ head -2 requirements.txt; /tmp/vigil-lock/bin/pip freeze | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache
