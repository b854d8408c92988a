"""Scores of boxes against ground truth: IoU, CorLoc and class-agnostic detection AP.

Boxes are ``[x1, y1, x2, y2]`` with x2/y2 exclusive; IoU is computed in continuous coordinates,
``inter / (area1 + area2 - inter)``, without the published ``1e-7`` epsilon, so an IoU of exactly
0.5 is a correct localization.

Class-agnostic AP (:func:`class_agnostic_ap`) is pycocotools' ``COCOeval`` on boxes with one
category: every ground-truth object of an image counts (not only one, as for CorLoc), every
predicted box is a detection with its score. AP is COCO's: precision made non-increasing,
interpolated at the 101 recalls 0, 0.01, ..., 1 (0 past the last recall reached), averaged; AP50
and AP75 at IoU >= 0.5 and 0.75, AP averaged over IoU 0.50:0.05:0.95; AR@n the recall with the
best n detections of each image, averaged over the same IoUs; at most 100 detections per image
count. A detection matches the unmatched ground-truth box of highest IoU, regular boxes before
ignored ones. Ignored: VOC's difficult objects (a detection matched to one is neither a true nor a
false positive; pycocotools lets one detection match it, so a second one on the same object is a
false positive, where VOC's devkit ignores them all) and COCO's crowd regions (any number of
detections inside one are ignored, IoU measured as COCO does for crowds: intersection over the
detection's area). Neither counts as an object to find.

pycocotools is imported by the AP functions, not with this module: IoU and CorLoc need only numpy.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from lost.data.datasets import ImageRecord
    from lost.io.safe_files import ScoredBoxes


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


# ----------------------------------------------------------------------------------------------
# Class-agnostic detection AP


@dataclass(frozen=True)
class DetectionAP:
    """Class-agnostic detection metrics, fractions in [0, 1] (NaN when no image has an object):
    ap (IoU 0.50:0.95), ap50, ap75, ar1, ar10, ar100; images evaluated and objects in them."""

    ap: float
    ap50: float
    ap75: float
    ar1: float
    ar10: float
    ar100: float
    images: int
    objects: int

    def summary(self) -> str:
        """One line per metric, in percent: ``AP50: 22.40`` ..."""
        values = (
            ("AP50", self.ap50), ("AP75", self.ap75), ("AP", self.ap),
            ("AR@1", self.ar1), ("AR@10", self.ar10), ("AR@100", self.ar100),
        )  # fmt: skip
        lines = [f"{name}: {100 * value:.2f}" for name, value in values]
        return "\n".join([*lines, f"images: {self.images}, objects: {self.objects}"])


@functools.cache
def _cocoeval_keeping_ignore() -> type[COCOeval]:
    """pycocotools' ``COCOeval``, except that ground truth marked ``"difficult"`` is ignored
    (pycocotools sets every box's ignore flag to its ``iscrowd`` flag, forgetting any other)."""
    from pycocotools.cocoeval import COCOeval

    class COCOevalKeepingIgnore(COCOeval):
        def _prepare(self) -> None:
            super()._prepare()
            for boxes in self._gts.values():
                for box in boxes:
                    box["ignore"] = int(bool(box["ignore"]) or bool(box.get("difficult", False)))

    return COCOevalKeepingIgnore


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _box_annotation(annotation_id: int, image_id: int, box: np.ndarray, **fields: object) -> dict:
    """A COCO annotation of category 1 for `box` [x1, y1, x2, y2] (as ``bbox`` [x, y, w, h] and
    its ``area``), followed by `fields`."""
    xywh = _xywh(box)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": xywh,
        "area": xywh[2] * xywh[3],
        **fields,
    }


def coco_index(images: list[dict], annotations: list[dict]) -> COCO:
    """A pycocotools index of one category ("object", id 1) built in memory, prints silenced."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _ground_truth_annotations(records: list[ImageRecord]) -> list[dict]:
    """COCO annotations of the records' objects (image i has id i + 1): a box is ``difficult``
    where the record says so; its crowd regions are ``iscrowd``."""
    annotations = []
    for image_id, record in enumerate(records, start=1):
        difficult = record.gt_difficult or (False,) * len(record.gt_boxes)
        crowds = np.zeros((0, 4)) if record.crowd_boxes is None else record.crowd_boxes
        regions = [(box, 0, flag) for box, flag in zip(record.gt_boxes, difficult, strict=True)]
        regions += [(box, 1, False) for box in crowds]
        for box, crowd, is_difficult in regions:
            annotation_id = len(annotations) + 1
            annotations.append(
                _box_annotation(annotation_id, image_id, box, iscrowd=crowd, difficult=bool(is_difficult))
            )
    return annotations


def _detection_annotations(records: list[ImageRecord], predictions: Mapping[str, ScoredBoxes]) -> list[dict]:
    """COCO results of the records' predictions (category 1, ids from 1)."""
    detections = []
    for image_id, record in enumerate(records, start=1):
        found = predictions.get(record.name)
        if found is None:
            continue
        for box, score in zip(found.boxes, found.scores, strict=True):
            detections.append(_box_annotation(len(detections) + 1, image_id, box, iscrowd=0, score=float(score)))
    return detections


def class_agnostic_ap(records: Iterable[ImageRecord], predictions: Mapping[str, ScoredBoxes]) -> DetectionAP:
    """Class-agnostic AP and AR (see the module docstring) of `predictions` (record name -> boxes
    [x1, y1, x2, y2] and scores) over the records that have ground truth; an image without a
    prediction has no detection. Each record's ``gt_difficult`` boxes and ``crowd_boxes`` are ignored."""
    evaluated = [record for record in records if record.gt_boxes is not None]
    images = [{"id": image_id} for image_id in range(1, len(evaluated) + 1)]
    ground_truth = coco_index(images, _ground_truth_annotations(evaluated))
    detections = coco_index(images, _detection_annotations(evaluated, predictions))
    evaluation = _cocoeval_keeping_ignore()(ground_truth, detections, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [float("nan") if value < 0 else float(value) for value in evaluation.stats]
    objects = sum(
        not (annotation["iscrowd"] or annotation["difficult"]) for annotation in ground_truth.dataset["annotations"]
    )
    return DetectionAP(stats[0], stats[1], stats[2], stats[6], stats[7], stats[8], len(evaluated), objects)
