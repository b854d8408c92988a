"""CorLoc, or class-agnostic detection AP, of saved predictions against VOC07 / VOC12 / COCO20k.

    python main_corloc_evaluation.py --dataset VOC07 --set trainval --type_pred boxes_OD \
        --pred_file outputs/VOC07_trainval/LOST-vit_small16_k/preds.pkl
    python main_corloc_evaluation.py --dataset VOC07 --set trainval --type_pred detectron \
        --pred_file coco_instances_results.json
    python main_corloc_evaluation.py --dataset COCO20k --set train --metric ap \
        --pred_file outputs/COCO20k_train/MaskCut-vit_small16_k/preds.pkl

`boxes_OD`: a preds.pkl / preds.json mapping image name ("000005.jpg" for VOC, str(image_id)
for COCO20k) to one box [x1, y1, x2, y2], or, from a multi-object method, to its boxes best first
with their scores (see safe_files). `detectron`: detectron2's coco_instances_results.json. Its
image_id is the VOC image id (the file name without ".jpg", e.g. "000005" or "2008_000008") or
the COCO image id.

`--metric corloc` (default): the CorLoc of the top box of each image (the highest-scoring
detection); an image without a prediction counts as a miss. `--metric ap`: class-agnostic AP50,
AP75, AP (IoU 0.50:0.95), AR@1, AR@10 and AR@100 by pycocotools' COCOeval with every box and
score (a one-box prediction is one detection of score 1), every ground-truth object counting,
VOC's difficult objects and COCO's crowd regions ignored (see metrics.py); then the CorLoc of the
top box.

`--iou_type segm` (with `--metric ap`): class-agnostic mask AP by COCOeval on masks (see
lost/eval/mask_ap.py) of an instance file (`main_lost.py --save_masks`'s instances.json or
CutLER's pseudo-masks; `--type_pred boxes_OD`) or a detector's coco_instances_results.json with
masks (`--type_pred detectron`), against COCO20k's instance masks or the COCO instances file
given with `--gt_json`:

    python main_corloc_evaluation.py --metric ap --iou_type segm --dataset COCO20k --set train \
        --pred_file outputs/COCO20k_train/MaskCut-vit_small16_k/instances.json
    python main_corloc_evaluation.py --metric ap --iou_type segm --gt_json my_gt.json --pred_file instances.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lost.data import datasets
from lost.errors import LostError, run_cli
from lost.eval import mask_ap, metrics
from lost.eval.predictions import load_predictions, load_scored_predictions
from lost.io.instances import read_instances, read_mask_results


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
    parser.add_argument(
        "--metric",
        default="corloc",
        choices=["corloc", "ap"],
        help="corloc: of the top box; ap: class-agnostic AP/AR of every box (then the corloc)",
    )
    parser.add_argument(
        "--iou_type", default="bbox", choices=["bbox", "segm"], help="with --metric ap: AP of the boxes, or of the masks (segm)"
    )
    parser.add_argument(
        "--gt_json", default=None, type=Path, help="segm: COCO instances file of the ground-truth masks (not --dataset)"
    )
    parser.add_argument("--no_hard", action="store_true", help="VOC: drop truncated/difficult objects")
    parser.add_argument(
        "--datasets_root", default=Path("datasets"), type=Path, help="folder holding VOC2007/, COCO/, ..."
    )
    return parser.parse_args(argv)


def evaluate_masks(args: argparse.Namespace) -> None:
    """Print the class-agnostic mask AP of the predicted masks against the ground truth's."""
    if args.metric != "ap":
        raise LostError("--iou_type segm scores masks by AP: add --metric ap")
    if args.gt_json is not None:
        source = args.gt_json
        images, annotations = mask_ap.mask_ground_truth(datasets.read_coco_json(source), source)
    elif args.dataset == "COCO20k":
        spec = datasets.load_dataset(args.dataset, args.set, args.datasets_root, args.no_hard)
        source = datasets.coco_instances_file(args.datasets_root / "COCO")
        coco = datasets.read_coco_instances(args.datasets_root / "COCO")
        images, annotations = mask_ap.mask_ground_truth(coco, source, [int(record.name) for record in spec.records])
    else:
        raise LostError(f"--dataset {args.dataset}: ground truth without masks (VOC has none here); pass --gt_json or --dataset COCO20k")
    if args.type_pred == "detectron":
        detections = mask_ap.result_detections(args.pred_file, read_mask_results(args.pred_file), images)
    else:
        detections = mask_ap.instance_detections(read_instances(args.pred_file), images)
    checked = mask_ap.checked_detections(args.pred_file, detections, images)
    print("mask AP (class-agnostic, COCOeval segm)")
    print(mask_ap.class_agnostic_mask_ap(images, annotations, checked).summary())


def evaluate(args: argparse.Namespace) -> None:
    """Print the CorLoc (or the AP, then the CorLoc) of the predictions; skipped images and
    misses by absence go to stderr."""
    if args.iou_type == "segm":
        evaluate_masks(args)
        return
    spec = datasets.load_dataset(args.dataset, args.set, args.datasets_root, args.no_hard)
    if args.metric == "ap":
        scored = load_scored_predictions(args.pred_file, args.type_pred, args.dataset, spec.records)
        predictions = {name: found.box for name, found in scored.items()}
    else:
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
    if args.metric == "ap":
        print(metrics.class_agnostic_ap(spec.records, scored).summary())
    print(metrics.evaluate_corloc(spec.records, predictions).summary())


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: evaluate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
