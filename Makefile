# Thin wrappers; every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
DEBS   := prometheus chromium chromium-driver

.PHONY: setup jars debs test test-unit lint faults demo bench bench-quick clean docs

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

jars: setup
	$(PY) deploy/local/localkafka.py jars

# Debian packages the tests need (promtool for the monitoring kit, Chromium for the status page);
# installs the missing ones when root (as on CI), otherwise names them and fails.
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'ok installed' || echo $$p; done); \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "Missing Debian packages: $$missing. Install them as root:" >&2; \
		echo "  apt-get install --no-install-recommends $$missing" >&2; exit 1; fi; \
	echo "Installing $$missing"; \
	apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# docs/configuration.md from node/config.py (a unit test fails when it is stale)
docs: setup
	$(PY) tools/config_reference.py

test-unit: setup
	$(VENV)/bin/pytest tests/unit

test: lint jars debs
	$(VENV)/bin/pytest

faults: jars
	FAULTS_FULL=1 $(VENV)/bin/pytest tests/faults -m faults

demo: jars
	$(PY) deploy/local/demo.py

# the bench extra (matplotlib, py-spy) once per change of pyproject.toml, as setup does
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: jars $(BENCH_STAMP)
	$(PY) benchmarks/run.py

bench-quick: jars $(BENCH_STAMP)
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
