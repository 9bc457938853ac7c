# Entry points: `make demo`, `make test` (everything) and `make test-fast` (without the slow tests);
# each creates the virtualenv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test test-fast lint-imports quality install clean system-packages load

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "minirec needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/minirec demo

# Debian packages the tests drive as real parts: chromium for the browser tests (Playwright never
# downloads a browser; a CJK font makes their screenshots of the Chinese catalog legible) and
# haproxy, the load balancer of the scale-out test.
SYSTEM_PACKAGES := chromium fonts-wqy-microhei haproxy
APT_INSTALL := apt-get update -qq && apt-get install -y -qq $(SYSTEM_PACKAGES)
system-packages:
	@if ! command -v chromium >/dev/null || ! { command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    sh -c '$(APT_INSTALL)' 2>/dev/null || sudo sh -c '$(APT_INSTALL)' \
	      || echo "could not install $(SYSTEM_PACKAGES): the browser and scale-out tests skip without them" \
	              "(and fail when CI is set)"; \
	  else \
	    echo "no apt-get here: install chromium (at /usr/bin/chromium) and haproxy by hand;" \
	         "the browser and scale-out tests skip without them (and fail when CI is set)"; \
	  fi; \
	elif ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
	  echo "note: no CJK font (apt-get install fonts-wqy-microhei): Chinese shows as boxes in the browser screenshots"; \
	fi

test: install system-packages
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The edit-test loop: everything but the tests marked slow (real servers under load, browsers,
# trainings). pytest's exit 5 (no tests collected, e.g. a marker that deselects everything) fails too.
test-fast: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" || { status=$$?; \
	  [ $$status -ne 5 ] || echo "make test-fast: pytest collected no tests" >&2; exit $$status; }

# The layer and import contracts of pyproject.toml (docs/architecture.md); the first step of the tests.
lint-imports: install
	$(BIN)/lint-imports

# Real-data quality gate (ML-100k targets); needs ../shared/data.
quality: install
	$(BIN)/python bench/quality_gate.py

# Load test (docs/load.md): start the server, run a locust profile (steady | spike | soak) headless,
# stop both; writes load-results/<profile>/summary.json, CSVs and latency.png.
PROFILE ?= spike
DURATION ?= 120
RATE ?= 10
WORKERS ?= 2
LOAD_ARGS ?=
load: install
	$(BIN)/python -m bench.load_run --profile $(PROFILE) --duration $(DURATION) --rate $(RATE) \
	  --workers $(WORKERS) --out load-results/$(PROFILE) $(LOAD_ARGS)

clean:
	rm -rf $(VENV) demo-work artifacts
