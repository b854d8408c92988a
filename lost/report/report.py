"""What a CorLoc number is made of: a static HTML report of one run, or of two side by side.

    python report.py --pred_file outputs/VOC07_trainval/LOST-vit_small16_k/preds.pkl \
        --dataset VOC07 --set trainval
    python report.py --pred_file data/LOST_predictions/LOST_VOC07.pkl --dataset VOC07 --set trainval \
        --compare outputs/VOC07_trainval/LOST-vit_small16_k/preds.pkl --output outputs/report_voc07

It writes ``<output>/report.html`` (and ``compare.html`` with ``--compare``) with relative links
to PNG plots and JPEG thumbnails under ``<output>/report/``; the pages need no network and no
script. ``--output`` defaults to the prediction file's folder.

Computing is separated from drawing, in the spirit of pycocotools' evaluate → accumulate →
summarize: :func:`evaluate_run` judges each image (hit, best IoU, miss kind, area shares),
:func:`accumulate` counts per class, per difficulty bin and per miss kind, :func:`sample_gallery`
picks the thumbnails; :func:`write_report_page` then writes the page, with the plots and
thumbnails drawn by ``report_plots.py`` from plain numbers and boxes. :func:`build_report` and
:func:`build_comparison` do all of it; :func:`report_images` turns data-set records and a
prediction file into the report's plain inputs. The computing and the pages live here beside the
command line (the house table puts only wiring in a script) so that a run can write its report
with one import; the pictures, which need only numbers and boxes, are apart.

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

import html
import json
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from lost.backbones import BackboneSpec
from lost.data import datasets
from lost.data.images import read_image_size
from lost.errors import LostError
from lost.eval.metrics import box_iou, is_correct_localization
from lost.eval.predictions import load_predictions
from lost.io.journal import read_entries
from lost.io.safe_files import atomic_write
from lost.methods import METHODS
from lost.report import plots as report_plots
from lost.viz.pictures import BOX_COLOR, SEED_COLOR

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
UNLABELLED = "(no class name)"
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
    (:func:`metrics.is_correct_localization`) and the miss kind (same rules as :func:`miss_kind`).
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


@dataclass(frozen=True)
class GroupCorLoc:
    """Hits among the `count` images of one group (a class, a difficulty bin)."""

    label: str
    hits: int
    count: int

    @property
    def corloc(self) -> float:
        """Percentage of hits; 0.0 for an empty group."""
        return 100.0 * self.hits / self.count if self.count else 0.0


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
        return 100.0 * self.hits / self.evaluated if self.evaluated else 0.0

    @property
    def corloc_skipped_as_misses(self) -> float:
        """CorLoc (%) over all images, a skipped one counting as a miss (main_corloc_evaluation.py)."""
        total = self.evaluated + self.skipped
        return 100.0 * self.hits / total if total else 0.0


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


# ----------------------------------------------------------------------------------------------
# Summarize: the pages

GT_COLOUR = (40, 200, 70)
PRED_COLOUR = BOX_COLOR
OTHER_PRED_COLOUR = (40, 120, 255)
SEED_COLOUR = SEED_COLOR
THUMB_SIDE = 200
GT_LINE, BOX_LINE = 4, 2
"""Outline widths in thumbnail pixels: a box drawn over an equal, wider one leaves a band of the
first colour (gt under the prediction; in a comparison, A's box one pixel wider under B's)."""

GROUP_TITLES = {
    "hit": "Hits",
    "too_big": "Too big",
    "part": "A part",
    "weak_overlap": "Weak overlap",
    "no_object": "No object",
}
MISS_KIND_RULES = {
    "too_big": f"the box contains a ground-truth box (at least {CONTAINMENT:.0%} of that box's area lies inside it)",
    "part": f"not too big, and at least {CONTAINMENT:.0%} of the box's area lies inside one ground-truth box",
    "weak_overlap": "neither of the above, and IoU between 0 and 0.5 with some ground-truth box",
    "no_object": "IoU 0 with every ground-truth box (or the image has none)",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1120px; margin: 24px auto; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.3em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; }
th { background: #f2f2f2; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.headline th { width: 17em; } .big { font-size: 1.6em; font-weight: bold; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 210px; font-size: 0.78em; overflow-wrap: anywhere; }
figure img { display: block; border: 1px solid #bbb; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin: 0 4px 0 10px; }
p.rule { color: #444; max-width: 62em; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
"""


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: Sequence[str]) -> str:
    """A whole HTML document: inline CSS, no script."""
    head = f'<meta charset="utf-8"><title>{_escape(title)}</title><style>{CSS}</style>'
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>\n' + "\n".join(body) + "\n</body></html>\n"


