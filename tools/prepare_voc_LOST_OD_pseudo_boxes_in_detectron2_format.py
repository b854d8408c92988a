"""Turn clustered LOST boxes of VOC07 / VOC12 trainval into a detectron2 data set (one class per cluster).

    python tools/prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format.py --year 2007 \
        --pboxes data/LOST_predictions/LOST_VOC07_clustered_20clu.pkl

The input is written by cluster_for_OD.py; with the boxes of a multi-object method every box keeps
its own cluster. Writes <output_dir>/voc_<year>_trainval_LOST_OD_clu<K>.json
(K = largest pseudo-label + 1), the training set of the OD configs.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from lost import clustering
from lost.detection import data as detection_data
from lost.errors import LostError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Clustered LOST boxes of VOC trainval -> detectron2 data set (OD).")
    parser.add_argument("--year", default="2007", choices=detection_data.VOC_YEARS, help="VOC year")
    parser.add_argument("--pboxes", type=Path, required=True, help="<preds>_clustered_<K>clu.pkl of cluster_for_OD.py")
    parser.add_argument("--voc_dir", type=Path, default=None, help="VOC<year> folder (default datasets/VOC<year>)")
    parser.add_argument(
        "--output_dir", type=Path, default=detection_data.default_prepared_dir(), help="prepared files folder"
    )
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> None:
    voc_dir = args.voc_dir or Path("datasets") / f"VOC{args.year}"
    pseudo = clustering.read_pseudo_labels(args.pboxes)
    if not pseudo:
        raise LostError(f"{args.pboxes}: holds no pseudo-box; run cluster_for_OD.py again")
    boxes = {name: np.stack([entry.box for entry in entries]) for name, entries in pseudo.items()}
    labels = {name: [entry.label for entry in entries] for name, entries in pseudo.items()}
    dataset = detection_data.od_dataset(args.year, max(max(image_labels) for image_labels in labels.values()) + 1)
    records = detection_data.voc_pseudo_box_records(voc_dir, args.year, boxes, labels)
    path = detection_data.write_dataset_dicts(records, dataset, args.pboxes, args.output_dir)
    count = sum(len(record["annotations"]) for record in records)
    print(f"{len(records)} images with {count} pseudo-boxes of {len(dataset.classes)} clusters written at {path}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
