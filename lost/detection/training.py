"""Faster R-CNN R50-C4 on LOST pseudo-boxes with detectron2: the paper's CAD and OD detectors.

What the training scripts (``tools/train_net_for_LOST_CAD.py``, ``tools/train_net_for_LOST_OD.py``)
share: detectron2's default trainer, the ``Res5ROIHeadsExtraNorm`` RoI head (MoCo's detection
setup: one more normalization layer after res5), a COCO evaluator writing
``<OUTPUT_DIR>/inference/coco_instances_results.json``, and the registration of every prepared
data set of :mod:`lost.detection.data` from the prepared folder (``--prepared-dir``, default
``$LOST_PREPARED_DIR`` or ``datasets``).

Before anything starts, the config file, the prepared files the config names and the initial
weights are checked in the launching process, so that a missing one gives one line naming it and
the command that makes it, instead of a traceback from each worker.

``run`` takes the argument namespace, unlike the rest of the project: it is what detectron2's
``launch`` hands to each process and what its ``default_setup`` reads.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from pathlib import Path

# detectron2 v0.5 applies torch.jit.script at import time, which recent torch flags as deprecated.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import load_coco_json  # noqa: E402
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.layers import get_norm  # noqa: E402
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

from lost.detection import data as detection_data  # noqa: E402
from lost.errors import LostError, run_cli  # noqa: E402


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with a ``cfg.MODEL.RESNETS.NORM`` layer (SyncBN in the paper) after res5."""

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode):
        res5, out_channels = super()._build_res5_block(cfg)
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return res5, out_channels


# ----------------------------------------------------------------------------------------------
# Data sets


def load_dataset_dicts(path: Path, dataset: detection_data.PreparedDataset) -> list[dict]:
    """detectron2 records of a prepared dataset-dicts file (boxes XYXY_ABS)."""
    records = detection_data.read_dataset_dicts(path, dataset)
    for record in records:
        for annotation in record["annotations"]:
            annotation["bbox_mode"] = BoxMode(annotation["bbox_mode"])
    return records


def load_coco_style(path: Path, dataset: detection_data.PreparedDataset) -> list[dict]:
    """detectron2 records of a prepared COCO annotation file."""
    if not path.is_file():
        raise LostError(f"{path}: prepared file of {dataset.name} not found; write it with python {dataset.command}")
    return load_coco_json(str(path), "", dataset.name)


def register_dataset(dataset: detection_data.PreparedDataset, prepared_dir: Path) -> None:
    """Register `dataset` (read from `prepared_dir` when used) in detectron2's catalogs,
    replacing a registration of the same name."""
    if dataset.name in DatasetCatalog.list():
        DatasetCatalog.remove(dataset.name)
        MetadataCatalog.remove(dataset.name)
    path = dataset.path(prepared_dir)
    metadata = MetadataCatalog.get(dataset.name)
    metadata.set(thing_classes=list(dataset.classes), evaluator_type="coco")
    if dataset.kind == "coco":
        DatasetCatalog.register(dataset.name, lambda: load_coco_style(path, dataset))
        id_map = {i + 1: i for i in range(len(dataset.classes))}
        metadata.set(json_file=str(path), image_root="", thing_dataset_id_to_contiguous_id=id_map)
    else:
        DatasetCatalog.register(dataset.name, lambda: load_dataset_dicts(path, dataset))


def register_prepared_datasets(prepared_dir: Path) -> list[str]:
    """Register every known data set, plus each ``voc_<year>_trainval_LOST_OD_clu<K>`` found in
    `prepared_dir` (clu20 always); returns their names."""
    found = {path.stem for path in Path(prepared_dir).glob("voc_*_trainval_LOST_OD_clu*.json")}
    od_names = {detection_data.od_dataset(year, 20).name for year in detection_data.VOC_YEARS} | found
    names = list(detection_data.KNOWN_DATASETS) + sorted(od_names)
    for name in names:
        dataset = detection_data.prepared_dataset(name)
        if dataset is not None:
            register_dataset(dataset, prepared_dir)
    return names


