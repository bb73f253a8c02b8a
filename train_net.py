#!/usr/bin/env python
"""Train or evaluate freqfusion_d2 models (Panoptic FPN, Mask/Faster R-CNN, ...).

    python train_net.py --num-gpus 8 \
        --config-file configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x_freqfusion.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file ... --resume     # continue from OUTPUT_DIR/last_checkpoint

Without GPUs, ``--num-gpus N`` starts N CPU processes (gloo backend).
"""

import json
import logging
import os

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from freqfusion_d2.engine import FreqFusionCheckpointer, Trainer, setup_cfg

logger = logging.getLogger("freqfusion_d2")


def setup(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides, logging, output dir."""
    cfg = setup_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg


def write_results(cfg, results):
    """Writes the final evaluation metrics to ``OUTPUT_DIR/eval_results.json``."""
    if comm.is_main_process() and results:
        path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        logger.info("Wrote evaluation results to %s", path)


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        FreqFusionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        write_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    # The EvalHook evaluates at the end of training; train() returns its results.
    results = trainer.train()
    write_results(cfg, results)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
