"""Benchmark ``freqfusion_d2.evaluation.pq_compute`` on generated panoptic data.

Generates N panoptic GT/prediction pairs (default 500 images of 256 x 256, about 8 stuff and 12
thing segments each, with VOID and crowd regions) in a temporary directory, then times
``pq_compute`` with 1 and 2 processes. Each configuration runs in a fresh interpreter, so the
memory figures are not polluted by data generation:

* time: wall-clock seconds of the ``pq_compute`` call;
* main RSS: peak resident set size of the evaluating process (``ru_maxrss``, RUSAGE_SELF);
* worker RSS: peak RSS of the largest worker process (``ru_maxrss``, RUSAGE_CHILDREN; "-" when
  the images are evaluated in-process);
* traced peak: peak of Python/numpy allocations in the main process during the call
  (``tracemalloc``), i.e. what the evaluation itself holds on top of the interpreter.

Usage: ``python benchmarks/bench_pq.py [--images 500] [--size 256] [--workers 1 2]``
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from PIL import Image

CATEGORIES = [{"id": i + 1, "name": f"thing{i}", "isthing": 1} for i in range(40)] + [
    {"id": 100 + i, "name": f"stuff{i}", "isthing": 0} for i in range(20)
]


def _encode(id_map):
    return np.stack([id_map & 255, (id_map >> 8) & 255, (id_map >> 16) & 255], -1).astype(np.uint8)


def _image(rng, size):
    h = w = size
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int64)
    cats = {}
    seeds = rng.integers(0, size, size=(8, 2))
    nearest = np.argmin([(yy - a) ** 2 + (xx - b) ** 2 for a, b in seeds], axis=0)
    stuff = rng.choice(20, size=8, replace=False) + 100
    for k in range(8):
        labels[nearest == k] = k + 1
        cats[k + 1] = (int(stuff[k]), 0)
    crowd_done = set()
    for k in range(12):
        cat = int(rng.integers(1, 41))
        y0, x0 = rng.integers(0, size - 8, size=2)
        bh, bw = rng.integers(8, size // 3, size=2)
        if rng.random() < 0.5:
            m = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
        else:
            m = ((yy - y0 - bh / 2) / (bh / 2)) ** 2 + ((xx - x0 - bw / 2) / (bw / 2)) ** 2 <= 1
        sid = 20 + k
        labels[m] = sid
        crowd = cat not in crowd_done and rng.random() < 0.1
        if crowd:
            crowd_done.add(cat)
        cats[sid] = (cat, int(crowd))
    # VOID: scattered pixels and a 5-px band above the last thing.
    labels[rng.random((h, w)) < 0.01] = 0
    labels[max(0, y0 - 5) : y0, :] = 0
    gt_ids = {sid: int(rng.integers(1, 1 << 24)) for sid in cats}
    gt_segs = []
    gt = np.zeros_like(labels)
    for sid in np.unique(labels):
        if sid == 0:
            continue
        m = labels == sid
        gt[m] = gt_ids[sid]
        cat, crowd = cats[sid]
        gt_segs.append(
            {
                "id": gt_ids[sid],
                "category_id": cat,
                "iscrowd": crowd,
                "area": int(m.sum()),
                "bbox": [0, 0, 1, 1],
            }
        )
    # Prediction: shifted labels, some categories changed, VOID filled with a stuff class.
    pred_labels = np.roll(labels, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
    pred_cats = {sid: c for sid, (c, _) in cats.items()}
    pred_cats[0] = int(stuff[0])
    for sid in pred_cats:
        if rng.random() < 0.15:
            pred_cats[sid] = int(rng.choice([c["id"] for c in CATEGORIES]))
    pred = np.zeros_like(labels)
    pred_segs = []
    for sid in np.unique(pred_labels):
        pid = int(rng.integers(1, 1 << 24))
        pred[pred_labels == sid] = pid
        pred_segs.append({"id": pid, "category_id": pred_cats[int(sid)]})
    return gt, gt_segs, pred, pred_segs


def generate(root, n_images, size, seed=0):
    rng = np.random.default_rng(seed)
    for sub in ("gt", "pred"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    gt_anns, pred_anns, n_segs = [], [], 0
    for i in range(n_images):
        gt, gt_segs, pred, pred_segs = _image(rng, size)
        name = f"{i:06d}.png"
        Image.fromarray(_encode(gt)).save(os.path.join(root, "gt", name))
        Image.fromarray(_encode(pred)).save(os.path.join(root, "pred", name))
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": gt_segs})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": pred_segs})
        n_segs += len(gt_segs)
    for sub, anns in (("gt", gt_anns), ("pred", pred_anns)):
        with open(os.path.join(root, sub + ".json"), "w") as f:
            json.dump({"annotations": anns, "categories": CATEGORIES}, f)
    return n_segs / n_images


def run_one(root, workers):
    """Evaluate in this process; print one JSON line with the measurements."""
    from freqfusion_d2.evaluation import pq_compute

    tracemalloc.start()
    start = time.perf_counter()
    res = pq_compute(
        os.path.join(root, "gt.json"), os.path.join(root, "pred.json"), num_workers=workers
    )
    elapsed = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "time": elapsed,
                "main_rss": main_rss,
                "worker_rss": child_rss if workers > 1 else None,
                "traced_peak": traced_peak / 2**20,
                "pq": res["All"]["pq"],
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--_run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._run:
        run_one(args._run[0], int(args._run[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench_pq") as root:
        t0 = time.perf_counter()
        mean_segs = generate(root, args.images, args.size)
        print(
            f"generated {args.images} images of {args.size}x{args.size}, "
            f"{mean_segs:.1f} GT segments per image, in {time.perf_counter() - t0:.1f} s"
        )
        rows = []
        for w in args.workers:
            out = subprocess.run(
                [sys.executable, __file__, "--_run", root, str(w)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append((w, json.loads(out.strip().splitlines()[-1])))
    print(
        "\n| processes | time (s) | images/s | main RSS (MiB) | worker RSS (MiB) "
        "| traced peak (MiB) | PQ |"
    )
    print("|---|---|---|---|---|---|---|")
    for w, r in rows:
        worker = "-" if r["worker_rss"] is None else f"{r['worker_rss']:.0f}"
        print(
            f"| {w} | {r['time']:.2f} | {args.images / r['time']:.0f} | {r['main_rss']:.0f} "
            f"| {worker} | {r['traced_peak']:.1f} | {100 * r['pq']:.2f} |"
        )
    print(
        f"\n(cpu count: {os.cpu_count()}; RSS = ru_maxrss; traced peak = tracemalloc in the "
        "main process)"
    )


if __name__ == "__main__":
    main()
