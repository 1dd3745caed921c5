# One venv for everything; `make test` is the test command CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint bench bench-pii demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install --python $(PY) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check airflow_provider_gravity dags tests benchmarks demo
	$(VENV)/bin/ruff check --preview --select AIR airflow_provider_gravity dags

bench-pii: $(STAMP)
	$(PY) benchmarks/bench_pii.py

bench: $(STAMP)
	$(PY) benchmarks/bench_e2e.py

demo: $(STAMP)
	$(PY) demo/run_demo.py

clean:
	rm -rf $(VENV) .airflow-demo .pytest_cache
