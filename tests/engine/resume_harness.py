"""train_net.py with a record of what each iteration trained on, for test_kill_and_resume.py.

    python tests/engine/resume_harness.py RECORD [--die-saving NAME] -- <train_net.py arguments>

Appends one JSON line per iteration to RECORD (flushed and synced, so it survives SIGKILL):
``{"iter": i, "lr": <learning rate used>, "ids": [image ids of the batch]}``. With
``--die-saving NAME`` the process SIGKILLs itself half-way through writing the checkpoint file
``NAME.pth``, as a machine that loses the process mid-write would.
"""

import argparse
import io
import json
import os
import signal
import sys

import torch
from detectron2.engine import HookBase

import train_net
from freqfusion_d2.engine import Trainer
from freqfusion_d2.utils.cli import run_cli


class _RecordingLoader:
    def __init__(self, loader, batches):
        self.loader = loader
        self.batches = batches

    def __iter__(self):
        for batch in self.loader:
            self.batches.append([d["image_id"] for d in batch])
            yield batch


class _Recorder(HookBase):
    def __init__(self, path, batches):
        self.path = path
        self.batches = batches
        self.lr = None

    def before_step(self):
        self.lr = self.trainer.optimizer.param_groups[0]["lr"]

    def after_step(self):
        line = {"iter": self.trainer.iter, "lr": self.lr, "ids": self.batches[-1]}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _recording_trainer(path):
    batches = []

    class RecordingTrainer(Trainer):
        @classmethod
        def build_train_loader_and_sampler(cls, cfg):
            loader, sampler = super().build_train_loader_and_sampler(cfg)
            return _RecordingLoader(loader, batches), sampler

        def build_hooks(self):
            return super().build_hooks() + [_Recorder(path, batches)]

    return RecordingTrainer


def _die_while_saving(name):
    save = torch.save

    def partial_save(obj, f, *args, **kwargs):
        # The checkpointer writes to an open temporary file: find its name (Linux).
        path = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else ""
        if os.path.basename(path).startswith(name + ".pth"):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *args, **kwargs)

    torch.save = partial_save


def main():
    argv = sys.argv[1:]
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("record")
    parser.add_argument("--die-saving", default=None)
    args = parser.parse_args(argv[:split])
    train_net.Trainer = _recording_trainer(args.record)
    if args.die_saving:
        _die_while_saving(args.die_saving)
    return run_cli(train_net.cli, argv[split + 1 :], prog="train_net.py")


if __name__ == "__main__":
    sys.exit(main())
