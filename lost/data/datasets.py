"""VOC07 / VOC12 / COCO20k records and ground truth, read once for CorLoc and the detector tools.

Boxes: every box that leaves this module is ``[x1, y1, x2, y2]`` in pixels of the original
image, x2/y2 exclusive. VOC's 1-based inclusive corners become ``[xmin-1, ymin-1, xmax, ymax]``
and COCO's ``[x, y, w, h]`` becomes ``[x, y, x+w, y+h]`` with each value rounded by Python's
``round`` (half to even), here and nowhere else.

One reader per file kind: :func:`read_voc_annotation` (a VOC XML file), :func:`voc_image_ids`
(an ``ImageSets/Main`` list), :func:`read_coco20k_list` (the COCO20k list) and
:func:`read_coco_instances` (``instances_train2014.json``, indexed by pycocotools' ``COCO``).
Records (:class:`ImageRecord`) carry each ground-truth box with its class name. pycocotools is
imported by :func:`read_coco_instances` alone, so a VOC or folder run never loads it.

Data-set layout under ``datasets_root`` (the official archives unpacked as they come)::

    VOC2007/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/<set>.txt}
    VOC2012/VOCdevkit/VOC2012/...
    COCO/images/train2014/COCO_train2014_<id>.jpg
    COCO/annotations/instances_train2014.json
"""

from __future__ import annotations

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lost.data.images import IMAGE_EXTENSIONS
from lost.errors import LostError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

SHIPPED_COCO20K_LIST = Path(__file__).resolve().parents[2] / "data" / "coco_20k_filenames.txt"

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC"
VOC_ARCHIVES = {"2007": "VOCtrainval_06-Nov-2007.tar", "2012": "VOCtrainval_11-May-2012.tar"}
COCO_URL = "https://cocodataset.org (train2014.zip and annotations_trainval2014.zip)"

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

Skipped = list[tuple[str, str]]