def _table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    """An HTML table with id `table_id`; cells from column `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{_escape(header)}</th>" for header in headers)
    lines = [f'<table id="{table_id}"><tr>{head}</tr>']
    for row in rows:
        cells = "".join(
            f'<td class="n">{_escape(cell)}</td>' if column >= numeric_from else f"<td>{_escape(cell)}</td>"
            for column, cell in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _share(count: int, total: int) -> str:
    """count / total as a percentage with one decimal, "-" when total is 0."""
    return f"{100.0 * count / total:.1f}" if total else "-"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{seconds:.0f} s ({hours} h {minutes:02d} min)"
    return f"{seconds:.0f} s ({minutes} min {rest:02d} s)" if minutes else f"{seconds:.1f} s"


def _or_not_recorded(value: object | None) -> str:
    return "not recorded" if value is None else str(value)


def _swatch(colour: tuple[int, int, int], text: str) -> str:
    red, green, blue = colour
    return f'<span class="swatch" style="background: rgb({red}, {green}, {blue})"></span>{_escape(text)}'


def _headline_html(headline: Headline) -> str:
    info = headline.info
    rows = [
        ("Predictions", _escape(info.source)),
        ("Method", _escape(_or_not_recorded(info.method))),
        ("Backbone", _escape(_or_not_recorded(info.backbone))),
        ("Weights", _escape(_or_not_recorded(info.weights))),
        ("Data set", _escape(_or_not_recorded(info.dataset))),
        (
            "CorLoc (%)",
            f'<span class="big" id="corloc">{headline.corloc:.1f}</span> '
            f"({headline.hits} of {headline.evaluated} evaluated images)",
        ),
        ("Evaluated images", str(headline.evaluated)),
        ("Skipped images (no box)", str(headline.skipped)),
    ]
    if headline.skipped:
        rows.append(("CorLoc (%), skipped counted as misses", f"{headline.corloc_skipped_as_misses:.1f}"))
    rows.append(("Run time", "not recorded" if info.seconds is None else _duration(info.seconds)))
    rows.append(("Images/s", "not recorded" if info.images_per_second is None else f"{info.images_per_second:.2f}"))
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table id="headline" class="headline">{body}</table>'


def _group_rows(groups: Sequence[GroupCorLoc], title: Callable[[str], str] = str) -> list[tuple[str, int, int, str]]:
    return [
        (title(group.label), group.count, group.hits, f"{group.corloc:.1f}" if group.count else "-") for group in groups
    ]


def area_bin_range(label: str) -> str:
    """The AREA_BINS interval of `label` in words: "< 10%", "10% to < 40%", ">= 40%"."""
    low, high = next((low, high) for name, low, high in AREA_BINS if name == label)
    if low == 0:
        return f"< {high:.0%}"
    return f">= {low:.0%}" if high == float("inf") else f"{low:.0%} to < {high:.0%}"


def _area_title(label: str) -> str:
    return f"{label} ({area_bin_range(label)})"


def _write_report_plots(stats: ReportStats, assets: Path) -> None:
    """corloc_by_class.png, corloc_by_difficulty.png, miss_kinds.png, area_shares.png."""
    overall = stats.headline.corloc
    classes = stats.by_class
    report_plots.plot_corloc_bars(
        [group.label for group in classes],
        [group.corloc for group in classes],
        [group.count for group in classes],
        overall,
        assets / "corloc_by_class.png",
        "CorLoc per class (an image counts for each class it contains)",
    )
    panels = [
        (
            "by the largest object's share of the image",
            [f"{group.label}\n{area_bin_range(group.label)}" for group in stats.by_area],
            [group.corloc for group in stats.by_area],
            [group.count for group in stats.by_area],
        ),
        (
            "by the number of objects",
            [group.label for group in stats.by_count],
            [group.corloc for group in stats.by_count],
            [group.count for group in stats.by_count],
        ),
    ]
    report_plots.plot_binned_corloc(panels, overall, assets / "corloc_by_difficulty.png")
    report_plots.plot_counts(
        [GROUP_TITLES[kind] for kind, _ in stats.miss_counts],
        [count for _, count in stats.miss_counts],
        assets / "miss_kinds.png",
        f"The {stats.misses} misses by kind",
    )
    report_plots.plot_share_histograms(
        {"predicted box": stats.pred_shares, "largest ground-truth box": stats.largest_shares},
        assets / "area_shares.png",
        "Box area as a share of the image, evaluated images",
    )


def _thumbnail_figure(
    image: ReportImage, outlines: Sequence[report_plots.Outline], folder: Path, file_name: str, caption: str
) -> str:
    """Write one thumbnail into `folder` (under <output>/report/) and return its <figure>."""
    picture = report_plots.thumbnail(image.path, image.image_size, outlines, THUMB_SIDE)
    report_plots.save_jpeg(picture, folder / file_name)
    source = f"report/{folder.name}/{file_name}"
    return f'<figure><img src="{source}" alt="{_escape(image.name)}"><figcaption>{caption}</figcaption></figure>'


def _gt_outlines(image: ReportImage) -> list[report_plots.Outline]:
    return [(box, GT_COLOUR, GT_LINE) for box in np.asarray(image.gt_boxes).reshape(-1, 4)]


def _report_thumbnail(image: ReportImage, verdict: ImageEvaluation, folder: Path) -> str:
    boxes = _gt_outlines(image)
    if image.seed_box is not None:
        boxes.append((image.seed_box, SEED_COLOUR, BOX_LINE))
    boxes.append((image.pred_box, PRED_COLOUR, BOX_LINE))
    caption = f"{_escape(image.name)}<br>IoU {verdict.best_iou:.2f} &middot; {_escape(', '.join(verdict.classes))}"
    return _thumbnail_figure(image, boxes, folder, f"{verdict.group}_{verdict.index:06d}.jpg", caption)


def _gallery_html(
    run: ReportRun, stats: ReportStats, gallery: Mapping[str, Sequence[ImageEvaluation]], folder: Path
) -> str:
    totals = dict(stats.miss_counts, hit=stats.headline.hits)
    legend = " ".join(
        [
            _swatch(GT_COLOUR, "ground truth"),
            _swatch(PRED_COLOUR, "predicted box"),
            _swatch(SEED_COLOUR, "seed patch (LOST)"),
        ]
    )
    parts = [f"<p>{legend}</p>"]
    for group in GALLERY_GROUPS:
        sample = gallery.get(group, ())
        parts.append(f'<h3 id="gallery-{group}">{GROUP_TITLES[group]} ({len(sample)} of {totals[group]} shown)</h3>')
        figures = [_report_thumbnail(run.images[verdict.index], verdict, folder) for verdict in sample]
        parts.append(f'<div class="gallery">{"".join(figures)}</div>' if figures else "<p>None.</p>")
    return "\n".join(parts)


def write_report_page(
    run: ReportRun,
    stats: ReportStats,
    gallery: Mapping[str, Sequence[ImageEvaluation]],
    output_dir: Path,
    links: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write `output_dir/report.html`, its plots under `output_dir/report/` and the thumbnails of
    `gallery` under `output_dir/report/gallery/` (which must exist); returns the page's path."""
    assets = output_dir / "report"
    _write_report_plots(stats, assets)
    headline = stats.headline
    evaluated = headline.evaluated
    nav_links = [
        ("#per-class", "Per class"),
        ("#difficulty", "Difficulty"),
        ("#misses", "Misses"),
        ("#gallery", "Gallery"),
    ]
    nav = " ".join(f'<a href="{_escape(href)}">{_escape(text)}</a>' for href, text in [*nav_links, *links])
    area_rule = ", ".join(_area_title(label) for label, _, _ in AREA_BINS)
    miss_rows = [
        (GROUP_TITLES[kind], MISS_KIND_RULES[kind], count, _share(count, stats.misses), _share(count, evaluated))
        for kind, count in stats.miss_counts
    ]
    title = f"CorLoc report: {run.info.method or run.info.source} on {run.info.dataset or 'unknown data set'}"
    body = [
        f"<h1>{_escape(title)}</h1>",
        f"<nav>{nav}</nav>",
        _headline_html(headline),
        '<p class="rule">An image is a hit when the predicted box has IoU &ge; 0.5 with any ground-truth box '
        "(CorLoc). CorLoc is over the evaluated images, those the run gave a box.</p>",
        '<h2 id="per-class">CorLoc per class</h2>',
        '<p class="rule">An image counts once for each class among its objects, and as a hit for all of them '
        "when it is a hit, whichever object the box matched; the class counts therefore add up to more "
        "than the number of images.</p>",
        '<div class="row"><img class="plot" src="report/corloc_by_class.png" alt="CorLoc per class">',
        _table("per-class-table", ["class", "images", "hits", "CorLoc (%)"], _group_rows(stats.by_class)),
        "</div>",
        '<h2 id="difficulty">CorLoc by difficulty</h2>',
        f'<p class="rule">Size: the area of the largest ground-truth box over the image area: {_escape(area_rule)}. '
        "Objects: the number of ground-truth boxes in the image (a row 0 appears only for images without any, "
        "which are always misses).</p>",
        '<img class="plot" src="report/corloc_by_difficulty.png" alt="CorLoc by difficulty">',
        '<div class="row">',
        _table(
            "area-table", ["largest object", "images", "hits", "CorLoc (%)"], _group_rows(stats.by_area, _area_title)
        ),
        _table("count-table", ["objects", "images", "hits", "CorLoc (%)"], _group_rows(stats.by_count)),
        "</div>",
        '<h2 id="misses">Misses</h2>',
        f'<p class="rule">Each of the {stats.misses} misses (IoU &lt; 0.5 with every ground-truth box) is of the '
        "first kind below that applies, in this order.</p>",
        _table("miss-table", ["kind", "rule", "images", "share of misses (%)", "share of evaluated (%)"], miss_rows, 2),
        '<div class="row"><img class="plot" src="report/miss_kinds.png" alt="Misses by kind">',
        '<img class="plot" src="report/area_shares.png" alt="Area shares of the boxes"></div>',
        '<h2 id="gallery">Gallery</h2>',
        f'<p class="rule">A fixed-seed sample of each group, {sum(map(len, gallery.values()))} images in all.</p>',
        _gallery_html(run, stats, gallery, assets / "gallery"),
    ]
    page = output_dir / "report.html"
    atomic_write(page, _page(title, body).encode("utf-8"))
    return page


