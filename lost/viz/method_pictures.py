"""The ``--visualize`` pictures of each method, drawn from one image's discovery.

A picture function is ``picture(image_path, discovery, max_size) -> PIL image``; ``discovery`` is
an ``lost.engine.discovery.Discovery`` (its ``result``, ``box`` in original pixels, ``grid`` and
``scales``). Pictures drawn on "the image as the method saw it" load it scaled to ``max_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from lost.data.images import load_rgb
from lost.geometry import seed_component_box
from lost.viz import pictures as visualizations

PictureFn = Callable[[Path, Any, int | None], Image.Image]
"""``picture(image_path, discovery, max_size) -> PIL image``; ``discovery`` is an
``engine.Discovery`` (its ``result``, ``box`` in original pixels, ``grid`` and ``scales``)."""


def lost_feature_maps_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The paper's Figure 2 (seed, its binarized correlation, inverse degrees)."""
    result = found.result
    image = load_rgb(image_path, max_size)
    return visualizations.feature_maps_picture(
        image, result.seed_similarity, result.degrees, result.seed, found.grid, found.scales
    )


def lost_seed_expansion_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The paper's Figure 3 (seed, box before the expansion, final box)."""
    result = found.result
    image = load_rgb(image_path, max_size)
    image_size = (image.height, image.width)
    seed_box = seed_component_box(result.seed_similarity, result.seed, found.grid, found.scales, image_size)
    return visualizations.seed_expansion_picture(image, result.seed, seed_box, result.box, found.grid, found.scales)


def box_picture(image_path: Path, found: Any, _max_size: int | None) -> Image.Image:
    """The box (red) on the original image."""
    return visualizations.prediction_picture(load_rgb(image_path), found.box)


def seed_pred_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The box (red) and the seed patch (yellow), on the image as the method saw it."""
    result = found.result
    image = load_rgb(image_path, max_size)
    return visualizations.prediction_picture(image, result.box, result.seed, found.grid, found.scales)


def tokencut_cut_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """Image with box and seed | second eigenvector | bipartition."""
    image = load_rgb(image_path, max_size)
    return visualizations.tokencut_picture(image, found.result, found.grid, found.scales)


def ranked_boxes_picture(image_path: Path, found: Any, _max_size: int | None) -> Image.Image:
    """Every box on the original image, each in its own colour with its rank and score."""
    return visualizations.ranked_boxes_picture(load_rgb(image_path), found.boxes, found.scores)


def found_mask_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The box beside the foreground patches, on the image as the method saw it."""
    image = load_rgb(image_path, max_size)
    return visualizations.found_picture(image, found.result, found.grid, found.scales)


def masks_picture(image_path: Path, found: Any, _max_size: int | None) -> Image.Image:
    """Every object's mask over the original image, one colour per object, with its rank and score
    (``found.masks``: (K, H, W) bool in original pixels)."""
    return visualizations.masks_picture(load_rgb(image_path), found.masks, found.scores)
