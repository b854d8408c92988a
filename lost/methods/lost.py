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

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch

DEGREE_CHUNK_ELEMENTS = 1 << 24
"""Elements of ``A`` (per batch) computed at once when counting degrees: 64 MiB of float32."""

DINOSEG_MASS = 0.6
"""Share of the CLS attention mass kept by DINO-seg (DINO's official threshold)."""


@dataclass(frozen=True)
class LostResult:
    """What LOST found in one image.

    box: (4,) ``[x1, y1, x2, y2]`` in original-image pixels, x2/y2 exclusive; int64 for int
        scales (ViT), float64 for float scales (CNN features).
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


def seed_component_box(
    score_map: torch.Tensor | np.ndarray,
    seed: int,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
) -> np.ndarray:
    """Box of the 4-connected component of ``score_map > 0`` that holds the seed patch.

    score_map: (N,) or (h, w) scores over the grid; grid: (h, w); scales: (sy, sx) pixels per
    cell; image_size: (H, W) of the unpadded image.
    Returns ``[x1, y1, x2, y2]`` in image pixels, x2/y2 exclusive and clipped to (W, H):
    ``x1 = sx * col_min``, ``x2 = sx * (col_max + 1)``, y likewise.
    If the seed itself is not positive (all-zero features), the box is the seed's own cell.
    """
    return mask_box(seed_component(score_map, seed, grid), scales, image_size)


def seed_component(score_map: torch.Tensor | np.ndarray, seed: int, grid: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of ``score_map > 0`` that holds the seed patch, as a (h, w) bool
    mask over the grid; the seed's cell alone when the seed itself is not positive.

    score_map: (N,) or (h, w) scores (or bools) over the grid (h, w); seed: raster index.
    """
    labels, _ = scipy.ndimage.label(_as_grid(score_map, grid) > 0)
    seed_row, seed_col = divmod(int(seed), grid[1])
    seed_label = labels[seed_row, seed_col]
    if seed_label == 0:
        component = np.zeros(grid, dtype=bool)
        component[seed_row, seed_col] = True
        return component
    return labels == seed_label


def mask_box(mask: np.ndarray, scales: tuple[float, float], image_size: tuple[int, int]) -> np.ndarray:
    """Box of the cells of a non-empty (h, w) bool mask: ``[x1, y1, x2, y2]`` in image pixels,
    x2/y2 exclusive, clipped to the unpadded (H, W) (see :func:`cells_to_box`)."""
    rows, cols = np.nonzero(mask)
    return cells_to_box(rows.min(), cols.min(), rows.max() + 1, cols.max() + 1, scales, image_size)


def cells_to_box(
    row_min: int,
    col_min: int,
    row_end: int,
    col_end: int,
    scales: tuple[float, float],
    image_size: tuple[int, int],
) -> np.ndarray:
    """Grid cells ``[row_min, row_end) x [col_min, col_end)`` to an image box.

    Returns ``[x1, y1, x2, y2]`` (x2/y2 exclusive) scaled by (sy, sx) and clipped to the
    unpadded (H, W): int64 when both scales are Python ints (a ViT's patch size), float64 for
    float scales (CNN feature maps), the types the published predictions have.
    """
    scale_y, scale_x = scales
    height, width = image_size
    box = [
        scale_x * int(col_min),
        scale_y * int(row_min),
        min(scale_x * int(col_end), width),
        min(scale_y * int(row_end), height),
    ]
    if isinstance(scale_x, int) and isinstance(scale_y, int):
        return np.asarray(box, dtype=np.int64)
    return np.asarray(box, dtype=np.float64)


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
        box = seed_component_box(expansion_map, seed, grid, scales, image_size)
        results.append(
            LostResult(
                box=box,
                seed=seed,
                degrees=image_degrees,
                seed_similarity=seed_similarity,
                expansion_map=expansion_map,
                similars=similars,
            )
        )
    return results


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


def largest_component_cells(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the largest 4-connected component of a (h, w) bool mask.

    Ties go to the component met first in raster order. An empty mask yields the whole grid.
    """
    labels, count = scipy.ndimage.label(mask)
    if count == 0:
        return np.nonzero(np.ones_like(mask, dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    return np.nonzero(labels == int(np.argmax(sizes)) + 1)


def dino_seg(
    cls_attention: torch.Tensor,
    grid: tuple[int, int],
    patch_size: int,
    image_size: tuple[int, int],
    head: int = 4,
) -> np.ndarray:
    """DINO-seg baseline: box of the largest blob of one head's CLS attention.

    cls_attention: (heads, N) attention of the CLS query over the N patches in the last block;
    grid: (h, w); image_size: (H, W) unpadded. Keeps the patches holding the top 60% of the
    head's attention mass, takes the largest 4-connected component and returns its box
    ``[x1, y1, x2, y2]`` (pixels, x2/y2 exclusive, clipped to the image).
    """
    if not 0 <= head < cls_attention.shape[0]:
        raise ValueError(f"head {head} does not exist: the model has {cls_attention.shape[0]} heads")
    mask = _as_grid(top_mass_mask(cls_attention[head]), grid)
    rows, cols = largest_component_cells(mask)
    scales = (int(patch_size), int(patch_size))
    return cells_to_box(rows.min(), cols.min(), rows.max() + 1, cols.max() + 1, scales, image_size)


def _as_grid(values: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) or (h, w) values as a (h, w) numpy array on the CPU."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(grid)
