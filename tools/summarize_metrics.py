#!/usr/bin/env python
"""Prints the headline metrics (PQ, AP, mIoU) of eval_results.json files side by side and
optionally writes them to one JSON file.

    python tools/summarize_metrics.py a/eval_results.json b/eval_results.json --names a b
"""

import argparse
import json
import math

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--names", nargs="+", help="one label per file (default: the paths)")
    parser.add_argument("--output", help="write {name: metrics} to this JSON file")
    args = parser.parse_args()
    names = args.names or args.files
    if len(names) != len(args.files):
        parser.error("--names needs one name per file")
    table = {}
    for name, path in zip(names, args.files):
        with open(path) as f:
            table[name] = headline(json.load(f))
    columns = list(next(iter(table.values())))
    print("| run | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, metrics in table.items():
        cells = ["-" if metrics[c] is None else f"{metrics[c]:.1f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
