"""AP of a class-aware detector trained on pseudo-classes, after matching its clusters to VOC classes.

    python tools/evaluate_unsupervised_detection_voc.py \
        --results outputs/RN50_DINO_FRCNN_VOC07_OD/inference/coco_instances_results.json

Reads the detections (COCO results: image_id, category_id = cluster, bbox [x, y, w, h], score) and
the VOC XML annotations of the image set directly. The AP50 of every (class, cluster) pair is
computed, clusters are assigned to classes by the Hungarian algorithm maximizing the mean AP50,
then AP50, AP75 and AP (IoU 0.50:0.95) are printed per class and overall. Needs no detectron2.
"""

import argparse
import sys
from pathlib import Path

from lost.data import datasets
from lost.detection import data as detection_data
from lost.errors import LostError, run_cli
from lost.eval import detection_eval
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Hungarian-matched VOC AP of pseudo-class detections.")
    parser.add_argument("--results", type=Path, required=True, help="coco_instances_results.json of the detector")
    parser.add_argument("--voc_dir", type=Path, default=Path("datasets/VOC2007"), help="VOC folder of the image set")
    parser.add_argument("--year", default="2007", choices=detection_data.VOC_YEARS, help="VOC year")
    parser.add_argument("--set", default="test", help="image set evaluated (ImageSets/Main/<set>.txt)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def evaluate(args: argparse.Namespace) -> None:
    image_ids, gts = detection_eval.load_voc_ground_truth(args.voc_dir, args.year, args.set)
    detections, elsewhere = detection_eval.load_coco_results(args.results, image_ids)
    if not detections:
        where = f"the {len(image_ids)} images of VOC{args.year} {args.set}"
        raise LostError(f"{args.results}: no detection on {where}; check --year and --set")
    if elsewhere:
        print(f"{elsewhere} detections on images outside VOC{args.year} {args.set} ignored", file=sys.stderr)
    result, matching, cluster_ids = detection_eval.evaluate_clusters(gts, detections, datasets.VOC_CLASSES)
    matched = f"Hungarian matching of {len(cluster_ids)} clusters to {len(gts)} classes"
    print(f"{matched}: mean AP50 {100 * matching.mean_ap50:.2f}")
    print(detection_eval.summary(result, matching, cluster_ids))
    if args.output:
        safe_files.write_json(args.output, detection_eval.report(result, matching, cluster_ids), indent=2)


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: evaluate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
