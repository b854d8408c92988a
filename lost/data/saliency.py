"""Saliency data sets (ECSSD, DUTS-TE, DUT-OMRON, or any folder of images and masks) and their
ground-truth masks.

Layout under ``datasets_root``, as FOUND's code expects it from the official archives::

    ECSSD/images/0001.jpg                       ECSSD/ground_truth_mask/0001.png
    DUTS/DUTS-TE-Image/ILSVRC2012_...jpg        DUTS/DUTS-TE-Mask/ILSVRC2012_...png
    DUT-OMRON/DUT-OMRON-image/im005.jpg         DUT-OMRON/pixelwiseGT-new-PNG/im005.png

An image is named by its file stem (``0001``); its mask is ``<mask_dir>/<stem>.png`` (the
published code's ``.jpg`` -> ``.png``), or else the one file of ``<mask_dir>`` with that stem and
an image extension. Images are listed by name, so runs do not depend on ``os.listdir`` order. A
mask is read as the published code reads it: ``Image.open(path).convert("L")``, an (H, W) uint8
grey array; each protocol of ``lost.eval.saliency`` binarizes it its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lost.data.datasets import ImageRecord, Skipped
from lost.data.images import IMAGE_EXTENSIONS, open_image
from lost.errors import LostError


@dataclass(frozen=True)
class SaliencyLayout:
    """Where one data set's images and masks lie under ``datasets_root``, and where it comes from."""

    images: str
    masks: str
    source: str


SALIENCY_DATASETS = {
    "ECSSD": SaliencyLayout(
        "ECSSD/images", "ECSSD/ground_truth_mask",
        "https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/dataset.html (images.zip, ground_truth_mask.zip)",
    ),
    "DUTS-TE": SaliencyLayout(
        "DUTS/DUTS-TE-Image", "DUTS/DUTS-TE-Mask",
        "http://saliencydetection.net/duts/ (DUTS-TE.zip; move its two folders into DUTS/)",
    ),
    "DUT-OMRON": SaliencyLayout(
        "DUT-OMRON/DUT-OMRON-image", "DUT-OMRON/pixelwiseGT-new-PNG",
        "http://saliencydetection.net/dut-omron/ (DUT-OMRON-image.zip, DUT-OMRON-gt-pixelwise.zip.zip)",
    ),
}  # fmt: skip
"""``--dataset`` name -> layout (the folders of FOUND's ``set_dataset_dir``)."""


@dataclass(frozen=True)
class SaliencySpec:
    """A named list of images with their masks: ``records`` (name = file stem, no boxes),
    ``masks`` name -> mask path, ``image_dir`` / ``mask_dir`` the folders they come from, and
    ``skipped`` (name, reason) for the images left out (no mask, a name used twice)."""

    name: str
    records: list[ImageRecord]
    masks: dict[str, Path]
    image_dir: Path
    mask_dir: Path
    skipped: Skipped = field(default_factory=list)


def load_saliency_dataset(name: str, datasets_root: Path) -> SaliencySpec:
    """The records of ECSSD, DUTS-TE or DUT-OMRON under ``datasets_root``.

    Raises LostError naming the missing folder and where the data set comes from.
    """
    if name not in SALIENCY_DATASETS:
        raise LostError(f"--dataset {name}: unknown saliency data set; choose one of {', '.join(SALIENCY_DATASETS)}")
    layout = SALIENCY_DATASETS[name]
    for folder in (layout.images, layout.masks):
        path = Path(datasets_root) / folder
        if not path.is_dir():
            raise LostError(
                f"{path}: folder not found; {name} comes from {layout.source}: unpack it there, "
                "or point --datasets_root to the folder holding it"
            )
    return saliency_records(Path(datasets_root) / layout.images, Path(datasets_root) / layout.masks, name)


def saliency_records(image_dir: Path, mask_dir: Path, name: str | None = None) -> SaliencySpec:
    """The images of ``image_dir`` (by name) paired with their masks in ``mask_dir``.

    Raises LostError for a missing folder or a folder without images.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for flag, folder in (("--image_dir", image_dir), ("--mask_dir", mask_dir)):
        if not folder.is_dir():
            raise LostError(f"{flag} {folder}: folder not found; pass the folder of the {flag[2:-4]}s")
    images = sorted(path for path in image_dir.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise LostError(f"--image_dir {image_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
    masks_by_stem = mask_files(mask_dir)
    records, masks, skipped = [], {}, []
    for path in images:
        stem = path.stem
        if stem in masks:
            skipped.append((path.name, f"another image is also named {stem}; rename one of them"))
        elif stem not in masks_by_stem:
            skipped.append((stem, f"no ground-truth mask {mask_dir / (stem + '.png')}"))
        else:
            records.append(ImageRecord(name=stem, path=path, gt_boxes=None))
            masks[stem] = masks_by_stem[stem]
    return SaliencySpec(name or image_dir.name, records, masks, image_dir, mask_dir, skipped)


def mask_files(mask_dir: Path) -> dict[str, Path]:
    """Stem -> mask file of ``mask_dir``: ``<stem>.png`` first, else the first other image file."""
    found: dict[str, Path] = {}
    candidates = sorted(path for path in mask_dir.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)
    for path in sorted(candidates, key=lambda path: path.suffix.lower() != ".png"):
        found.setdefault(path.stem, path)
    return found


def read_grey_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 grey levels of a ground-truth mask, ``convert("L")`` as published.

    Raises LostError naming the file when it cannot be read.
    """
    try:
        with open_image(Path(path)) as image:
            return np.array(image.convert("L"), dtype=np.uint8)
    except Exception as exc:
        raise LostError(f"{path}: cannot read the ground-truth mask ({exc}); replace it or remove its image") from exc