def _best_iou(image: ReportImage, pred_box: np.ndarray | None) -> str:
    if pred_box is None:
        return "skipped"
    ious = box_iou(pred_box, np.asarray(image.gt_boxes).reshape(-1, 4))
    return f"{ious.max() if len(ious) else 0.0:.2f}"


def _comparison_thumbnail(image: ReportImage, other: ReportImage, group: str, index: int, folder: Path) -> str:
    runs = ((image.pred_box, PRED_COLOUR, BOX_LINE + 1), (other.pred_box, OTHER_PRED_COLOUR, BOX_LINE))
    boxes = _gt_outlines(image) + [(box, colour, width) for box, colour, width in runs if box is not None]
    caption = (
        f"{_escape(image.name)}<br>IoU A {_best_iou(image, image.pred_box)} &middot; "
        f"B {_best_iou(image, other.pred_box)}<br>{_escape(', '.join(sorted(set(image.gt_labels))))}"
    )
    return _thumbnail_figure(image, boxes, folder, f"{group}_{index:06d}.jpg", caption)


def write_comparison_page(
    run_a: ReportRun,
    run_b: ReportRun,
    comparison: Comparison,
    gallery: Mapping[str, Sequence[int]],
    output_dir: Path,
) -> Path:
    """Write `output_dir/compare.html`, its plot under `output_dir/report/compare/` (which must
    exist) with the thumbnails of `gallery` ("only_a" / "only_b" -> indices into run A's images);
    returns the page's path."""
    folder = output_dir / "report" / "compare"
    rows = comparison.by_class
    report_plots.plot_paired_corloc(
        [row.label for row in rows],
        [row.a.corloc for row in rows],
        [row.b.corloc for row in rows],
        ("A", "B"),
        (PRED_COLOUR, OTHER_PRED_COLOUR),
        folder / "corloc_by_class.png",
    )
    shared = comparison.headline_a.evaluated
    runs = [("A", run_a, comparison.headline_a, PRED_COLOUR), ("B", run_b, comparison.headline_b, OTHER_PRED_COLOUR)]
    run_rows = [
        (name, run.info.source, _or_not_recorded(run.info.method), headline.hits, f"{headline.corloc:.1f}")
        for name, run, headline, _ in runs
    ]
    agreement = [
        ("both right", comparison.both),
        ("only A right", len(comparison.only_a)),
        ("only B right", len(comparison.only_b)),
        ("both wrong", comparison.neither),
    ]
    class_rows = [
        (
            row.label,
            row.a.count,
            row.a.hits,
            f"{row.a.corloc:.1f}",
            row.b.hits,
            f"{row.b.corloc:.1f}",
            f"{row.b.corloc - row.a.corloc:+.1f}",
        )
        for row in rows
    ]
    images_b = {image.name: image for image in run_b.images}
    legend = " ".join(_swatch(colour, f"{name}: {run.info.source}") for name, run, _, colour in runs)
    sections = []
    for group, title in (("only_a", "A right, B wrong"), ("only_b", "B right, A wrong")):
        indices = gallery.get(group, ())
        total = len(comparison.only_a if group == "only_a" else comparison.only_b)
        figures = [
            _comparison_thumbnail(run_a.images[i], images_b[run_a.images[i].name], group, i, folder) for i in indices
        ]
        sections.append(f'<h3 id="gallery-{group}">{title} ({len(indices)} of {total} shown)</h3>')
        sections.append(f'<div class="gallery">{"".join(figures)}</div>' if figures else "<p>None.</p>")
    title = f"Comparison on {run_a.info.dataset or 'unknown data set'}: A against B"
    body = [
        f"<h1>{_escape(title)}</h1>",
        '<nav><a href="report.html">Report of A</a></nav>',
        f'<p class="rule">Both runs scored on the {shared} images they share, with A\'s ground truth; an image a run '
        "skipped counts as a miss for it.</p>",
        _table("compare-runs", ["run", "predictions", "method", "hits", "CorLoc (%)"], run_rows, 3),
        _table("agreement", ["images", "count", "share (%)"], [(name, n, _share(n, shared)) for name, n in agreement]),
        '<h2 id="per-class">CorLoc per class</h2>',
        '<p class="rule">An image counts once for each class among its objects. Sorted by B minus A, largest gain '
        "first.</p>",
        '<div class="row"><img class="plot" src="report/compare/corloc_by_class.png" alt="CorLoc per class, A and B">',
        _table(
            "compare-per-class",
            ["class", "images", "A hits", "A CorLoc (%)", "B hits", "B CorLoc (%)", "B - A"],
            class_rows,
        ),
        "</div>",
        '<h2 id="disagreements">Where they disagree</h2>',
        f"<p>{_swatch(GT_COLOUR, 'ground truth')} {legend}</p>",
        *sections,
    ]
    page = output_dir / "compare.html"
    atomic_write(page, _page(title, body).encode("utf-8"))
    return page


