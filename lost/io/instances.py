"""COCO instance files: a run's masks in the field's exchange format, written streaming, read checked.

``instances.json`` (what ``main_lost.py --save_masks`` writes)::

    {"info": {"description": ..., "run": {run settings}},
     "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
     "images": [{"id": 1, "file_name": "n01440764/x.JPEG", "height": H, "width": W}, ...],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                      "segmentation": {"size": [H, W], "counts": "<compressed RLE>"},
                      "bbox": [x, y, w, h], "area": n, "score": s}, ...]}

``segmentation`` is pycocotools' compressed RLE with ``counts`` as str; ``bbox`` and ``area`` are
``mask.toBbox`` and ``mask.area`` of it, so the box is the mask's; ``score`` the object's score (1
for one-object methods); ids count from 1. An image's ``width`` is W, its ``height`` H (CutLER's
``maskcut.py`` swaps them in ``images``; :func:`read_instances` reads such files by the RLE's own
size). An empty mask gets no annotation; an image with only empty masks is still listed in
``images``. The categories are one class-agnostic category, or pseudo-classes (cluster_for_OD.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from lost.errors import LostError
from lost.io.safe_files import atomic_file, read_json

CLASS_AGNOSTIC = ({"id": 1, "name": "object", "supercategory": "object"},)
"""The one category of a class-agnostic instance file."""


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """(K, H, W) bool masks -> K compressed RLEs ``{"size": [H, W], "counts": str}``."""
    if len(masks) == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(np.moveaxis(np.asarray(masks, dtype=np.uint8), 0, -1)))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def compressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """A compressed (``counts`` str or bytes) or uncompressed (``counts`` list) RLE as the
    compressed RLE with bytes counts that ``pycocotools.mask`` takes."""
    if isinstance(rle["counts"], list):
        return mask_utils.frPyObjects(rle, *rle["size"])
    if isinstance(rle["counts"], str):
        return {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """An RLE (see :func:`compressed_rle`) -> (H, W) bool."""
    return mask_utils.decode(compressed_rle(rle)).astype(bool)


def rle_area(rle: dict[str, Any]) -> int:
    """Pixels of an RLE mask (see :func:`compressed_rle`)."""
    return int(mask_utils.area(compressed_rle(rle)))


@dataclass(frozen=True)
class InstanceImage:
    """One image of an instance file: its id, file_name (relative to the image root), (H, W)
    size, its objects' RLEs and scores (best first), and their category ids (None: category 1)."""

    id: int
    file_name: str
    height: int
    width: int
    rles: Sequence[dict[str, Any]]
    scores: Sequence[float]
    category_ids: Sequence[int] | None = None


@dataclass
class InstancesSummary:
    """What an instance file holds: images, annotations, masks left out for being empty, and
    images whose masks were all empty (listed, without annotation)."""

    images: int = 0
    annotations: int = 0
    empty_masks: int = 0
    empty_images: int = 0

    def line(self, path: Path) -> str:
        empty = f"; {self.empty_images} images have only empty masks (no annotation)" if self.empty_images else ""
        return f"Masks saved at {path} ({self.images} images, {self.annotations} masks{empty})"


def image_entry(image: InstanceImage) -> dict[str, Any]:
    """The ``images`` entry of an image (width W, height H)."""
    return {"id": image.id, "file_name": image.file_name, "height": image.height, "width": image.width}


def annotation_entries(image: InstanceImage, first_id: int) -> list[dict[str, Any]]:
    """The ``annotations`` of an image's non-empty masks, ids from ``first_id``; LostError when
    an RLE's size is not the image's [H, W]."""
    categories = image.category_ids or [1] * len(image.rles)
    annotations = []
    for rle, score, category in zip(image.rles, image.scores, categories, strict=True):
        if list(rle["size"]) != [image.height, image.width]:
            raise LostError(
                f"{image.file_name}: a mask of size {list(rle['size'])} for an image of [H, W] = "
                f"[{image.height}, {image.width}]; the masks come from another image or run"
            )
        compressed = compressed_rle(rle)
        area = int(mask_utils.area(compressed))
        if area == 0:
            continue
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": image.id,
                "category_id": int(category),
                "iscrowd": 0,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
                "bbox": [float(v) for v in mask_utils.toBbox(compressed)],
                "area": area,
                "score": float(score),
            }
        )
    return annotations


def write_instances(
    path: Path,
    images: Callable[[], Iterable[InstanceImage]],
    info: dict[str, Any],
    categories: Sequence[dict[str, Any]] = CLASS_AGNOSTIC,
) -> InstancesSummary:
    """Write an instance file atomically, streaming: ``images()`` is iterated twice (the
    ``images`` list, then the ``annotations``), so only one image's masks are in memory at once."""
    summary = InstancesSummary()
    with atomic_file(path) as file:
        head = {"info": info, "categories": list(categories)}
        file.write(json.dumps(head)[:-1].encode() + b', "images": [')
        for number, image in enumerate(images()):
            file.write((", " if number else "").encode() + json.dumps(image_entry(image)).encode())
            summary.images += 1
        file.write(b'], "annotations": [')
        for image in images():
            annotations = annotation_entries(image, summary.annotations + 1)
            summary.empty_masks += len(image.rles) - len(annotations)
            summary.empty_images += not annotations
            for annotation in annotations:
                file.write((", " if summary.annotations else "").encode() + json.dumps(annotation).encode())
                summary.annotations += 1
        file.write(b"]}\n")
    return summary


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class InstanceFile:
    """A checked instance file: images by id (``height``/``width`` those of its masks, whatever
    its ``images`` entries say), its annotations (each with a ``segmentation`` RLE) and categories."""

    path: Path
    images: dict[int, dict[str, Any]]
    annotations: list[dict[str, Any]]
    categories: list[dict[str, Any]]