# ----------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ImageRecord:
    """One image: `name` (VOC file name, COCO str(image_id), or file name), its path, and its
    ground truth `gt_boxes: (K, 4) int64` [x1, y1, x2, y2] x2/y2 exclusive, or None;
    `gt_labels` the class name of each of those boxes, in the same order (VOC class names, COCO
    category names), or None; `gt_difficult` VOC's difficult flag of each of those boxes (all
    False for COCO), or None (none difficult); `crowd_boxes: (C, 4) int64` COCO's crowd regions,
    which are not objects (CorLoc leaves them out) but where detection AP ignores detections, or
    None (none)."""

    name: str
    path: Path
    gt_boxes: np.ndarray | None
    gt_labels: tuple[str, ...] | None = None
    gt_difficult: tuple[bool, ...] | None = None
    crowd_boxes: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A named list of records, e.g. "VOC07_trainval" or "VOC07_trainval-nohards".

    `skipped` lists (name, reason) for the images left out because their annotation could
    not be read (missing or malformed VOC XML, image absent from the COCO json).
    """

    name: str
    records: list[ImageRecord]
    skipped: tuple[tuple[str, str], ...] = ()


def single_image_records(path: Path | str) -> list[ImageRecord]:
    """One record per image: `path` is an image file, or a folder searched recursively (a tree
    such as ImageNet's ``train/<class>/<image>.JPEG``), files ordered by their path relative to
    it, folder by folder (the parts compared in turn, each by its characters).

    Names are the paths relative to the folder, with ``/`` (the file name for a file, or for an
    image directly in the folder); `gt_boxes` is None.
    """
    path = Path(path)
    if path.is_file():
        return [ImageRecord(path.name, path, None)]
    if not path.is_dir():
        raise LostError(f"{path}: no such image file or folder; check --image_path")
    files = sorted(
        (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.relative_to(path).parts,
    )
    if not files:
        raise LostError(f"{path}: folder holds no image ({', '.join(IMAGE_EXTENSIONS)}), nor do its subfolders; check --image_path")
    return [ImageRecord(p.relative_to(path).as_posix(), p, None) for p in files]


def _record_or_skip(skipped: Skipped | None, name: str, reason: str) -> None:
    """Raise LostError(reason) when `skipped` is None, else append (name, reason) to it."""
    if skipped is None:
        raise LostError(reason)
    skipped.append((name, reason))


def canonical_image_id(image_id: object) -> str:
    """Image ids as strings, digit-only ones as integers ("000005" and 5 are the same image):
    the key that matches the image_id of a detector's results to a record."""
    text = str(image_id)
    return str(int(text)) if text.isdigit() else text


# ----------------------------------------------------------------------------------------------
# VOC


@dataclass(frozen=True)
class VocObject:
    """One annotated object: class name, box [x1, y1, x2, y2] (x2/y2 exclusive), and flags."""

    name: str
    box: tuple[int, int, int, int]
    truncated: bool
    difficult: bool


@dataclass(frozen=True)
class VocAnnotation:
    """A VOC XML file: the image's file name, its size in pixels and its objects in file order."""

    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def voc_devkit_dir(voc_root: Path, year: str) -> Path:
    """`voc_root/VOCdevkit/VOC<year>` (the archive's layout), or `voc_root` itself when it
    directly holds ImageSets/ (an already-flattened copy)."""
    devkit = voc_root / "VOCdevkit" / f"VOC{year}"
    if not devkit.is_dir() and (voc_root / "ImageSets").is_dir():
        return voc_root
    return devkit


def voc_set_file(voc_root: Path, year: str, image_set: str) -> Path:
    """``ImageSets/Main/<image_set>.txt`` of the VOC<year> tree at `voc_root`."""
    return voc_devkit_dir(Path(voc_root), year) / "ImageSets" / "Main" / f"{image_set}.txt"


def voc_image_ids(voc_root: Path, year: str, image_set: str) -> list[str]:
    """Ids listed in ``ImageSets/Main/<image_set>.txt`` (first word of each non-empty line, in
    file order), e.g. "000005" or "2008_000008"; LostError naming the archive when it is absent."""
    set_file = voc_set_file(voc_root, year, image_set)
    if not set_file.is_file():
        raise LostError(
            f"{set_file}: image set file not found; check --set or unpack {VOC_ARCHIVES.get(year, 'VOC')} "
            f"from {VOC_URL} into {voc_root}"
        )
    return [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]


def read_voc_annotation(xml_path: Path) -> VocAnnotation:
    """File name, size and objects of a VOC XML file, boxes already zero-based, x2/y2 exclusive.

    Coordinates and size are read as `int(float(v))`; missing truncated/difficult count as 0; a
    missing filename falls back to `<xml stem>.jpg`. Raises LostError for a missing file, or a
    malformed one (not XML, no <size>, an object without <name> or <bndbox> corners).
    """
    if not xml_path.is_file():
        raise LostError(f"{xml_path}: annotation file not found; restore it from the VOC archive")
    try:
        root = ET.parse(xml_path).getroot()
        filename = (root.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
        size = root.find("size")
        width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
        objects = tuple(_voc_object(obj) for obj in root.findall("object"))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise LostError(f"{xml_path}: malformed annotation ({exc}); restore it from the VOC archive") from exc
    return VocAnnotation(filename, width, height, objects)


def _voc_object(obj: ET.Element) -> VocObject:
    box = obj.find("bndbox")
    xmin, ymin, xmax, ymax = (int(float(box.findtext(tag))) for tag in ("xmin", "ymin", "xmax", "ymax"))
    truncated = bool(int(float(obj.findtext("truncated") or 0)))
    difficult = bool(int(float(obj.findtext("difficult") or 0)))
    return VocObject(obj.findtext("name").strip(), (xmin - 1, ymin - 1, xmax, ymax), truncated, difficult)


def voc_records(
    voc_root: Path,
    year: str,
    image_set: str,
    remove_hards: bool,
    *,
    skipped: Skipped | None = None,
) -> list[ImageRecord]:
    """Records of `ImageSets/Main/<image_set>.txt`, in its order, with VOC ground truth.

    Boxes [xmin-1, ymin-1, xmax, ymax], x2/y2 exclusive, labelled with their class names and
    difficult flags. With
    `remove_hards`, truncated or difficult objects are dropped and images left without objects
    are not listed. An image whose XML is missing or malformed raises LostError, or, when a
    `skipped` list is given, is left out and appended to it as (file name, reason).
    """
    devkit = voc_devkit_dir(Path(voc_root), year)
    records = []
    for image_id in voc_image_ids(voc_root, year, image_set):
        try:
            annotation = read_voc_annotation(devkit / "Annotations" / f"{image_id}.xml")
        except LostError as exc:
            _record_or_skip(skipped, f"{image_id}.jpg", str(exc))
            continue
        objects = annotation.objects
        if remove_hards:
            objects = tuple(obj for obj in objects if not (obj.truncated or obj.difficult))
            if not objects:
                continue
        boxes = np.array([obj.box for obj in objects], dtype=np.int64).reshape(-1, 4)
        labels = tuple(obj.name for obj in objects)
        difficult = tuple(obj.difficult for obj in objects)
        path = devkit / "JPEGImages" / f"{image_id}.jpg"
        records.append(ImageRecord(annotation.filename, path, boxes, labels, difficult))
    return records


# ----------------------------------------------------------------------------------------------
# COCO20k


def coco_image_id(name: str) -> int | None:
    """The COCO id in ``"42"``, ``"COCO_train2014_000000000042.jpg"`` or
    ``"train2014/COCO_train2014_000000000042.jpg"``; None when `name` holds none."""
    try:
        return int(Path(str(name)).stem.rsplit("_", 1)[-1])
    except ValueError:
        return None


def read_coco20k_list(filenames_file: Path) -> list[tuple[str, int]]:
    """(path relative to COCO/images, image id) per non-empty line of a COCO20k list such as
    the shipped data/coco_20k_filenames.txt (``train2014/COCO_train2014_<12-digit id>.jpg``)."""
    if not filenames_file.is_file():
        raise LostError(
            f"{filenames_file}: COCO20k image list not found; restore data/coco_20k_filenames.txt "
            "or pass its path (--file_coco20k)"
        )
    entries = []
    for number, line in enumerate(filenames_file.read_text().splitlines(), start=1):
        relative = line.strip()
        if not relative:
            continue
        image_id = coco_image_id(relative)
        if image_id is None:
            raise LostError(
                f"{filenames_file}:{number}: {relative!r} is not a COCO file name "
                "(train2014/COCO_train2014_<id>.jpg); restore the file"
            )
        entries.append((relative, image_id))
    return entries


def coco_instances_file(coco_root: Path) -> Path:
    """`coco_root/annotations/instances_train2014.json`."""
    return Path(coco_root) / "annotations" / "instances_train2014.json"


def _coco_fix(coco_root: Path) -> str:
    return f"download annotations_trainval2014.zip from {COCO_URL} and unpack it into {coco_root}"


def read_coco_instances(coco_root: Path) -> COCO:
    """pycocotools' index (``COCO``) of `coco_root/annotations/instances_train2014.json`, its
    progress prints silenced. Raises LostError for a missing, malformed or non-COCO file."""
    return read_coco_json(coco_instances_file(coco_root), _coco_fix(coco_root))


def read_coco_json(ann_file: Path, fix: str = "pass a COCO instances file (images, annotations, categories)") -> COCO:
    """pycocotools' index of any COCO instances file, prints silenced; LostError naming the file
    (and `fix`) for a missing, malformed or non-COCO one."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise LostError(f"{ann_file}: file not found; {fix}")
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LostError(f"{ann_file}: not valid JSON ({exc}); {fix}") from exc
    except (AssertionError, KeyError, TypeError) as exc:
        raise LostError(f"{ann_file}: not a COCO instances file ({exc!r}); {fix}") from exc
    if "images" not in coco.dataset or "annotations" not in coco.dataset:
        raise LostError(f"{ann_file}: not a COCO instances file (no images or annotations); {fix}")
    return coco


def coco_ground_truth(coco: COCO, image_id: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Non-crowd boxes `(K, 4) int64` [x, y, x+w, y+h] (each Python-rounded) of one image and
    their category names, in file order, looked up in the index (no pass over the annotations).

    Raises KeyError for an annotation whose category is not in the file's categories.
    """
    annotations = [ann for ann in coco.imgToAnns.get(image_id, []) if not ann.get("iscrowd", 0)]
    boxes = [_coco_corners(ann["bbox"]) for ann in annotations]
    labels = tuple(coco.cats[ann["category_id"]]["name"] for ann in annotations)
    return np.array(boxes, dtype=np.int64).reshape(-1, 4), labels


def coco_crowd_boxes(coco: COCO, image_id: int) -> np.ndarray:
    """Crowd regions `(C, 4) int64` [x, y, x+w, y+h] (each Python-rounded) of one image, in file order."""
    boxes = [_coco_corners(ann["bbox"]) for ann in coco.imgToAnns.get(image_id, []) if ann.get("iscrowd", 0)]
    return np.array(boxes, dtype=np.int64).reshape(-1, 4)


def _coco_corners(xywh: list[float]) -> list[int]:
    x, y, w, h = xywh
    return [round(x), round(y), round(x + w), round(y + h)]


def coco20k_records(
    coco_root: Path,
    filenames_file: Path,
    *,
    skipped: Skipped | None = None,
) -> list[ImageRecord]:
    """Records of the images listed in `filenames_file`, in its order, named str(image_id).

    Images at `coco_root/images/<line>`, ground truth from
    `coco_root/annotations/instances_train2014.json` without iscrowd boxes, as
    [x, y, x+w, y+h] each rounded with Python's round, labelled with category names; the iscrowd
    boxes, rounded alike, are the records' `crowd_boxes`. An image
    absent from the json's "images" raises LostError, or, when a `skipped` list is given, is
    left out and appended to it as (name, reason).
    """
    coco_root = Path(coco_root)
    entries = read_coco20k_list(Path(filenames_file))
    coco = read_coco_instances(coco_root)
    ann_file = coco_instances_file(coco_root)
    records = []
    for relative, image_id in entries:
        if image_id not in coco.imgs:
            _record_or_skip(skipped, str(image_id), f"{ann_file}: image {image_id} ({relative}) is not annotated there")
            continue
        try:
            boxes, labels = coco_ground_truth(coco, image_id)
            crowds = coco_crowd_boxes(coco, image_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise LostError(f"{ann_file}: not a COCO instances file ({exc!r}); {_coco_fix(coco_root)}") from exc
        difficult = (False,) * len(boxes)
        records.append(ImageRecord(str(image_id), coco_root / "images" / relative, boxes, labels, difficult, crowds))
    if not records and entries:
        raise LostError(
            f"{ann_file}: none of the images of {filenames_file} is annotated there; use instances_train2014.json"
        )
    return records


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