# ----------------------------------------------------------------------------------------------
# Building the pages


def _fresh_folder(folder: Path) -> None:
    """Empty `folder` (one this module owns, under <output>/report/), creating it if needed."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def _prepare_output(output_dir: Path) -> Path:
    """The report/ folder under `output_dir`, created; LostError when it cannot be written."""
    assets = Path(output_dir) / "report"
    try:
        assets.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LostError(f"--output {output_dir}: cannot create {assets} ({exc}); choose a writable folder") from exc
    return assets


def build_report(
    run: ReportRun,
    output_dir: Path | str,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    seed: int = 0,
    links: Sequence[tuple[str, str]] = (),
) -> ReportStats:
    """Write `output_dir/report.html` with its plots and thumbnails under `output_dir/report/`
    (the gallery folder is emptied first): evaluate, accumulate, sample, draw. `links`:
    (relative URL, text) pairs added to the page's navigation. Returns the numbers shown."""
    output_dir = Path(output_dir)
    assets = _prepare_output(output_dir)
    evaluations = evaluate_run(run)
    stats = accumulate(run, evaluations)
    gallery = sample_gallery(evaluations, gallery_size, seed)
    _fresh_folder(assets / "gallery")
    write_report_page(run, stats, gallery, output_dir, links)
    return stats


