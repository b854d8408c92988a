"""Reading images, VOC07 / VOC12 / COCO20k ground truth and predictions; CorLoc.

Boxes: every box that leaves this module is ``[x1, y1, x2, y2]`` in pixels of the original
image, x2/y2 exclusive. VOC's 1-based inclusive corners become ``[xmin-1, ymin-1, xmax, ymax]``
and COCO's ``[x, y, w, h]`` becomes ``[x, y, x+w, y+h]`` with each value rounded by Python's
``round`` (half to even), here and nowhere else.

Images: :func:`load_rgb` returns 8-bit RGB for every mode Pillow decodes. Alpha is dropped,
not composited (the colour stored under transparent pixels is kept, as the paper's
``convert("RGB")`` did, so its boxes are reproduced); 16-bit grey is scaled to 8 bits
(``round(v / 257)``) instead of being clipped at 255; EXIF orientation is not applied, since
VOC and COCO annotations refer to the stored pixel array. Truncated files are detected by a
full decode; this relies on Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``.

Data-set layout under ``datasets_root`` (the official archives unpacked as they come)::

    VOC2007/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/<set>.txt}
    VOC2012/VOCdevkit/VOC2012/...
    COCO/images/train2014/COCO_train2014_<id>.jpg
    COCO/annotations/instances_train2014.json
"""

from __future__ import annotations

import _compat_pickle
import codecs
import contextlib
import importlib
import io
import json
import os
import pickle
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from errors import LostError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SHIPPED_COCO20K_LIST = Path(__file__).resolve().parent / "data" / "coco_20k_filenames.txt"

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC"
VOC_ARCHIVES = {"2007": "VOCtrainval_06-Nov-2007.tar", "2012": "VOCtrainval_11-May-2012.tar"}
COCO_URL = "https://cocodataset.org (train2014.zip and annotations_trainval2014.zip)"

Box = np.ndarray
Skipped = list[tuple[str, str]]


# ----------------------------------------------------------------------------------------------
# Images


def load_rgb(path: Path | str, max_size: int | None = None) -> Image.Image:
    """Decode an image file completely and return it as an 8-bit RGB PIL image.

    L, 1, P, LA, PA, RGBA, CMYK, YCbCr are converted with Pillow (alpha dropped, palette
    transparency ignored); I;16* and I (16-bit grey, e.g. 16-bit PNG) are scaled by 1/257.
    With ``max_size``, an image whose longer side exceeds it is scaled down (bicubic) to
    :func:`capped_size`; JPEGs are then decoded at a reduced scale first, so a 12,000 x 9,000
    photo never takes its full size in memory.
    Raises LostError naming the path, the reason and the fix for a missing, empty (0 bytes),
    truncated, corrupt or non-image file.
    """
    return decode_image(path, max_size)[0]


