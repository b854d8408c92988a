"""CorLoc of saved predictions against VOC07 / VOC12 / COCO20k ground truth.

    python main_corloc_evaluation.py --dataset VOC07 --set trainval --type_pred boxes_OD \
        --pred_file outputs/VOC07_trainval/LOST-vit_small16_k/preds.pkl
    python main_corloc_evaluation.py --dataset VOC07 --set trainval --type_pred detectron \
        --pred_file coco_instances_results.json

`boxes_OD`: a preds.pkl / preds.json mapping image name ("000005.jpg" for VOC, str(image_id)
for COCO20k) to one box [x1, y1, x2, y2]. `detectron`: detectron2's coco_instances_results.json;
only the highest-scoring box of each image counts. Its image_id is the VOC image id (the file
name without ".jpg", e.g. "000005" or "2008_000008") or the COCO image id. An image without a
prediction counts as a miss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import datasets
import metrics
import safe_files
from errors import LostError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CorLoc of saved box predictions.")
    parser.add_argument("--dataset", default="VOC07", choices=datasets.DATASETS, help="data set to evaluate on")
    parser.add_argument(
        "--set", default="train", choices=["val", "train", "trainval", "test"], help="image set (COCO20k: train)"
    )
    parser.add_argument(
        "--type_pred",
        default="boxes_OD",
        choices=["boxes_OD", "detectron"],
        help="boxes_OD: preds.pkl/preds.json (name -> box); detectron: coco_instances_results.json",
    )
    parser.add_argument("--pred_file", required=True, type=Path, help="prediction file")
    parser.add_argument("--no_hard", action="store_true", help="VOC: drop truncated/difficult objects")
    parser.add_argument(
        "--datasets_root", default=Path("datasets"), type=Path, help="folder holding VOC2007/, COCO/, ..."
    )
    return parser.parse_args(argv)


def detectron_image_id(record: datasets.ImageRecord, dataset: str) -> str:
    """The image_id the detector pipeline writes for a record: for VOC the ImageSets id, i.e.
    the JPEG's stem ("000005", "2008_000008"); for COCO20k the COCO id (the record name)."""
    return datasets.canonical_image_id(record.path.stem if dataset.startswith("VOC") else record.name)


def load_predictions(
    pred_file: Path, type_pred: str, dataset: str, records: list[datasets.ImageRecord]
) -> dict[str, np.ndarray]:
    """Predictions keyed by record name: box [x1, y1, x2, y2] per image."""
    if type_pred == "boxes_OD":
        return safe_files.read_predictions(pred_file)
    detections = safe_files.read_detectron_predictions(pred_file)
    by_id = {datasets.canonical_image_id(image_id): box for image_id, box in detections.items()}
    keys = {record.name: detectron_image_id(record, dataset) for record in records}
    return {name: by_id[key] for name, key in keys.items() if key in by_id}


def evaluate(args: argparse.Namespace) -> None:
    """Print the CorLoc of the predictions; skipped images and misses by absence go to stderr."""
    spec = datasets.load_dataset(args.dataset, args.set, args.datasets_root, args.no_hard)
    predictions = load_predictions(args.pred_file, args.type_pred, args.dataset, spec.records)
    missing = sum(record.name not in predictions for record in spec.records)
    if spec.records and missing == len(spec.records):
        raise LostError(
            f"{args.pred_file}: no prediction for any of the {len(spec.records)} images of {spec.name}; "
            "check --dataset, --set and --type_pred"
        )
    for name, reason in spec.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if missing:
        print(f"{missing} of {len(spec.records)} images have no prediction and count as misses", file=sys.stderr)
    print(metrics.evaluate_corloc(spec.records, predictions).summary())


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: evaluate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
