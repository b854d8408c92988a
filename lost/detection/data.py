"""Detector training inputs: LOST pseudo-boxes, VOC / COCO20k ground truth, ResNet-50 weights.

Two kinds of JSON file are written, both into the *prepared* folder (``--output_dir`` of the
preparation scripts, ``--prepared-dir`` of the training scripts; default ``$LOST_PREPARED_DIR``
or ``datasets``), each named ``<dataset name>.json``:

- detectron2 dataset dicts (the pseudo-boxes): ``{"dataset": [record, ...], "meta_data": {...}}``
  with records ``{"file_name", "image_id", "height", "width", "annotations": [{"bbox":
  [x1, y1, x2, y2], "bbox_mode": 0 (BoxMode.XYXY_ABS), "category_id": 0.., "iscrowd": 0}]}``;
- COCO annotation files (the ground truth, loadable by pycocotools): ``images`` (``id``,
  ``file_name``, ``width``, ``height``), ``annotations`` (``id`` from 1, ``image_id``,
  ``category_id`` from 1, ``bbox`` [x, y, w, h], ``area``, ``iscrowd``) and ``categories``.

Image files are referenced by absolute path, so the training scripts need only the prepared
folder. Image ids: for VOC the id of ``ImageSets/Main/<set>.txt`` (the JPEG's stem, ``"000005"``,
``"2008_000008"``), for COCO the integer COCO id; ``main_corloc_evaluation.py --type_pred
detectron`` and ``evaluate_unsupervised_detection_voc.py`` match detections by these ids.

Boxes are ``[x1, y1, x2, y2]`` in pixels, x2/y2 exclusive. Ground truth, image lists and COCO
annotations come from the readers of :mod:`lost.data.datasets` (VOC's 1-based inclusive corners become
``[xmin - 1, ymin - 1, xmax, ymax]`` there), the same ones CorLoc uses. As in the paper's files, the
COCO-style VOC ground truth leaves out objects marked ``difficult``.

Weights: a torchvision-named ResNet-50 state dict (DINO's ``dino_resnet50_pretrain.pth``) is
renamed to detectron2's ResNet names (``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``)
and written as the pickle detectron2's checkpointer reads for converted models
(``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": True}``).

This module does not import detectron2 (preparing data does not need it); only
:func:`lost.detection.launch.run_training_script` imports :mod:`lost.detection.training`, when called.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from lost.data import datasets
from lost.errors import LostError
from lost.io import safe_files

CAD_CLASSES = ("object",)

BOX_MODE_XYXY_ABS = 0
"""detectron2.structures.BoxMode.XYXY_ABS: absolute [x1, y1, x2, y2]."""

PREPARED_DIR_ENV = "LOST_PREPARED_DIR"
VOC_YEARS = ("2007", "2012")
VOC_GT_SETS = (("2007", "trainval"), ("2007", "test"), ("2012", "trainval"))
"""The VOC image sets with public annotations, written in COCO style."""
OD_PATTERN = re.compile(r"voc_(2007|2012)_trainval_LOST_OD_clu(\d+)")


def default_prepared_dir() -> Path:
    """Where prepared files go and are read from: ``$LOST_PREPARED_DIR``, else ``datasets``."""
    return Path(os.environ.get(PREPARED_DIR_ENV) or "datasets")


# ----------------------------------------------------------------------------------------------
# The prepared data sets, by name


@dataclass(frozen=True)
class PreparedDataset:
    """A data set the training scripts register: its name, file kind ("dicts" for detectron2
    dataset dicts, "coco" for a COCO annotation file), class names and the command that writes it."""

    name: str
    kind: str
    classes: tuple[str, ...]
    command: str

    def path(self, prepared_dir: Path) -> Path:
        return Path(prepared_dir) / f"{self.name}.json"


def _known_datasets() -> dict[str, PreparedDataset]:
    known = {}
    for year in VOC_YEARS:
        name = f"voc_{year}_trainval_LOST_CAD"
        command = f"tools/prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format.py --year {year} --pboxes PREDS.pkl"
        known[name] = PreparedDataset(name, "dicts", CAD_CLASSES, command)
    for year, image_set in VOC_GT_SETS:
        for cad, classes in (("", datasets.VOC_CLASSES), ("_CAD", CAD_CLASSES)):
            name = f"voc_{year}_{image_set}{cad}_coco_style"
            flag = " --is_CAD" if cad else ""
            command = f"tools/prepare_voc_data_in_coco_style.py{flag} --voc07_dir ... --voc12_dir ..."
            known[name] = PreparedDataset(name, "coco", classes, command)
    known["coco20k_train_LOST_CAD"] = PreparedDataset(
        "coco20k_train_LOST_CAD",
        "dicts",
        CAD_CLASSES,
        "tools/prepare_coco_LOST_CAD_pseudo_boxes_in_detectron2_format.py --pboxes PREDS.pkl",
    )
    known["coco20k_train_CAD_gt"] = PreparedDataset(
        "coco20k_train_CAD_gt", "coco", CAD_CLASSES, "tools/prepare_coco_CAD_gt.py --coco_dir datasets/COCO"
    )
    return known


KNOWN_DATASETS = _known_datasets()


def od_dataset(year: str, num_clusters: int) -> PreparedDataset:
    """The clustered pseudo-boxes of VOC<year> trainval with `num_clusters` pseudo-classes."""
    return PreparedDataset(
        f"voc_{year}_trainval_LOST_OD_clu{num_clusters}",
        "dicts",
        tuple(f"cluster_{k}" for k in range(num_clusters)),
        f"tools/prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format.py --year {year} "
        f"--pboxes PREDS_clustered_{num_clusters}clu.pkl",
    )


def prepared_dataset(name: str) -> PreparedDataset | None:
    """The PreparedDataset called `name` (any ``voc_<year>_trainval_LOST_OD_clu<K>``), or None."""
    match = OD_PATTERN.fullmatch(name)
    if match:
        return od_dataset(match.group(1), int(match.group(2)))
    return KNOWN_DATASETS.get(name)


# ----------------------------------------------------------------------------------------------
# VOC images


def _voc_image(devkit: Path, image_id: str) -> tuple[Path, datasets.VocAnnotation]:
    """Absolute JPEG path and annotation of one VOC image; LostError when either is missing."""
    image = (devkit / "JPEGImages" / f"{image_id}.jpg").resolve()
    if not image.is_file():
        raise LostError(f"{image}: image not found; restore it from the VOC archive")
    return image, datasets.read_voc_annotation(devkit / "Annotations" / f"{image_id}.xml")


# ----------------------------------------------------------------------------------------------
# Pseudo-boxes -> detectron2 dataset dicts


def pseudo_box_annotation(box: np.ndarray, category_id: int) -> dict:
    """A detectron2 annotation for `box` [x1, y1, x2, y2] (x2/y2 exclusive, absolute pixels)."""
    return {
        "bbox": [float(v) for v in np.asarray(box).reshape(4)],
        "bbox_mode": BOX_MODE_XYXY_ABS,
        "category_id": int(category_id),
        "iscrowd": 0,
    }


def voc_pseudo_box_records(
    voc_dir: Path, year: str, boxes: Mapping[str, np.ndarray], labels: Mapping[str, int | Sequence[int]] | None = None
) -> list[dict]:
    """detectron2 records of VOC<year> images with their pseudo-boxes.

    boxes: image file name ("000005.jpg") -> box [x1, y1, x2, y2], or boxes (K, 4) of a
    multi-object method, all of which become the image's pseudo ground truth (as CutLER trains on
    MaskCut's masks); labels: the same names -> pseudo-class, one per box (category 0 for all
    when None). Image size from the annotation XML. Raises LostError, naming a few, when images
    are missing from the tree at `voc_dir`.
    """
    devkit = datasets.voc_devkit_dir(Path(voc_dir), year)
    records, missing = [], []
    for name in sorted(boxes):
        image_id = Path(name).stem
        try:
            image, annotation = _voc_image(devkit, image_id)
        except LostError as exc:
            missing.append(str(exc))
            continue
        annotated = _labelled_boxes(boxes[name], 0 if labels is None else labels[name])
        records.append(_record(image, image_id, annotation.width, annotation.height, annotated))
    _raise_if_missing(missing, len(boxes), "predicted images", f"--voc_dir {voc_dir} (VOC{year})")
    return records


def coco_pseudo_box_records(coco_dir: Path, boxes: Mapping[str, np.ndarray]) -> list[dict]:
    """detectron2 records of COCO train2014 images with their pseudo-boxes (category 0).

    boxes: str(image_id) (or a COCO file name ``COCO_train2014_<id>.jpg``) -> box, or boxes
    (K, 4) of a multi-object method, all of them pseudo ground truth. Image files and sizes come
    from ``annotations/instances_train2014.json``, indexed once.
    """
    images = datasets.read_coco_instances(Path(coco_dir)).imgs
    records, missing = [], []
    for name in sorted(boxes, key=predicted_coco_id):
        image_id = predicted_coco_id(name)
        info = images.get(image_id)
        path = (Path(coco_dir) / "images" / "train2014" / info["file_name"]).resolve() if info else None
        if path is None or not path.is_file():
            missing.append(f"image {image_id} ({name}) not found in {coco_dir}")
            continue
        records.append(_record(path, image_id, info["width"], info["height"], _labelled_boxes(boxes[name], 0)))
    _raise_if_missing(missing, len(boxes), "predicted images", f"--coco_dir {coco_dir}")
    return records


def _labelled_boxes(boxes: np.ndarray, labels: int | Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """(box, category) pairs of one image: boxes (4,) or (K, 4); labels one per box, or one for all."""
    rows = np.asarray(boxes).reshape(-1, 4)
    categories = np.broadcast_to(np.asarray(labels).reshape(-1), (len(rows),))
    return [(box, int(category)) for box, category in zip(rows, categories, strict=True)]


def predicted_coco_id(name: str) -> int:
    """The COCO id of a prediction key: ``"42"``, ``"COCO_train2014_000000000042.jpg"`` or
    ``"train2014/COCO_train2014_000000000042.jpg"`` (see ``datasets.coco_image_id``)."""
    image_id = datasets.coco_image_id(name)
    if image_id is None:
        raise LostError(f"prediction key {name!r} is not a COCO image id or file name; use str(image_id)")
    return image_id


def _record(image: Path, image_id: str | int, width: int, height: int, boxes: Iterable[tuple]) -> dict:
    return {
        "file_name": str(image),
        "image_id": image_id,
        "height": int(height),
        "width": int(width),
        "annotations": [pseudo_box_annotation(box, category) for box, category in boxes],
    }


def _raise_if_missing(missing: list[str], total: int, what: str, where: str) -> None:
    """LostError naming the first few of the `missing` images (out of `total` `what`)."""
    if missing:
        raise LostError(
            f"{len(missing)} of {total} {what} are not in {where}: {'; '.join(missing[:3])}; "
            "pass the folder of the data set they come from"
        )


def dataset_dicts_file(records: list[dict], dataset: PreparedDataset, source: str) -> dict:
    """The content of a dataset-dicts file: records plus the name, classes and source file."""
    meta = {"name": dataset.name, "thing_classes": list(dataset.classes), "source": source}
    return {"dataset": records, "meta_data": meta}


def write_dataset_dicts(records: list[dict], dataset: PreparedDataset, source: Path, output_dir: Path) -> Path:
    """Write `records` (pseudo-boxes read from `source`) as the dataset-dicts file of `dataset`
    in `output_dir`, atomically; returns its path."""
    path = dataset.path(output_dir)
    safe_files.write_json(path, dataset_dicts_file(records, dataset, str(source)))
    return path


def read_dataset_dicts(path: Path, dataset: PreparedDataset) -> list[dict]:
    """The records of a dataset-dicts file; LostError naming the command when it is missing."""
    content = _read_prepared(path, dataset)
    try:
        return content["dataset"]
    except (KeyError, TypeError):
        raise LostError(f"{path}: not a dataset-dicts file; write it again with python {dataset.command}") from None


def _read_prepared(path: Path, dataset: PreparedDataset) -> dict:
    fix = f"write it with python {dataset.command}"
    return safe_files.read_json(path, fix, what=f"prepared file of {dataset.name}")


# ----------------------------------------------------------------------------------------------
# Ground truth -> COCO annotation files


class CocoBuilder:
    """Accumulates images and [x, y, w, h] boxes into a COCO annotation dict."""

    def __init__(self, classes: tuple[str, ...], description: str) -> None:
        self.classes = classes
        self.content = {
            "info": {"description": description},
            "images": [],
            "annotations": [],
            "categories": [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(classes)],
        }

    def add_image(self, image_id: str | int, file_name: Path, width: int, height: int) -> None:
        self.content["images"].append({"id": image_id, "file_name": str(file_name), "width": width, "height": height})

    def add_box(
        self, image_id: str | int, xywh, category_index: int, iscrowd: int = 0, area: float | None = None
    ) -> None:
        """xywh: COCO's [x, y, w, h]; category_index: position in `classes` (COCO id - 1);
        area: the box area unless given (COCO's own annotations give the mask area)."""
        x, y, w, h = (float(v) for v in xywh)
        annotations = self.content["annotations"]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_index + 1,
                "bbox": [x, y, w, h],
                "area": w * h if area is None else float(area),
                "iscrowd": int(iscrowd),
            }
        )


