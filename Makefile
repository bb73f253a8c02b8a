# freqfusion_d2: `make demo` (synthetic data -> CPU training -> PQ/AP/mIoU + pictures) and
# `make test`. Both first install what is missing (tools/install.sh: torch, detectron2, this
# package with its extension; TORCH_SPEC, DETECTRON2_SRC and FREQFUSION_EXTRAS select what).
PYTHON ?= python
export PYTHON
DEMO_CONFIG ?= configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml
DEMO_OUT ?= output/demo
DEMO_ITERS ?= 150
DEMO_OPTS ?=
M2F_CONFIG ?= configs/COCO-PanopticSegmentation/mask2former_tiny_FreqFusion_R18_synthetic_cpu.yaml
M2F_OUT ?= output/demo_mask2former
M2F_ITERS ?= 100
# The schedule for M2F_ITERS iterations: AdamW lr 5e-4, divided by 10 at 80%.
M2F_SCHEDULE ?= SOLVER.BASE_LR 0.0005 SOLVER.STEPS "($$(($(M2F_ITERS) * 4 / 5)),)"
M2F_OPTS ?=

.PHONY: help install data demo demo-mask2former test clean-demo

help:
	@echo "make demo   - train Panoptic FPN + FreqFusion on a synthetic dataset on the CPU and evaluate it"
	@echo "make demo-mask2former - the same with a tiny Mask2Former + FreqFusion pixel decoder"
	@echo "make test   - run the test suite ($(PYTHON) -m pytest tests -q)"
	@echo "make install - install what is missing (torch, detectron2, this package); see INSTALL.md"
	@echo "make data   - generate the synthetic dataset under \$$DETECTRON2_DATASETS (default: datasets/)"

install:
	bash tools/install.sh

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

demo-mask2former: data
	@echo "== Evaluating the untrained Mask2Former (reference point)"
	test -f $(M2F_OUT)/untrained/eval_results.json || \
	  $(PYTHON) train_net.py --config-file $(M2F_CONFIG) --eval-only \
	  MODEL.WEIGHTS "" OUTPUT_DIR $(M2F_OUT)/untrained $(M2F_OPTS)
	@echo "== Training on the CPU ($(M2F_ITERS) iterations; progress and ETA every 20)"
	$(PYTHON) train_net.py --config-file $(M2F_CONFIG) --resume \
	  SOLVER.MAX_ITER $(M2F_ITERS) $(M2F_SCHEDULE) OUTPUT_DIR $(M2F_OUT) $(M2F_OPTS)
	@echo "== Panoptic visualisations of validation images"
	$(PYTHON) demo/demo.py --config-file $(M2F_CONFIG) --output $(M2F_OUT)/vis --scale 3 \
	  --input "$${DETECTRON2_DATASETS:-datasets}/synthetic_coco/val2017/00000010000[0-5].jpg" \
	  --opts MODEL.WEIGHTS $(M2F_OUT)/model_final.pth $(M2F_OPTS)
	$(PYTHON) tools/summarize_metrics.py $(M2F_OUT)/untrained/eval_results.json \
	  $(M2F_OUT)/eval_results.json --names untrained trained --output $(M2F_OUT)/demo_metrics.json

test: install
	$(PYTHON) -m pytest tests -q

clean-demo:
	rm -rf $(DEMO_OUT) $(M2F_OUT)
