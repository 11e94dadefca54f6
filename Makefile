# Two commands on a fresh machine:
#   make demo   phantom archive -> train -> export -> ingest -> search, results on screen
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-train-rss clean

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

# training memory per phase at 20k, 1k and 5k phantom films (makes a 20k-film archive first: ~30 min;
# the three runs take ~45 min on 2 cores and 18 GB of crop cache on disk)
RSS_ARCHIVE ?= $(HOME)/.regionmir/bench/archive-20k
bench-train-rss: $(STAMP)
	OMP_NUM_THREADS=1 nice -n 10 $(PY) bench/bench_train_cache.py --archive $(RSS_ARCHIVE) --generate \
		--phantom-workers 2 --films 20000 1000 5000

clean:
	rm -rf $(VENV) build *.egg-info