def voc_coco_style(voc_dir: Path, year: str, image_set: str, class_agnostic: bool) -> dict:
    """COCO annotation dict of VOC<year> `image_set`: the 20 classes, or one class "object"
    with `class_agnostic`; difficult objects and unknown class names are left out."""
    devkit = datasets.voc_devkit_dir(Path(voc_dir), year)
    classes = CAD_CLASSES if class_agnostic else datasets.VOC_CLASSES
    builder = CocoBuilder(classes, f"PASCAL VOC{year} {image_set}" + (" class-agnostic" if class_agnostic else ""))
    for image_id in datasets.voc_image_ids(voc_dir, year, image_set):
        image, annotation = _voc_image(devkit, image_id)
        builder.add_image(image_id, image, annotation.width, annotation.height)
        for obj in annotation.objects:
            if obj.difficult or obj.name not in datasets.VOC_CLASSES:
                continue
            x1, y1, x2, y2 = obj.box
            category = 0 if class_agnostic else datasets.VOC_CLASSES.index(obj.name)
            builder.add_box(image_id, (x1, y1, x2 - x1, y2 - y1), category)
    return builder.content


def coco20k_cad_gt(coco_dir: Path, filenames_file: Path) -> dict:
    """Class-agnostic COCO annotation dict of the COCO20k images (in list order): every
    annotation of instances_train2014.json becomes class "object", crowd flags and areas kept."""
    coco_dir = Path(coco_dir)
    entries = datasets.read_coco20k_list(Path(filenames_file))
    coco = datasets.read_coco_instances(coco_dir)
    builder = CocoBuilder(CAD_CLASSES, "COCO20k (COCO train2014 subset) class-agnostic")
    missing = []
    for relative, image_id in entries:
        path = (coco_dir / "images" / relative).resolve()
        if image_id not in coco.imgs or not path.is_file():
            missing.append(f"image {image_id} ({relative})")
            continue
        builder.add_image(image_id, path, coco.imgs[image_id]["width"], coco.imgs[image_id]["height"])
        for ann in coco.imgToAnns.get(image_id, []):
            builder.add_box(image_id, ann["bbox"], 0, ann.get("iscrowd", 0), ann.get("area"))
    _raise_if_missing(missing, len(entries), f"images of {filenames_file}", f"--coco_dir {coco_dir}")
    return builder.content


