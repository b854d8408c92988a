"""Turn LOST boxes of VOC07 / VOC12 trainval into a detectron2 data set (one class, "object").

    python tools/prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format.py --year 2007 \
        --pboxes data/LOST_predictions/LOST_VOC07.pkl

Multi-object predictions (--method maskcut) give several boxes per image: all of them become that
image's pseudo ground truth, as CutLER trains its detector on every MaskCut mask.

Writes <output_dir>/voc_<year>_trainval_LOST_CAD.json, the training set of the CAD configs.
"""

import argparse
import sys
from pathlib import Path

from lost.detection import data as detection_data
from lost.errors import run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LOST boxes of VOC trainval -> detectron2 data set (CAD).")
    parser.add_argument("--year", default="2007", choices=detection_data.VOC_YEARS, help="VOC year")
    parser.add_argument("--pboxes", type=Path, required=True, help="predictions of main_lost.py (preds.pkl / .json), one box or several per image")
    parser.add_argument("--voc_dir", type=Path, default=None, help="VOC<year> folder (default datasets/VOC<year>)")
    parser.add_argument(
        "--output_dir", type=Path, default=detection_data.default_prepared_dir(), help="prepared files folder"
    )
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> None:
    voc_dir = args.voc_dir or Path("datasets") / f"VOC{args.year}"
    dataset = detection_data.KNOWN_DATASETS[f"voc_{args.year}_trainval_LOST_CAD"]
    boxes = safe_files.read_prediction_boxes(args.pboxes)
    records = detection_data.voc_pseudo_box_records(voc_dir, args.year, boxes)
    path = detection_data.write_dataset_dicts(records, dataset, args.pboxes, args.output_dir)
    count = sum(len(record["annotations"]) for record in records)
    print(f"{len(records)} images with {count} pseudo-boxes written at {path}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
