# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
OUT    ?= runs/demo
TOUR_FLAGS ?=
LINTED := $(wildcard src tests benchmarks)

.PHONY: demo test test-fast lint format bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps: reinstall only when the project's requirements change.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

# The main job: the tour trains its models on the shipped MNIST sample (offline) and writes
# $(OUT)/report.html; each model's own run (and report) is under $(OUT)/models/.
demo: $(VENV)/.installed
	rm -rf $(OUT)
	$(BIN)/vaelab tour --out $(OUT) $(TOUR_FLAGS)

# The browser tests drive Debian's Chromium at $(CHROMIUM). Root installs it; anyone else
# installs it, or opts out with VAELAB_SKIP_BROWSER_TESTS=1 (the browser tests then skip).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ] || [ "$$VAELAB_SKIP_BROWSER_TESTS" = 1 ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "make test: the browser tests need $(CHROMIUM): install it (sudo apt-get install chromium) or set VAELAB_SKIP_BROWSER_TESTS=1 to skip them" >&2; \
	  exit 1; \
	fi

test: $(VENV)/.installed-test chromium
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINTED)

format: $(VENV)/.installed-test
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