# ----------------------------------------------------------------------------------------------
# ResNet-50 weights: torchvision names <-> detectron2 names

RESNET_RENAMES = (
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.{p}", "stem.conv1.norm.{p}"),
    ("layer{s}.{b}.conv{k}.weight", "res{r}.{b}.conv{k}.weight"),
    ("layer{s}.{b}.bn{k}.{p}", "res{r}.{b}.conv{k}.norm.{p}"),
    ("layer{s}.{b}.downsample.0.weight", "res{r}.{b}.shortcut.weight"),
    ("layer{s}.{b}.downsample.1.{p}", "res{r}.{b}.shortcut.norm.{p}"),
)
"""(torchvision, detectron2) name templates: torchvision stage s (layer1..4) is detectron2's
r = s + 1 (res2..5), b a block, k a conv of the bottleneck, p a BatchNorm parameter or buffer."""

_FIELDS = {"s": "[1-4]", "r": "[2-5]", "b": r"\d+", "k": "[1-3]", "p": "weight|bias|running_mean|running_var"}
RESNET_DROPPED = re.compile(r"fc\..*|head\..*|.*\.num_batches_tracked")
"""Checkpoint keys with no detectron2 counterpart: torchvision's classifier, DINO's projection
head, BatchNorm's counters."""


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for field, values in _FIELDS.items():
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>{values})")
    return re.compile(pattern)


