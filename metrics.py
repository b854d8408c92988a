"""Scores of boxes against ground truth: IoU and CorLoc.

Boxes are ``[x1, y1, x2, y2]`` with x2/y2 exclusive; IoU is computed in continuous coordinates,
``inter / (area1 + area2 - inter)``, without the published ``1e-7`` epsilon, so an IoU of exactly
0.5 is a correct localization.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasets import ImageRecord


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of `boxes_a: (..., 4)` with `boxes_b: (..., 4)`, broadcast over the leading axes ->
    float64 of the broadcast shape (0 where the union is 0).

    `box_iou(box (4,), boxes (K, 4)) -> (K,)`: one box against K;
    `box_iou(boxes (n, 1, 4), gt (n, m, 4)) -> (n, m)`: each box against its own m.
    """
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def is_correct_localization(pred: np.ndarray, gt_boxes: np.ndarray) -> bool:
    """True when `pred: (4,)` has IoU >= 0.5 with any of `gt_boxes: (K, 4)` (False for K = 0);
    boxes [x1, y1, x2, y2]."""
    box = np.asarray(pred).reshape(4)
    return bool(np.any(box_iou(box, np.asarray(gt_boxes).reshape(-1, 4)) >= 0.5))


class CorLocMeter:
    """Counts hits over evaluated images; `value` is the percentage (0.0 before any update)."""

    def __init__(self) -> None:
        self.hits = 0
        self.count = 0

    def update(self, hit: bool) -> None:
        self.hits += int(bool(hit))
        self.count += 1

    @property
    def value(self) -> float:
        return 100.0 * self.hits / self.count if self.count else 0.0

    def summary(self) -> str:
        return f"corloc: {self.value:.2f} ({self.hits}/{self.count})"


def evaluate_corloc(records: Iterable[ImageRecord], predictions: Mapping[str, np.ndarray]) -> CorLocMeter:
    """CorLoc of `predictions` (record name -> box [x1, y1, x2, y2]) over the records that have
    ground truth; a record without a prediction counts as a miss."""
    meter = CorLocMeter()
    for record in records:
        if record.gt_boxes is None:
            continue
        box = predictions.get(record.name)
        meter.update(box is not None and is_correct_localization(box, record.gt_boxes))
    return meter
