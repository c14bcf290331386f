# Two entry points a user needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: setup setup-nnunet demo test lint format bench clean bundle-weights

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# pe-seg's nnunet extra (pe-seg infer --nnunet) without timm and torchvision, which would not import beside the
# pinned CPU torch (setup.cfg says why): the two nnU-Net packages without their requirements, then what
# nnU-Net's inference code imports. The nnU-Net tests skip without it.
NNUNET_STAMP := $(VENV)/.nnunet-installed
NNUNET_NEEDS := acvl-utils batchgenerators batchgeneratorsv2

$(NNUNET_STAMP): $(STAMP) constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps nnunetv2 dynamic-network-architectures
	$(BIN)/python -m pip install --quiet -c constraints.txt $(NNUNET_NEEDS)
	$(BIN)/python -c "import nnunetv2.inference.predict_from_raw_data, dynamic_network_architectures.architectures.unet"
	touch $(NNUNET_STAMP)

setup-nnunet: $(NNUNET_STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_DIR)

# Train the demo recipe and export bundles/pe_segmentation/models/model.pt (+ configs/recipe.yaml), then check
# the bundle with MONAI's tools. BUNDLE_EPOCHS=N shortens training.
bundle-weights: $(STAMP)
	bash scripts/bundle_weights.sh bundle_build

test: lint
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# style (ruff), formatting (ruff format) and types (mypy, configured in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_io.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) bundle_build build *.egg-info
