"""Write the VOC07 trainval, VOC07 test and VOC12 trainval ground truth as COCO annotation files.

    python tools/prepare_voc_data_in_coco_style.py --is_CAD --voc07_dir datasets/VOC2007 --voc12_dir datasets/VOC2012
    python tools/prepare_voc_data_in_coco_style.py --voc07_dir datasets/VOC2007 --voc12_dir datasets/VOC2012

Writes <output_dir>/voc_<year>_<set>_coco_style.json (the 20 classes) or, with --is_CAD,
voc_<year>_<set>_CAD_coco_style.json (one class "object"); difficult objects are left out.
A set whose image list is absent (e.g. VOC07 test, a separate archive) is skipped with a note.
"""

import argparse
import sys
from pathlib import Path

from lost.data import datasets
from lost.detection import data as detection_data
from lost.detection import prepare as prepare_flags
from lost.errors import LostError, run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="VOC ground truth -> COCO annotation files.")
    parser.add_argument("--is_CAD", action="store_true", help="class-agnostic: one class 'object'")
    parser.add_argument("--voc07_dir", type=Path, default=Path("datasets/VOC2007"), help="VOC2007 folder")
    parser.add_argument("--voc12_dir", type=Path, default=Path("datasets/VOC2012"), help="VOC2012 folder")
    prepare_flags.add_output_dir_flag(parser)
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> None:
    voc_dirs = {"2007": args.voc07_dir, "2012": args.voc12_dir}
    cad = "_CAD" if args.is_CAD else ""
    written = []
    for year, image_set in detection_data.VOC_GT_SETS:
        set_file = datasets.voc_set_file(voc_dirs[year], year, image_set)
        if not set_file.is_file():
            print(f"skipped VOC{year} {image_set}: {set_file} not found", file=sys.stderr)
            continue
        path = detection_data.KNOWN_DATASETS[f"voc_{year}_{image_set}{cad}_coco_style"].path(args.output_dir)
        content = detection_data.voc_coco_style(voc_dirs[year], year, image_set, args.is_CAD)
        safe_files.write_json(path, content)
        written.append(path)
        print(f"VOC{year} {image_set}: {len(content['images'])} images, {len(content['annotations'])} boxes -> {path}")
    if not written:
        raise LostError(f"no VOC image set found under --voc07_dir {args.voc07_dir} or --voc12_dir {args.voc12_dir}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
