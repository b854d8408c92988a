"""Image files to tensors: decoding, scaling, normalization, padding, headers.

Images: :func:`load_rgb` returns 8-bit RGB for every mode Pillow decodes. Alpha is dropped,
not composited (the colour stored under transparent pixels is kept, as the paper's
``convert("RGB")`` did, so its boxes are reproduced); 16-bit grey is scaled to 8 bits
(``round(v / 257)``) instead of being clipped at 255; EXIF orientation is not applied, since
VOC and COCO annotations refer to the stored pixel array. Truncated files are detected by a
full decode; this relies on Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``.

Sizes: Pillow's ``(width, height)`` where a function says so (:func:`capped_size`,
:func:`read_image_size`); everywhere else ``(H, W)``. Boxes are ``[x1, y1, x2, y2]`` in pixels,
x2/y2 exclusive.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from lost.errors import LostError

if TYPE_CHECKING:
    from lost.data.datasets import ImageRecord

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

PREPROCESSING = ("pad", "resize")
"""How an image is fitted to the patch grid: ``pad`` zeros at its bottom and right up to the next
multiple (LOST, FOUND); ``resize`` to the nearest multiple with LANCZOS (TokenCut's saliency code)."""


# ----------------------------------------------------------------------------------------------
# Decoding and scaling


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
    """A box ``[x1, y1, x2, y2]`` (x2/y2 exclusive), or boxes ``(K, 4)``, in an image of (H, W)
    ``from_size`` moved to the same image at (H, W) ``to_size``; unchanged (same dtype) when the
    sizes are equal, else int64 pixel edges.

    Each edge ``e`` (first rounded to a pixel edge, ``ceil(e - 1/2)``, when it is a float) goes to
    ``ceil(e * to / from - 1/2)``, computed in exact integers: the first pixel of the new size
    whose centre lies past the edge. So the box is the bounding box of its mask resized by
    ``geometry.resize_masks`` (nearest neighbour with half-pixel centres) to a size no smaller
    (the decoded image back to its original).
    """
    if tuple(from_size) == tuple(to_size):
        return box
    edges = np.ceil(np.asarray(box, dtype=np.float64) - 0.5).astype(np.int64)
    source = np.array([from_size[1], from_size[0]] * 2, dtype=np.int64)
    target = np.array([to_size[1], to_size[0]] * 2, dtype=np.int64)
    return -((source - 2 * edges * target) // (2 * source))


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


def fixed_size_images(image: Image.Image, fixed_size: int, multiple: int) -> tuple[Image.Image, Image.Image]:
    """CutLER's MaskCut input: ``(shown, network_input)``. ``shown`` is the image resized to
    ``fixed_size`` x ``fixed_size`` with LANCZOS (what its CRF sees); ``network_input`` is that
    resized again with LANCZOS to the side ``round(fixed_size / multiple) * multiple`` (TokenCut's
    ``resize_pil``; the same image when ``fixed_size`` is a multiple)."""
    shown = image.resize((fixed_size, fixed_size), Image.LANCZOS)
    side = int(round(fixed_size / multiple)) * multiple
    return shown, shown.resize((side, side), Image.LANCZOS)


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


def multiple_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """(width, height) of TokenCut's resize: each side ``round(side / multiple) * multiple``
    (Python's round, half to even, as published), at least one multiple (the published code
    would make a side under half a patch 0 pixels wide)."""
    return max(multiple, round(width / multiple) * multiple), max(multiple, round(height / multiple) * multiple)


def method_view(image: Image.Image, multiple: int, preprocess: str) -> Image.Image:
    """The image as the method sees it under ``preprocess`` (see :data:`PREPROCESSING`): resized
    with LANCZOS to multiples of ``multiple`` for ``resize``, unchanged for ``pad``."""
    if preprocess == "resize":
        return image.resize(multiple_size(image.width, image.height, multiple), Image.LANCZOS)
    if preprocess != "pad":
        raise ValueError(f"unknown preprocessing {preprocess!r}; use one of {PREPROCESSING}")
    return image


def fit_to_grid(image: Image.Image, multiple: int, preprocess: str) -> torch.Tensor:
    """RGB image -> (3, Hp, Wp) normalized tensor fitted to the patch grid by ``preprocess``
    (see :data:`PREPROCESSING`): padded with zeros after normalization, or resized with LANCZOS
    before it."""
    return pad_to_multiple(image_to_tensor(method_view(image, multiple, preprocess)), multiple)


# ----------------------------------------------------------------------------------------------
# Headers


def read_image_size(path: Path | str, max_size: int | None = None) -> tuple[int, int]:
    """(width, height) of an image file from its header, capped to `max_size` (see
    :func:`capped_size`); the pixels are not decoded.

    Raises LostError naming the path when the header cannot be read.
    """
    try:
        with open_image(Path(path)) as image:
            return capped_size(image.width, image.height, max_size)
    except Exception as exc:
        raise LostError(f"{path}: cannot read the image header ({exc}); replace it or remove it") from exc


def padded_size(
    record: ImageRecord, multiple: int, max_size: int | None = None, preprocess: str = "pad"
) -> tuple[int, int]:
    """(Hp, Wp) of the record's image once capped to `max_size` (see :func:`capped_size`) and
    padded to `multiple` (or resized to it, see :func:`multiple_size`); reads the header only.

    Raises LostError when the header cannot be read.
    """
    width, height = read_image_size(record.path, max_size)
    if preprocess == "resize":
        width, height = multiple_size(width, height, multiple)
        return height, width
    return _padded(height, multiple), _padded(width, multiple)


# ----------------------------------------------------------------------------------------------
# Decoded images for a DataLoader


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image for the engine: `image (3, Hp, Wp)` normalized and padded (or resized);
    `size` the (H, W) the method sees it at: decoded, before padding (resized: Hp, Wp; fixed
    size: (S, S)); `original_size` the file's own (H, W), larger when `max_size` scaled the image
    down; `pixels` the (H, W, 3) uint8 RGB image at `size` when the dataset keeps them (for a
    refinement or CutLER's post-processing), else None. `image` is None and `error` set when it
    failed."""

    index: int
    image: torch.Tensor | None
    size: tuple[int, int] | None = None
    original_size: tuple[int, int] | None = None
    error: str | None = None
    pixels: np.ndarray | None = None


class ImageFileDataset(torch.utils.data.Dataset):
    """Decoded, normalized, padded images of a list of records, for a DataLoader.

    `__getitem__(i)` returns a :class:`DecodedImage`. An image that cannot be read never
    raises (so a DataLoader worker survives): its DecodedImage has `image` None and `error` set
    to the LostError text. `max_size` caps the longer side (see :func:`load_rgb`); `preprocess`
    fits it to the patch grid (see :data:`PREPROCESSING`). `fixed_size`: every image is resized
    as CutLER's MaskCut does (:func:`fixed_size_images`; `size` is then (fixed_size, fixed_size)
    and the network sees the side rounded to the patch multiple, unpadded); None keeps the
    image's own size. `keep_pixels`: also return the 8-bit pixels (`DecodedImage.pixels`).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        pad_multiple: int,
        max_size: int | None = None,
        preprocess: str = "pad",
        fixed_size: int | None = None,
        keep_pixels: bool = False,
    ) -> None:
        if fixed_size is not None and (fixed_size < 1 or max_size):
            raise ValueError(f"fixed_size must be positive and exclusive of max_size (got {fixed_size}, {max_size})")
        self.records = records
        self.pad_multiple = pad_multiple
        self.max_size = max_size
        self.preprocess = preprocess
        self.fixed_size = fixed_size
        self.keep_pixels = keep_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> DecodedImage:
        try:
            image, original_size = decode_image(self.records[i].path, self.max_size)
        except LostError as exc:
            return DecodedImage(index=i, image=None, error=str(exc))
        if self.fixed_size:
            view, network_input = fixed_size_images(image, self.fixed_size, self.pad_multiple)
        else:
            view = network_input = method_view(image, self.pad_multiple, self.preprocess)
        tensor = pad_to_multiple(image_to_tensor(network_input), self.pad_multiple)
        pixels = np.asarray(view, dtype=np.uint8) if self.keep_pixels else None
        return DecodedImage(i, tensor, (view.height, view.width), original_size, pixels=pixels)
