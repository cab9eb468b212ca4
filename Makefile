# regkit: `make demo` runs the main job on the bundled data, `make test` runs the test suite, `make lint` runs ruff.
# Each installs first when needed; `make install` re-runs only when the dependency files change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.regkit-installed
DEPS := pyproject.toml requirements/torchrec.txt
PYTEST_ARGS ?=

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): $(DEPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -r requirements/torchrec.txt
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/regkit demo --out runs/demo --overwrite

bench: $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test,bench]'
	$(BIN)/python -m pipelines.bench --out runs/bench

clean:
	rm -rf $(VENV) runs build *.egg-info
