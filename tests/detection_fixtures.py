"""Tiny VOC trees with class names, and the tools/ scripts as modules, for the detector pipeline tests.

`make_voc_detection_tree(datasets_root)` writes ``VOC2007/VOCdevkit/VOC2007/...`` with the images
below (64 x 48 JPEGs painted by ``tiny_datasets.write_jpeg``, each object a bright rectangle over
its box). VOC corners are 1-based inclusive; the zero-based exclusive box is given after ``->``.

    000001 trainval: dog (9, 9, 40, 32)                      -> [8, 8, 40, 32]
    000002 trainval: cat (33, 17, 56, 40), dog (1, 1, 16, 12) difficult -> [32, 16, 56, 40], [0, 0, 16, 12]
    000003 test:     dog (5, 5, 20, 20), person (31, 5, 60, 44) -> [4, 4, 20, 20], [30, 4, 60, 44]
    000004 test:     cat (12, 8, 44, 40), "thing" (1, 1, 5, 5)  -> [11, 7, 44, 40], not a VOC class
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tiny_datasets import write_jpeg

ROOT = Path(__file__).resolve().parents[1]

# image id -> (image set, [(class name, (xmin, ymin, xmax, ymax), difficult), ...])
VocDetectionImages = dict[str, tuple[str, list[tuple[str, tuple[int, int, int, int], int]]]]
DEFAULT_IMAGES: VocDetectionImages = {
    "000001": ("trainval", [("dog", (9, 9, 40, 32), 0)]),
    "000002": ("trainval", [("cat", (33, 17, 56, 40), 0), ("dog", (1, 1, 16, 12), 1)]),
    "000003": ("test", [("dog", (5, 5, 20, 20), 0), ("person", (31, 5, 60, 44), 0)]),
    "000004": ("test", [("cat", (12, 8, 44, 40), 0), ("thing", (1, 1, 5, 5), 0)]),
}
SIZE = (64, 48)


def zero_based(corners: tuple[int, int, int, int]) -> list[int]:
    xmin, ymin, xmax, ymax = corners
    return [xmin - 1, ymin - 1, xmax, ymax]


def _xml(filename: str, objects: list, size: tuple[int, int]) -> str:
    parts = [
        "<annotation>",
        f"<filename>{filename}</filename>",
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
    ]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><truncated>0</truncated><difficult>{difficult}</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def make_voc_detection_tree(
    datasets_root: Path, year: str = "2007", images: VocDetectionImages | None = None, size: tuple[int, int] = SIZE
) -> Path:
    """Write the tree under `datasets_root`; returns the VOC<year> folder (the --voc_dir)."""
    images = DEFAULT_IMAGES if images is None else images
    voc_dir = Path(datasets_root) / f"VOC{year}"
    devkit = voc_dir / "VOCdevkit" / f"VOC{year}"
    (devkit / "Annotations").mkdir(parents=True, exist_ok=True)
    (devkit / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[str]] = {}
    for image_id, (image_set, objects) in images.items():
        write_jpeg(devkit / "JPEGImages" / f"{image_id}.jpg", [zero_based(o[1]) for o in objects], size)
        (devkit / "Annotations" / f"{image_id}.xml").write_text(_xml(f"{image_id}.jpg", objects, size))
        sets.setdefault(image_set, []).append(image_id)
    for image_set, ids in sets.items():
        (devkit / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc_dir


def load_tool(name: str) -> ModuleType:
    """The script tools/<name>.py as a module, to call its main(argv) in this process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
