# freqfusion_d2: `make demo` (synthetic data -> CPU training -> PQ/AP/mIoU + pictures) and
# `make test`. Both install what is missing first (detectron2 itself must come from GitHub).
PYTHON ?= python
DEMO_CONFIG ?= configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml
DEMO_OUT ?= output/demo
DEMO_ITERS ?= 150
DEMO_OPTS ?=

.PHONY: help install data demo test clean-demo

help:
	@echo "make demo   - train Panoptic FPN + FreqFusion on a synthetic dataset on the CPU and evaluate it"
	@echo "make test   - run the test suite ($(PYTHON) -m pytest tests -q)"
	@echo "make data   - generate the synthetic dataset under \$$DETECTRON2_DATASETS (default: datasets/)"

install:
	@$(PYTHON) -c "import detectron2" 2>/dev/null || { \
	  echo "detectron2 is not installed. Install it from GitHub first, e.g.:"; \
	  echo "  $(PYTHON) -m pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"; \
	  echo "(see https://detectron2.readthedocs.io/en/latest/tutorials/install.html)"; exit 1; }
	@$(PYTHON) -c "import freqfusion_d2._C" 2>/dev/null || \
	  $(PYTHON) -m pip install --no-build-isolation -e .
	@$(PYTHON) -c "import pytest" 2>/dev/null || $(PYTHON) -m pip install pytest

data: install
	$(PYTHON) datasets/prepare_synthetic_coco.py

demo: data
	@echo "== Evaluating the untrained model (reference point)"
	test -f $(DEMO_OUT)/untrained/eval_results.json || \
	  $(PYTHON) train_net.py --config-file $(DEMO_CONFIG) --eval-only \
	  MODEL.WEIGHTS "" OUTPUT_DIR $(DEMO_OUT)/untrained $(DEMO_OPTS)
	@echo "== Training on the CPU ($(DEMO_ITERS) iterations; progress and ETA every 20)"
	$(PYTHON) train_net.py --config-file $(DEMO_CONFIG) --resume \
	  SOLVER.MAX_ITER $(DEMO_ITERS) OUTPUT_DIR $(DEMO_OUT) $(DEMO_OPTS)
	@echo "== Panoptic visualisations of validation images"
	$(PYTHON) demo/demo.py --config-file $(DEMO_CONFIG) --output $(DEMO_OUT)/vis --scale 3 \
	  --input "$${DETECTRON2_DATASETS:-datasets}/synthetic_coco/val2017/00000010000[0-5].jpg" \
	  --opts MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth $(DEMO_OPTS)
	$(PYTHON) tools/summarize_metrics.py $(DEMO_OUT)/untrained/eval_results.json \
	  $(DEMO_OUT)/eval_results.json --names untrained trained --output $(DEMO_OUT)/demo_metrics.json

test: install
	$(PYTHON) -m pytest tests -q

clean-demo:
	rm -rf $(DEMO_OUT)
