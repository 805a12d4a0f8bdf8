# Crystallise — set-up, run and test. Python ≥ 3.11 (Django 5.2 LTS).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test install migrate lint clean bench-smoke

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required (found %s)" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) scripts/dev_env.py
	$(PY) manage.py migrate --noinput

# Web server and a django-q2 worker together; Ctrl-C stops both.
run: migrate
	$(PY) scripts/run.py --port $(PORT)

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) db.sqlite3 .test-db.sqlite3* staticfiles

# Every benchmark at toy size (seconds, no thresholds): keeps bench/ from rotting.
# Full runs and their targets: docs/backend-guide.md#performance.
bench-smoke: install
	cd bench && export BENCH_RESULTS=$$(mktemp -d) && \
	../$(PY) throughput.py --papers 200 --latency 0.02 && \
	../$(PY) overhead.py --papers 200 && \
	../$(PY) cost.py --papers 100 && \
	../$(PY) ratelimit.py --rpm 1200 --papers 60 --latency 0.02 && \
	../$(PY) ratelimit.py --rpm 6000 --tpm 600000 --papers 60 --latency 0.02 && \
	../$(PY) shared_limit.py --papers 60 --latency 0.02 --rpm 3000 && \
	../$(PY) batch.py --papers 500 --chunk 125 --cost-papers 100 && \
	../$(PY) polling.py --papers 300 --clients 10 --seconds 2 --web-workers 2 && \
	../$(PY) scale.py --papers 500 --small 100
