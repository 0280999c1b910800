# The two commands a new user needs: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned and installed first, so the resolver never swaps the build underneath the stages.
TORCH ?= torch==2.9.1
STAMP := $(VENV)/.installed

.PHONY: install demo test unit lint typecheck testenv clean-demo

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[stages,operator,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) examples/arithmetic/make_base_model.py
	$(VENV)/bin/sil run examples/arithmetic/loop.yaml

clean-demo:
	rm -rf runs/arithmetic runs/arithmetic-majority

testenv:
	bash hack/testenv/build.sh

test: install testenv lint typecheck
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check operator stages tests

typecheck: install
	$(VENV)/bin/mypy
