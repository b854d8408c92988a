"""The numbers of a run report, computed apart from the pages, in the spirit of pycocotools'
evaluate -> accumulate -> summarize: :func:`evaluate_run` judges each image (hit, best IoU, miss
kind, area shares), :func:`accumulate` counts per class, per difficulty bin and per miss kind,
:func:`sample_gallery` picks the thumbnails, :func:`compare_runs` sets two runs side by side.
:mod:`lost.report.pages` writes the pages from these numbers.

The rules the page states:

- An image is a hit when the predicted box has IoU >= 0.5 with any ground-truth box (CorLoc).
  The headline CorLoc is over the evaluated images (those with a box, as in ``results.txt``);
  images without a box are counted as skipped.
- Per class: an image counts once for each class among its objects, as a hit for all of them
  when it is a hit (whichever object the box matched).
- Difficulty: the share of the image area taken by the largest ground-truth box (small < 10%,
  medium 10-40%, large >= 40%) and the number of ground-truth boxes (1, 2, 3-5, 6+; a "0" row
  appears only for images without any box, which are always misses).
- Each miss is of exactly one kind, the first that applies: too big (the box contains a
  ground-truth box: at least 90% of that box's area lies inside it), a part (at least 90% of
  the box's area lies inside one ground-truth box), weak overlap (IoU > 0 with some box), no
  object (IoU 0 with every box). The 90% tolerance lets a box cut to the 16-pixel patch grid
  still contain an object it clips by a few pixels. A miss cannot be both too big and a part of
  the same box (both would give IoU >= 0.81), so the order matters only across boxes, e.g. a
  box around a bottle inside a person's box is "too big".

Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image, x2/y2 exclusive, throughout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from lost.errors import LostError
from lost.eval.metrics import box_iou, is_correct_localization

MISS_KINDS = ("too_big", "part", "weak_overlap", "no_object")
GALLERY_GROUPS = ("hit", *MISS_KINDS)
CONTAINMENT = 0.9
"""Share of a box's area that must lie inside another box for it to count as inside."""
AREA_BINS = (("small", 0.0, 0.10), ("medium", 0.10, 0.40), ("large", 0.40, float("inf")))
"""(label, low, high): largest ground-truth box area / image area in [low, high)."""
COUNT_BINS = (("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6+", 6, None))
"""(label, low, high): number of ground-truth boxes in [low, high] (None: no upper end)."""
OPTIONAL_BINS = frozenset({"0"})
"""Bins shown only when they hold images."""
T = TypeVar("T")
DEFAULT_GALLERY_SIZE = 60


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, eq=False)
class ReportImage:
    """One image of a run.

    name: the record name. path: the image file (for thumbnails), or None.
    pred_box: (4,) the predicted box, or None when the run skipped the image.
    gt_boxes: (K, 4) ground-truth boxes. gt_labels: K class names, one per gt box.
    image_size: (H, W) of the original image; (0, 0) only for a skipped image whose header could
    not be read. seed_box: (4,) LOST's seed patch, or None.
    All boxes [x1, y1, x2, y2] in original pixels, x2/y2 exclusive.
    """

    name: str
    path: Path | None
    pred_box: np.ndarray | None
    gt_boxes: np.ndarray
    gt_labels: tuple[str, ...]
    image_size: tuple[int, int]
    seed_box: np.ndarray | None = None


@dataclass(frozen=True)
class RunInfo:
    """What the headline says about a run besides its numbers; None prints as "not recorded".

    source: where the boxes come from (the prediction file). seconds: wall-clock time of the run;
    images_per_second: its throughput (given apart, since a resumed run processed only part).
    """

    source: str
    method: str | None = None
    backbone: str | None = None
    weights: str | None = None
    dataset: str | None = None
    seconds: float | None = None
    images_per_second: float | None = None


@dataclass(frozen=True, eq=False)
class ReportRun:
    """A run to report on: its description and its images in data-set order."""

    info: RunInfo
    images: tuple[ReportImage, ...]


# ----------------------------------------------------------------------------------------------
# Evaluate: one image at a time


