# One venv for everything; `make test` is the test command CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PANDAS2_VENV := .venv-pandas2

.PHONY: install system-packages test test-pandas2 lint bench bench-pii demo clean

# mysqlclient (the MySQL provider's driver) builds against MariaDB's client headers.
system-packages:
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config)

$(STAMP): pyproject.toml | system-packages
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install --python $(PY) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider
	$(MAKE) test-pandas2

# The PII and event-building tests again under pandas 2 (object dtypes and None where pandas 3 has str and NaN).
test-pandas2: | system-packages
	test -x $(PANDAS2_VENV)/bin/python || $(PYTHON) -m venv $(PANDAS2_VENV)
	$(PANDAS2_VENV)/bin/python -m pip install -q uv
	$(PANDAS2_VENV)/bin/uv pip install --python $(PANDAS2_VENV)/bin/python -q -e '.[dev]' 'pandas>=2.2,<3'
	$(PANDAS2_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration/test_bad_inputs.py

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
	rm -rf $(VENV) $(PANDAS2_VENV) .airflow-demo .pytest_cache
