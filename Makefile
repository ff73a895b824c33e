# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PROTOCOL ?= ex-situ-lasgtp
OUT    ?= runs

.PHONY: demo test test-all slow faults bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/insitem run $(PROTOCOL) --sim --out $(OUT)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]  # 5 = no slow test collected

faults: $(VENV)/.installed-test  # the whole fault matrix (fast and slow cells), table in the summary
	$(BIN)/python -m pytest -m faults tests/faults

# `make bench` only lists the benches (each takes from seconds to minutes and loads the shared
# machine); `make bench BENCH='realtime --repeats 3'` runs one (python -m bench NAME ARGS).
BENCH  ?=
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) build dist *.egg-info runs
