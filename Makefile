# shortrec — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench bench-quick docs clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shortrec demo --out demo-out

test: $(STAMP)
	bash scripts/ci_prometheus.sh
	bash scripts/ci_chromium.sh
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench deploy/grafana
	$(VENV)/bin/ruff format --check src tests bench deploy/grafana
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict deploy/grafana/generate.py
	$(PY) deploy/grafana/generate.py --check

bench-quick: $(STAMP)
	$(PY) -m bench.run --quick
	$(MAKE) docs

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(PY) -m bench.run
	$(MAKE) docs

docs: $(STAMP)
	$(PY) -m bench.report
	$(PY) scripts/gen_showcase.py
	$(PY) scripts/gen_data_doc.py
	$(PY) scripts/render_diagram.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
