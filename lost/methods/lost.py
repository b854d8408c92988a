"""LOST and the DINO-seg baseline, as pure functions on patch features.

Shapes and conventions used throughout:

* ``feats: (N, d)`` or ``(B, N, d)`` patch features of one image (or a batch of images of the
  same padded size), patches in raster order over a grid ``(h, w)`` = (rows, cols), so patch
  ``i`` sits at row ``i // w`` and column ``i % w``.
* ``scales = (sy, sx)``: image pixels per feature cell along the rows and the columns
  (the patch size, an int, for a ViT; padded image size / feature-map size, floats, for a CNN).
* ``image_size = (H, W)``: the original (unpadded) image size in pixels.
* A box is ``[x1, y1, x2, y2]`` in pixels of the original image, x2 and y2 exclusive.

The similarity matrix ``A = F Fᵀ`` is never materialized whole: degrees are counted over row
chunks, and seed expansion only needs the rows of at most ``k_patches`` patches. This keeps
memory bounded for ViT-S/8 on large images (15,625 patches would make ``A`` a 1 GB matrix),
while every sign that decides the result is computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lost.backbones import BackboneSpec, Features
from lost.geometry import mask_box, seed_component
from lost.methods.entry import flag
from lost.methods.results import OneObject

DEGREE_CHUNK_ELEMENTS = 1 << 24
"""Elements of ``A`` (per batch) computed at once when counting degrees: 64 MiB of float32."""


@dataclass(frozen=True)
class LostResult(OneObject):
    """What LOST found in one image (one object, see ``results.OneObject``).

    box: (4,) ``[x1, y1, x2, y2]`` in original-image pixels, x2/y2 exclusive; int64 for int
        scales (ViT), float64 for float scales (CNN features): the box of ``patch_mask``.
    patch_mask: (h, w) bool, the seed's expanded component: the 4-connected component of
        ``expansion_map > 0`` holding the seed (the seed's cell alone when it is not positive).
    seed: index of the seed patch in raster order over the grid.
    degrees: (N,) int64, number of other patches with positive similarity to each patch.
    seed_similarity: (N,) float32, row ``A[seed, :]`` (the seed's correlation with every patch).
    expansion_map: (N,) float32, ``M = Σ_{c ∈ similars} A[c, :]``, whose positive connected
        component around the seed gives the box.
    similars: (S,) int64, indices of the patches used for the expansion (the seed included).

    ``expansion_map`` is on the CPU (the connected components need it there); the other tensors
    stay on the features' device, so a GPU run copies them back only when they are drawn.
    """

    box: np.ndarray
    patch_mask: np.ndarray
    seed: int
    degrees: torch.Tensor
    seed_similarity: torch.Tensor
    expansion_map: torch.Tensor
    similars: torch.Tensor


def patch_degrees(feats: torch.Tensor, chunk_elements: int = DEGREE_CHUNK_ELEMENTS) -> torch.Tensor:
    """Degree of every patch in the graph ``A[i, j] > 0`` without self-loops.

    feats: (B, N, d), cast to float32 for the products.
    Returns (B, N) int64: ``degree[b, i] = #{j != i : <f_i, f_j> > 0}``.
    Rows of ``A`` are computed ``chunk_elements // (B * N)`` at a time, so peak memory stays
    bounded whatever the number of patches.
    """
    feats = feats.float()
    batch, num_patches, _ = feats.shape
    rows_per_chunk = max(1, chunk_elements // max(1, batch * num_patches))
    keys = feats.transpose(1, 2)
    degrees = []
    for start in range(0, num_patches, rows_per_chunk):
        block = torch.bmm(feats[:, start : start + rows_per_chunk], keys)
        positive = block > 0
        self_positive = torch.diagonal(positive, offset=start, dim1=1, dim2=2)
        degrees.append(positive.sum(dim=2) - self_positive.long())
    return torch.cat(degrees, dim=1)


def order_by_degree(degrees: torch.Tensor) -> torch.Tensor:
    """Patches by increasing degree, ties ordered exactly as the published implementation.

    degrees: (N,) integer. Returns (N,) int64 patch indices, lowest degree first.
    The published code sorts ``-degree`` as float32 with ``torch.argsort(..., descending=True)``,
    which is not a stable sort: its tie order depends on the torch build and device, and it
    decides the seed of many images, so the very same call is made here, one image at a time.
    """
    return torch.argsort((-degrees).to(torch.float32), descending=True)


def expand_seed(
    feats: torch.Tensor, order: torch.Tensor, k_patches: int
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed selection and expansion of LOST for one image.

    feats: (N, d); order: (N,) patches by increasing degree.
    The seed is ``order[0]``; the similars are the patches among the first ``k_patches`` of the
    order whose similarity to the seed is positive; ``M`` sums their rows of ``A``.
    Returns ``(seed, similars (S,) int64, seed_similarity (N,) float32, M (N,) float32)``.
    """
    feats = feats.float()
    seed = int(order[0])
    seed_similarity = feats @ feats[seed]
    potentials = order[:k_patches]
    similars = potentials[seed_similarity[potentials] > 0]
    expansion_map = (feats[similars] @ feats.T).sum(dim=0)
    return seed, similars, seed_similarity, expansion_map


def lost(
    feats: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
    k_patches: int = 100,
) -> LostResult:
    """LOST on one image: lowest-degree seed, expansion over its similar patches, box.

    feats: (N, d) with N = h * w; grid: (h, w); scales: (sy, sx); image_size: (H, W) unpadded.
    The box is ``[x1, y1, x2, y2]`` in original-image pixels, x2/y2 exclusive.
    """
    return lost_batch(feats[None], grid, scales, [image_size], k_patches)[0]


def lost_batch(
    feats: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_sizes: list[tuple[int, int]],
    k_patches: int = 100,
) -> list[LostResult]:
    """LOST on a batch of images that share one padded size (and so one grid).

    feats: (B, N, d) on any device; image_sizes: B unpadded (H, W).
    Degrees are counted for the whole batch on the device; the tie-exact ordering and the
    seed expansion run per image on the device; only the connected components run on the CPU.
    """
    if feats.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"feats hold {feats.shape[1]} patches but the grid {grid} has {grid[0] * grid[1]}")
    degrees = patch_degrees(feats)
    results = []
    for image_feats, image_degrees, image_size in zip(feats, degrees, image_sizes, strict=True):
        order = order_by_degree(image_degrees)
        seed, similars, seed_similarity, expansion_map = expand_seed(image_feats, order, k_patches)
        expansion_map = expansion_map.cpu()
        component = seed_component(expansion_map, seed, grid)
        results.append(
            LostResult(
                box=mask_box(component, scales, image_size),
                patch_mask=component,
                seed=seed,
                degrees=image_degrees,
                seed_similarity=seed_similarity,
                expansion_map=expansion_map,
                similars=similars,
            )
        )
    return results

# ----------------------------------------------------------------------------------------------
# The method's entry: parameters, batch adapter, experiment folder


@dataclass(frozen=True)
class LostParams:
    k_patches: int = field(default=100, metadata=flag("--k_patches", "lowest-degree patches considered for the expansion"))


def discover_lost(features: Features, image_sizes: list[tuple[int, int]], params: LostParams) -> list[LostResult]:
    """LOST on a batch: features.feats (B, N, d) -> one :class:`LostResult` per image."""
    return lost_batch(features.feats, features.grid, features.scales, image_sizes, params.k_patches)


def lost_folder(backbone: BackboneSpec, _params: LostParams) -> str:
    """``LOST-vit_small16_k``, ``LOST-resnet50dilate2``, ``LOST-vgg16_imagenet`` (published names)."""
    suffix = f"_{backbone.which_features}" if backbone.entry.is_vit else ""
    return f"LOST-{backbone.label()}{suffix}"
