"""Boundary and hard-pixel error metrics of Seg-Aliasing (Chen et al., ICLR 2024).

Definitions (the paper's hard-pixel / boundary evaluation, as computed by ``metrics.py`` of
github.com/Linwei-Chen/Seg-Aliasing), for a prediction P and a ground truth G (label maps at GT
resolution, ignore value ``ign``):

1. Edges E(L): pixels where the 4-neighbour Laplacian of the uint8-cast label map is non-zero
   (reflect-101 border), so both sides of a label change are edges and the ignore label is an
   ordinary region.
2. Bands B(L): E(L) dilated by a ``band_kernel`` x ``band_kernel`` square (default 15, i.e. all
   pixels within Chebyshev distance 7 of an edge). The width is in pixels at GT resolution.
3. Regions: R_B = B(P) | B(G) (BIoU, BAcc), R_F = B(P) (FErr), R_M = B(G) (MErr),
   R_D = B(P) & B(G) (DErr); GT-ignore pixels are left out of every region.
4. Per class c and region, summed over the dataset: TP_c, GT_c (GT pixels of c) and PR_c
   (predicted c on non-ignored pixels). IoU_c = TP_c / (GT_c + PR_c - TP_c),
   Acc_c = TP_c / GT_c (NaN when the denominator is 0).
5. BIoU = nanmean_c IoU_c(R_B), BAcc = nanmean_c Acc_c(R_B), FErr = 1 - nanmean_c Acc_c(R_F),
   MErr = 1 - nanmean_c Acc_c(R_M), DErr = 1 - nanmean_c Acc_c(R_D); reported in percent.

"BIoU" here is the band-restricted mIoU of Seg-Aliasing, not Cheng et al.'s Boundary IoU.
"""

import itertools
import logging
from collections import OrderedDict
from typing import Callable, Dict, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.sem_seg_evaluation import load_image_into_numpy_array
from detectron2.utils import comm
from scipy.ndimage import maximum_filter

__all__ = [
    "BoundaryErrorEvaluator",
    "label_edges",
    "edge_band",
    "boundary_error_counts",
    "boundary_error_metrics",
    "REGIONS",
]

logger = logging.getLogger(__name__)

#: Region order of the count arrays: band union, prediction band, GT band, band intersection.
REGIONS = ("boundary", "pred_band", "gt_band", "both_bands")


