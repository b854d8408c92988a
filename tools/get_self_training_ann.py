"""Merge a detector's confident predictions with the previous round's pseudo-masks (CutLER's
self-training annotations), on the CPU.

    python tools/get_self_training_ann.py \\
        --new-pred outputs/CutLER_cascade_mask_rcnn_R_50_FPN/inference/coco_instances_results.json \\
        --prev-ann instances.json --save-path cutler_train_r1.json --threshold 0.7

Keeps the predictions with score >= --threshold and the previous masks whose largest mask IoU with
them is below 0.5, renumbered, as CutLER's cutler/tools/get_self_training_ann.py does.
"""

import argparse
import sys
from pathlib import Path

from lost.detection.cutler import self_training
from lost.errors import run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--new-pred",
        type=Path,
        default=Path("output/inference/coco_instances_results.json"),
        help="the detector's predictions (coco_instances_results.json of --eval-only)",
    )
    parser.add_argument("--prev-ann", type=Path, required=True, help="the pseudo-label file of the previous round")
    parser.add_argument("--save-path", type=Path, required=True, help="where to write the merged file")
    parser.add_argument("--threshold", type=float, default=0.7, help="confidence score threshold (default 0.7)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        predictions = self_training.read_predictions(args.new_pred)
        previous = self_training.read_previous(args.prev_ann)
        merged = self_training.self_training_file(predictions, previous, args.threshold, str(args.new_pred))
        safe_files.write_json(args.save_path, merged)
        print(f"Done: {len(merged['images'])} images; {len(merged['annotations'])} anns.")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
