"""PASCAL VOC detection AP, and its Hungarian matching of pseudo-classes (clusters) to classes.

A detector trained on clustered LOST boxes predicts cluster ids, not VOC classes. Its detections
are scored the usual unsupervised way: the AP50 of every (class, cluster) pair forms a reward
matrix; the Hungarian algorithm assigns one cluster per class so that the mean AP50 is highest;
surplus clusters get extra class ids (their detections count for no class); AP50, AP75 and AP
(mean over IoU 0.50:0.05:0.95) per class then follow from that assignment.

AP is VOC's since 2010: the area under the precision/recall curve made monotonically
non-increasing, over all recall points. Detections are taken by decreasing score (ties in file
order); each one matches the ground-truth box of its image and class with the highest IoU; it is
a true positive when that IoU exceeds the threshold (strictly, as in the VOC devkit's Python
port) and the box was not matched before, ignored when the box is ``difficult``, and a false
positive otherwise. Difficult boxes do not count as positives.

Boxes are ``[x1, y1, x2, y2]`` with x2/y2 exclusive and IoU is computed in continuous
coordinates; with VOC corners read as ``[xmin - 1, ymin - 1, xmax, ymax]`` and detections as
``[x, y, x + w, y + h]`` this equals the devkit's "+1" pixel arithmetic on its own conventions.

Compute (``average_precision``, ``reward_matrix``, ``hungarian_matching``, ``evaluate_matched``)
is separate from reading files (``load_voc_ground_truth``, ``load_coco_results``) and from
reporting (``summary``). Nothing here needs detectron2.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from lost.data import datasets
from lost.errors import LostError
from lost.eval.metrics import box_iou
from lost.io import safe_files

IOU_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))


# ----------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class ClassGroundTruth:
    """Ground truth of one class over an image set, padded to m boxes per image.

    boxes: (n_images, m, 4) float64 [x1, y1, x2, y2]; valid: (n_images, m) bool, False on padding;
    difficult: (n_images, m) bool.
    """

    boxes: np.ndarray
    valid: np.ndarray
    difficult: np.ndarray

    @property
    def num_positives(self) -> int:
        return int(np.sum(self.valid & ~self.difficult))

    @staticmethod
    def from_lists(per_image: Sequence[Sequence[tuple[Sequence[float], bool]]]) -> ClassGroundTruth:
        """per_image[i] = [(box [x1, y1, x2, y2], difficult), ...] for image i."""
        m = max((len(objects) for objects in per_image), default=0)
        boxes = np.zeros((len(per_image), m, 4))
        valid = np.zeros((len(per_image), m), dtype=bool)
        difficult = np.zeros((len(per_image), m), dtype=bool)
        for i, objects in enumerate(per_image):
            for j, (box, is_difficult) in enumerate(objects):
                boxes[i, j], valid[i, j], difficult[i, j] = box, True, is_difficult
        return ClassGroundTruth(boxes, valid, difficult)


@dataclass(frozen=True)
class Detections:
    """Detections of one category: image_index (n,) int into the image list, scores (n,),
    boxes (n, 4) [x1, y1, x2, y2]."""

    image_index: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 4)))


# ----------------------------------------------------------------------------------------------
# AP


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision/recall curve (all recall points), in [0, 1].

    recall, precision: (n,) cumulative values over detections sorted by decreasing score.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def match_detections(dets: Detections, gt: ClassGroundTruth, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true_positive, false_positive): (n,) bool each, for the detections in decreasing score
    order (stable); a detection on a difficult box is neither (see the module docstring)."""
    order = np.argsort(-dets.scores, kind="stable")
    images = dets.image_index[order]
    n, m = len(order), gt.boxes.shape[1]
    if m == 0 or n == 0:
        return np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    ious = np.where(gt.valid[images], box_iou(dets.boxes[order][:, None, :], gt.boxes[images]), -np.inf)
    best = ious.argmax(axis=1)
    above = ious[np.arange(n), best] > iou_threshold
    on_difficult = above & gt.difficult[images, best]
    candidates = np.flatnonzero(above & ~on_difficult)
    _, first_claims = np.unique(images[candidates] * m + best[candidates], return_index=True)
    true_positive = np.zeros(n, dtype=bool)
    true_positive[candidates[first_claims]] = True
    return true_positive, ~true_positive & ~on_difficult


