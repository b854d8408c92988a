"""Turn LOST boxes of VOC07 / VOC12 trainval into a detectron2 data set (one class, "object").

    python tools/prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format.py --year 2007 \
        --pboxes data/LOST_predictions/LOST_VOC07.pkl

Multi-object predictions (--method maskcut) give several boxes per image: all of them become that
image's pseudo ground truth, as CutLER trains its detector on every MaskCut mask.

Writes <output_dir>/voc_<year>_trainval_LOST_CAD.json, the training set of the CAD configs.
"""

import argparse
import sys

from lost.detection import data as detection_data
from lost.detection import prepare as prepare_flags
from lost.errors import run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return prepare_flags.parse_voc_pseudo_box_args(
        argv,
        "LOST boxes of VOC trainval -> detectron2 data set (CAD).",
        "predictions of main_lost.py (preds.pkl / .json), one box or several per image",
    )


def prepare(args: argparse.Namespace) -> None:
    dataset = detection_data.KNOWN_DATASETS[f"voc_{args.year}_trainval_LOST_CAD"]
    boxes = safe_files.read_prediction_boxes(args.pboxes)
    voc_dir = prepare_flags.voc_folder(args.year, args.voc_dir)
    records = detection_data.voc_pseudo_box_records(voc_dir, args.year, boxes)
    print(prepare_flags.write_pseudo_boxes(records, dataset, args.pboxes, args.output_dir))


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
