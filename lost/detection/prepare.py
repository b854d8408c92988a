"""What the ``tools/prepare_*.py`` scripts share: their flags, where VOC lives by default, and the
writing of pseudo-box records with its one-line summary.

The files themselves (detectron2 dataset dicts, COCO annotation files) are described in
:mod:`lost.detection.data`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lost.detection import data as detection_data


def add_output_dir_flag(parser: argparse.ArgumentParser) -> None:
    """``--output_dir``: the prepared files folder (default ``$LOST_PREPARED_DIR`` or ``datasets``)."""
    parser.add_argument(
        "--output_dir", type=Path, default=detection_data.default_prepared_dir(), help="prepared files folder"
    )


def parse_voc_pseudo_box_args(argv: list[str] | None, description: str, pboxes_help: str) -> argparse.Namespace:
    """`argv` parsed with the flags of a VOC pseudo-box script: ``--year``, ``--pboxes``
    (required), ``--voc_dir`` (see :func:`voc_folder`) and ``--output_dir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--year", default="2007", choices=detection_data.VOC_YEARS, help="VOC year")
    parser.add_argument("--pboxes", type=Path, required=True, help=pboxes_help)
    parser.add_argument("--voc_dir", type=Path, default=None, help="VOC<year> folder (default datasets/VOC<year>)")
    add_output_dir_flag(parser)
    return parser.parse_args(argv)


def voc_folder(year: str, voc_dir: Path | None) -> Path:
    """`voc_dir`, or ``datasets/VOC<year>`` when it is None."""
    return voc_dir if voc_dir is not None else Path("datasets") / f"VOC{year}"


def write_pseudo_boxes(
    records: list[dict], dataset: detection_data.PreparedDataset, source: Path, output_dir: Path
) -> str:
    """Write the dataset dicts `records` of `dataset` (made from the predictions in `source`) into
    `output_dir`; returns the summary line, ``"2 images with 4 pseudo-boxes written at PATH"``
    (``"... pseudo-boxes of K clusters ..."`` for a class-aware data set)."""
    path = detection_data.write_dataset_dicts(records, dataset, source, output_dir)
    count = sum(len(record["annotations"]) for record in records)
    clusters = "" if dataset.classes == detection_data.CAD_CLASSES else f" of {len(dataset.classes)} clusters"
    return f"{len(records)} images with {count} pseudo-boxes{clusters} written at {path}"
