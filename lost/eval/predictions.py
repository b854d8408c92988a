"""Saved predictions keyed by record name, whichever file wrote them: ``preds.pkl`` / ``preds.json``
(``boxes_OD``) or detectron2's ``coco_instances_results.json`` (``detectron``).

Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image, x2/y2 exclusive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from lost.data import datasets
from lost.io import safe_files

T = TypeVar("T")


def detectron_image_id(record: datasets.ImageRecord, dataset: str) -> str:
    """The image_id the detector pipeline writes for a record: for VOC the ImageSets id, i.e.
    the JPEG's stem ("000005", "2008_000008"); for COCO20k the COCO id (the record name)."""
    return datasets.canonical_image_id(record.path.stem if dataset.startswith("VOC") else record.name)


def by_record_name(detections: Mapping[str, T], dataset: str, records: list[datasets.ImageRecord]) -> dict[str, T]:
    """Detector outputs keyed by detectron2 ``image_id`` re-keyed by record name (see
    :func:`detectron_image_id`); records without a detection are left out."""
    by_id = {datasets.canonical_image_id(image_id): found for image_id, found in detections.items()}
    keys = {record.name: detectron_image_id(record, dataset) for record in records}
    return {name: by_id[key] for name, key in keys.items() if key in by_id}


def _keyed_by_record(
    pred_file: Path,
    type_pred: str,
    dataset: str,
    records: list[datasets.ImageRecord],
    readers: tuple[Callable[[Path], dict[str, T]], Callable[[Path], dict[str, T]]],
) -> dict[str, T]:
    """`pred_file` read by `readers[0]` (``boxes_OD``: keyed by record name already) or by
    `readers[1]` (``detectron``: keyed by image_id, re-keyed by :func:`by_record_name`)."""
    own_reader, detectron_reader = readers
    if type_pred == "boxes_OD":
        return own_reader(pred_file)
    return by_record_name(detectron_reader(pred_file), dataset, records)


def load_predictions(
    pred_file: Path, type_pred: str, dataset: str, records: list[datasets.ImageRecord]
) -> dict[str, np.ndarray]:
    """Predictions keyed by record name: box [x1, y1, x2, y2] per image."""
    readers = (safe_files.read_predictions, safe_files.read_detectron_predictions)
    return _keyed_by_record(pred_file, type_pred, dataset, records, readers)


def load_scored_predictions(
    pred_file: Path, type_pred: str, dataset: str, records: list[datasets.ImageRecord]
) -> dict[str, safe_files.ScoredBoxes]:
    """Predictions keyed by record name: every box [x1, y1, x2, y2] with its score, best first."""
    readers = (safe_files.read_scored_predictions, safe_files.read_detectron_scored)
    return _keyed_by_record(pred_file, type_pred, dataset, records, readers)
