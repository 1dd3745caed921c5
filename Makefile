# One venv for everything; `make test` is the test command CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PANDAS2_VENV := .venv-pandas2

# The Airflow line of the default venv, the newest this project can install: named, because a resolver left to
# itself may pick an older line (with the docs tools in the dev extra, uv chose 3.2.2 and a newer FastAPI).
AIRFLOW_DEFAULT_VERSION := 3.3.2
# Older Airflow lines the package supports (apache-airflow>=3.1): each tested in its own venv by `make test`.
AIRFLOW_VERSIONS := 3.1.8 3.2.2
AIRFLOW_VERSION ?=
AIRFLOW_VENV := .venv-airflow-$(AIRFLOW_VERSION)
# Pins a release needs beyond its own requirements, as Airflow's constraint files would give. Airflow 3.2.2
# leaves both uncapped. FastAPI 0.137+: its execution API does not build (PydanticUserError: 'TITerminalStatePayload
# needs a discriminator field'), the api-server exits and every dag.test() task fails; 3.3 caps it at <0.137.
# svcs 26 removes the registry from the app when a lifespan ends, and 3.2's in-process execution API (dag.test())
# keeps no reference that holds its lifespan open: every task fails with "'State' object has no attribute
# 'svcs_registry'".
AIRFLOW_PINS_3.2.2 := 'fastapi<0.137' 'svcs<26'
# What runs on an older line: the operator, DAG, delivery-log, backfill and asset integration tests (asset events
# go through each line's own task runner and execution API). Not tests/unit: it never imports Airflow (a test
# checks that), so another Airflow changes nothing there.
AIRFLOW_TESTS := tests/integration/test_operator.py tests/integration/test_dags.py \
  tests/integration/test_delivery_log.py tests/integration/test_backfill.py tests/integration/test_assets.py

.PHONY: install system-packages browser-packages test test-pandas2 test-airflow test-airflow-versions dist lint bench bench-pii demo demo-view clean

# mysqlclient (the MySQL provider's driver) builds against MariaDB's client headers.
system-packages:
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config)

# Headless Chromium and its driver, for the browser test of the Gravity view.
browser-packages:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (this machine sets it)
# nothing ever does, so every process compiled pandas, pyarrow and Airflow from source: 2.6 s of each task's
# imports, inside every benchmark run and every test that starts a process.
$(STAMP): pyproject.toml | system-packages
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install --compile-bytecode --python $(PY) -e '.[dev,arrow]' 'apache-airflow==$(AIRFLOW_DEFAULT_VERSION)'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) | browser-packages
	$(PY) -m pytest -q -p no:cacheprovider
	$(MAKE) test-pandas2
	$(MAKE) test-airflow-versions

test-airflow-versions:
	set -e; for version in $(AIRFLOW_VERSIONS); do $(MAKE) test-airflow AIRFLOW_VERSION=$$version; done

# The PII and event-building tests again under pandas 2 (object dtypes and None where pandas 3 has str and NaN).
test-pandas2: | system-packages
	test -x $(PANDAS2_VENV)/bin/python || $(PYTHON) -m venv $(PANDAS2_VENV)
	$(PANDAS2_VENV)/bin/python -m pip install -q uv
	$(PANDAS2_VENV)/bin/uv pip install --compile-bytecode --python $(PANDAS2_VENV)/bin/python -q -e '.[dev]' 'pandas>=2.2,<3' 'apache-airflow==$(AIRFLOW_DEFAULT_VERSION)'
	$(PANDAS2_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration/test_bad_inputs.py

# `make test-airflow AIRFLOW_VERSION=3.1.8`: the tests of AIRFLOW_TESTS against that Airflow release, in
# .venv-airflow-VERSION; uv picks the provider versions that go with it.
test-airflow: | system-packages
	@test -n "$(AIRFLOW_VERSION)" || { echo "usage: make test-airflow AIRFLOW_VERSION=3.1.8" >&2; exit 2; }
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q uv
	$(AIRFLOW_VENV)/bin/uv pip install --compile-bytecode --python $(AIRFLOW_VENV)/bin/python -q -e '.[dev]' \
	  'apache-airflow==$(AIRFLOW_VERSION)' $(AIRFLOW_PINS_$(AIRFLOW_VERSION))
	$(AIRFLOW_VENV)/bin/python -c "import airflow, sys; sys.exit(airflow.__version__ != '$(AIRFLOW_VERSION)')"
	$(AIRFLOW_VENV)/bin/python -m pytest -q -p no:cacheprovider $(AIRFLOW_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check airflow_provider_gravity dags tests benchmarks demo tools
	$(VENV)/bin/ruff check --preview --select AIR airflow_provider_gravity dags
	$(VENV)/bin/ruff format --check airflow_provider_gravity dags tests benchmarks demo tools
	$(VENV)/bin/mypy --strict airflow_provider_gravity/conversions airflow_provider_gravity/storage
	$(VENV)/bin/mypy

# The provider docs of docs/ as HTML in build/docs/html, the operator's arguments rendered from its docstring; a
# warning fails the build (CI runs it before the tests). -E re-reads every page, so a warning shows on every run.
.PHONY: docs
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -q -b html docs build/docs/html

bench-pii: $(STAMP)
	$(PY) benchmarks/bench_pii.py

# Issue 10's figures, written to benchmarks/RESULTS.md between bench_e2e.py's markers (several minutes).
# `make bench BENCH_ARGS=--skip-large` leaves out the 10 M-row run; `--rows 100000 --skip-large --no-write`
# is a quick check that prints without writing.
bench: $(STAMP)
	$(PY) benchmarks/bench_e2e.py $(BENCH_ARGS)

# The fast sink's two servers (asyncio, threaded): the CPU each costs per event.
.PHONY: bench-sink
bench-sink: $(STAMP)
	$(PY) benchmarks/fast_sink.py --compare

# The sharded backfill on a CeleryExecutor with a worker SIGKILLed mid-send (also part of `make test`): needs the
# local PostgreSQL and Redis (127.0.0.1:6379, database 7).
.PHONY: test-celery bench-celery
test-celery: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -s tests/integration/test_celery_executor.py

# The same backfill on 1 and on 2 Celery workers (Redis database 8); writes its section of benchmarks/RESULTS.md.
bench-celery: $(STAMP)
	$(PY) benchmarks/bench_celery.py

demo: $(STAMP)
	$(PY) demo/run_demo.py

# The Gravity view of `make demo`'s Airflow: an api-server on http://127.0.0.1:8080 until Ctrl-C.
demo-view: $(STAMP)
	$(PY) demo/run_demo.py --serve

# The sdist and the wheel in dist/, checked as PyPI reads them.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

clean:
	rm -rf $(VENV) $(PANDAS2_VENV) .venv-airflow-* .airflow-demo .pytest_cache dist build
