"""Panoptic Quality (PQ) without ``panopticapi``: :func:`pq_compute` and its helpers, implemented
in :mod:`.panoptic_quality`; ``python -m freqfusion_d2.evaluation.panoptic --help`` for the
command line."""

from .panoptic_quality import (
    VOID,
    PQStat,
    format_pq_table,
    id2rgb,
    pq_compute,
    pq_single_image,
    rgb2id,
)

__all__ = [
    "pq_compute",
    "pq_single_image",
    "rgb2id",
    "id2rgb",
    "format_pq_table",
    "PQStat",
    "VOID",
]
