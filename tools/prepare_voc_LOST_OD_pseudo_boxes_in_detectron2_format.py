"""Turn clustered LOST boxes of VOC07 / VOC12 trainval into a detectron2 data set (one class per cluster).

    python tools/prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format.py --year 2007 \
        --pboxes data/LOST_predictions/LOST_VOC07_clustered_20clu.pkl

The input is written by cluster_for_OD.py; with the boxes of a multi-object method every box keeps
its own cluster. Writes <output_dir>/voc_<year>_trainval_LOST_OD_clu<K>.json
(K = largest pseudo-label + 1), the training set of the OD configs.
"""

import argparse
import sys

import numpy as np

from lost import clustering
from lost.detection import data as detection_data
from lost.detection import prepare as prepare_flags
from lost.errors import LostError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return prepare_flags.parse_voc_pseudo_box_args(
        argv,
        "Clustered LOST boxes of VOC trainval -> detectron2 data set (OD).",
        "<preds>_clustered_<K>clu.pkl of cluster_for_OD.py",
    )


def prepare(args: argparse.Namespace) -> None:
    pseudo = clustering.read_pseudo_labels(args.pboxes)
    if not pseudo:
        raise LostError(f"{args.pboxes}: holds no pseudo-box; run cluster_for_OD.py again")
    boxes = {name: np.stack([entry.box for entry in entries]) for name, entries in pseudo.items()}
    labels = {name: [entry.label for entry in entries] for name, entries in pseudo.items()}
    dataset = detection_data.od_dataset(args.year, max(max(image_labels) for image_labels in labels.values()) + 1)
    voc_dir = prepare_flags.voc_folder(args.year, args.voc_dir)
    records = detection_data.voc_pseudo_box_records(voc_dir, args.year, boxes, labels)
    print(prepare_flags.write_pseudo_boxes(records, dataset, args.pboxes, args.output_dir))


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: prepare(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
