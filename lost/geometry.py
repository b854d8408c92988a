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


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a (h, w) bool mask, as a (h, w) bool mask.

    Ties go to the component met first in raster order. An empty mask yields the whole grid.
    """
    labels, count = scipy.ndimage.label(mask)
    if count == 0:
        return np.ones_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def as_grid(values: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) or (h, w) values as a (h, w) numpy array on the CPU."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(grid)


# ----------------------------------------------------------------------------------------------
# Masks in pixels


def pixel_cells(length: int, cells: int, scale: float) -> np.ndarray:
    """(length,) int64: the cell (row or column of the grid) holding each pixel along one side.

    Cell ``c`` starts at pixel ``ceil(c * scale - 1/2)`` (``c * scale`` for an int scale, a
    ViT's patch size): the first pixel whose centre lies in it, the edges that
    :func:`masks_boxes` of the pixel mask gives back for the box of the cells.
    """
    if isinstance(scale, int):
        return np.minimum(np.arange(length) // scale, cells - 1)
    starts = np.ceil(float(scale) * np.arange(cells + 1) - 0.5)
    return np.clip(np.searchsorted(starts, np.arange(length), side="right") - 1, 0, cells - 1)


def patch_masks_to_pixels(patch_masks: np.ndarray, scales: tuple[float, float], image_size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) bool patch masks -> (K, H, W) bool masks of the unpadded (H, W) image, each
    pixel taking the value of its cell (:func:`pixel_cells`); cells past the image are cut off.

    For an int scale the mask's box (:func:`masks_boxes`) is the cells' box of :func:`mask_box`;
    for a float scale (CNN features) it is that box with each edge at ``ceil(edge - 1/2)``.
    """
    patch_masks = np.asarray(patch_masks, dtype=bool)
    rows = pixel_cells(image_size[0], patch_masks.shape[1], scales[0])
    cols = pixel_cells(image_size[1], patch_masks.shape[2], scales[1])
    return patch_masks[:, rows][:, :, cols]


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool masks -> (K, H', W') bool at (H', W') ``size``, nearest neighbour with
    half-pixel centres: pixel ``Y`` reads pixel ``floor((Y + 1/2) H / H')`` (exact integers).

    When no side shrinks (the decoded image to its original), every source pixel is read, and the
    masks' boxes are ``data.images.rescale_box`` of their boxes.
    """
    height, width = masks.shape[1:]
    if (height, width) == tuple(size):
        return masks
    rows = (2 * np.arange(size[0]) + 1) * height // (2 * size[0])
    cols = (2 * np.arange(size[1]) + 1) * width // (2 * size[1])
    return masks[:, rows][:, :, cols]


def masks_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of (K, H, W) bool masks: ``(boxes (K, 4) int64 [x1, y1, x2, y2], x2/y2 exclusive,
    empty (K,) bool)``; an empty mask's box is all zeros."""
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    empty = ~rows.any(axis=1)
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    for index in np.flatnonzero(~empty):
        ys, xs = np.flatnonzero(rows[index]), np.flatnonzero(cols[index])
        boxes[index] = [xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]
    return boxes, empty


def drop_largest_region(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the union of every region of the label map but the largest, as published.

    The regions are the 4-connected components of ``mask`` and the background (label 0) taken
    as one region. Usually the background is the largest and this keeps every component; when
    one component outgrows the background, that component is dropped and the background kept
    (the published rule; the IoU test of :func:`refine_mask` then rejects such a mask). Ties:
    the region of highest label is dropped (the published code leaves ties to numpy's unstable
    ``argsort``, whose insertion sort of small arrays does the same).
    """
    labels, count = scipy.ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    largest_first = np.argsort(sizes, kind="stable")[::-1]
    return np.isin(labels, largest_first[1:])


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    """IoU of two bool masks; 0 when both are empty (the published NaN fails every test too)."""
    union = np.logical_or(first, second).sum()
    return float(np.logical_and(first, second).sum() / union) if union else 0.0
