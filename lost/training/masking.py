"""PEEKABOO's masked images and their losses, the part of its training FOUND's lacks
(hasibzunair/peekaboo: ``train.py``, ``datasets/datasets.py``).

Every training view also comes with a mask of hidden pixels, ``hidden: (S, S) bool``. The masked
view is the normalized image with the hidden pixels set to 0 (the ImageNet mean colour), as the
published ``img_t * scribble`` does. The head scores it too; its own foreground, refined by the
bilateral solver *on the unmasked image* (as published), is its target:

    loss = FOUND's loss (without found_bkg's targets: ``--stop_bkg_loss 0``)
         + w_mfp * BCE(masked logits, refined masked foreground)          (the "MFP" term)
         + w_pcl * MSE(refined foreground, refined masked foreground)     (the "PCL" term)

with w_mfp = w_pcl = 1. Both targets of the MSE are binarized and detached, so that term adds
to the loss's value but not to its gradient, as in the published code.

The masks come from ``--scribbles DIR`` (the official ``SCRIBBLES.zip``, unpacked) when given,
chosen as published: the PNG files sorted by name, in reverse order, and one of the first 951
of them drawn per view (:func:`scribble_files`); a pixel is hidden when its palette index after
``convert("P")`` is not 0, read at the view's side (shorter side resized with nearest
neighbours, then centre-cropped: :func:`scribble_from_file`). Without ``--scribbles``, the masks
are drawn procedurally from each view's seed (:func:`procedural_hidden`): random streaks (random
walks of 4-10 segments, each 1/16-1/5 of the side long, turning by a normal angle of 0.8 rad,
1/50-1/12 of the side wide with round joints and ends) and holes (ellipses with semi-axes of
1/24-1/6 of the side), drawn half and half at random until the hidden share reaches a target
drawn uniformly in ``--mask_coverage`` (default 0.3-0.6; at most 64 shapes).

Differences from the published code, on purpose: each view's mask is drawn from the view's own
seed (the published ``random.randint`` is unseeded in its data-loading processes), so a resumed
run sees the same masks; a folder of fewer than 951 masks is drawn from whole (the published
index would run past its end); a mask file without any stroke hides nothing (the published
inversion ``max - scribble`` of an all-zero mask hides everything).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from lost.errors import LostError

SCRIBBLE_CHOICES = 951
"""Published: ``sorted(glob(SCRIBBLES/*.png))[::-1][:1000][random.randint(0, 950)]``."""

MAX_SHAPES = 64
STREAK_SEGMENTS = (4, 10)
STREAK_SEGMENT_LENGTH = (1 / 16, 1 / 5)
STREAK_TURN_SIGMA = 0.8
STREAK_WIDTH = (1 / 50, 1 / 12)
HOLE_SEMI_AXIS = (1 / 24, 1 / 6)
"""The procedural masks' shapes, as fractions of the view's side (angles in radians)."""


@dataclass(frozen=True)
class MaskingSettings:
    """PEEKABOO's masked-image training: the loss weights, the folder of official masks (None:
    procedural masks) and the range of the procedural masks' hidden share."""

    w_mfp_loss: float = 1.0
    w_pcl_loss: float = 1.0
    scribbles: str | None = None
    coverage: tuple[float, float] = (0.3, 0.6)


def check_masking(settings: MaskingSettings) -> None:
    low, high = settings.coverage
    if not 0 < low <= high < 1:
        raise LostError(f"--mask_coverage {low} {high}: needs 0 < LOW <= HIGH < 1 (shares of hidden pixels)")


def scribble_files(folder: Path) -> list[Path]:
    """The masks a view is drawn from: the PNG files directly in `folder`, sorted by name in
    reverse order, the first 951 (all of them when there are fewer)."""
    if not folder.is_dir():
        raise LostError(f"--scribbles {folder}: no such folder; pass the unpacked SCRIBBLES.zip, or leave it out")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix == ".png"), reverse=True)
    if not files:
        raise LostError(f"--scribbles {folder}: holds no .png mask; pass the unpacked SCRIBBLES.zip, or leave it out")
    return files[:SCRIBBLE_CHOICES]


def centre_crop_box(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """torchvision's ``CenterCrop(side)`` of a (width, height) image as a PIL crop box
    ``(left, top, right, bottom)``: offsets rounded half to even (Python's ``round``)."""
    left, top = round((width - side) / 2.0), round((height - side) / 2.0)
    return left, top, left + side, top + side


def scribble_from_file(path: Path, side: int) -> np.ndarray:
    """(side, side) bool hidden pixels of a mask file: palette index after ``convert("P")`` not
    0, the shorter side resized to `side` by nearest neighbours (the longer one truncated), then
    centre-cropped, as the published ``Resize``/``CenterCrop`` of a palette image."""
    try:
        with Image.open(path) as image:
            palette = image.convert("P")
    except (OSError, ValueError) as exc:
        raise LostError(
            f"{path}: not a readable mask image ({exc.__class__.__name__}); remove it from --scribbles"
        ) from exc
    width, height = palette.size
    if width <= height:
        size = (side, int(side * height / width))
    else:
        size = (int(side * width / height), side)
    resized = palette.resize(size, Image.NEAREST)
    return np.asarray(resized.crop(centre_crop_box(*size, side))) != 0


def draw_streak(draw: ImageDraw.ImageDraw, side: int, rng: np.random.Generator) -> None:
    """One random walk of round-jointed segments, in white."""
    width = max(1, round(side * rng.uniform(*STREAK_WIDTH)))
    point = rng.uniform(0, side, 2)
    angle = rng.uniform(0, 2 * np.pi)
    points = [tuple(point)]
    for _ in range(int(rng.integers(STREAK_SEGMENTS[0], STREAK_SEGMENTS[1] + 1))):
        angle += rng.normal(0, STREAK_TURN_SIGMA)
        point = point + side * rng.uniform(*STREAK_SEGMENT_LENGTH) * np.array([np.cos(angle), np.sin(angle)])
        points.append(tuple(point))
    draw.line(points, fill=255, width=width, joint="curve")
    radius = width / 2
    for x, y in (points[0], points[-1]):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)


def draw_hole(draw: ImageDraw.ImageDraw, side: int, rng: np.random.Generator) -> None:
    """One filled ellipse, in white."""
    x, y = rng.uniform(0, side, 2)
    rx, ry = side * rng.uniform(*HOLE_SEMI_AXIS, size=2)
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)


def procedural_hidden(side: int, rng: np.random.Generator, coverage: tuple[float, float]) -> np.ndarray:
    """(side, side) bool: streaks and holes, half and half at random, until the hidden share
    reaches a target drawn uniformly in `coverage` (or :data:`MAX_SHAPES` are drawn)."""
    target = rng.uniform(*coverage)
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    hidden = np.zeros((side, side), dtype=bool)
    for _ in range(MAX_SHAPES):
        (draw_streak if rng.random() < 0.5 else draw_hole)(draw, side, rng)
        hidden = np.asarray(canvas) != 0
        if hidden.mean() >= target:
            break
    return hidden


def hidden_pixels(side: int, rng: np.random.Generator, settings: MaskingSettings, files: list[Path]) -> np.ndarray:
    """One view's (side, side) bool hidden pixels: one of `files` when given, else procedural."""
    if files:
        return scribble_from_file(files[int(rng.integers(len(files)))], side)
    return procedural_hidden(side, rng, settings.coverage)


def masked_views(images: Tensor, hidden: Tensor) -> Tensor:
    """images: (B, 3, S, S) normalized; hidden: (B, S, S) bool -> the images with the hidden
    pixels set to 0 (the mean colour)."""
    return images * (~hidden)[:, None].to(images.dtype)


def masked_image_loss(
    masked_logits: Tensor, masked_refined: Tensor, own_refined: Tensor, settings: MaskingSettings
) -> Tensor:
    """The published terms on (B, N) masked-view logits and (B, N) bool refined targets:
    ``w_mfp * BCE(masked_logits, masked_refined) + w_pcl * MSE(own_refined, masked_refined)``
    (the MSE of two targets: no gradient)."""
    mfp = F.binary_cross_entropy_with_logits(masked_logits, masked_refined.float())
    pcl = F.mse_loss(own_refined.float(), masked_refined.float())
    return settings.w_mfp_loss * mfp + settings.w_pcl_loss * pcl
