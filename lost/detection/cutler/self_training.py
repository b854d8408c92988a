"""CutLER's self-training merge (``cutler/tools/get_self_training_ann.py``), on the CPU.

Given the detector's predictions (detectron2's ``coco_instances_results.json``: ``image_id``,
``bbox`` [x, y, w, h], ``score``, ``segmentation`` RLE) and the previous round's pseudo-mask file:

1. keep the predictions with ``score >= threshold`` (0.7);
2. for each image of the previous annotations (in the order they first appear): its kept
   predictions, then its previous masks whose largest mask IoU with those predictions is below
   0.5 (an empty previous mask against empty predictions has IoU NaN and is dropped, as
   published); an image without kept predictions keeps its previous masks;
3. then the kept predictions of images without previous annotations;
4. renumber the annotations from 1 and set, as published, ``area`` to the box's ``w * h``,
   ``iscrowd`` 0, and ``width`` / ``height`` to the mask's ``size[0]`` / ``size[1]`` (that is,
   H and W: swapped, like CutLER's image entries);
5. write ``images`` of the previous file unchanged, CutLER's ``info`` (dated now), licenses and
   the one category ``fg``.

The output equals the published script's on the same inputs (``info.date_created`` aside).
Differences: masks are compared with numpy on the CPU (the published script needs CUDA);
previous masks given as polygons are accepted (the published script reads ``segmentation.size``
and fails on them), sized by their image entry (swapped back for CutLER's files); a prediction
whose mask size differs from the previous masks of its image raises an error (the published
script then silently keeps the previous masks and drops the predictions); predictions without
masks raise an error.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from lost.detection.cutler.coco_input import sizes_swapped
from lost.errors import LostError
from lost.io import safe_files
from lost.io.instances import read_coco_lists

IOU_LIMIT = 0.5
"""A previous mask with IoU at or above this with a kept prediction is replaced by it."""

CATEGORIES = [{"id": 1, "name": "fg", "supercategory": "fg"}]
LICENSES = [{"id": 1, "name": "Apache License", "url": "https://github.com/facebookresearch/CutLER/blob/main/LICENSE"}]


def info(now: datetime.datetime | None = None) -> dict:
    """CutLER's ``info`` block of a self-training file, dated `now` (UTC, default: now)."""
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return {
        "description": "ImageNet-1K: Self-train",
        "url": "",
        "version": "1.0",
        "year": 2022,
        "contributor": "Xudong Wang",
        "date_created": now.isoformat(" "),
    }


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: polygons, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def mask_ious(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """(n1, n2) IoU of (n1, H, W) and (n2, H, W) bool masks; NaN where both are empty."""
    flat1 = masks1.reshape(len(masks1), -1).astype(np.float64)
    flat2 = masks2.reshape(len(masks2), -1).astype(np.float64)
    inter = flat1 @ flat2.T
    union = flat1.sum(1)[:, None] + flat2.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def _group_by_image(annotations: list[dict]) -> dict:
    grouped: dict = {}
    for annotation in annotations:
        grouped.setdefault(annotation["image_id"], []).append(annotation)
    return grouped


def _masks(annotations: list[dict], size_of: dict, where: str) -> np.ndarray:
    masks = []
    for annotation in annotations:
        segmentation = annotation.get("segmentation")
        if not segmentation:
            raise LostError(f"{where}: annotation {annotation.get('id')} of image {annotation['image_id']} has no mask")
        if isinstance(segmentation, dict) and "size" in segmentation:
            height, width = segmentation["size"]
        else:
            height, width = size_of[annotation["image_id"]]
        masks.append(decode_segmentation(segmentation, int(height), int(width)))
    shapes = {mask.shape for mask in masks}
    if len(shapes) > 1:
        raise LostError(f"{where}: the masks of image {annotations[0]['image_id']} differ in size ({sorted(shapes)})")
    return np.stack(masks)


def previous_masks_kept(previous: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices of the previous masks whose largest IoU with the predicted masks is below 0.5."""
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(mask_ious(previous, predicted).max(axis=1) < IOU_LIMIT)


def _image_sizes(images: list[dict], annotations: list[dict]) -> dict:
    """image id -> (H, W) of the previous file's images, for masks given as polygons; the
    entries' width/height swapped back when the RLE masks show CutLER's swap."""
    swapped = sizes_swapped(images, _group_by_image(annotations))
    return {
        image["id"]: (image["width"], image["height"]) if swapped else (image["height"], image["width"])
        for image in images
    }


def merge_annotations(
    predictions: list[dict], previous: dict, threshold: float, pred_path: str = "predictions"
) -> list[dict]:
    """The merged, renumbered annotations (steps 1-4); `previous` is the previous round's file."""
    kept = _group_by_image([p for p in predictions if p["score"] >= threshold])
    pseudo = _group_by_image(previous["annotations"])
    size_of = _image_sizes(previous["images"], previous["annotations"])
    merged = []
    for image_id, image_annotations in pseudo.items():
        previous_masks = _masks(image_annotations, size_of, "previous annotations")
        if image_id not in kept:
            merged += image_annotations
            continue
        predicted = _masks(kept[image_id], size_of, pred_path)
        if predicted.shape[1:] != previous_masks.shape[1:]:
            raise LostError(
                f"{pred_path}: the masks predicted for image {image_id} are {predicted.shape[1:]} but its previous "
                f"masks are {previous_masks.shape[1:]}; predict on the images of the previous file"
            )
        merged += kept[image_id] + [image_annotations[i] for i in previous_masks_kept(previous_masks, predicted)]
    for image_id, image_predictions in kept.items():
        if image_id not in pseudo:
            merged += image_predictions
    return [_renumbered(annotation, index) for index, annotation in enumerate(merged, start=1)]


def _renumbered(annotation: dict, ann_id: int) -> dict:
    w, h = annotation["bbox"][2:4]
    size = annotation["segmentation"].get("size") if isinstance(annotation["segmentation"], dict) else None
    fields = {"id": ann_id, "area": h * w, "iscrowd": 0}
    if size is not None:
        fields.update(width=size[0], height=size[1])
    return {**annotation, **fields}


def self_training_file(
    predictions: list[dict], previous: dict, threshold: float, pred_path: str = "predictions"
) -> dict:
    """The next round's pseudo-label file (steps 1-5)."""
    return {
        "info": info(),
        "licenses": LICENSES,
        "categories": CATEGORIES,
        "images": previous["images"],
        "annotations": merge_annotations(predictions, previous, threshold, pred_path),
    }


def read_predictions(path: Path) -> list[dict]:
    """The detections of a ``coco_instances_results.json``; LostError when it is not one or has
    no masks."""
    content = safe_files.read_json(
        path, "pass --new-pred the coco_instances_results.json of --eval-only", "predictions"
    )
    needed = ("image_id", "score", "bbox", "segmentation")
    if not isinstance(content, list) or any(
        not isinstance(p, dict) or not all(k in p for k in needed) for p in content
    ):
        raise LostError(
            f"{path}: not detectron2 instance results with masks (image_id, score, bbox, segmentation); "
            "predict with tools/train_net_cutler.py --eval-only and a Mask R-CNN config"
        )
    return content


def read_previous(path: Path) -> dict:
    """The previous round's pseudo-label file (COCO instances with masks)."""
    return read_coco_lists(path, "pass --prev-ann the pseudo-label file the detector was trained on")