_TV_TO_D2 = [(_template_regex(tv), d2) for tv, d2 in RESNET_RENAMES]
_D2_TO_TV = [(_template_regex(d2), tv) for tv, d2 in RESNET_RENAMES]


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    for regex, target in rules:
        match = regex.fullmatch(key)
        if match:
            fields = match.groupdict()
            if "s" in fields:
                fields["r"] = str(int(fields["s"]) + 1)
            elif "r" in fields:
                fields["s"] = str(int(fields["r"]) - 1)
            return target.format(**fields)
    return None


def torchvision_to_detectron2_key(key: str) -> str | None:
    """detectron2's name of a torchvision ResNet parameter (None when it has none)."""
    return _rename(key, _TV_TO_D2)


def detectron2_to_torchvision_key(key: str) -> str | None:
    """torchvision's name of a detectron2 ResNet parameter (None when it has none)."""
    return _rename(key, _D2_TO_TV)


def resnet50_to_detectron2(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, np.ndarray]:
    """detectron2-named numpy weights of a torchvision-named ResNet-50 state dict.

    Raises LostError listing the missing, unexpected and mis-shaped parameters when `state_dict`
    (read from `source`) is not a ResNet-50's.
    """
    expected = {
        torchvision_to_detectron2_key(key): tuple(value.shape)
        for key, value in torchvision.models.resnet50().state_dict().items()
        if not RESNET_DROPPED.fullmatch(key)
    }
    converted, unexpected = {}, []
    for key, value in state_dict.items():
        if RESNET_DROPPED.fullmatch(key):
            continue
        name = torchvision_to_detectron2_key(key)
        if name in expected:
            converted[name] = value.detach().cpu().numpy()
        else:
            unexpected.append(key)
    missing = [name for name in expected if name not in converted]
    reshaped = [f"{name} {converted[name].shape}" for name in converted if converted[name].shape != expected[name]]
    problems = [
        f"{len(v)} {what} ({', '.join(v[:3])})"
        for what, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", reshaped))
        if v
    ]
    if problems:
        raise LostError(
            f"{source}: not a torchvision ResNet-50 state dict: {'; '.join(problems)}; pass DINO's ResNet-50 weights"
        )
    return converted


def detectron2_weights_pickle(weights: dict[str, np.ndarray]) -> bytes:
    """The pickle detectron2's DetectionCheckpointer loads for a converted backbone; its
    ``matching_heuristics`` lets detectron2 match these names to the model's (``backbone.res2...``)."""
    content = {"model": weights, "__author__": "LOST (torchvision ResNet-50)", "matching_heuristics": True}
    return pickle.dumps(content, protocol=4)
