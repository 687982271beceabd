# Every target installs what is missing first (a virtual environment in .venv), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PORT ?= 5000

.PHONY: install lint train test test-all bench ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## the main job on embedded defaults; pass overrides with ARGS="model.depth=4"
	$(BIN)/python train.py $(ARGS)

lint: $(STAMP)  ## ruff: lint and import order (configured in pyproject.toml)
	$(BIN)/ruff check .

test: $(STAMP)  ## the default suite (what CI runs)
	$(BIN)/python -m pytest $(ARGS)

test-all: $(STAMP)  ## also the tests marked slow
	$(BIN)/python -m pytest -m "" $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py $(ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf outputs data mlruns.db mlartifacts
