# Quick start: `make demo` and `make test`; each sets up .venv on its own.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Tests spread over both cores; set JOBS=1 to run serially.
JOBS   ?= 2

.PHONY: demo test bench install chromium latex clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the local CPU build, and with it installed the
# torch range of the extras pulls no GPU packages.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the explorer's browser tests, from Debian's packages.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package) for the browser tests"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "WARNING: could not install chromium; browser tests will be skipped"; }

# pdflatex for the LaTeX rendering tests, from Debian's texlive-latex-base.
latex:
	@command -v pdflatex >/dev/null 2>&1 || { \
	  echo "installing texlive-latex-base (Debian package) for the LaTeX tests"; \
	  (apt-get update -qq && apt-get install -y -qq texlive-latex-base >/dev/null) || \
	  echo "WARNING: could not install texlive-latex-base; LaTeX tests will be skipped"; }

demo: $(STAMP)
	$(PY) -m convmatrix.demo

test: $(STAMP) chromium latex
	$(PY) -m pytest -q -n $(JOBS) -p no:cacheprovider

# The anchors are optional: one that cannot be installed is reported as missing.
# `make bench BENCH_ARGS=--quick` for the small run; see `python bench/run.py --help`.
bench: $(STAMP)
	$(PIP) install -q -e ".[bench]" || for p in pylops ptwt sparse-convolution; do \
	  $(PIP) install -q $$p || echo "$$p could not be installed; it will be reported as missing"; done
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
