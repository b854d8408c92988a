"""A run as the report sees it, from data-set records and a prediction file: each image with its
predicted box, ground truth and size, and what the journal beside the predictions says of the run.

Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image, x2/y2 exclusive, throughout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from lost.backbones import BackboneSpec
from lost.data import datasets
from lost.data.images import read_image_size
from lost.errors import LostError
from lost.eval.predictions import load_predictions
from lost.io.journal import read_entries
from lost.methods import METHODS
from lost.report.stats import ReportImage, RunInfo

UNLABELLED = "(no class name)"
"""The class name of a ground-truth box whose record gives none."""


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
