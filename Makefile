# Two entry points: `make demo` and `make test`; both create the virtualenv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export OPENBLAS_NUM_THREADS := 1

.PHONY: demo test quality install clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "minirec needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/minirec demo

test: install
	$(BIN)/python -m pytest -q

# Real-data quality gate (ML-100k targets); needs ../shared/data.
quality: install
	$(BIN)/python bench/quality_gate.py

clean:
	rm -rf $(VENV) demo-work artifacts
