"""Class-agnostic mask AP: pycocotools' COCOeval on masks (``iouType="segm"``) of predicted
instance masks against ground-truth instance masks.

Ground truth: a COCO instances file (COCO20k's ``instances_train2014.json``, restricted to the
COCO20k images, or any file given by the user), every category merged into one, crowd regions
ignored as COCO does (a detection inside one is neither true nor false). Predictions: an instance
file (``main_lost.py --save_masks``'s ``instances.json``, CutLER's pseudo-masks), matched to the
ground-truth images by ``file_name`` (or, failing that, by its last part), or a detector's results
list, matched by ``image_id``. Every mask needs the [H, W] of its ground-truth image. The metrics
are those of box AP (``metrics.DetectionAP``: AP, AP50, AP75, AR@1/10/100, COCO's definitions),
with mask IoU.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lost.data.datasets import canonical_image_id
from lost.errors import LostError
from lost.eval.metrics import DetectionAP, coco_index
from lost.io.instances import InstanceFile, rle_area, rle_size


def mask_ground_truth(coco: COCO, source: Path, image_ids: list[int] | None = None) -> tuple[list[dict], list[dict]]:
    """(images, class-agnostic annotations) of ``coco`` (restricted to ``image_ids`` when given);
    LostError when an annotation has no mask (``segmentation``)."""
    ids = list(coco.imgs) if image_ids is None else [image_id for image_id in image_ids if image_id in coco.imgs]
    images = [coco.imgs[image_id] for image_id in ids]
    annotations = []
    for image_id in ids:
        for annotation in coco.imgToAnns.get(image_id, []):
            if not annotation.get("segmentation"):
                raise LostError(
                    f"{source}: ground truth without masks (annotation {annotation.get('id')} has no segmentation); "
                    "mask AP needs instance masks: pass a COCO instances file with segmentation (--gt_json), or use --iou_type bbox"
                )
            annotations.append({**annotation, "category_id": 1, "id": len(annotations) + 1})
    return images, annotations


def instance_detections(predictions: InstanceFile, gt_images: list[dict]) -> list[dict]:
    """The annotations of an instance file as detections on the ground-truth images (matched by
    ``file_name``, else by its last part); an annotation without ``score`` scores 1."""
    by_name = {str(image["file_name"]): image["id"] for image in gt_images}
    by_base = {Path(str(image["file_name"])).name: image["id"] for image in gt_images}
    image_map = {}
    for image_id, image in predictions.images.items():
        name = str(image.get("file_name", ""))
        target = by_name.get(name, by_base.get(Path(name).name))
        if target is not None:
            image_map[image_id] = target
    if predictions.images and not image_map:
        raise LostError(
            f"{predictions.path}: none of its {len(predictions.images)} images is in the ground truth (by file_name); "
            "a mask file from another run or data set: check --pred_file, --dataset or --gt_json"
        )
    detections = []
    for annotation in predictions.annotations:
        if annotation["image_id"] in image_map:
            score = float(annotation.get("score", 1.0))
            detections.append({**annotation, "image_id": image_map[annotation["image_id"]], "score": score})
    return detections


def result_detections(path: Path, results: list[dict], gt_images: list[dict]) -> list[dict]:
    """A detector's results on the ground-truth images, matched by ``image_id``."""
    ids = {canonical_image_id(image["id"]): image["id"] for image in gt_images}
    detections = [
        {**result, "image_id": ids[canonical_image_id(result["image_id"])]}
        for result in results
        if canonical_image_id(result["image_id"]) in ids
    ]
    if results and not detections:
        raise LostError(
            f"{path}: none of its image_ids is in the ground truth; a results file of another data set: check --gt_json"
        )
    return detections


def checked_detections(source: Path, detections: list[dict], gt_images: list[dict]) -> list[dict]:
    """The detections, class-agnostic, numbered from 1, without empty masks (counted on stderr);
    LostError for an RLE whose size is not its ground-truth image's [H, W]."""
    sizes = {image["id"]: (image.get("height"), image.get("width")) for image in gt_images}
    kept = []
    empty = 0
    for detection in detections:
        size = rle_size(source, detection)
        if size != sizes[detection["image_id"]]:
            raise LostError(
                f"{source}: annotation {detection.get('id')} has an RLE of the wrong size {list(size)} for ground-truth image "
                f"{detection['image_id']} of [H, W] = {list(sizes[detection['image_id']])}; the masks were made for other images"
            )
        area = rle_area(detection["segmentation"])
        if area == 0:
            empty += 1
            continue
        kept.append({**detection, "id": len(kept) + 1, "category_id": 1, "iscrowd": 0, "area": area})
    if empty:
        print(f"{source}: {empty} empty masks are left out", file=sys.stderr)
    return kept


def class_agnostic_mask_ap(gt_images: list[dict], gt_annotations: list[dict], detections: list[dict]) -> DetectionAP:
    """COCOeval on masks, one category; AP/AR as :class:`metrics.DetectionAP` (NaN without objects)."""
    ground_truth = coco_index(gt_images, gt_annotations)
    predicted = coco_index(gt_images, detections)
    evaluation = COCOeval(ground_truth, predicted, "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [float("nan") if value < 0 else float(value) for value in evaluation.stats]
    objects = sum(not annotation.get("iscrowd", 0) for annotation in gt_annotations)
    return DetectionAP(stats[0], stats[1], stats[2], stats[6], stats[7], stats[8], len(gt_images), objects)
