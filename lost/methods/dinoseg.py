"""DINO-seg, the baseline of the LOST paper: the box of the largest component of the patches that
hold the top 60% of one attention head's CLS attention (DINO's visualization threshold). That
component, the blob, is the object's mask.

``cls_attention: (heads, N)`` over a grid ``(h, w)``; the box ``[x1, y1, x2, y2]`` is in pixels of
the unpadded image, x2/y2 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lost.backbones import BackboneSpec, Features
from lost.errors import LostError
from lost.geometry import as_grid, largest_component, mask_box
from lost.methods.entry import flag
from lost.methods.results import OneObject

DINOSEG_MASS = 0.6
"""Share of the CLS attention mass kept by DINO-seg (DINO's official threshold)."""


def top_mass_mask(attention: torch.Tensor, mass: float = DINOSEG_MASS) -> torch.Tensor:
    """Patches that together hold the top ``mass`` share of an attention distribution.

    attention: (N,) non-negative. Returns (N,) bool: sorted by increasing attention, a patch is
    kept when the normalized cumulative sum up to and including it exceeds ``1 - mass``.
    """
    values, indices = torch.sort(attention.float())
    cumulative = torch.cumsum(values / values.sum(), dim=0)
    keep = torch.zeros_like(cumulative, dtype=torch.bool)
    keep[indices] = cumulative > (1 - mass)
    return keep


def dino_seg(
    cls_attention: torch.Tensor,
    grid: tuple[int, int],
    patch_size: int,
    image_size: tuple[int, int],
    head: int = 4,
) -> np.ndarray:
    """DINO-seg baseline: box of the largest blob of one head's CLS attention.

    cls_attention: (heads, N) attention of the CLS query over the N patches in the last block;
    grid: (h, w); image_size: (H, W) unpadded. Returns the box ``[x1, y1, x2, y2]`` (pixels,
    x2/y2 exclusive, clipped to the image) of :func:`dino_seg_blob`.
    """
    scales = (int(patch_size), int(patch_size))
    return mask_box(dino_seg_blob(cls_attention, grid, head), scales, image_size)


def dino_seg_blob(cls_attention: torch.Tensor, grid: tuple[int, int], head: int = 4) -> np.ndarray:
    """DINO-seg's blob: (h, w) bool, the largest 4-connected component of the patches holding the
    top 60% of head ``head``'s attention mass (``cls_attention: (heads, N)``); ties: the first in
    raster order."""
    if not 0 <= head < cls_attention.shape[0]:
        raise ValueError(f"head {head} does not exist: the model has {cls_attention.shape[0]} heads")
    return largest_component(as_grid(top_mass_mask(cls_attention[head]), grid))

# ----------------------------------------------------------------------------------------------
# The method's entry: parameters, batch adapter, experiment folder


@dataclass(frozen=True)
class DinoSegParams:
    head: int = field(default=4, metadata=flag("--dinoseg_head", "attention head used by DINO-seg"))


@dataclass(frozen=True)
class DinoSegResult(OneObject):
    """What DINO-seg found in one image (one object, see ``results.OneObject``): the blob
    ``patch_mask: (h, w)`` bool and its ``box`` ``[x1, y1, x2, y2]`` (decoded pixels, x2/y2 exclusive)."""

    box: np.ndarray
    patch_mask: np.ndarray


def discover_dinoseg(features: Features, image_sizes: list[tuple[int, int]], params: DinoSegParams) -> list[DinoSegResult]:
    """DINO-seg on a batch: features.cls_attention (B, heads, N) -> one blob and its box per image."""
    patch_size = int(features.scales[0])
    scales = (patch_size, patch_size)
    results = []
    for heads, size in zip(features.cls_attention, image_sizes, strict=True):
        blob = dino_seg_blob(heads, features.grid, params.head)
        results.append(DinoSegResult(box=mask_box(blob, scales, size), patch_mask=blob))
    return results


def check_dinoseg_head(params: DinoSegParams, num_heads: int) -> None:
    """LostError when DINO-seg is asked for a head the model does not have."""
    if not 0 <= params.head < num_heads:
        raise LostError(f"--dinoseg_head {params.head}: the backbone has heads 0 to {num_heads - 1}")


def dinoseg_folder(backbone: BackboneSpec, params: DinoSegParams) -> str:
    """``vit_small-16_dinoseg-head4`` (the published name); a timm name stands as it is."""
    return f"{backbone.label('-')}_dinoseg-head{params.head}"