def average_precision(dets: Detections, gt: ClassGroundTruth, iou_threshold: float) -> float:
    """VOC AP in [0, 1] of `dets` against `gt` at `iou_threshold`; NaN when the class has no
    non-difficult box in the image set."""
    positives = gt.num_positives
    if positives == 0:
        return float("nan")
    true_positive, false_positive = match_detections(dets, gt, iou_threshold)
    tp, fp = np.cumsum(true_positive), np.cumsum(false_positive)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision)


# ----------------------------------------------------------------------------------------------
# Hungarian matching


def reward_matrix(
    gts: Sequence[ClassGroundTruth], clusters: Sequence[Detections], iou_threshold: float = 0.5
) -> np.ndarray:
    """(n_classes, n_clusters) AP of every cluster's detections for every class (NaN rows for
    classes without positives)."""
    return np.array([[average_precision(dets, gt, iou_threshold) for dets in clusters] for gt in gts]).reshape(
        len(gts), len(clusters)
    )


@dataclass(frozen=True)
class Matching:
    """class_to_cluster: class index -> cluster index (None when there are fewer clusters than
    classes); cluster_to_class: every cluster index -> class index, surplus clusters to extra
    ids n_classes, n_classes + 1, ... in cluster order; mean_ap50: mean over classes with
    positives of the matched AP50 (0 for an unmatched class)."""

    class_to_cluster: dict[int, int | None]
    cluster_to_class: dict[int, int]
    mean_ap50: float


def hungarian_matching(rewards: np.ndarray) -> Matching:
    """One cluster per class maximizing the summed reward (`rewards: (n_classes, n_clusters)`,
    NaN counted as 0), with ``scipy.optimize.linear_sum_assignment``."""
    n_classes, n_clusters = rewards.shape
    filled = np.nan_to_num(rewards, nan=0.0)
    rows, cols = linear_sum_assignment(filled, maximize=True)
    class_to_cluster: dict[int, int | None] = {c: None for c in range(n_classes)}
    class_to_cluster.update({int(r): int(c) for r, c in zip(rows, cols, strict=True)})
    cluster_to_class = {int(c): int(r) for r, c in zip(rows, cols, strict=True)}
    surplus = [k for k in range(n_clusters) if k not in cluster_to_class]
    cluster_to_class.update({k: n_classes + i for i, k in enumerate(surplus)})
    matched = [filled[c, k] if k is not None else 0.0 for c, k in class_to_cluster.items()]
    has_positives = ~np.all(np.isnan(rewards), axis=1)
    mean = float(np.mean(np.array(matched)[has_positives])) if has_positives.any() else float("nan")
    return Matching(class_to_cluster, dict(sorted(cluster_to_class.items())), mean)


@dataclass(frozen=True)
class MatchedAP:
    """AP per class under a matching: ap (n_classes, 10) in percent at IOU_THRESHOLDS (NaN rows
    for classes without positives)."""

    classes: tuple[str, ...]
    ap: np.ndarray

    def per_class(self, index: int) -> dict[str, float]:
        row = self.ap[index]
        return {"AP50": float(row[0]), "AP75": float(row[5]), "AP": float(np.mean(row))}

    def overall(self) -> dict[str, float]:
        """Means over the classes that have positives."""
        rows = self.ap[~np.isnan(self.ap).any(axis=1)]
        if len(rows) == 0:
            return {"AP50": float("nan"), "AP75": float("nan"), "AP": float("nan")}
        return {"AP50": float(rows[:, 0].mean()), "AP75": float(rows[:, 5].mean()), "AP": float(rows.mean())}


def evaluate_matched(
    gts: Sequence[ClassGroundTruth], clusters: Sequence[Detections], matching: Matching, classes: Sequence[str]
) -> MatchedAP:
    """AP of each class, using the detections of its matched cluster (none when unmatched)."""
    ap = np.zeros((len(gts), len(IOU_THRESHOLDS)))
    for c, gt in enumerate(gts):
        k = matching.class_to_cluster[c]
        dets = clusters[k] if k is not None else Detections.empty()
        ap[c] = [100.0 * average_precision(dets, gt, t) for t in IOU_THRESHOLDS]
    return MatchedAP(tuple(classes), ap)


# ----------------------------------------------------------------------------------------------
# Files


