# Every target installs what is missing first (a virtual environment in .venv), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
# make test's pytest-xdist workers; a file stays on one worker (its module fixtures, test_readme.py's order)
WORKERS ?= 2
PORT ?= 5000

.PHONY: install lint train default-model test test-cluster bench bench-loader bench-extraction bench-peers gpu-wheels ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## the main job on embedded defaults; pass overrides with ARGS="model.depth=4"
	$(BIN)/python train.py $(ARGS)

# The model python -m vidlab.restore uses when given none (src/vidlab/restoration/weights/): the
# default blend_unet trained on generated footage and digits, its weights exported (2 MB). It trains
# on DEFAULT_MODEL_VIDEOS generated scenes and DEFAULT_MODEL_DIGITS generated videos of digits.
DEFAULT_MODEL_VIDEOS ?= 40
DEFAULT_MODEL_DIGITS ?= 20
default-model: $(STAMP)
	$(BIN)/python -m vidlab.restoration.footage data/default-model --videos $(DEFAULT_MODEL_VIDEOS) --digits $(DEFAULT_MODEL_DIGITS)
	rm -rf outputs/default-model  # this target's own run folder: a fresh best.ckpt, not best-v1.ckpt
	$(BIN)/python train.py dataset=video_folder dataset.path=data/default-model 'dataset.resize=[72,128]' \
		model.max_stains=3 hydra.run.dir=outputs/default-model $(ARGS)
	$(BIN)/python -m vidlab.restoration.checkpoints outputs/default-model/checkpoints/best.ckpt src/vidlab/restoration/weights/blend_unet.ckpt

lint: $(STAMP)  ## ruff: lint and import order (configured in pyproject.toml)
	$(BIN)/ruff check .

test: $(STAMP)  ## the default suite (what CI runs); WORKERS=0 runs it in one process
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder --ignore=tests/cluster $(ARGS)

# tests/cluster on real services (CI runs it after make test): the docs' mlflow server on PostgreSQL and a
# one-node Slurm cluster, as root with Debian's packages (.ci/services installs them); skipped elsewhere
test-cluster: $(STAMP)
	$(BIN)/python -m pytest tests/cluster $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py $(ARGS)

bench-loader: $(STAMP)  ## about a minute: the extraction loader's ratio to the decode ceiling, one reader and one per core
	$(BIN)/python benchmarks/extraction.py --quick $(ARGS)

bench-extraction: $(STAMP)  ## docs/benchmarks.md's extraction table; ARGS="--videos 64 --seconds 120" on a GPU machine
	$(BIN)/python benchmarks/extraction.py $(ARGS)

# Peers for bench-extraction, not vidlab dependencies: torchcodec (a release built for the installed torch,
# loading the OS's FFmpeg 5 libraries) and decord (its own FFmpeg). Root on Debian/Ubuntu for the libraries.
FFMPEG_LIBS := libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8
bench-peers: $(STAMP)
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(FFMPEG_LIBS); fi
	$(BIN)/python -m pip install --quiet --no-deps torchcodec==0.17.0 decord==0.6.0

# What benchmarks/gpu_end_to_end.sh needs on a lent GPU machine that its image lacks (it has torch, torchvision,
# lightning, pandas, OpenCV; no network): wheels for its Python 3.12 in .whl, carried there. antlr4 (Hydra's
# parser) is published as source only: built into a wheel here.
GPU_PYTHON ?= 3.12
GPU_WHEEL_TAGS := --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp --platform any \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl
gpu-wheels:
	rm -rf .whl
	$(PYTHON) -m pip download --quiet $(GPU_WHEEL_TAGS) "av>=14.1,<20" "mlflow-skinny>=3.1,<4"
	$(PYTHON) -m pip download --quiet --no-deps $(GPU_WHEEL_TAGS) "hydra-core>=1.3.2,<1.4" "omegaconf>=2.3,<2.4"
	$(PYTHON) -m pip wheel --quiet --no-deps -w .whl "antlr4-python3-runtime==4.9.3"

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf outputs data mlruns.db mlartifacts
