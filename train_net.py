#!/usr/bin/env python
"""Train or evaluate freqfusion_d2 models (Panoptic FPN, Mask/Faster R-CNN, Mask2Former).

    python train_net.py --num-gpus 8 \
        --config-file configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x_freqfusion.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file ... --resume     # continue from OUTPUT_DIR/last_checkpoint

Without GPUs, ``--num-gpus N`` starts N CPU processes (gloo backend). Inputs are checked before a
model is built: a bad one is told in one line (``--debug`` or FREQFUSION_DEBUG=1: traceback).
``--resume`` continues from the newest complete checkpoint at the same iteration, learning rate
and data order; a damaged last checkpoint is reported and skipped.
"""

import json
import logging
import os
import sys

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from freqfusion_d2.engine import FreqFusionCheckpointer, Trainer, setup_cfg
from freqfusion_d2.engine.checkpoint import find_resume_checkpoints
from freqfusion_d2.utils.cli import (
    InputError,
    add_debug_flag,
    check_checkpoint,
    check_datasets,
    check_output_dir,
    load_config,
    run_cli,
)

logger = logging.getLogger("freqfusion_d2")


def check_inputs(args):
    """Checks the config, checkpoint, datasets and output folder before any model is built.

    Raises:
        InputError: one line naming the bad input.
    """
    if not args.config_file:
        raise InputError("--config-file", "not given", "a YAML config file under configs/")
    cfg = load_config(args.config_file, args.opts)
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if resuming:
        complete, skipped = find_resume_checkpoints(cfg.OUTPUT_DIR)
        if not complete:
            raise InputError(
                "--resume",
                f"{cfg.OUTPUT_DIR} has no complete checkpoint ({'; '.join(skipped)})",
                "a checkpoint written by an earlier run, or no --resume",
            )
    else:
        # Empty weights with --eval-only evaluate the untrained model (make demo's reference).
        check_checkpoint("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)
    if not args.eval_only:
        check_datasets("DATASETS.TRAIN", cfg.DATASETS.TRAIN)
    check_datasets("DATASETS.TEST", cfg.DATASETS.TEST)
    check_output_dir("OUTPUT_DIR", cfg.OUTPUT_DIR)
    return cfg


def setup(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides, logging, output dir."""
    cfg = setup_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="freqfusion_d2")
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
        if not cfg.MODEL.WEIGHTS and not args.resume:
            logger.warning("MODEL.WEIGHTS is empty: evaluating an untrained model")
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


def cli(argv=None):
    args = add_debug_flag(default_argument_parser()).parse_args(argv)
    check_inputs(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    sys.exit(run_cli(cli))
