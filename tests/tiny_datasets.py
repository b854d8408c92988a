"""Tiny VOC and COCO20k trees with real JPEGs and known boxes, for tests.

`make_voc_tree(datasets_root)` and `make_coco_tree(datasets_root)` write, under a
`datasets_root` (pass it as `--datasets_root`), the official layouts:

    VOC<year>/VOCdevkit/VOC<year>/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/<set>.txt}
    COCO/images/train2014/COCO_train2014_<12-digit id>.jpg
    COCO/annotations/instances_train2014.json
    coco_20k_filenames.txt        (the COCO20k list for this tree; load_dataset prefers it)

Every image is 64 x 48 (W x H): a dark background with each object painted as a bright,
distinct rectangle exactly over its box. Both return a `TinyDataset` with the ground truth
worked out from the definitions below, boxes [x1, y1, x2, y2] with x2/y2 exclusive.

Default VOC content (VOC XML corners are 1-based inclusive; t = truncated, d = difficult):

    000001: (9, 9, 40, 32)                           -> [8, 8, 40, 32]
    000002: (1, 1, 64, 48) t=1, (33, 17, 56, 40)      -> [0, 0, 64, 48], [32, 16, 56, 40]
    000003: (5, 5, 20, 20) d=1                        -> [4, 4, 20, 20]
    000004: ("12.0", "8.0", "44.0", "40.0"), no truncated/difficult tags -> [11, 7, 44, 40]

    with --no_hard: 000001 [8, 8, 40, 32]; 000002 [32, 16, 56, 40]; 000004 [11, 7, 44, 40];
    000003 is left out (its only object is difficult).

`make_saliency_tree(datasets_root, dataset)` writes ECSSD, DUTS-TE or DUT-OMRON in the layout of
FOUND's README: noise JPEGs and grey masks (255 inside a rectangle, a 1-pixel border of 128).

Default COCO content (bbox [x, y, w, h]; list order 42, 7, 1000, 1001; image 5 is in the json
but not in the list):

    42:   (10.5, 4.0, 2.0, 10.0), crowd (0, 0, 64, 48) -> [10, 4, 12, 14]   (crowd removed)
    7:    (20.4, 10.6, 30.2, 20.0)                     -> [20, 11, 51, 31]
    1000: (2.5, 3.5, 10.0, 10.0)                       -> [2, 4, 12, 14]    (round half to even)
    1001: crowd (0, 0, 64, 48) only                    -> no box (always a miss)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import write_noise_images
from PIL import Image, ImageDraw

from lost.data.saliency import SALIENCY_DATASETS

IMAGE_SIZE = (64, 48)  # (W, H)

# image id -> objects (xmin, ymin, xmax, ymax, truncated, difficult); None omits the tag.
VocObject = tuple[float | str, float | str, float | str, float | str, int | None, int | None]
DEFAULT_VOC_IMAGES: dict[str, list[VocObject]] = {
    "000001": [(9, 9, 40, 32, 0, 0)],
    "000002": [(1, 1, 64, 48, 1, 0), (33, 17, 56, 40, 0, 0)],
    "000003": [(5, 5, 20, 20, 0, 1)],
    "000004": [("12.0", "8.0", "44.0", "40.0", None, None)],
}

# image id -> annotations (x, y, w, h, iscrowd)
CocoAnnotation = tuple[float, float, float, float, int]
DEFAULT_COCO_IMAGES: dict[int, list[CocoAnnotation]] = {
    42: [(10.5, 4.0, 2.0, 10.0, 0), (0, 0, 64, 48, 1)],
    7: [(20.4, 10.6, 30.2, 20.0, 0)],
    1000: [(2.5, 3.5, 10.0, 10.0, 0)],
    1001: [(0, 0, 64, 48, 1)],
}
DEFAULT_COCO_LIST = (42, 7, 1000, 1001)
COCO_UNLISTED = {5: [(1.0, 1.0, 5.0, 5.0, 0)]}

COLOURS = ((230, 60, 60), (60, 230, 60), (60, 60, 230), (230, 230, 60), (60, 230, 230))


@dataclass(frozen=True)
class TinyDataset:
    """What a tiny tree holds. `names`: record names in data-set order ("000001.jpg" for VOC,
    "42" for COCO); `gt`: name -> (K, 4) int64 boxes, all objects (COCO: crowd removed);
    `gt_nohard`: the same with truncated/difficult objects dropped and images left without
    objects absent (equal to `gt` for COCO); `image_paths`: name -> JPEG path."""

    datasets_root: Path
    names: list[str]
    gt: dict[str, np.ndarray]
    gt_nohard: dict[str, np.ndarray]
    image_paths: dict[str, Path]


def write_jpeg(path: Path, boxes: list[list[int]], size: tuple[int, int] = IMAGE_SIZE) -> None:
    """A (W, H) = `size` JPEG: dark background, each box [x1, y1, x2, y2) painted bright."""
    image = Image.new("RGB", size, (20, 20, 30))
    draw = ImageDraw.Draw(image)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        if x2 > x1 and y2 > y1:
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=COLOURS[index % len(COLOURS)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)


def _boxes(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _voc_xml(filename: str, objects: list[VocObject], size: tuple[int, int]) -> str:
    parts = [
        "<annotation>",
        "<folder>VOC</folder>",
        f"<filename>{filename}</filename>",
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
    ]
    for xmin, ymin, xmax, ymax, truncated, difficult in objects:
        parts.append("<object><name>thing</name><pose>Unspecified</pose>")
        if truncated is not None:
            parts.append(f"<truncated>{truncated}</truncated>")
        if difficult is not None:
            parts.append(f"<difficult>{difficult}</difficult>")
        parts.append(f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>")
        parts.append("</object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc_tree(
    datasets_root: Path,
    year: str = "2007",
    image_set: str = "trainval",
    images: dict[str, list[VocObject]] | None = None,
) -> TinyDataset:
    """Write `datasets_root/VOC<year>/VOCdevkit/VOC<year>/...` with `images` (default
    DEFAULT_VOC_IMAGES, see the module docstring) listed in `ImageSets/Main/<image_set>.txt`."""
    images = DEFAULT_VOC_IMAGES if images is None else images
    devkit = Path(datasets_root) / f"VOC{year}" / "VOCdevkit" / f"VOC{year}"
    (devkit / "Annotations").mkdir(parents=True, exist_ok=True)
    (devkit / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    names, gt, gt_nohard, paths = [], {}, {}, {}
    for image_id, objects in images.items():
        name = f"{image_id}.jpg"
        boxes = [[int(float(o[0])) - 1, int(float(o[1])) - 1, int(float(o[2])), int(float(o[3]))] for o in objects]
        easy = [box for box, o in zip(boxes, objects, strict=True) if not (o[4] or o[5])]
        path = devkit / "JPEGImages" / name
        write_jpeg(path, boxes)
        (devkit / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(name, objects, IMAGE_SIZE))
        names.append(name)
        paths[name] = path
        gt[name] = _boxes(boxes)
        if easy:
            gt_nohard[name] = _boxes(easy)
    (devkit / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in images))
    return TinyDataset(Path(datasets_root), names, gt, gt_nohard, paths)


def coco_file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def make_coco_tree(
    datasets_root: Path,
    images: dict[int, list[CocoAnnotation]] | None = None,
    listed: tuple[int, ...] | None = None,
    unlisted: dict[int, list[CocoAnnotation]] | None = None,
) -> TinyDataset:
    """Write `datasets_root/COCO/...` and `datasets_root/coco_20k_filenames.txt`.

    `images` (default DEFAULT_COCO_IMAGES) are listed in the order `listed` (default
    DEFAULT_COCO_LIST); `unlisted` (default COCO_UNLISTED) are in the json and on disk only;
    an id of `listed` absent from `images` is in the list only (no file, no json entry).
    """
    images = DEFAULT_COCO_IMAGES if images is None else images
    listed = DEFAULT_COCO_LIST if listed is None else listed
    unlisted = COCO_UNLISTED if unlisted is None else unlisted
    coco = Path(datasets_root) / "COCO"
    json_images, json_annotations = [], []
    gt, paths = {}, {}
    for image_id, image_annotations in {**images, **unlisted}.items():
        path = coco / "images" / "train2014" / coco_file_name(image_id)
        boxes = [
            [round(x), round(y), round(x + w), round(y + h)] for x, y, w, h, crowd in image_annotations if not crowd
        ]
        write_jpeg(path, boxes)
        json_images.append({"id": image_id, "file_name": path.name, "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1]})
        for x, y, w, h, crowd in image_annotations:
            json_annotations.append(
                {
                    "id": len(json_annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
        if image_id in images:
            gt[str(image_id)] = _boxes(boxes)
            paths[str(image_id)] = path
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    content = {"images": json_images, "annotations": json_annotations, "categories": [{"id": 1, "name": "thing"}]}
    (coco / "annotations" / "instances_train2014.json").write_text(json.dumps(content))
    lines = [f"train2014/{coco_file_name(image_id)}\n" for image_id in listed]
    (Path(datasets_root) / "coco_20k_filenames.txt").write_text("".join(lines))
    names = [str(image_id) for image_id in listed if image_id in images]
    return TinyDataset(Path(datasets_root), names, {n: gt[n] for n in names}, {n: gt[n] for n in names}, paths)


def write_masks(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> None:
    """One grey PNG per (width, height), named like write_noise_images' JPEGs: a 255 rectangle
    with a border of grey 128 on black."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index, (width, height) in enumerate(sizes):
        grey = np.zeros((height, width), dtype=np.uint8)
        x1, y1 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        grey[y1 : y1 + height // 2, x1 : x1 + width // 2] = 128
        grey[y1 + 1 : y1 + height // 2 - 1, x1 + 1 : x1 + width // 2 - 1] = 255
        Image.fromarray(grey).save(folder / f"{index:06d}.png")


SALIENCY_SIZES = [(64, 48), (48, 64), (40, 30)]


def make_saliency_tree(root: Path, dataset: str = "ECSSD", sizes: list[tuple[int, int]] = SALIENCY_SIZES) -> tuple[Path, Path]:
    """A saliency data set in its official layout under `root` (pass it as --datasets_root):
    noise JPEGs 000000.jpg, ... of the given (width, height) and their masks (:func:`write_masks`).
    Returns the image and mask folders."""
    layout = SALIENCY_DATASETS[dataset]
    images, masks = root / layout.images, root / layout.masks
    write_noise_images(images, sizes)
    write_masks(masks, sizes)
    return images, masks