@dataclass(frozen=True)
class ImageEvaluation:
    """The verdict on one evaluated image (one with a predicted box).

    index: its position in `ReportRun.images`. classes: its distinct class names, sorted.
    best_iou: the highest IoU with a gt box (0 without gt). miss_kind: one of MISS_KINDS, None
    for a hit. largest_share / pred_share: area of the largest gt box / of the predicted box
    (clipped to the image) over the image area.
    """

    index: int
    name: str
    classes: tuple[str, ...]
    hit: bool
    best_iou: float
    miss_kind: str | None
    object_count: int
    largest_share: float
    pred_share: float

    @property
    def group(self) -> str:
        """The gallery group of the image: "hit" or its miss kind."""
        return "hit" if self.hit else str(self.miss_kind)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of `boxes: (K, 4)` [x1, y1, x2, y2] -> (K,) float64, 0 for empty boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def intersection_areas(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Area of the intersection of `box: (4,)` with each of `boxes: (K, 4)` -> (K,) float64."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    return width * height


def _share_inside(inner_areas: np.ndarray, inter: np.ndarray) -> np.ndarray:
    """inter / inner area, 0 where the inner box is empty."""
    return np.divide(inter, inner_areas, out=np.zeros_like(inter), where=inner_areas > 0)


def miss_kind(pred_box: np.ndarray, gt_boxes: np.ndarray) -> str | None:
    """None for a hit (IoU >= 0.5 with a gt box), else the first kind of MISS_KINDS that applies:
    "too_big" (>= CONTAINMENT of some gt box's area lies inside `pred_box`), "part" (>= CONTAINMENT
    of `pred_box`'s area lies inside some gt box), "weak_overlap" (IoU > 0 with some gt box),
    "no_object" (IoU 0 with all, or no gt box). `pred_box: (4,)`, `gt_boxes: (K, 4)`,
    [x1, y1, x2, y2] x2/y2 exclusive."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if is_correct_localization(pred_box, gt_boxes):
        return None
    inter = intersection_areas(pred_box, gt_boxes)
    return _kind_of_miss(box_iou(pred_box, gt_boxes), inter, box_areas(pred_box), box_areas(gt_boxes))


def _kind_of_miss(ious: np.ndarray, inter: np.ndarray, pred_area: np.ndarray, gt_areas: np.ndarray) -> str:
    """:func:`miss_kind` of a miss from its IoUs, intersections and gt areas, (K,) each, and the
    predicted box's area, (1,)."""
    if np.any(_share_inside(gt_areas, inter) >= CONTAINMENT):
        return "too_big"
    if np.any(_share_inside(np.broadcast_to(pred_area, inter.shape), inter) >= CONTAINMENT):
        return "part"
    if np.any(ious > 0):
        return "weak_overlap"
    return "no_object"


def area_share(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Area of each of `boxes: (K, 4)`, clipped to the (H, W) image, over the image area -> (K,)."""
    height, width = image_size
    clipped = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 0, [width, height, width, height])
    return box_areas(clipped) / float(height * width)


def evaluate_image(image: ReportImage, index: int) -> ImageEvaluation | None:
    """The verdict on `image` (at `index` in its run); None when the run skipped it.

    The IoUs, intersections and areas are computed once and shared by the hit test
    (:func:`lost.eval.metrics.is_correct_localization`) and the miss kind (same rules as :func:`miss_kind`).
    """
    if image.pred_box is None:
        return None
    pred_box = np.asarray(image.pred_box, dtype=np.float64).reshape(4)
    gt_boxes = np.asarray(image.gt_boxes, dtype=np.float64).reshape(-1, 4)
    ious = box_iou(pred_box, gt_boxes)
    hit = is_correct_localization(pred_box, gt_boxes)
    kind = (
        None
        if hit
        else _kind_of_miss(ious, intersection_areas(pred_box, gt_boxes), box_areas(pred_box), box_areas(gt_boxes))
    )
    shares = area_share(gt_boxes, image.image_size)
    return ImageEvaluation(
        index=index,
        name=image.name,
        classes=tuple(sorted(set(image.gt_labels))),
        hit=hit,
        best_iou=float(ious.max()) if len(ious) else 0.0,
        miss_kind=kind,
        object_count=len(gt_boxes),
        largest_share=float(shares.max()) if len(shares) else 0.0,
        pred_share=float(area_share(pred_box, image.image_size)[0]),
    )


def evaluate_run(run: ReportRun) -> list[ImageEvaluation]:
    """The verdicts on the evaluated images of `run`, in its order (skipped images left out)."""
    verdicts = (evaluate_image(image, index) for index, image in enumerate(run.images))
    return [verdict for verdict in verdicts if verdict is not None]


# ----------------------------------------------------------------------------------------------
# Accumulate: counts over images


def percentage(hits: int, count: int) -> float:
    """100 * hits / count; 0.0 when count is 0."""
    return 100.0 * hits / count if count else 0.0


@dataclass(frozen=True)
class GroupCorLoc:
    """Hits among the `count` images of one group (a class, a difficulty bin)."""

    label: str
    hits: int
    count: int

    @property
    def corloc(self) -> float:
        """Percentage of hits; 0.0 for an empty group."""
        return percentage(self.hits, self.count)


@dataclass(frozen=True)
class Headline:
    """The run's description and its CorLoc over `evaluated` images; `skipped` had no box."""

    info: RunInfo
    hits: int
    evaluated: int
    skipped: int

    @property
    def corloc(self) -> float:
        """CorLoc (%) over the evaluated images, as main_lost.py's results.txt gives it."""
        return percentage(self.hits, self.evaluated)

    @property
    def corloc_skipped_as_misses(self) -> float:
        """CorLoc (%) over all images, a skipped one counting as a miss (main_corloc_evaluation.py)."""
        return percentage(self.hits, self.evaluated + self.skipped)


@dataclass(frozen=True)
class ReportStats:
    """Everything the page shows about one run, as numbers.

    by_class: sorted by CorLoc, highest first (ties by name). by_area / by_count: the bins of
    AREA_BINS / COUNT_BINS in order. miss_counts: (kind, count) for MISS_KINDS in order.
    pred_shares / largest_shares: (N,) area shares of the evaluated images.
    """

    headline: Headline
    by_class: tuple[GroupCorLoc, ...]
    by_area: tuple[GroupCorLoc, ...]
    by_count: tuple[GroupCorLoc, ...]
    miss_counts: tuple[tuple[str, int], ...]
    pred_shares: np.ndarray
    largest_shares: np.ndarray

    @property
    def misses(self) -> int:
        return self.headline.evaluated - self.headline.hits


def corloc_by_class(evaluations: Sequence[ImageEvaluation]) -> tuple[GroupCorLoc, ...]:
    """CorLoc per class, each image counting once for each class among its objects; sorted by
    CorLoc, highest first, ties by class name."""
    hits: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for verdict in evaluations:
        for name in verdict.classes:
            counts[name] += 1
            hits[name] += verdict.hit
    groups = [GroupCorLoc(name, hits[name], counts[name]) for name in counts]
    return tuple(sorted(groups, key=lambda group: (-group.corloc, group.label)))


def area_bin(share: float) -> str:
    """The AREA_BINS label of a largest-box area share."""
    return next(label for label, low, high in AREA_BINS if low <= share < high)


def count_bin(count: int) -> str:
    """The COUNT_BINS label of a number of ground-truth boxes."""
    return next(label for label, low, high in COUNT_BINS if low <= count and (high is None or count <= high))


def _binned(
    evaluations: Sequence[ImageEvaluation], labels: Sequence[str], label_of: Callable[[ImageEvaluation], str]
) -> tuple[GroupCorLoc, ...]:
    """CorLoc per label, in the order of `labels`; OPTIONAL_BINS labels only when they hold images."""
    hits: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for verdict in evaluations:
        label = label_of(verdict)
        counts[label] += 1
        hits[label] += verdict.hit
    return tuple(
        GroupCorLoc(label, hits[label], counts[label])
        for label in labels
        if counts[label] or label not in OPTIONAL_BINS
    )


def corloc_by_area(evaluations: Sequence[ImageEvaluation]) -> tuple[GroupCorLoc, ...]:
    """CorLoc per AREA_BINS bin of the largest ground-truth box's area share."""
    return _binned(evaluations, [label for label, _, _ in AREA_BINS], lambda v: area_bin(v.largest_share))


def corloc_by_object_count(evaluations: Sequence[ImageEvaluation]) -> tuple[GroupCorLoc, ...]:
    """CorLoc per COUNT_BINS bin of the number of ground-truth boxes ("0" only when present)."""
    return _binned(evaluations, [label for label, _, _ in COUNT_BINS], lambda v: count_bin(v.object_count))


def miss_kind_counts(evaluations: Sequence[ImageEvaluation]) -> tuple[tuple[str, int], ...]:
    """(kind, number of misses of that kind) for each of MISS_KINDS, in that order."""
    counts = Counter(verdict.miss_kind for verdict in evaluations if not verdict.hit)
    return tuple((kind, counts[kind]) for kind in MISS_KINDS)


def accumulate(run: ReportRun, evaluations: Sequence[ImageEvaluation]) -> ReportStats:
    """The numbers of the report from the verdicts of :func:`evaluate_run`."""
    headline = Headline(
        info=run.info,
        hits=sum(verdict.hit for verdict in evaluations),
        evaluated=len(evaluations),
        skipped=len(run.images) - len(evaluations),
    )
    return ReportStats(
        headline=headline,
        by_class=corloc_by_class(evaluations),
        by_area=corloc_by_area(evaluations),
        by_count=corloc_by_object_count(evaluations),
        miss_counts=miss_kind_counts(evaluations),
        pred_shares=np.array([verdict.pred_share for verdict in evaluations], dtype=np.float64),
        largest_shares=np.array([verdict.largest_share for verdict in evaluations], dtype=np.float64),
    )


def split_quota(total: int, available: Sequence[int]) -> list[int]:
    """`total` places shared out one at a time, round robin, among groups holding `available`
    items each; a group never gets more than it holds. [12, 12, 12, 12, 12] for (60, 5 x 100)."""
    quotas = [0] * len(available)
    remaining = total
    while remaining > 0:
        open_groups = [group for group, quota in enumerate(quotas) if quota < available[group]]
        if not open_groups:
            break
        for group in open_groups[:remaining]:
            quotas[group] += 1
        remaining -= min(remaining, len(open_groups))
    return quotas


def sample_groups(groups: Mapping[str, Sequence[T]], size: int, seed: int) -> dict[str, tuple[T, ...]]:
    """At most `size` items in all, shared out among `groups` by :func:`split_quota`,
    drawn without replacement with numpy's default_rng(seed), each group kept in run order."""
    rng = np.random.default_rng(seed)
    quotas = split_quota(size, [len(members) for members in groups.values()])
    sample = {}
    for (name, members), quota in zip(groups.items(), quotas, strict=True):
        chosen = sorted(rng.choice(len(members), size=quota, replace=False)) if quota else []
        sample[name] = tuple(members[int(position)] for position in chosen)
    return sample


def sample_gallery(
    evaluations: Sequence[ImageEvaluation], size: int = DEFAULT_GALLERY_SIZE, seed: int = 0
) -> dict[str, tuple[ImageEvaluation, ...]]:
    """The gallery: for each of GALLERY_GROUPS (hits, then each miss kind) a fixed-seed sample,
    `size` images at most in all (see :func:`sample_groups`)."""
    groups = {group: [verdict for verdict in evaluations if verdict.group == group] for group in GALLERY_GROUPS}
    return sample_groups(groups, size, seed)


# ----------------------------------------------------------------------------------------------
# Compare two runs


@dataclass(frozen=True)
class ClassComparison:
    """One class's CorLoc in run A and in run B, on the images both runs hold."""

    label: str
    a: GroupCorLoc
    b: GroupCorLoc


@dataclass(frozen=True)
class Comparison:
    """Two runs on the images they share (by name; ground truth from run A).

    In a comparison an image a run skipped counts as a miss for it, so both are scored on the
    same images. headline_a / headline_b: each run over the shared images. by_class: sorted by
    B's CorLoc minus A's, largest gain first. only_a / only_b: indices (into run A's images) of
    images one run gets right and the other misses.
    """

    headline_a: Headline
    headline_b: Headline
    by_class: tuple[ClassComparison, ...]
    both: int
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]
    neither: int


def _hits_by_name(run: ReportRun) -> dict[str, bool]:
    """Image name -> hit, a skipped image counting as a miss."""
    verdicts = {verdict.name: verdict.hit for verdict in evaluate_run(run)}
    return {image.name: verdicts.get(image.name, False) for image in run.images}


def _class_groups(images: Sequence[ReportImage], hits: Mapping[str, bool]) -> dict[str, GroupCorLoc]:
    counts: Counter[str] = Counter()
    hit_counts: Counter[str] = Counter()
    for image in images:
        for name in set(image.gt_labels):
            counts[name] += 1
            hit_counts[name] += hits[image.name]
    return {name: GroupCorLoc(name, hit_counts[name], counts[name]) for name in counts}


def compare_runs(run_a: ReportRun, run_b: ReportRun) -> Comparison:
    """Per-class CorLoc side by side and the images on which the runs disagree.

    Raises LostError when the runs share no image name.
    """
    hits_b_all = _hits_by_name(run_b)
    shared = [(index, image) for index, image in enumerate(run_a.images) if image.name in hits_b_all]
    if not shared:
        raise LostError(
            f"{run_b.info.source}: no image in common with {run_a.info.source}; compare runs on the same data set"
        )
    hits_a_all = _hits_by_name(run_a)
    images = [image for _, image in shared]
    hits_a = {image.name: hits_a_all[image.name] for image in images}
    hits_b = {image.name: hits_b_all[image.name] for image in images}
    classes_a, classes_b = _class_groups(images, hits_a), _class_groups(images, hits_b)
    by_class = [ClassComparison(name, classes_a[name], classes_b[name]) for name in classes_a]
    by_class.sort(key=lambda row: (row.a.corloc - row.b.corloc, row.label))
    pairs = [(index, hits_a[image.name], hits_b[image.name]) for index, image in shared]
    return Comparison(
        headline_a=Headline(run_a.info, sum(hits_a.values()), len(images), 0),
        headline_b=Headline(run_b.info, sum(hits_b.values()), len(images), 0),
        by_class=tuple(by_class),
        both=sum(a and b for _, a, b in pairs),
        only_a=tuple(index for index, a, b in pairs if a and not b),
        only_b=tuple(index for index, a, b in pairs if b and not a),
        neither=sum(not a and not b for _, a, b in pairs),
    )