def load_voc_ground_truth(
    voc_dir: Path, year: str, image_set: str, classes: Sequence[str] = datasets.VOC_CLASSES
) -> tuple[list[str], list[ClassGroundTruth]]:
    """(image ids of the set, one ClassGroundTruth per class), read from the VOC XML files."""
    image_ids = datasets.voc_image_ids(voc_dir, year, image_set)
    devkit = datasets.voc_devkit_dir(Path(voc_dir), year)
    per_class: dict[str, list[list]] = {name: [[] for _ in image_ids] for name in classes}
    for i, image_id in enumerate(image_ids):
        annotation = datasets.read_voc_annotation(devkit / "Annotations" / f"{image_id}.xml")
        for obj in annotation.objects:
            if obj.name in per_class:
                per_class[obj.name][i].append((obj.box, obj.difficult))
    return image_ids, [ClassGroundTruth.from_lists(per_class[name]) for name in classes]


def load_coco_results(json_path: Path, image_ids: Sequence[str]) -> tuple[dict[int, Detections], int]:
    """Detections per category id of a COCO results file (detectron2's
    ``coco_instances_results.json``: image_id, category_id, bbox [x, y, w, h], score), keeping
    those on `image_ids`; also returns how many were on other images."""
    index = {datasets.canonical_image_id(image_id): i for i, image_id in enumerate(image_ids)}
    grouped: dict[int, list[tuple[int, safe_files.Detection]]] = defaultdict(list)
    elsewhere = 0
    for number, det in enumerate(safe_files.read_coco_results(json_path)):
        if det.category_id is None:
            raise LostError(f"{json_path}: detection {number} has no category_id; pass the detector's COCO results")
        image = index.get(datasets.canonical_image_id(det.image_id))
        if image is None:
            elsewhere += 1
            continue
        grouped[det.category_id].append((image, det))
    detections = {
        category: Detections(
            np.array([image for image, _ in dets], dtype=np.int64),
            np.array([det.score for _, det in dets]),
            np.array([det.box for _, det in dets]).reshape(-1, 4),
        )
        for category, dets in sorted(grouped.items())
    }
    return detections, elsewhere


def summary(result: MatchedAP, matching: Matching, cluster_ids: Sequence[int]) -> str:
    """A per-class table (AP50 | AP75 | AP, in percent) with the matched cluster, then the means."""
    lines = [f"{'class':<14} {'cluster':>8} {'AP50':>7} {'AP75':>7} {'AP':>7}"]
    for c, name in enumerate(result.classes):
        k = matching.class_to_cluster[c]
        cluster = "-" if k is None else str(cluster_ids[k])
        values = result.per_class(c)
        lines.append(f"{name:<14} {cluster:>8} " + " ".join(_percent(values[key]) for key in ("AP50", "AP75", "AP")))
    overall = result.overall()
    lines.append(f"{'mean':<14} {'':>8} " + " ".join(_percent(overall[key]) for key in ("AP50", "AP75", "AP")))
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{'-':>7}" if np.isnan(value) else f"{value:7.2f}"


def report(result: MatchedAP, matching: Matching, cluster_ids: Sequence[int]) -> dict:
    """The results as a JSON-ready dict (class names to AP values and matched cluster ids)."""

    def to_id(k: int | None) -> int | None:
        return None if k is None else int(cluster_ids[k])

    return {
        "hungarian_mean_AP50": matching.mean_ap50,
        "class_to_cluster": {name: to_id(matching.class_to_cluster[c]) for c, name in enumerate(result.classes)},
        "per_class": {name: result.per_class(c) for c, name in enumerate(result.classes)},
        "overall": result.overall(),
    }


def evaluate_clusters(
    gts: Sequence[ClassGroundTruth], detections: Mapping[int, Detections], classes: Sequence[str]
) -> tuple[MatchedAP, Matching, list[int]]:
    """The whole evaluation: reward matrix at IoU 0.5 over the category ids of `detections`
    (the clusters), Hungarian matching, then matched AP. Returns the cluster ids too."""
    cluster_ids = sorted(detections)
    clusters = [detections[k] for k in cluster_ids]
    matching = hungarian_matching(reward_matrix(gts, clusters, 0.5))
    return evaluate_matched(gts, clusters, matching, classes), matching, cluster_ids
