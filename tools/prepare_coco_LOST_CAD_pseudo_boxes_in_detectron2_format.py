"""Turn LOST boxes of COCO20k into a detectron2 data set (one class, "object").

    python tools/prepare_coco_LOST_CAD_pseudo_boxes_in_detectron2_format.py \
        --pboxes outputs/COCO20k_train/LOST-vit_small16_k/preds.pkl

Multi-object predictions (--method maskcut) give several boxes per image: all of them become that
image's pseudo ground truth, as CutLER trains its detector on every MaskCut mask.

Writes <output_dir>/coco20k_train_LOST_CAD.json, the training set of RN50_DINO_FRCNN_COCO20k_CAD.yaml.
"""

import argparse
import sys
from pathlib import Path

from lost.detection import data as detection_data
from lost.detection import prepare as prepare_flags
from lost.errors import run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LOST boxes of COCO20k -> detectron2 data set (CAD).")
    parser.add_argument(
        "--pboxes",
        type=Path,
        default=Path("outputs/COCO20k_train/LOST-vit_small16_k/preds.pkl"),
        help="predictions of main_lost.py (preds.pkl / .json), one box or several per image",
    )
    parser.add_argument(
        "--coco_dir", type=Path, default=Path("datasets/COCO"), help="COCO folder (images/, annotations/)"
    )
    prepare_flags.add_output_dir_flag(parser)
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> None:
    dataset = detection_data.KNOWN_DATASETS["coco20k_train_LOST_CAD"]
    boxes = safe_files.read_prediction_boxes(args.pboxes)
    records = detection_data.coco_pseudo_box_records(args.coco_dir, boxes)
    print(prepare_flags.write_pseudo_boxes(records, dataset, args.pboxes, args.output_dir))


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
