"""CutLER's detector training and prediction on detectron2: ``tools/train_net_cutler.py``.

The training file (``--train_json`` with ``--image_root``) and the optional test file
(``--test_json`` with ``--test_image_root``, default the same root) are read and checked by
:mod:`coco_input` in the launching process, then registered in every process as the data sets
``cutler_train`` and ``cutler_test`` (one class), which become ``DATASETS.TRAIN`` / ``DATASETS.TEST``.

The trainer is detectron2's ``DefaultTrainer`` (SGD with CutLER's solver settings, gradient
clipping, AMP when ``SOLVER.AMP.ENABLED``, PreciseBN, periodic checkpoints, ``--resume`` from
``OUTPUT_DIR/last_checkpoint``), with CutLER's copy-paste on each training batch when
``DATALOADER.COPY_PASTE`` (:mod:`mapper`) and a COCO evaluator for boxes and masks that writes
``OUTPUT_DIR/inference/coco_instances_results.json`` (RLE masks). AMP needs CUDA: with
``MODEL.DEVICE cpu`` it is turned off.

``run`` takes the argument namespace, as ``lost.detection.training.run`` does: it is what
detectron2's ``launch`` hands to each process and what its ``default_setup`` reads.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, default_argument_parser, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from lost.detection import training as detector_training
from lost.detection.cutler import coco_input
from lost.detection.cutler.copy_paste import CopyPasteParams
from lost.detection.cutler.mapper import CopyPasteBatches
from lost.detection.cutler.roi_heads import add_cutler_config
from lost.errors import LostError, run_cli
from lost.io import safe_files

TRAIN_NAME, TEST_NAME = "cutler_train", "cutler_test"
DEFAULT_CONFIG = (
    Path(__file__).resolve().parents[3] / "tools" / "configs" / "CutLER" / "cascade_mask_rcnn_R_50_FPN.yaml"
)
COPY_PASTE_SEED = 0
"""Seed of the copy-paste draws when ``SEED`` is negative (detectron2's "random seed")."""

INERT_KEYS = {
    "DATALOADER.VISUALIZE_COPY_PASTE": False,
    "SOLVER.BASE_LR_MULTIPLIER": 1,
    "SOLVER.BASE_LR_MULTIPLIER_NAMES": [],
    "TEST.NO_SEGM": False,
}
"""CutLER's keys that only its visualization, its ImageNet-specific optimizer groups or its box-only
evaluation read: accepted at these values, refused otherwise."""


# ----------------------------------------------------------------------------------------------
# Data sets


def _records(json_path: Path, image_root: Path, require_masks: bool) -> list[dict]:
    records = coco_input.detectron2_records(coco_input.read_coco_input(json_path, image_root, require_masks))
    for record in records:
        for annotation in record["annotations"]:
            annotation["bbox_mode"] = BoxMode(annotation["bbox_mode"])
    return records


def register(name: str, json_path: Path, image_root: Path, require_masks: bool, gt_json: Path | None = None) -> None:
    """Register `json_path` (images under `image_root`) as the one-class data set `name`; its
    COCO ground truth for evaluation is `gt_json` (default the file itself)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _records(json_path, image_root, require_masks))
    MetadataCatalog.get(name).set(
        thing_classes=["fg"], evaluator_type="coco", json_file=str(gt_json or json_path), image_root=str(image_root)
    )


def evaluation_gt(coco: coco_input.CocoInput, output_dir: Path) -> tuple[Path, int]:
    """The COCO ground truth pycocotools evaluates the test predictions on, and the category id the
    predictions get: the test file itself when it has at most one category and true sizes, else a
    one-category copy written to `output_dir`."""
    if len(coco.category_ids) <= 1 and not coco.sizes_swapped:
        return coco.path, coco.category_ids[0] if coco.category_ids else 1
    path = Path(output_dir) / "inference" / "cutler_test_class_agnostic_gt.json"
    safe_files.write_json(path, coco_input.class_agnostic_gt(coco, coco.path))
    return path, 1


# ----------------------------------------------------------------------------------------------
# Trainer


class Trainer(DefaultTrainer):
    """detectron2's trainer with CutLER's copy-paste on the training batches and a COCO
    evaluator of boxes and masks."""

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        if cfg.DATALOADER.COPY_PASTE:
            loop = self._trainer
            params = CopyPasteParams(
                rate=cfg.DATALOADER.COPY_PASTE_RATE,
                min_ratio=cfg.DATALOADER.COPY_PASTE_MIN_RATIO,
                max_ratio=cfg.DATALOADER.COPY_PASTE_MAX_RATIO,
                random_num=cfg.DATALOADER.COPY_PASTE_RANDOM_NUM,
            )
            seed = cfg.SEED if cfg.SEED >= 0 else COPY_PASTE_SEED
            loop.data_loader = CopyPasteBatches(loop.data_loader, params, seed, comm.get_rank(), lambda: loop.iter)
            loop._data_loader_iter = iter(loop.data_loader)  # detectron2 v0.5 makes it in __init__

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> COCOEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        evaluator = COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder, use_fast_impl=False)
        if not evaluator._coco_api.dataset.get("annotations"):
            evaluator._do_evaluation = False  # unlabelled images: write the predictions only
        return evaluator


# ----------------------------------------------------------------------------------------------
# Config and inputs


def load_config(config_file: str, opts: list[str]) -> CfgNode:
    """detectron2's defaults plus CutLER's keys, the yaml file, then `opts`; AMP off on a CPU."""
    cfg = detector_training.load_config(config_file, opts, add_keys=add_cutler_config)
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        logging.getLogger(__name__).info("SOLVER.AMP.ENABLED turned off: AMP needs CUDA (MODEL.DEVICE cpu)")
        cfg.SOLVER.AMP.ENABLED = False
    return cfg


def check_config(cfg: CfgNode) -> None:
    """LostError for settings this implementation cannot honour."""
    for key, default in INERT_KEYS.items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        if (list(value) if isinstance(default, list) else value) != default:
            raise LostError(f"config {key} {value}: not supported here; leave it at {default}")
    if cfg.DATALOADER.COPY_PASTE and not cfg.MODEL.MASK_ON:
        raise LostError("config DATALOADER.COPY_PASTE True needs masks: set MODEL.MASK_ON True or COPY_PASTE False")
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != 1:
        raise LostError(
            f"config MODEL.ROI_HEADS.NUM_CLASSES {cfg.MODEL.ROI_HEADS.NUM_CLASSES}: CutLER's detector is class-agnostic; set it to 1"
        )


def check_inputs(args: argparse.Namespace, cfg: CfgNode) -> None:
    """Check the config, the data files and the initial weights before launching, and write the
    test ground truth the evaluator needs (``args.test_gt``, ``args.test_category``)."""
    check_config(cfg)
    if args.eval_only and args.test_json is None:
        raise LostError("--eval-only needs --test_json (and --test_image_root when its images are elsewhere)")
    if args.train_json is None and not args.eval_only:
        raise LostError("--train_json is required for training; pass the COCO instances file of the pseudo-masks")
    if args.train_json is not None and not args.eval_only:
        coco_input.read_coco_input(args.train_json, args.image_root, require_masks=cfg.MODEL.MASK_ON)
    if args.test_json is not None:
        test = coco_input.read_coco_input(args.test_json, args.test_image_root or args.image_root, require_masks=False)
        args.test_gt, args.test_category = evaluation_gt(test, Path(cfg.OUTPUT_DIR))
    detector_training.check_weights(cfg, args.resume)


def configured(args: argparse.Namespace) -> CfgNode:
    """The frozen config of a run: the file, the overrides, and the registered data sets."""
    cfg = load_config(args.config_file, args.opts)
    cfg.DATASETS.TRAIN = (TRAIN_NAME,) if args.train_json is not None else ()
    cfg.DATASETS.TEST = (TEST_NAME,) if args.test_json is not None else ()
    cfg.freeze()
    return cfg


def run(args: argparse.Namespace) -> dict:
    """One process of training or prediction (detectron2's ``launch`` calls it once per GPU)."""
    cfg = configured(args)
    if args.train_json is not None:
        register(TRAIN_NAME, args.train_json, args.image_root, require_masks=cfg.MODEL.MASK_ON)
    if args.test_json is not None:
        register(TEST_NAME, args.test_json, args.test_image_root or args.image_root, False, args.test_gt)
        MetadataCatalog.get(TEST_NAME).thing_dataset_id_to_contiguous_id = {args.test_category: 0}
    return detector_training.train_or_evaluate(Trainer, cfg, args)


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = default_argument_parser()
    parser.description = description
    parser.set_defaults(config_file=str(DEFAULT_CONFIG))
    parser.add_argument("--train_json", type=Path, help="COCO instances file of the pseudo-masks to train on")
    parser.add_argument(
        "--image_root", type=Path, default=Path("."), help="folder the file_name of --train_json is relative to"
    )
    parser.add_argument("--test_json", type=Path, help="COCO instances file of the images to predict (and evaluate)")
    parser.add_argument("--test_image_root", type=Path, help="folder of the --test_json images (default --image_root)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, description: str = "") -> int:
    """Check the inputs, then train (or predict, with --eval-only) on --num-gpus processes."""
    args = parse_args(argv, description)
    args.test_gt, args.test_category = None, 1
    status = run_cli(lambda: check_inputs(args, load_config(args.config_file, args.opts)))
    if status:
        return status
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0
