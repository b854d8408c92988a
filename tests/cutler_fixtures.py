"""Tiny photos with planted masks and their COCO instances files (ours and CutLER's, whose image
entries swap width and height), for the tests of CutLER's detector stage."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from lost.io import safe_files

# file name -> ((width, height), [(x0, y0, x1, y1) of each planted object, x1/y1 exclusive])
PLANTED = {
    "a/0.jpg": ((96, 64), [(8, 8, 40, 40), (56, 20, 90, 60)]),
    "a/1.jpg": ((64, 96), [(10, 30, 50, 80)]),
    "b/2.jpg": ((96, 64), [(30, 4, 70, 30), (4, 36, 30, 62)]),
    "b/3.jpg": ((80, 72), [(20, 20, 60, 60)]),
}


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def ellipse_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W) bool ellipse inscribed in `box` [x0, y0, x1, y1) of an image of `size` (W, H)."""
    width, height = size
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[0:height, 0:width]
    cx, cy, rx, ry = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1


def write_planted_images(root: Path, seed: int = 0) -> dict:
    """Write the PLANTED photos under `root` (noise, each object a bright ellipse); returns our
    ``instances.json`` content (one category, RLE masks, true sizes)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id, (name, (size, boxes)) in enumerate(PLANTED.items(), start=1):
        width, height = size
        pixels = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for box in boxes:
            mask = ellipse_mask(size, box)
            pixels[mask] = rng.integers(160, 255, 3, dtype=np.uint8)
            x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h],
                 "area": float(mask.sum()), "iscrowd": 0, "segmentation": rle(mask)}
            )  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / name, quality=95)
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


def cutler_style(content: dict) -> dict:
    """The same file as CutLER's MaskCut writes it: width and height swapped in ``images``."""
    swapped = copy.deepcopy(content)
    for image in swapped["images"]:
        image["width"], image["height"] = image["height"], image["width"]
    return swapped


def write_json(path: Path, content: dict) -> Path:
    safe_files.write_json(path, content)
    return path
