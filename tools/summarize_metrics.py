#!/usr/bin/env python
"""Prints the headline metrics (PQ, AP, mIoU) of eval_results.json files side by side and
optionally writes them to one JSON file.

    python tools/summarize_metrics.py a/eval_results.json b/eval_results.json --names a b

A missing or malformed file is told in one line (--debug or FREQFUSION_DEBUG=1: traceback).
"""

import argparse
import json
import math
import os
import sys

from freqfusion_d2.utils.cli import InputError, add_debug_flag, check_output_dir, load_json, run_cli

HEADLINE = (
    ("panoptic_seg", "PQ"),
    ("panoptic_seg", "PQ_th"),
    ("panoptic_seg", "PQ_st"),
    ("bbox", "AP"),
    ("segm", "AP"),
    ("sem_seg", "mIoU"),
)


def headline(results):
    """{"PQ": ..., "bbox/AP": ...} from a train_net.py eval_results.json dict."""
    out = {}
    for task, key in HEADLINE:
        value = results.get(task, {}).get(key)
        name = key if task in ("panoptic_seg", "sem_seg") else f"{task}/{key}"
        out[name] = (
            None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--names", nargs="+", help="one label per file (default: the paths)")
    parser.add_argument("--output", help="write {name: metrics} to this JSON file")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    names = args.names or args.files
    if len(names) != len(args.files):
        raise InputError(
            "--names", f"{len(names)} names for {len(args.files)} files", "one name per file"
        )
    if args.output:
        check_output_dir("--output", os.path.dirname(os.path.abspath(args.output)))
    table = {}
    for name, path in zip(names, args.files):
        results = load_json("files", path)
        if not isinstance(results, dict):
            raise InputError(
                "files", f"{path} is not a JSON object", "train_net.py's eval_results.json"
            )
        table[name] = headline(results)
    columns = list(next(iter(table.values())))
    print("| run | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, metrics in table.items():
        cells = ["-" if metrics[c] is None else f"{metrics[c]:.1f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(table, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