def decode_image(path: Path | str, max_size: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`load_rgb` that also returns the file's own size (H, W) before any scaling."""
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{path}: image file not found; check the path or the data set folder")
    if path.stat().st_size == 0:
        raise LostError(f"{path}: image file is empty (0 bytes); re-download it or remove it")
    try:
        with open_image(path) as image:
            original = (image.height, image.width)
            target = capped_size(image.width, image.height, max_size)
            if target != image.size:
                image.draft("RGB", target)
            image.load()
            decoded = image
    except UnidentifiedImageError as exc:
        raise LostError(f"{path}: not an image Pillow can read; replace it or remove it") from exc
    except Image.DecompressionBombError as exc:
        raise LostError(f"{path}: image too large to decode safely ({exc}); downscale it") from exc
    except Exception as exc:
        raise LostError(
            f"{path}: cannot decode the image ({exc}); it is truncated or corrupt: re-download it or remove it"
        ) from exc
    try:
        rgb = _to_rgb8(decoded)
    except (ValueError, OSError) as exc:
        raise LostError(
            f"{path}: image mode {decoded.mode} cannot be converted to RGB ({exc}); save it as RGB"
        ) from exc
    if rgb.size != target:
        rgb = rgb.resize(target, Image.BICUBIC)
    return rgb, original


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` without the decompression-bomb warning for images between Pillow's limit
    and twice that (a 12,000 x 9,000 photo): they are decoded scaled down when ``max_size`` is
    set. Beyond twice the limit Pillow still refuses the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            yield image


def capped_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most ``max_size`` (None or 0: as is).

    The scaled sides are ``round(side * max_size / longer side)``, at least 1.
    """
    longer = max(width, height)
    if not max_size or longer <= max_size:
        return width, height
    scale = max_size / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def rescale_box(box: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """A box ``[x1, y1, x2, y2]`` (x2/y2 exclusive) in an image of (H, W) ``from_size`` moved to
    the same image at (H, W) ``to_size``; unchanged (same dtype) when the sizes are equal, else
    float64 clipped to ``to_size``."""
    if tuple(from_size) == tuple(to_size):
        return box
    scale_y, scale_x = to_size[0] / from_size[0], to_size[1] / from_size[1]
    scaled = np.asarray(box, dtype=np.float64) * [scale_x, scale_y, scale_x, scale_y]
    return np.minimum(scaled, [to_size[1], to_size[0], to_size[1], to_size[0]])


def _to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (see :func:`load_rgb`)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        grey = ((values + 128) // 257).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image (H x W) -> (3, H, W) float32: torchvision's ToTensor then Normalize with
    ImageNet mean/std, the same operations in the same order (without importing torchvision)."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    scaled = pixels.to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return scaled.sub_(mean).div_(std)


def pad_to_multiple(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """(3, H, W) -> (3, Hp, Wp), Hp/Wp the next multiples of `multiple`; zeros at bottom/right."""
    height, width = t.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return t
    return F.pad(t, (0, pad_w, 0, pad_h))


def _padded(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


# ----------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ImageRecord:
    """One image: `name` (VOC file name, COCO str(image_id), or file name), its path, and its
    ground truth `gt_boxes: (K, 4) int64` [x1, y1, x2, y2] x2/y2 exclusive, or None;
    `gt_labels`: the class name of each gt box, or None when not read."""

    name: str
    path: Path
    gt_boxes: np.ndarray | None
    gt_labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A named list of records, e.g. "VOC07_trainval" or "VOC07_trainval-nohards".

    `skipped` lists (name, reason) for the images left out because their annotation could
    not be read (missing or malformed VOC XML, image absent from the COCO json).
    """

    name: str
    records: list[ImageRecord]
    skipped: tuple[tuple[str, str], ...] = ()


def padded_size(record: ImageRecord, multiple: int, max_size: int | None = None) -> tuple[int, int]:
    """(Hp, Wp) of the record's image once capped to `max_size` (see :func:`capped_size`) and
    padded to `multiple`; reads the header only.

    Raises LostError when the header cannot be read.
    """
    try:
        with open_image(record.path) as image:
            width, height = capped_size(image.width, image.height, max_size)
    except Exception as exc:
        raise LostError(f"{record.path}: cannot read the image header ({exc}); replace it or remove it") from exc
    return _padded(height, multiple), _padded(width, multiple)


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image for the engine: `image (3, Hp, Wp)` normalized and padded; `size` the
    (H, W) it was decoded at, before padding; `original_size` the file's own (H, W), larger
    when `max_size` scaled the image down. `image` is None and `error` set when it failed."""

    index: int
    image: torch.Tensor | None
    size: tuple[int, int] | None = None
    original_size: tuple[int, int] | None = None
    error: str | None = None


class ImageFileDataset(torch.utils.data.Dataset):
    """Decoded, normalized, padded images of a list of records, for a DataLoader.

    `__getitem__(i)` returns a :class:`DecodedImage`. An image that cannot be read never
    raises (so a DataLoader worker survives): its DecodedImage has `image` None and `error` set
    to the LostError text. `max_size` caps the longer side (see :func:`load_rgb`).
    """

    def __init__(self, records: list[ImageRecord], pad_multiple: int, max_size: int | None = None) -> None:
        self.records = records
        self.pad_multiple = pad_multiple
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> DecodedImage:
        try:
            image, original_size = decode_image(self.records[i].path, self.max_size)
        except LostError as exc:
            return DecodedImage(index=i, image=None, error=str(exc))
        tensor = pad_to_multiple(image_to_tensor(image), self.pad_multiple)
        return DecodedImage(index=i, image=tensor, size=(image.height, image.width), original_size=original_size)


def single_image_records(path: Path | str) -> list[ImageRecord]:
    """One record per image: `path` is an image file or a folder of images (sorted by name).

    Names are file names; `gt_boxes` is None.
    """
    path = Path(path)
    if path.is_file():
        return [ImageRecord(path.name, path, None)]
    if not path.is_dir():
        raise LostError(f"{path}: no such image file or folder; check --image_path")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LostError(f"{path}: folder holds no image ({', '.join(IMAGE_EXTENSIONS)}); check --image_path")
    return [ImageRecord(p.name, p, None) for p in files]


def _record_or_skip(skipped: Skipped | None, name: str, reason: str) -> None:
    """Raise LostError(reason) when `skipped` is None, else append (name, reason) to it."""
    if skipped is None:
        raise LostError(reason)
    skipped.append((name, reason))


# ----------------------------------------------------------------------------------------------
# VOC


def voc_devkit_dir(voc_root: Path, year: str) -> Path:
    """`voc_root/VOCdevkit/VOC<year>` (the archive's layout), or `voc_root` itself when it
    directly holds ImageSets/ (an already-flattened copy)."""
    devkit = voc_root / "VOCdevkit" / f"VOC{year}"
    if not devkit.is_dir() and (voc_root / "ImageSets").is_dir():
        return voc_root
    return devkit


def voc_records(
    voc_root: Path,
    year: str,
    image_set: str,
    remove_hards: bool,
    *,
    skipped: Skipped | None = None,
) -> list[ImageRecord]:
    """Records of `ImageSets/Main/<image_set>.txt`, in its order, with VOC ground truth.

    Boxes [xmin-1, ymin-1, xmax, ymax], x2/y2 exclusive. With `remove_hards`, truncated or
    difficult objects are dropped and images left without objects are not listed. An image
    whose XML is missing or malformed raises LostError, or, when a `skipped` list is given,
    is left out and appended to it as (file name, reason).
    """
    devkit = voc_devkit_dir(Path(voc_root), year)
    set_file = devkit / "ImageSets" / "Main" / f"{image_set}.txt"
    if not set_file.is_file():
        raise LostError(
            f"{set_file}: image set file not found; check --set or unpack {VOC_ARCHIVES.get(year, 'VOC')} "
            f"from {VOC_URL} into {voc_root}"
        )
    image_ids = [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]
    records = []
    for image_id in image_ids:
        xml_path = devkit / "Annotations" / f"{image_id}.xml"
        try:
            filename, objects = parse_voc_xml(xml_path)
        except LostError as exc:
            _record_or_skip(skipped, f"{image_id}.jpg", str(exc))
            continue
        if remove_hards:
            objects = [obj for obj in objects if not (obj[4] or obj[5])]
            if not objects:
                continue
        boxes = np.array([obj[:4] for obj in objects], dtype=np.int64).reshape(-1, 4)
        records.append(ImageRecord(filename, devkit / "JPEGImages" / f"{image_id}.jpg", boxes))
    return records


def parse_voc_xml(xml_path: Path) -> tuple[str, list[tuple[int, int, int, int, int, int]]]:
    """(filename, objects) of a VOC annotation; each object is
    (x1, y1, x2, y2, truncated, difficult) with the box already zero-based, x2/y2 exclusive.

    Coordinates are read as `int(float(v))`; missing truncated/difficult count as 0; a missing
    filename falls back to `<xml stem>.jpg`. Raises LostError for a missing or malformed file.
    """
    if not xml_path.is_file():
        raise LostError(f"{xml_path}: annotation file not found; restore it from the VOC archive")
    try:
        root = ET.parse(xml_path).getroot()
        filename = (root.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
        objects = []
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (int(float(box.findtext(tag))) for tag in ("xmin", "ymin", "xmax", "ymax"))
            truncated = int(float(obj.findtext("truncated") or 0))
            difficult = int(float(obj.findtext("difficult") or 0))
            objects.append((xmin - 1, ymin - 1, xmax, ymax, truncated, difficult))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise LostError(f"{xml_path}: malformed annotation ({exc}); restore it from the VOC archive") from exc
    return filename, objects


# ----------------------------------------------------------------------------------------------
# COCO20k


def coco20k_records(
    coco_root: Path,
    filenames_file: Path,
    *,
    skipped: Skipped | None = None,
) -> list[ImageRecord]:
    """Records of the images listed in `filenames_file`, in its order, named str(image_id).

    Images at `coco_root/images/<line>`, ground truth from
    `coco_root/annotations/instances_train2014.json` without iscrowd boxes, as
    [x, y, x+w, y+h] each rounded with Python's round. Annotations are indexed by image id in
    one pass. An image absent from the json's "images" raises LostError, or, when a `skipped`
    list is given, is left out and appended to it as (name, reason).
    """
    coco_root = Path(coco_root)
    entries = _read_coco_list(Path(filenames_file))
    ann_file = coco_root / "annotations" / "instances_train2014.json"
    annotations = _read_json(ann_file, f"download annotations_trainval2014.zip from {COCO_URL}")
    try:
        known_ids = {image["id"] for image in annotations["images"]}
        boxes_by_id = coco_boxes_by_image(annotations["annotations"], {image_id for _, image_id in entries})
    except (KeyError, TypeError, ValueError) as exc:
        raise LostError(f"{ann_file}: not a COCO instances file ({exc}); re-download it from {COCO_URL}") from exc
    records = []
    for relative, image_id in entries:
        if image_id not in known_ids:
            _record_or_skip(skipped, str(image_id), f"{ann_file}: image {image_id} ({relative}) is not annotated there")
            continue
        boxes = np.array(boxes_by_id[image_id], dtype=np.int64).reshape(-1, 4)
        records.append(ImageRecord(str(image_id), coco_root / "images" / relative, boxes))
    if not records and entries:
        raise LostError(
            f"{ann_file}: none of the images of {filenames_file} is annotated there; use instances_train2014.json"
        )
    return records


def coco_boxes_by_image(annotations: list[dict], image_ids: set[int]) -> dict[int, list[list[int]]]:
    """Non-crowd boxes [x, y, x+w, y+h] (each Python-rounded) of the wanted images, indexed by
    image id in one pass over `annotations` (COCO "annotations" entries)."""
    boxes: dict[int, list[list[int]]] = {image_id: [] for image_id in image_ids}
    for ann in annotations:
        image_boxes = boxes.get(ann["image_id"])
        if image_boxes is None or ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        image_boxes.append([round(x), round(y), round(x + w), round(y + h)])
    return boxes


def _read_coco_list(filenames_file: Path) -> list[tuple[str, int]]:
    """(relative path, image id) per line of a COCO20k list such as the shipped one."""
    if not filenames_file.is_file():
        raise LostError(f"{filenames_file}: COCO20k image list not found; restore data/coco_20k_filenames.txt")
    entries = []
    for number, line in enumerate(filenames_file.read_text().splitlines(), start=1):
        relative = line.strip()
        if not relative:
            continue
        try:
            image_id = int(Path(relative).stem.rsplit("_", 1)[-1])
        except ValueError as exc:
            raise LostError(
                f"{filenames_file}:{number}: {relative!r} is not a COCO file name "
                "(train2014/COCO_train2014_<id>.jpg); restore the file"
            ) from exc
        entries.append((relative, image_id))
    return entries


def _read_json(path: Path, fix: str) -> Any:
    if not path.is_file():
        raise LostError(f"{path}: file not found; {fix}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LostError(f"{path}: not valid JSON ({exc}); {fix}") from exc


# ----------------------------------------------------------------------------------------------
# Data sets by name

DATASETS = ("VOC07", "VOC12", "COCO20k")


def load_dataset(name: str, image_set: str, datasets_root: Path, no_hard: bool) -> DatasetSpec:
    """The records of VOC07, VOC12 or COCO20k under `datasets_root`, named like
    "VOC07_trainval" ("-nohards" appended with `no_hard`, which has no effect on COCO20k).

    COCO20k exists for image_set "train" only; its list is `<datasets_root>/coco_20k_filenames.txt`
    when present (where the paper's code kept it), else the shipped data/coco_20k_filenames.txt.
    A missing folder or file raises LostError naming it and where the data comes from.
    Images whose annotation cannot be read are listed in `DatasetSpec.skipped`.
    """
    datasets_root = Path(datasets_root)
    skipped: Skipped = []
    if name in ("VOC07", "VOC12"):
        year = "2007" if name == "VOC07" else "2012"
        voc_root = datasets_root / f"VOC{year}"
        _check_voc_tree(voc_root, year)
        records = voc_records(voc_root, year, image_set, no_hard, skipped=skipped)
    elif name == "COCO20k":
        if image_set != "train":
            raise LostError(f"--set {image_set}: COCO20k is a subset of COCO train2014; use --set train")
        coco_root = datasets_root / "COCO"
        _check_coco_tree(coco_root)
        local_list = datasets_root / "coco_20k_filenames.txt"
        filenames = local_list if local_list.is_file() else SHIPPED_COCO20K_LIST
        records = coco20k_records(coco_root, filenames, skipped=skipped)
    else:
        raise LostError(f"--dataset {name}: unknown data set; choose one of {', '.join(DATASETS)}")
    spec_name = f"{name}_{image_set}" + ("-nohards" if no_hard else "")
    return DatasetSpec(spec_name, records, tuple(skipped))


def _check_voc_tree(voc_root: Path, year: str) -> None:
    devkit = voc_devkit_dir(voc_root, year)
    for needed in (devkit / "JPEGImages", devkit / "Annotations"):
        if not needed.is_dir():
            raise LostError(
                f"{needed}: folder not found; download {VOC_ARCHIVES[year]} from {VOC_URL} and unpack it "
                f"into {voc_root} (or point --datasets_root at the folder holding VOC{year}/)"
            )


def _check_coco_tree(coco_root: Path) -> None:
    images = coco_root / "images" / "train2014"
    if not images.is_dir():
        raise LostError(
            f"{images}: folder not found; download train2014.zip from {COCO_URL} and unpack it into "
            f"{coco_root / 'images'} (or point --datasets_root at the folder holding COCO/)"
        )
    ann_file = coco_root / "annotations" / "instances_train2014.json"
    if not ann_file.is_file():
        raise LostError(
            f"{ann_file}: file not found; download annotations_trainval2014.zip from {COCO_URL} "
            f"and unpack it into {coco_root}"
        )


# ----------------------------------------------------------------------------------------------
# CorLoc


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of `box: (4,)` with each of `boxes: (K, 4)` -> (K,) float64; boxes [x1, y1, x2, y2]
    in continuous coordinates, IoU = inter / (area1 + area2 - inter) (0 where the union is 0)."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def is_correct_localization(pred: np.ndarray, gt_boxes: np.ndarray) -> bool:
    """True when `pred: (4,)` has IoU >= 0.5 with any of `gt_boxes: (K, 4)` (False for K = 0);
    boxes [x1, y1, x2, y2]."""
    return bool(np.any(box_iou(pred, gt_boxes) >= 0.5))


class CorLocMeter:
    """Counts hits over evaluated images; `value` is the percentage (0.0 before any update)."""

    def __init__(self) -> None:
        self.hits = 0
        self.count = 0

    def update(self, hit: bool) -> None:
        self.hits += int(bool(hit))
        self.count += 1

    @property
    def value(self) -> float:
        return 100.0 * self.hits / self.count if self.count else 0.0

    def summary(self) -> str:
        return f"corloc: {self.value:.2f} ({self.hits}/{self.count})"


def evaluate_corloc(records: list[ImageRecord], predictions: Mapping[str, np.ndarray]) -> CorLocMeter:
    """CorLoc of `predictions` (record name -> box [x1, y1, x2, y2]) over the records that have
    ground truth; a record without a prediction counts as a miss."""
    meter = CorLocMeter()
    for record in records:
        if record.gt_boxes is None:
            continue
        box = predictions.get(record.name)
        meter.update(box is not None and is_correct_localization(box, record.gt_boxes))
    return meter


# ----------------------------------------------------------------------------------------------
# Predictions


def _numpy_core(submodule: str, name: str) -> Callable[[], Any]:
    """Resolver for numpy.core.<submodule>.<name>, renamed numpy._core in numpy 2."""

    def resolve() -> Any:
        try:
            module = importlib.import_module(f"numpy._core.{submodule}")
        except ImportError:
            module = importlib.import_module(f"numpy.core.{submodule}")
        return getattr(module, name)

    return resolve


_PICKLE_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{
        (f"numpy.{core}.multiarray", name): _numpy_core("multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    },
    **{(f"numpy.{core}.numeric", "_frombuffer"): _numpy_core("numeric", "_frombuffer") for core in ("core", "_core")},
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "bytes"): lambda: bytes,
    ("builtins", "bytearray"): lambda: bytearray,
    ("builtins", "complex"): lambda: complex,
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing but numpy array/scalar/dtype reconstruction and a few
    builtin containers; Python 2 names are mapped to Python 3 ones first."""

    def find_class(self, module: str, name: str) -> Any:
        key = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        resolve = _PICKLE_ALLOWED.get(key)
        if resolve is None:
            raise LostError(f"it tries to import {module}.{name}")
        return resolve()


def read_predictions(path: Path | str) -> dict[str, np.ndarray]:
    """Predictions `name -> box (4,)` [x1, y1, x2, y2] from a `.json` file (an object of
    4-number lists) or a pickle (a dict of arrays), read with a restricted unpickler that
    admits only numpy arrays/scalars/dtypes and builtin containers, numbers and strings.

    Raises LostError for a missing or unreadable file, a pickle that imports anything else
    ("refusing to load ... it tries to import X"), or content that is not name -> 4 numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{path}: prediction file not found; check --pred_file")
    if path.suffix.lower() == ".json":
        raw = _read_json(path, "write it again (a JSON object: image name -> [x1, y1, x2, y2])")
    else:
        raw = restricted_load(path)
    if not isinstance(raw, Mapping):
        raise LostError(
            f"{path}: expected a mapping image name -> [x1, y1, x2, y2], found {type(raw).__name__}; "
            "a detectron coco_instances_results.json is read as type 'detectron'"
        )
    return {str(name): _as_box(path, name, value) for name, value in raw.items()}


def restricted_load(path: Path) -> Any:
    """Unpickle `path` with :class:`_RestrictedUnpickler`; any failure is a LostError."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except LostError as exc:
        raise LostError(
            f"refusing to load {path}: {exc}; pickles read by this project may hold only numpy arrays, "
            "numbers, strings and builtin containers: write the file again with plain values (or as JSON)"
        ) from None
    except Exception as exc:
        raise LostError(f"{path}: not a readable pickle ({exc!r}); regenerate it") from exc


def _as_box(path: Path, name: Any, value: Any) -> np.ndarray:
    try:
        box = np.asarray(value)
        valid = box.size == 4 and np.issubdtype(box.dtype, np.number)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise LostError(f"{path}: prediction for {name!r} is not 4 numbers [x1, y1, x2, y2]; regenerate the file")
    return box.reshape(4)


def atomic_write(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never part:
    a temporary file in the same folder, flushed and fsynced, then renamed over `path`.
    The file gets the permissions a plain `open(path, "w")` would give it (0666 less umask)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_predictions(folder: Path | str, preds: Mapping[str, np.ndarray]) -> None:
    """Write `preds` (name -> box [x1, y1, x2, y2]) to `folder/preds.pkl` (a dict of numpy
    arrays, the published format) and `folder/preds.json` (name -> list), each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {str(name): np.asarray(box) for name, box in preds.items()}
    buffer = io.BytesIO()
    pickle.dump(arrays, buffer, protocol=4)
    atomic_write(folder / "preds.pkl", buffer.getvalue())
    as_lists = {name: box.tolist() for name, box in arrays.items()}
    atomic_write(folder / "preds.json", json.dumps(as_lists).encode())


def read_detectron_predictions(json_path: Path | str) -> dict[str, np.ndarray]:
    """str(image_id) -> the highest-scoring box of that image (first one on ties) in a
    detectron2 `coco_instances_results.json`, converted from COCO [x, y, w, h] to
    [x1, y1, x2, y2] float64."""
    json_path = Path(json_path)
    fix = "pass the coco_instances_results.json written by detectron2's COCO evaluator"
    detections = _read_json(json_path, fix)
    if not isinstance(detections, list):
        raise LostError(f"{json_path}: expected a list of detections; {fix}")
    best: dict[str, tuple[float, np.ndarray]] = {}
    for number, det in enumerate(detections):
        try:
            image_id, score = str(det["image_id"]), float(det["score"])
            x, y, w, h = (float(v) for v in det["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LostError(
                f"{json_path}: detection {number} lacks image_id/score/bbox [x, y, w, h] ({exc!r}); {fix}"
            ) from exc
        if image_id not in best or score > best[image_id][0]:
            best[image_id] = (score, np.array([x, y, x + w, y + h], dtype=np.float64))
    return {image_id: box for image_id, (_, box) in best.items()}
