# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench docs install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned here only: 2.13.0 is the CPU wheel these machines serve locally;
# the package itself asks for torch>=2.4.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) ppl_examples/tour.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

test-all: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "" tests

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/bn_exact.py
	$(PY) benchmarks/prepared.py
	$(PY) benchmarks/hmm_exact.py
	$(PY) benchmarks/em.py
	$(PY) benchmarks/svi_overhead.py
	$(PY) benchmarks/sparse_coding.py
	$(PY) benchmarks/cavi.py
	$(PY) benchmarks/approx.py

# the documentation site under site/ (no network at build time; mkdocs comes with the docs extra):
# the pages' pictures are drawn into docs/images/ (not in git), the tutorial notebook is checked
# against its page, then mkdocs builds (--strict: a missing picture or page is an error)
docs: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,docs]"
	$(PY) ppl_examples/docs_images.py
	$(PY) ppl_examples/tutorial_notebook.py --check
	$(PY) -m mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