def read_coco_lists(path: Path, fix: str) -> dict[str, Any]:
    """The JSON content of a COCO instances file, checked to hold ``images`` and ``annotations``
    lists; LostError naming the file, the problem and ``fix`` otherwise."""
    content = read_json(path, fix, "instance file")
    if (
        not isinstance(content, dict)
        or not isinstance(content.get("images"), list)
        or not isinstance(content.get("annotations"), list)
    ):
        raise LostError(f"{path}: not a COCO instance file (no images and annotations lists); {fix}")
    return content


def read_instances(path: Path | str) -> InstanceFile:
    """Read and check a COCO instance file with masks (ours, CutLER's or any COCO-style file).

    Every annotation needs an ``image_id`` listed in ``images`` and an RLE ``segmentation`` of
    that image's size; an image whose ``images`` entry swaps width and height (CutLER's files)
    takes the size of its RLEs. LostError naming the file for anything else.
    """
    path = Path(path)
    content = read_coco_lists(path, "pass the instances.json written by main_lost.py --save_masks (or CutLER's)")
    try:
        images = {int(image["id"]): dict(image) for image in content["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise LostError(f"{path}: an image entry lacks its id ({exc!r}); pass an instances.json") from exc
    for annotation in content["annotations"]:
        check_annotation_mask(path, annotation, images)
    return InstanceFile(path, images, content["annotations"], list(content.get("categories") or CLASS_AGNOSTIC))


def rle_size(path: Path, annotation: Any) -> tuple[int, int]:
    """The [H, W] of an annotation's RLE segmentation; LostError when it has none."""
    segmentation = annotation.get("segmentation") if isinstance(annotation, dict) else None
    if not isinstance(segmentation, dict) or "counts" not in segmentation or len(segmentation.get("size", ())) != 2:
        raise LostError(
            f"{path}: annotation {annotation.get('id') if isinstance(annotation, dict) else annotation!r} has no RLE "
            "mask (segmentation {size, counts}); pass a file with masks (main_lost.py --save_masks)"
        )
    height, width = (int(v) for v in segmentation["size"])
    return height, width


def check_annotation_mask(path: Path, annotation: Any, images: dict[int, dict[str, Any]]) -> None:
    """LostError unless ``annotation`` has an RLE of its image's size (width and height of the
    image entry swapped are taken as CutLER's and corrected in ``images``)."""
    height, width = rle_size(path, annotation)
    image = images.get(annotation.get("image_id"))
    if image is None:
        raise LostError(
            f"{path}: annotation {annotation.get('id')} refers to image {annotation.get('image_id')}, which is not in its images"
        )
    listed = (image.get("height"), image.get("width"))
    if listed == (width, height) and listed != (height, width):
        image["height"], image["width"] = height, width
    elif listed != (height, width):
        raise LostError(
            f"{path}: annotation {annotation.get('id')} has an RLE of size [{height}, {width}] but its image "
            f"{image.get('file_name')} is [H, W] = [{listed[0]}, {listed[1]}]; the masks were made for other images"
        )


def read_mask_results(path: Path | str) -> list[dict[str, Any]]:
    """The detections of a COCO results file with masks (detectron2's ``coco_instances_results.json``:
    a list of {image_id, segmentation RLE, score, ...}); LostError naming the file otherwise."""
    path = Path(path)
    fix = "pass the coco_instances_results.json of a detector with a mask head"
    results = read_json(path, fix, "results file")
    if not isinstance(results, list):
        raise LostError(f"{path}: expected a list of detections; {fix}")
    for number, result in enumerate(results):
        if not isinstance(result, dict) or "image_id" not in result or "score" not in result:
            raise LostError(f"{path}: detection {number} lacks image_id or score; {fix}")
        rle_size(path, {"id": number, **result})
    return results


def pseudo_class_categories(num_clusters: int) -> list[dict[str, Any]]:
    """The categories of clustered instances: ``cluster_0`` ... as ids 1 ... K."""
    return [{"id": k + 1, "name": f"cluster_{k}", "supercategory": "object"} for k in range(num_clusters)]


def relabelled_instances(
    instances: InstanceFile, labels: dict[str, list[tuple[np.ndarray, int]]], num_clusters: int
) -> dict[str, Any]:
    """The instance file's content with each annotation in the pseudo-class of its box.

    labels: file_name -> (box ``[x1, y1, x2, y2]``, cluster) of each clustered box of that image;
    an annotation takes the cluster of the first unused box of its image equal to its ``bbox``
    (the mask's box). LostError when one has none: the masks are not those of the predictions.
    """
    unused = {name: list(entries) for name, entries in labels.items()}
    annotations = []
    for annotation in instances.annotations:
        file_name = str(instances.images[annotation["image_id"]].get("file_name"))
        x, y, w, h = annotation["bbox"]
        candidates = unused.get(file_name, [])
        match = next(
            (
                k
                for k, (box, _) in enumerate(candidates)
                if np.array_equal(np.asarray(box, dtype=np.float64), [x, y, x + w, y + h])
            ),
            None,
        )
        if match is None:
            raise LostError(
                f"{instances.path}: annotation {annotation.get('id')} of {file_name} matches no clustered box; "
                "a mask file from another run: pass the instances.json written beside --pred_file"
            )
        annotations.append({**annotation, "category_id": candidates.pop(match)[1] + 1})
    images = list(instances.images.values())
    return {"categories": pseudo_class_categories(num_clusters), "images": images, "annotations": annotations}
