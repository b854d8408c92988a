"""Reading a COCO instances file with masks (the project's ``instances.json`` or CutLER's own JSON)
and an image root into detectron2 records, checking it first.

Accepted: ``images`` (``id``, ``file_name`` relative to the image root, ``width``, ``height``),
``annotations`` (``id``, ``image_id``, ``bbox`` COCO ``[x, y, w, h]``, ``segmentation`` as
pycocotools RLE (``size = [H, W]``, counts compressed or not) or polygons, ``iscrowd``). Every
category becomes the one class of CutLER's class-agnostic detector.

CutLER's pseudo-mask files swap ``width`` and ``height`` in ``images`` (CutLER's loader swaps them
back when an image file does not match). Here the masks tell: when the RLE of no annotated,
non-square image matches its entry and at least one matches it transposed, the file is read as
CutLER's and every image entry is swapped back; any other mismatch is a mask of the wrong size.

Problems a user can fix (no masks, an image missing from the root, a mask of the wrong size, a
malformed file) raise one-line :class:`LostError` naming the file and the fix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lost.errors import LostError
from lost.io import safe_files

BOX_MODE_XYWH_ABS = 1
"""detectron2.structures.BoxMode.XYWH_ABS: COCO's absolute [x, y, w, h]."""

MASKS_FIX = (
    "train on a file with masks, e.g. the instances.json of "
    "python main_lost.py --method maskcut --preset cutler --save_masks ..."
)


@dataclass(frozen=True)
class CocoInput:
    """A checked COCO instances file: images (``id``, ``file_name`` absolute, ``width``,
    ``height``, sizes as the masks have them), annotations per image id, and whether the file's
    image entries had width and height swapped (CutLER's files)."""

    path: Path
    images: tuple[dict, ...]
    annotations: dict
    sizes_swapped: bool
    category_ids: tuple[int, ...]


def read_coco_input(json_path: Path, image_root: Path, require_masks: bool = True) -> CocoInput:
    """Read and check `json_path` (images relative to `image_root`)."""
    json_path, image_root = Path(json_path), Path(image_root)
    content = safe_files.read_json(json_path, "pass --train_json / --test_json a COCO instances file", "COCO file")
    images, annotations = _images_and_annotations(json_path, content)
    by_image = _annotations_by_image(json_path, images, annotations, require_masks)
    swapped = sizes_swapped(images, by_image)
    fixed = []
    for image in images:
        width, height = (image["height"], image["width"]) if swapped else (image["width"], image["height"])
        fixed.append({**image, "width": int(width), "height": int(height)})
    for image in fixed:
        _check_mask_sizes(json_path, image, by_image.get(image["id"], []))
    _check_image_files(json_path, image_root, fixed)
    located = tuple({**image, "file_name": str(image_root / image["file_name"])} for image in fixed)
    categories = tuple(sorted({int(c["id"]) for c in content.get("categories", [])}))
    return CocoInput(json_path, located, by_image, swapped, categories)


def _images_and_annotations(path: Path, content) -> tuple[list[dict], list[dict]]:
    fix = "pass a COCO instances file (images, annotations)"
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise LostError(f"{path}: not a COCO instances file (no 'images' list); {fix}")
    if not isinstance(content.get("annotations"), list):
        raise LostError(f"{path}: not a COCO instances file (no 'annotations' list); {fix}")
    for image in content["images"]:
        missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
        if missing:
            raise LostError(f"{path}: image entry {image.get('id', image)} lacks {', '.join(missing)}; {fix}")
    return content["images"], content["annotations"]


def _annotations_by_image(path: Path, images: list[dict], annotations: list[dict], require_masks: bool) -> dict:
    ids = {image["id"] for image in images}
    by_image: dict = {}
    for annotation in annotations:
        where = f"annotation {annotation.get('id')} (image {annotation.get('image_id')})"
        if annotation.get("image_id") not in ids:
            raise LostError(f"{path}: {where} names an image that is not in 'images'; write the file again")
        if "bbox" not in annotation:
            raise LostError(f"{path}: {where} has no bbox; write the file again with [x, y, w, h] boxes")
        if require_masks and not annotation.get("segmentation"):
            raise LostError(f"{path}: {where} has no segmentation mask; {MASKS_FIX}")
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    return by_image


def _rle_size(annotation: dict) -> tuple[int, int] | None:
    """[H, W] of an RLE segmentation, None for polygons."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict) and "size" in segmentation:
        height, width = segmentation["size"]
        return int(height), int(width)
    return None


def sizes_swapped(images: list[dict], by_image: dict) -> bool:
    """Whether the image entries are CutLER's (width and height swapped), judged by the masks."""
    votes: Counter = Counter()
    for image in images:
        width, height = int(image["width"]), int(image["height"])
        if width == height:
            continue
        for annotation in by_image.get(image["id"], []):
            size = _rle_size(annotation)
            if size == (height, width):
                votes["as is"] += 1
            elif size == (width, height):
                votes["swapped"] += 1
    return votes["swapped"] > 0 and votes["as is"] == 0


def _check_mask_sizes(path: Path, image: dict, annotations: list[dict]) -> None:
    for annotation in annotations:
        size = _rle_size(annotation)
        if size is not None and size != (image["height"], image["width"]):
            raise LostError(
                f"{path}: annotation {annotation.get('id')} of image {image['id']} ({image['file_name']}) has a "
                f"{size[0]} x {size[1]} mask but the image is {image['height']} x {image['width']} (H x W); "
                "write the file again from the images it describes"
            )


def _check_image_files(path: Path, image_root: Path, images: list[dict]) -> None:
    missing = [image["file_name"] for image in images if not (image_root / image["file_name"]).is_file()]
    if missing:
        raise LostError(
            f"{path}: {len(missing)} of {len(images)} images are not in {image_root} "
            f"({', '.join(missing[:3])}); pass --image_root the folder their file_name is relative to"
        )


def detectron2_records(coco: CocoInput) -> list[dict]:
    """detectron2 dataset dicts of `coco`: boxes XYWH_ABS, every object of class 0."""
    records = []
    for image in coco.images:
        annotations = [
            {
                "bbox": [float(v) for v in annotation["bbox"]],
                "bbox_mode": BOX_MODE_XYWH_ABS,
                "category_id": 0,
                "segmentation": annotation.get("segmentation"),
                "iscrowd": int(annotation.get("iscrowd", 0)),
            }
            for annotation in coco.annotations.get(image["id"], [])
        ]
        record = {"file_name": image["file_name"], "image_id": image["id"], "height": image["height"]}
        records.append({**record, "width": image["width"], "annotations": annotations})
    return records


def class_agnostic_gt(coco: CocoInput, content_path: Path) -> dict:
    """The COCO ground truth of `coco` with one category (id 1) and the images' true sizes, for
    pycocotools' evaluation of a test file with several categories or swapped sizes."""
    content = safe_files.read_json(content_path, "pass --test_json a COCO instances file", "COCO file")
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco.images}
    images = [{**image, "width": sizes[image["id"]][0], "height": sizes[image["id"]][1]} for image in content["images"]]
    annotations = [{**annotation, "category_id": 1} for annotation in content["annotations"]]
    categories = [{"id": 1, "name": "fg", "supercategory": "fg"}]
    return {**content, "images": images, "annotations": annotations, "categories": categories}
