# goldenflow: two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?=
PYTEST_ARGS ?=

.PHONY: install demo test lint unit integration format constraints clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/goldenflow demo $(if $(DURATION),--duration $(DURATION))

lint: $(STAMP)
	$(BIN)/ruff check stream tests
	$(BIN)/ruff format --check stream tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/goldenflow rules check rules
	$(BIN)/goldenflow rules test rules

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format stream tests
	$(BIN)/ruff check --fix stream tests

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^goldenflow' > constraints.txt.new
	{ echo "# Pinned versions of every dependency (runtime and dev), used by 'make install'."; \
	  echo "# Regenerate with: make constraints"; cat constraints.txt.new; } > constraints.txt
	rm constraints.txt.new

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
