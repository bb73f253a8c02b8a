"""Command line: ``python -m freqfusion_d2.evaluation.panoptic --gt-json ... --pred-json ...``."""

import argparse
import json
import logging
import sys
from typing import List, Optional

from . import format_pq_table, pq_compute


def main(argv: Optional[List[str]] = None) -> int:
    """Evaluate PQ and print panopticapi's table (and, with ``--per-class``, per-class values)."""
    parser = argparse.ArgumentParser(
        prog="python -m freqfusion_d2.evaluation.panoptic",
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
    args = parser.parse_args(argv)

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
        print(f"error: {e}", file=sys.stderr)
        return 1
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
    sys.exit(main())
