"""The Trainer behind train_net.py: detectron2's DefaultTrainer with this project's pieces."""

import logging
import weakref

from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import build_train_mapper, check_dataset_files
from ..data.samplers import build_resumable_train_loader
from ..evaluation import build_evaluator
from ..solver import build_lr_scheduler, build_optimizer
from .checkpoint import FreqFusionCheckpointer

__all__ = ["Trainer"]


class Trainer(DefaultTrainer):
    """DefaultTrainer with

    * the training mapper chosen by ``INPUT.DATASET_MAPPER_NAME``;
    * evaluators chosen per dataset by :func:`freqfusion_d2.evaluation.build_evaluator`;
    * atomic checkpoints that report missing FreqFusion weights
      (:class:`FreqFusionCheckpointer`);
    * multi-process training on the CPU (DDP without device ids, gloo backend from
      detectron2's ``launch`` when no GPU is present);
    * a clear error for dataset files missing on disk;
    * the results of the last evaluation in :attr:`last_eval_results` (and returned by
      :meth:`train`);
    * ``--resume`` that continues the data order: the sampler's seed is saved in the
      checkpoints (:class:`freqfusion_d2.data.samplers.ResumableTrainingSampler`) and a resumed
      run skips the batches already trained on, so iteration ``i`` sees the same images as in
      an uninterrupted run.

    ``tests/test_detectron2_contract.py`` pins the parts of ``DefaultTrainer`` this relies on.
    """

    def __init__(self, cfg):
        # Same construction as DefaultTrainer.__init__, which cannot wrap a CPU model in DDP
        # (it always passes device_ids) and uses a non-atomic checkpointer.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader, self.data_sampler = self.build_train_loader_and_sampler(cfg)
        ddp_kwargs = {"broadcast_buffers": False}
        if cfg.MODEL.DEVICE == "cpu":
            ddp_kwargs["device_ids"] = None
        model = create_ddp_model(model, **ddp_kwargs)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = FreqFusionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        if self.data_sampler is not None:
            self.checkpointer.add_checkpointable("data_sampler", self.data_sampler)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.last_eval_results = None
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """As DefaultTrainer's (resume from ``OUTPUT_DIR`` or load ``MODEL.WEIGHTS``), resuming
        past a damaged last checkpoint, and starting the data stream at ``start_iter``."""
        super().resume_or_load(resume=resume)
        if self.data_sampler is not None:
            if self.start_iter > 0 and not self.data_sampler.restored:
                logging.getLogger(__name__).warning(
                    "The checkpoint has no data sampler state: the images after iteration %d "
                    "are not those an uninterrupted run would have used",
                    self.start_iter,
                )
            self.data_sampler.set_start_iter(self.start_iter)

    def build_hooks(self):
        """DefaultTrainer's hooks, with its evaluation hook replaced by one that keeps the
        results in :attr:`last_eval_results` (same period, same position in the list)."""
        hook_list = super().build_hooks()
        positions = [i for i, h in enumerate(hook_list) if isinstance(h, hooks.EvalHook)]
        if len(positions) != 1:
            raise RuntimeError(
                f"Trainer.build_hooks: expected DefaultTrainer.build_hooks() to return one "
                f"EvalHook, got {len(positions)}; this detectron2 version is not supported"
            )
        hook_list[positions[0]] = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._evaluate)
        return hook_list

    def _evaluate(self):
        self.last_eval_results = self.test(self.cfg, self.model)
        return self.last_eval_results

    def train(self):
        """Runs training from ``start_iter`` to ``max_iter``, then checks
        ``TEST.EXPECTED_RESULTS`` (as DefaultTrainer does).

        Returns:
            The results of the last evaluation (None if none ran).
        """
        TrainerBase.train(self, self.start_iter, self.max_iter)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            if self.last_eval_results is None:
                raise RuntimeError(
                    "TEST.EXPECTED_RESULTS is set but no evaluation ran during training "
                    "(TEST.EVAL_PERIOD 0?)"
                )
            verify_results(self.cfg, self.last_eval_results)
        return self.last_eval_results

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader_and_sampler(cls, cfg):
        """The training data loader and its resumable sampler (None for samplers other than
        ``TrainingSampler``)."""
        for name in cfg.DATASETS.TRAIN:
            check_dataset_files(name)
        return build_resumable_train_loader(cfg, build_train_mapper(cfg))

    @classmethod
    def build_train_loader(cls, cfg):
        return cls.build_train_loader_and_sampler(cfg)[0]

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        check_dataset_files(dataset_name)
        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)
