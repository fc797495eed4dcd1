# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Test processes: auto = one per core (pytest-xdist); 0 runs the suite in this process. worksteal: a process
# that runs dry takes queued tests from a busy one, so the slow modules do not trail at the end.
TEST_WORKERS ?= auto
# The local PostgreSQL the tests use; unreachable -> those tests skip (they fail under CI=true).
TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres

# Debian packages the tests need, installed by `make system-packages` when missing (apt-get, as root):
# prometheus for promtool (the alert rules); chromium and its driver for the console's browser tests; a
# Chinese font, so the console's Chinese pages render (and `make screenshots` shows them) as words.
SYSTEM_PACKAGES ?= prometheus chromium chromium-driver fonts-wqy-microhei

.PHONY: run test venv system-packages bench screenshots gpu-wheels clean

# pip would compile the bytecode of every file of every package (19,400 files); the service imports about
# 4,100 of them: one import compiles those (the install takes 20-34 s less), and the tests compile what else
# they import when they first import it.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --no-compile -e ".[test]"
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -c "import uvicorn, vidfactory.cli, vidfactory.api.app, vidfactory.engines.tiny"
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/vidfactory db upgrade
	$(BIN)/vidfactory admin demo --port $(PORT)
	$(BIN)/vidfactory serve --host $(HOST) --port $(PORT)

# A no-op when every package is there; elsewhere, as root, apt-get installs the missing ones. Not root
# (or no dpkg): it says what is missing and goes on (tests needing them skip, and fail under CI=true).
system-packages:
	@missing=$$(for package in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'install ok installed' || echo $$package; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "system-packages: missing $$missing (run 'make system-packages' as root on Debian)"; exit 0; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

# The suite starts a few hundred Python processes (servers, workers, CLI commands): each reads the bytecode
# the first one cached instead of compiling the package again, also where the environment turns caching off.
test: venv system-packages
	PYTHONDONTWRITEBYTECODE= \
	VIDFACTORY_TEST_POSTGRES_URL="$${VIDFACTORY_TEST_POSTGRES_URL:-$(TEST_POSTGRES_URL)}" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25

# The console's main pages in English and Chinese, as PNGs in docs/screenshots/ (the README shows some):
# the browser tests' server and Chromium, through tests/test_screenshots.py.
screenshots: venv system-packages
	VIDFACTORY_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q -n 0 tests/test_screenshots.py

# Every CPU bench script, one after another (minutes; the GPU ones run through bench/gpu_device.sh).
bench: venv
	set -e; for script in $$(ls bench/*.py | grep -v -e common.py -e /gpu_); do \
		echo "== $$script"; $(BIN)/python $$script; done

# Wheels for a GPU host with no network (bench/gpu_device.sh installs them): Python 3.12 by default.
gpu-wheels: venv
	PIP="$(BIN)/python -m pip" scripts/gpu_wheels.sh .whl $${GPU_PYTHON_VERSION:-3.12}

clean:
	rm -rf $(VENV) var .pytest_cache
