"""HTML report of a run's boxes against VOC07 / VOC12 / COCO20k: per-class CorLoc, CorLoc by object
size and count, the kinds of misses, a gallery; ``--compare`` a second run.

    python report.py --dataset VOC07 --set trainval \
        --pred_file outputs/VOC07_trainval/LOST-vit_small16_k/preds.pkl [--compare OTHER/preds.pkl]

The statistics and pages are built by :mod:`lost.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lost.data import datasets
from lost.errors import LostError, run_cli
from lost.report import (
    DEFAULT_GALLERY_SIZE,
    ReportRun,
    build_comparison,
    build_report,
    load_run_predictions,
    report_images,
    run_info,
    with_predictions,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HTML report of a run's boxes: per class, by difficulty, misses.")
    parser.add_argument(
        "--pred_file", required=True, type=Path, help="preds.pkl / preds.json, or coco_instances_results.json"
    )
    parser.add_argument("--dataset", default="VOC07", choices=datasets.DATASETS, help="data set of the predictions")
    parser.add_argument(
        "--set", default="trainval", choices=["val", "train", "trainval", "test"], help="image set (COCO20k: train)"
    )
    parser.add_argument(
        "--datasets_root", default=Path("datasets"), type=Path, help="folder holding VOC2007/, COCO/, ..."
    )
    parser.add_argument("--no_hard", action="store_true", help="VOC: drop truncated/difficult objects")
    parser.add_argument("--compare", default=None, type=Path, help="a second prediction file to compare with")
    parser.add_argument(
        "--output", default=None, type=Path, help="folder for report.html and report/ (default: the prediction file's)"
    )
    parser.add_argument("--gallery_size", default=DEFAULT_GALLERY_SIZE, type=int, help="thumbnails per page, at most")
    parser.add_argument("--seed", default=0, type=int, help="seed of the gallery sample")
    return parser.parse_args(argv)


def write_reports(args: argparse.Namespace) -> None:
    """report.html (and compare.html with ``--compare``) of the prediction file, and their headlines."""
    output = args.output if args.output is not None else args.pred_file.parent
    if args.gallery_size < 0:
        raise LostError(f"--gallery_size {args.gallery_size}: must be 0 or more")
    spec = datasets.load_dataset(args.dataset, args.set, args.datasets_root, args.no_hard)
    predictions = load_run_predictions(args.pred_file, args.dataset, spec.records)
    images = report_images(spec.records, predictions)
    run = ReportRun(run_info(args.pred_file, spec.name), tuple(images))
    links: tuple[tuple[str, str], ...] = ()
    if args.compare is not None:
        other_predictions = load_run_predictions(args.compare, args.dataset, spec.records)
        other = ReportRun(run_info(args.compare, spec.name), tuple(with_predictions(images, other_predictions)))
        comparison = build_comparison(run, other, output, gallery_size=args.gallery_size, seed=args.seed)
        links = (("compare.html", f"Comparison with {args.compare}"),)
    headline = build_report(run, output, gallery_size=args.gallery_size, seed=args.seed, links=links).headline
    print(f"corloc: {headline.corloc:.1f} ({headline.hits}/{headline.evaluated}), {headline.skipped} skipped")
    print(f"Report written to {output / 'report.html'}")
    if args.compare is not None:
        only_a, only_b = len(comparison.only_a), len(comparison.only_b)
        print(f"both right {comparison.both}, only {args.pred_file} {only_a}, only {args.compare} {only_b}")
        print(f"Comparison written to {output / 'compare.html'}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: write_reports(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
