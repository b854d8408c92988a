"""Patch grids, masks and boxes: the conversions every method and picture shares.

A grid is ``(h, w)`` = (rows, cols), patch ``i`` at row ``i // w`` and column ``i % w``;
``scales = (sy, sx)`` are image pixels per cell; a box is ``[x1, y1, x2, y2]`` in image pixels,
x2 and y2 exclusive, clipped to the unpadded image ``(H, W)``.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch


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
    labels, _ = scipy.ndimage.label(as_grid(score_map, grid) > 0)
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


def largest_component_cells(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the largest 4-connected component of a (h, w) bool mask.

    Ties go to the component met first in raster order. An empty mask yields the whole grid.
    """
    labels, count = scipy.ndimage.label(mask)
    if count == 0:
        return np.nonzero(np.ones_like(mask, dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    return np.nonzero(labels == int(np.argmax(sizes)) + 1)


def as_grid(values: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) or (h, w) values as a (h, w) numpy array on the CPU."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(grid)
