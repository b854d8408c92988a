"""Write the class-agnostic ground truth of COCO20k as a COCO annotation file.

    python tools/prepare_coco_CAD_gt.py --coco_dir datasets/COCO

Writes <output_dir>/coco20k_train_CAD_gt.json (every train2014 annotation of the COCO20k images
as class "object", crowd flags kept), the test set of RN50_DINO_FRCNN_COCO20k_CAD.yaml.
"""

import argparse
import sys
from pathlib import Path

from lost.data import datasets
from lost.detection import data as detection_data
from lost.detection import prepare as prepare_flags
from lost.errors import run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="COCO20k ground truth -> class-agnostic COCO annotation file.")
    parser.add_argument(
        "--coco_dir", type=Path, default=Path("datasets/COCO"), help="COCO folder (images/, annotations/)"
    )
    parser.add_argument(
        "--file_coco20k", type=Path, default=datasets.SHIPPED_COCO20K_LIST, help="the COCO20k image list"
    )
    prepare_flags.add_output_dir_flag(parser)
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> None:
    path = detection_data.KNOWN_DATASETS["coco20k_train_CAD_gt"].path(args.output_dir)
    content = detection_data.coco20k_cad_gt(args.coco_dir, args.file_coco20k)
    safe_files.write_json(path, content)
    print(f"COCO20k: {len(content['images'])} images, {len(content['annotations'])} boxes -> {path}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
