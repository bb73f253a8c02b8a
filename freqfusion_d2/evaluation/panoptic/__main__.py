"""Command line: ``python -m freqfusion_d2.evaluation.panoptic --gt-json ... --pred-json ...``.

A bad input (missing or malformed JSON, missing PNG folder, an inconsistent segment) is told in
one line with exit status 2; ``--debug`` or FREQFUSION_DEBUG=1 shows the traceback.
"""

import argparse
import json
import logging
import sys
from typing import List, Optional

from ...utils.cli import InputError, add_debug_flag, check_dir, load_json, run_cli
from . import format_pq_table, pq_compute

PROG = "python -m freqfusion_d2.evaluation.panoptic"


def _default_folder(json_path: str) -> str:
    return json_path[: -len(".json")] if json_path.endswith(".json") else json_path


def check_inputs(args) -> None:
    """Checks the JSON files and PNG folders before any image is read.

    Raises:
        InputError: naming the argument, the path and what was expected.
    """
    gt = load_json("--gt-json", args.gt_json, required_keys=("annotations", "categories"))
    load_json("--pred-json", args.pred_json, required_keys=("annotations",))
    for cat in gt["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "isthing" not in cat:
            raise InputError(
                "--gt-json",
                f"{args.gt_json}: category {cat!r} lacks 'id' or 'isthing'",
                "COCO panoptic categories",
            )
    for argument, folder, json_option, json_path in (
        ("--gt-folder", args.gt_folder, "--gt-json", args.gt_json),
        ("--pred-folder", args.pred_folder, "--pred-json", args.pred_json),
    ):
        if folder is None:
            folder = _default_folder(json_path)
            argument = f"{argument} (default: {json_option} without .json)"
        check_dir(argument, folder, "the folder of the PNGs the JSON names")
    if args.num_workers is not None and args.num_workers < 1:
        raise InputError("--num-workers", str(args.num_workers), "a positive integer")


def main(argv: Optional[List[str]] = None) -> int:
    """Evaluate PQ and print panopticapi's table (and, with ``--per-class``, per-class values)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Panoptic quality (PQ, SQ, RQ), equivalent to panopticapi's pq_compute.",
    )
    parser.add_argument("--gt-json", required=True, help="COCO panoptic ground-truth JSON")
    parser.add_argument("--pred-json", required=True, help="prediction JSON")
    parser.add_argument(
        "--gt-folder", default=None, help="ground-truth PNG folder (default: GT JSON without .json)"
    )
    parser.add_argument(
        "--pred-folder",
        default=None,
        help="prediction PNG folder (default: prediction JSON without .json)",
    )
    parser.add_argument(
        "--num-workers", type=int, default=None, help="worker processes (default: CPU count)"
    )
    parser.add_argument(
        "--lenient-gt",
        action="store_true",
        help="read the ground truth as leniently as panopticapi (no GT id consistency checks)",
    )
    parser.add_argument("--per-class", action="store_true", help="also print per-class values")
    parser.add_argument("--json-out", default=None, help="write the result dictionary here")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    check_inputs(args)

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        results = pq_compute(
            args.gt_json,
            args.pred_json,
            gt_folder=args.gt_folder,
            pred_folder=args.pred_folder,
            num_workers=args.num_workers,
            strict_gt=not args.lenient_gt,
        )
    except ValueError as e:
        # pq_compute names the image and segment; the argument is one of the inputs.
        raise InputError("--gt-json / --pred-json", str(e)) from e
    print(format_pq_table(results))
    if args.per_class:
        print("\n{:>10s}| {:>5s}  {:>5s}  {:>5s}".format("category", "PQ", "SQ", "RQ"))
        for cat_id, r in results["per_class"].items():
            print(
                "{:>10}| {:5.1f}  {:5.1f}  {:5.1f}".format(
                    cat_id, 100 * r["pq"], 100 * r["sq"], 100 * r["rq"]
                )
            )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
