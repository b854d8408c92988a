"""Turn LOST boxes of COCO20k into a detectron2 data set (one class, "object").

    python tools/prepare_coco_LOST_CAD_pseudo_boxes_in_detectron2_format.py \
        --pboxes outputs/COCO20k_train/LOST-vit_small16_k/preds.pkl

Writes <output_dir>/coco20k_train_LOST_CAD.json, the training set of RN50_DINO_FRCNN_COCO20k_CAD.yaml.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules

import datasets
import detection_data
from errors import LostError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LOST boxes of COCO20k -> detectron2 data set (CAD).")
    parser.add_argument(
        "--pboxes",
        type=Path,
        default=Path("outputs/COCO20k_train/LOST-vit_small16_k/preds.pkl"),
        help="LOST predictions (preds.pkl / .json)",
    )
    parser.add_argument(
        "--coco_dir", type=Path, default=Path("datasets/COCO"), help="COCO folder (images/, annotations/)"
    )
    parser.add_argument(
        "--output_dir", type=Path, default=detection_data.default_prepared_dir(), help="prepared files folder"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dataset = detection_data.KNOWN_DATASETS["coco20k_train_LOST_CAD"]
    try:
        boxes = datasets.read_predictions(args.pboxes)
        records = detection_data.coco_pseudo_box_records(args.coco_dir, boxes)
        content = detection_data.dataset_dicts_file(records, dataset, str(args.pboxes))
        detection_data.write_json(dataset.path(args.output_dir), content)
    except LostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(records)} images with a pseudo-box written at {dataset.path(args.output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