def label_edges(labels: np.ndarray, mode: str = "laplacian") -> np.ndarray:
    """One-pixel label edges.

    Args:
        labels: ``(H, W)`` integer label map.
        mode: "laplacian" (Seg-Aliasing's, exact): the 4-neighbour Laplacian of the labels cast
            to uint8 (wrapping at 256) is non-zero, with reflect-101 borders; it misses pixels
            whose neighbours cancel (a 1-px stripe of 5 between 4 and 6). "neighbor": any
            4-neighbour has a different label (no cancellation, no wrap).

    Returns:
        ``(H, W)`` bool edge map.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected a 2-D label map, got shape {labels.shape}")
    pad_mode = "reflect" if min(labels.shape) > 1 else "edge"
    if mode == "laplacian":
        x = labels.astype(np.int64) & 255
        p = np.pad(x, 1, mode=pad_mode)
        lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * x
        return lap != 0
    if mode == "neighbor":
        p = np.pad(labels, 1, mode=pad_mode)
        c = labels
        return (p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)
    raise ValueError(f"mode: expected 'laplacian' or 'neighbor', got {mode!r}")


def edge_band(edges: np.ndarray, band_kernel: int = 15) -> np.ndarray:
    """Dilate an edge map by a ``band_kernel`` x ``band_kernel`` square (zero padding)."""
    if band_kernel < 1 or band_kernel % 2 == 0:
        raise ValueError(f"band_kernel: expected a positive odd integer, got {band_kernel}")
    if band_kernel == 1:
        return edges.astype(bool)
    return maximum_filter(edges.astype(np.uint8), size=band_kernel, mode="constant", cval=0) > 0


def boundary_error_counts(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    ignore_label: int = 255,
    *,
    band_kernel: int = 15,
    edge_mode: str = "laplacian",
    gt_edge_labels: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Per-class pixel counts of one image in the four regions.

    Args:
        pred: ``(H, W)`` predicted labels.
        gt: ``(H, W)`` GT labels in ``[0, num_classes)`` or ``ignore_label``.
        num_classes: number of classes C.
        ignore_label: GT value that is excluded from all counts.
        band_kernel: side of the square dilating the edges (odd).
        edge_mode: see :func:`label_edges`.
        gt_edge_labels: label map used for the GT edges instead of ``gt`` (e.g. raw ADE20K labels,
            where "other" is class 0 rather than ignore).

    Returns:
        int64 array of shape ``(4, 3, C)``: regions in :data:`REGIONS` order, then TP, GT, PR.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred: shape {pred.shape} differs from the ground truth's {gt.shape}")
    gt_edge_labels = gt if gt_edge_labels is None else gt_edge_labels
    band_pred = edge_band(label_edges(pred, edge_mode), band_kernel)
    band_gt = edge_band(label_edges(gt_edge_labels, edge_mode), band_kernel)
    valid = gt != ignore_label
    regions = (band_pred | band_gt, band_pred, band_gt, band_pred & band_gt)
    counts = np.zeros((len(REGIONS), 3, num_classes), dtype=np.int64)
    for i, region in enumerate(regions):
        sel = region & valid
        g = gt[sel].astype(np.int64)
        p = pred[sel].astype(np.int64)
        g_in = (g >= 0) & (g < num_classes)
        p_in = (p >= 0) & (p < num_classes)
        counts[i, 0] = np.bincount(g[g_in & (g == p)], minlength=num_classes)[:num_classes]
        counts[i, 1] = np.bincount(g[g_in], minlength=num_classes)[:num_classes]
        counts[i, 2] = np.bincount(p[p_in], minlength=num_classes)[:num_classes]
    return counts


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def boundary_error_metrics(counts: np.ndarray) -> Dict[str, np.ndarray]:
    """Metrics (fractions) from summed :func:`boundary_error_counts`.

    Returns:
        Means ``BIoU``, ``BAcc``, ``FErr``, ``MErr``, ``DErr``, the pixel-accuracy variants
        ``BAcc_a``, ``FErr_a``, ``MErr_a``, ``DErr_a``, and per-class arrays ``per_class_BIoU``,
        ``per_class_BAcc``, ``per_class_FErr``, ``per_class_MErr``, ``per_class_DErr``
        (NaN where undefined).
    """
    counts = counts.astype(np.float64)
    tp, gt, pr = counts[:, 0], counts[:, 1], counts[:, 2]
    iou = _ratio(tp[0], gt[0] + pr[0] - tp[0])
    acc = _ratio(tp, gt)  # (4, C)
    pix_acc = _ratio(tp.sum(axis=1), gt.sum(axis=1))  # (4,)
    out: Dict[str, np.ndarray] = {
        "BIoU": _nanmean(iou),
        "BAcc": _nanmean(acc[0]),
        "FErr": 1.0 - _nanmean(acc[1]),
        "MErr": 1.0 - _nanmean(acc[2]),
        "DErr": 1.0 - _nanmean(acc[3]),
        "BAcc_a": float(pix_acc[0]),
        "FErr_a": 1.0 - float(pix_acc[1]),
        "MErr_a": 1.0 - float(pix_acc[2]),
        "DErr_a": 1.0 - float(pix_acc[3]),
        "per_class_BIoU": iou,
        "per_class_BAcc": acc[0],
        "per_class_FErr": 1.0 - acc[1],
        "per_class_MErr": 1.0 - acc[2],
        "per_class_DErr": 1.0 - acc[3],
    }
    return out


class BoundaryErrorEvaluator(DatasetEvaluator):
    """BIoU, BAcc, FErr, MErr and DErr of semantic predictions (Seg-Aliasing's metrics).

    Ground truth comes from the dataset's ``sem_seg_file_name`` entries, with the metadata's
    ``stuff_classes`` and ``ignore_label``, as for ``SemSegEvaluator``. Predictions are
    ``output["sem_seg"]`` (C x H x W scores, arg-maxed) or, with ``source="panoptic"``,
    ``output["panoptic_seg"]`` painted with each segment's ``category_id`` (which must be a
    class id of the semantic label space, as Mask2Former's are); VOID pixels count as no class.

    ``evaluate()`` returns ``{"sem_seg_boundary": {...}}`` in percent: ``BIoU``, ``BAcc``,
    ``FErr``, ``MErr``, ``DErr``, the pixel-accuracy variants ``BAcc_a``, ``FErr_a``, ``MErr_a``,
    ``DErr_a``, and per-class ``BIoU-<class>``, ``BAcc-<class>``, ``FErr-<class>``,
    ``MErr-<class>``, ``DErr-<class>``. Call it on every process (it gathers the counts).
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        band_kernel: int = 15,
        edge_mode: str = "laplacian",
        source: str = "sem_seg",
        ade_raw_compat: bool = False,
        sem_seg_loading_fn: Callable = load_image_into_numpy_array,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: registered dataset with ``sem_seg_file_name`` entries.
            band_kernel: side of the square dilating the edges (odd; 15 = 7 px each side, as
                in the paper).
            edge_mode: "laplacian" (exact Seg-Aliasing edges) or "neighbor".
            source: "sem_seg" or "panoptic": which model output to score.
            ade_raw_compat: GT is ADE20K in detectron2's reduced layout (0..149, 255 = other);
                compute GT edges on the raw labels (``(gt + 1) % 256``, "other" = 0) as the
                original code did, which only differs where the Laplacian cancels.
            sem_seg_loading_fn: reads a GT file into an array (see ``SemSegEvaluator``).
            distributed: gather counts from all processes.
        """
        if source not in ("sem_seg", "panoptic"):
            raise ValueError(f"source: expected 'sem_seg' or 'panoptic', got {source!r}")
        label_edges(np.zeros((1, 1), dtype=np.int64), edge_mode)  # validates edge_mode
        edge_band(np.zeros((1, 1), dtype=bool), band_kernel)  # validates band_kernel
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = meta.get("ignore_label", 255)
        self._band_kernel = band_kernel
        self._edge_mode = edge_mode
        self._source = source
        self._ade_raw_compat = ade_raw_compat
        self._loading_fn = sem_seg_loading_fn
        self._distributed = distributed
        self._gt_files = {
            d["file_name"]: d["sem_seg_file_name"] for d in DatasetCatalog.get(dataset_name)
        }

    def reset(self):
        self._counts = np.zeros((len(REGIONS), 3, self._num_classes), dtype=np.int64)

    def _prediction(self, output) -> np.ndarray:
        if self._source == "sem_seg":
            return output["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.int64)
        panoptic_img, segments_info = output["panoptic_seg"]
        panoptic_img = panoptic_img.cpu().numpy()
        pred = np.full(panoptic_img.shape, self._ignore_label, dtype=np.int64)
        if segments_info is None:
            raise ValueError(
                "outputs: source='panoptic' needs segments_info; got None (label_divisor format)"
            )
        for seg in segments_info:
            pred[panoptic_img == seg["id"]] = seg["category_id"]
        return pred

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            pred = self._prediction(out)
            gt = np.asarray(self._loading_fn(self._gt_files[inp["file_name"]], dtype=np.int64))
            gt_edge_labels = (gt + 1) & 255 if self._ade_raw_compat else None
            self._counts += boundary_error_counts(
                pred,
                gt,
                self._num_classes,
                self._ignore_label,
                band_kernel=self._band_kernel,
                edge_mode=self._edge_mode,
                gt_edge_labels=gt_edge_labels,
            )

    def evaluate(self):
        counts = self._counts
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(self._counts)
            if not comm.is_main_process():
                return None
            counts = np.sum(gathered, axis=0)
        self.counts = counts
        m = boundary_error_metrics(counts)
        res: Dict[str, float] = OrderedDict()
        for key in ("BIoU", "BAcc", "FErr", "MErr", "DErr", "BAcc_a", "FErr_a", "MErr_a", "DErr_a"):
            res[key] = 100 * m[key]
        for key in ("BIoU", "BAcc", "FErr", "MErr", "DErr"):
            for name, value in zip(self._class_names, m["per_class_" + key]):
                res[f"{key}-{name}"] = 100 * float(value)
        logger.info(
            "Boundary metrics (band %d px): %s",
            self._band_kernel,
            ", ".join(f"{k} {res[k]:.2f}" for k in itertools.islice(res, 5)),
        )
        return OrderedDict({"sem_seg_boundary": res})