# ----------------------------------------------------------------------------------------------
# Training


class Trainer(DefaultTrainer):
    """detectron2's default trainer, evaluating with pycocotools' COCO evaluation (bbox)."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> COCOEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder, use_fast_impl=False)


def load_config(config_file: str, opts: list[str], add_keys: Callable[[CfgNode], CfgNode] | None = None) -> CfgNode:
    """detectron2's defaults (plus the keys `add_keys` adds), then the yaml file, then the
    command-line `opts` (KEY VALUE ...)."""
    if not Path(config_file).is_file():
        raise LostError(f"--config-file {config_file!r}: no such file; pass one of tools/configs/*.yaml")
    cfg = get_cfg()
    if add_keys is not None:
        add_keys(cfg)
    cfg.merge_from_file(config_file)
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as exc:
        raise LostError(
            f"config overrides {' '.join(opts)}: {exc}; use KEY VALUE pairs of detectron2's config"
        ) from exc
    return cfg


def check_inputs(cfg: CfgNode, prepared_dir: Path, resume: bool) -> None:
    """LostError when a data set of the config is neither a prepared one nor one of detectron2's,
    or is not prepared yet, or when the initial weights are a missing local file (and no
    checkpoint of OUTPUT_DIR is resumed)."""
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        dataset = detection_data.prepared_dataset(name)
        if dataset is None and name in DatasetCatalog.list():
            continue  # one of detectron2's built-in data sets
        if dataset is None:
            known = ", ".join(detection_data.KNOWN_DATASETS)
            raise LostError(
                f"data set {name!r} of the config is unknown; use one of {known}, voc_<year>_trainval_LOST_OD_clu<K>"
            )
        path = dataset.path(prepared_dir)
        if not path.is_file():
            raise LostError(f"{path}: prepared file of {name} not found; write it with python {dataset.command}")
    check_weights(cfg, resume)


def check_weights(cfg: CfgNode, resume: bool) -> None:
    """LostError when MODEL.WEIGHTS is a missing local file and no checkpoint of OUTPUT_DIR is
    resumed (an empty MODEL.WEIGHTS means random initial weights)."""
    weights = cfg.MODEL.WEIGHTS
    resumable = resume and (Path(cfg.OUTPUT_DIR) / "last_checkpoint").is_file()
    if weights and "://" not in weights and not Path(weights).is_file() and not resumable:
        raise LostError(
            f"MODEL.WEIGHTS {weights}: no such file; convert DINO's ResNet-50 with "
            "tools/convert_pretrained_to_detectron_format.py and pass its output as MODEL.WEIGHTS"
        )


def run(args: argparse.Namespace) -> dict:
    """One process of training or evaluation (detectron2's ``launch`` calls it once per GPU)."""
    register_prepared_datasets(args.prepared_dir)
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    return train_or_evaluate(Trainer, cfg, args)


def train_or_evaluate(trainer_class: type[DefaultTrainer], cfg: CfgNode, args: argparse.Namespace) -> dict:
    """detectron2's setup, then ``--eval-only``: the checkpoint of ``MODEL.WEIGHTS`` (or the last
    one with ``--resume``) evaluated on the test sets; else training, resumed with ``--resume``."""
    default_setup(cfg, args)
    if args.eval_only:
        model = trainer_class.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return trainer_class.test(cfg, model)
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = default_argument_parser()
    parser.description = description
    parser.add_argument(
        "--prepared-dir",
        type=Path,
        default=detection_data.default_prepared_dir(),
        help=f"folder of the prepared data set files (default ${detection_data.PREPARED_DIR_ENV} or datasets)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, description: str = "") -> int:
    """Check the inputs, then train (or evaluate, with --eval-only) on --num-gpus processes."""
    args = parse_args(argv, description)
    status = run_cli(lambda: check_inputs(load_config(args.config_file, args.opts), args.prepared_dir, args.resume))
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