def build_comparison(
    run_a: ReportRun,
    run_b: ReportRun,
    output_dir: Path | str,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    seed: int = 0,
) -> Comparison:
    """Write `output_dir/compare.html` (run A against run B) with its plot and thumbnails under
    `output_dir/report/compare/` (emptied first); the disagreement gallery is a fixed-seed
    sample of `gallery_size` images at most. Returns the numbers shown."""
    output_dir = Path(output_dir)
    assets = _prepare_output(output_dir)
    comparison = compare_runs(run_a, run_b)
    gallery = sample_groups({"only_a": comparison.only_a, "only_b": comparison.only_b}, gallery_size, seed)
    _fresh_folder(assets / "compare")
    write_comparison_page(run_a, run_b, comparison, gallery, output_dir)
    return comparison


# ----------------------------------------------------------------------------------------------
# From records and prediction files


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header; LostError when it cannot be read."""
    width, height = read_image_size(path)
    return height, width


def report_images(records: Sequence[datasets.ImageRecord], predictions: Mapping[str, np.ndarray]) -> list[ReportImage]:
    """The records that have ground truth, with their predicted box (None when absent), class
    names (UNLABELLED for each box when the record has none) and size read from the header.

    A record without a prediction whose header cannot be read gets size (0, 0): it is skipped
    and never measured. Boxes [x1, y1, x2, y2], x2/y2 exclusive. LostError when the header of an
    image with a prediction cannot be read.
    """
    images = []
    for record in records:
        if record.gt_boxes is None:
            continue
        pred_box = predictions.get(record.name)
        labels = record.gt_labels if record.gt_labels is not None else (UNLABELLED,) * len(record.gt_boxes)
        size = image_size(record.path) if pred_box is not None else _size_or_unknown(record.path)
        images.append(ReportImage(record.name, record.path, pred_box, record.gt_boxes, tuple(labels), size))
    return images


def with_predictions(images: Sequence[ReportImage], predictions: Mapping[str, np.ndarray]) -> list[ReportImage]:
    """`images` with another run's boxes instead (None where it has none), without reading the
    headers again: only a size still unknown, (0, 0), of an image that now has a box is read."""
    replaced = []
    for image in images:
        pred_box = predictions.get(image.name)
        size = image.image_size
        if pred_box is not None and size == (0, 0) and image.path is not None:
            size = image_size(image.path)
        replaced.append(replace(image, pred_box=pred_box, image_size=size, seed_box=None))
    return replaced


def _size_or_unknown(path: Path) -> tuple[int, int]:
    """(H, W) from the header, (0, 0) when it cannot be read."""
    try:
        return image_size(path)
    except LostError:
        return (0, 0)


def prediction_kind(pred_file: Path) -> str:
    """The main_corloc_evaluation.py type of a prediction file: "detectron" for a JSON file
    holding a list (coco_instances_results.json), else "boxes_OD" (preds.pkl / preds.json:
    name -> box; ours, the published LOST_VOC07.pkl, TokenCut's)."""
    if pred_file.suffix.lower() != ".json" or not pred_file.is_file():
        return "boxes_OD"
    with open(pred_file, "rb") as file:
        head = file.read(4096).lstrip()
    return "detectron" if head.startswith(b"[") else "boxes_OD"


def load_run_predictions(
    pred_file: Path, dataset: str, records: Sequence[datasets.ImageRecord]
) -> dict[str, np.ndarray]:
    """Predictions of `pred_file` keyed by record name; LostError when none matches a record."""
    predictions = load_predictions(pred_file, prediction_kind(pred_file), dataset, list(records))
    if records and not any(record.name in predictions for record in records):
        raise LostError(f"{pred_file}: no prediction for any of the {len(records)} images; check --dataset and --set")
    return predictions


def run_info(pred_file: Path, dataset: str) -> RunInfo:
    """The description of a run: method, backbone and weights from the journal beside
    `pred_file` (main_lost.py writes journal.jsonl, or journal.rank0-of-N.jsonl, there); only
    the source and the data set when there is none."""
    journals = sorted(pred_file.parent.glob("journal.jsonl")) or sorted(
        pred_file.parent.glob("journal.rank0-of-*.jsonl")
    )
    settings = _journal_settings(journals[0]) if journals else None
    if settings is None or not isinstance(settings.get("backbone"), dict):
        return RunInfo(source=str(pred_file), dataset=dataset)
    return RunInfo(
        source=str(pred_file),
        method=method_description(settings),
        backbone=backbone_description(settings),
        weights=settings["backbone"].get("weights") or "published (default download)",
        dataset=str(settings.get("input", dataset)),
    )


def backbone_description(settings: Mapping) -> str | None:
    """``vit_small16, fp32`` from run settings; None when a journal of another schema does not
    describe a backbone this version knows (its fields unknown, its arch gone)."""
    try:
        label = BackboneSpec(**settings["backbone"]).label()
    except (LostError, TypeError):  # a field this version lacks, an arch it does not know
        return None
    return f"{label}, {settings['precision']}" if "precision" in settings else label


def method_description(settings: Mapping) -> str:
    """``LOST (k_patches = 100)``: the method's title and its parameters, from run settings."""
    params = settings.get("params")
    params = ", ".join(f"{name} = {value}" for name, value in params.items()) if isinstance(params, dict) else ""
    title = METHODS[settings["method"]].title if settings.get("method") in METHODS else str(settings.get("method"))
    return f"{title} ({params})" if params else title


def _journal_settings(path: Path) -> dict | None:
    """The run settings on a journal's first line, None when it has none or is unreadable."""
    try:
        entries = read_entries(path, repair=False)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    first = entries[0] if entries else {}
    return first.get("run") if isinstance(first.get("run"), dict) else None
