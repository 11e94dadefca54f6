# Two commands on a fresh machine:
#   make demo   phantom archive -> train -> export -> ingest -> search, results on screen
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[train,test,eval]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/regionmir demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
