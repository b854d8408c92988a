"""Pictures of what the methods did, as PNG files: the box, the paper's maps, the expansion, the cut,
every box of a multi-object method with its rank and score, every object's mask.

Every function takes the original RGB image and values over the feature grid ``(h, w)`` =
(rows, cols), with ``scales = (sy, sx)`` image pixels per cell and boxes ``[x1, y1, x2, y2]`` in
image pixels (x2/y2 exclusive). Maps are drawn cell by cell over the image, cropped to its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw

from lost.errors import writing
from lost.geometry import cells_to_box

if TYPE_CHECKING:  # result types only; the methods draw through lost.viz, never the reverse
    from lost.methods.found import FoundResult
    from lost.methods.tokencut import TokenCutResult

BOX_COLOR = (255, 32, 32)
SEED_BOX_COLOR = (40, 120, 255)
SEED_COLOR = (255, 220, 0)
VIRIDIS_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)
KINDS = ("pred", "fms", "seed_expansion")
RANK_COLORS = (
    (255, 32, 32), (40, 120, 255), (40, 200, 80), (255, 160, 0), (200, 60, 220), (0, 210, 210), (250, 250, 250),
)  # fmt: skip
"""Box colours by rank (best first), cycling after the last."""
LABEL_TEXT_COLOR = (0, 0, 0)


def seed_cell_box(seed: int, grid: tuple[int, int], scales: tuple[float, float], image_size: tuple[int, int]) -> np.ndarray:
    """Pixel box ``[x1, y1, x2, y2]`` (x2/y2 exclusive) of the seed patch's cell."""
    row, col = divmod(int(seed), grid[1])
    return cells_to_box(row, col, row + 1, col + 1, scales, image_size)


def inclusive_corners(box: np.ndarray) -> list[float]:
    """``[x1, y1, x2, y2]`` (x2/y2 exclusive) as the inclusive corners PIL draws, at least one
    pixel wide and high (a box thinner than a pixel, e.g. on a thumbnail, stays visible)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)]


def draw_box(image: Image.Image, box: np.ndarray, color: tuple[int, int, int], width: int = 3) -> Image.Image:
    """A copy of ``image`` with the outline of ``box`` (exclusive x2/y2) drawn inside its pixels."""
    out = image.copy()
    ImageDraw.Draw(out).rectangle(inclusive_corners(box), outline=color, width=width)
    return out


def fill_box(image: Image.Image, box: np.ndarray, color: tuple[int, int, int], alpha: float = 0.6) -> Image.Image:
    """A copy of ``image`` with ``box`` filled by ``color`` at opacity ``alpha``."""
    overlay = image.copy()
    ImageDraw.Draw(overlay).rectangle(inclusive_corners(box), fill=color)
    return Image.blend(image, overlay, alpha)


def colorize(values: np.ndarray) -> np.ndarray:
    """(h, w) values scaled to [0, 1] by min/max, as (h, w, 3) uint8 viridis-like colors."""
    values = values.astype(np.float64)
    span = values.max() - values.min()
    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    position = scaled * (len(VIRIDIS_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(VIRIDIS_ANCHORS) - 2)
    weight = (position - low)[..., None]
    colors = VIRIDIS_ANCHORS[low] * (1 - weight) + VIRIDIS_ANCHORS[low + 1] * weight
    return colors.round().astype(np.uint8)


def grid_to_image(colors: np.ndarray, scales: tuple[float, float], image_size: tuple[int, int]) -> Image.Image:
    """(h, w, 3) cell colors blown up to cells of (sy, sx) pixels, cropped to (H, W)."""
    rows, cols = colors.shape[:2]
    padded = (round(cols * scales[1]), round(rows * scales[0]))
    picture = Image.fromarray(colors).resize(padded, Image.NEAREST)
    return picture.crop((0, 0, image_size[1], image_size[0]))


def side_by_side(panels: list[Image.Image], gap: int = 8) -> Image.Image:
    """Panels of one height placed left to right on a white canvas."""
    width = sum(panel.width for panel in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(panel.height for panel in panels)), (255, 255, 255))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


def prediction_picture(
    image: Image.Image,
    box: np.ndarray,
    seed: int | None = None,
    grid: tuple[int, int] | None = None,
    scales: tuple[float, float] | None = None,
) -> Image.Image:
    """The image with the predicted box in red and, when given, the seed patch in yellow."""
    picture = image
    if seed is not None and grid is not None and scales is not None:
        image_size = (image.height, image.width)
        picture = fill_box(picture, seed_cell_box(seed, grid, scales, image_size), SEED_COLOR)
    return draw_box(picture, box, BOX_COLOR)


def ranked_boxes_picture(image: Image.Image, boxes: np.ndarray, scores: np.ndarray) -> Image.Image:
    """Every box of ``boxes: (K, 4)`` (best first) on the image, box k in ``RANK_COLORS[k]``
    (cycling), labelled ``"<k + 1>: <score>"`` on a patch of its colour at its top-left corner;
    the best box is drawn last, so it is on top. scores: (K,)."""
    picture = image.copy()
    draw = ImageDraw.Draw(picture)
    for rank in reversed(range(len(boxes))):
        color = RANK_COLORS[rank % len(RANK_COLORS)]
        x1, y1 = (float(v) for v in boxes[rank][:2])
        draw.rectangle(inclusive_corners(boxes[rank]), outline=color, width=3)
        text = f"{rank + 1}: {float(scores[rank]):.2f}"
        left, top, right, bottom = draw.textbbox((x1 + 3, y1 + 3), text)
        draw.rectangle([left - 2, top - 2, right + 1, bottom + 1], fill=color)
        draw.text((x1 + 3, y1 + 3), text, fill=LABEL_TEXT_COLOR)
    return picture


def masks_picture(image: Image.Image, masks: np.ndarray, scores: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Every mask of ``masks: (K, H, W)`` bool (the image's pixels, best first) over the image,
    mask k blended in ``RANK_COLORS[k]`` (cycling) at opacity ``alpha``, and labelled
    ``"<k + 1>: <score>"`` on a patch of its colour at the top-left corner of its box; the best
    mask is painted last, so it is on top. An empty mask is not drawn. scores: (K,)."""
    pixels = np.asarray(image, dtype=np.float64).copy()
    for rank in reversed(range(len(masks))):
        color = np.asarray(RANK_COLORS[rank % len(RANK_COLORS)], dtype=np.float64)
        pixels[masks[rank]] = (1 - alpha) * pixels[masks[rank]] + alpha * color
    picture = Image.fromarray(np.round(pixels).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for rank in reversed(range(len(masks))):
        rows, cols = np.nonzero(masks[rank])
        if len(rows) == 0:
            continue
        text = f"{rank + 1}: {float(scores[rank]):.2f}"
        left, top, right, bottom = draw.textbbox((int(cols.min()) + 3, int(rows.min()) + 3), text)
        draw.rectangle([left - 2, top - 2, right + 1, bottom + 1], fill=RANK_COLORS[rank % len(RANK_COLORS)])
        draw.text((int(cols.min()) + 3, int(rows.min()) + 3), text, fill=LABEL_TEXT_COLOR)
    return picture


def feature_maps_picture(
    image: Image.Image,
    seed_similarity: torch.Tensor,
    degrees: torch.Tensor,
    seed: int,
    grid: tuple[int, int],
    scales: tuple[float, float],
) -> Image.Image:
    """The paper's Figure 2: image with the seed | seed's binarized correlation | inverse degree.

    seed_similarity: (N,) row ``A[seed, :]``; degrees: (N,) patch degrees. The middle panel is
    yellow where ``A[seed, j] > 0``; the right one maps ``1 / degree`` (brightest = lowest degree).
    """
    image_size = (image.height, image.width)
    positive = (seed_similarity.reshape(grid) > 0).cpu().numpy()
    correlation = np.where(positive[..., None], np.array(SEED_COLOR, np.uint8), np.uint8(30))
    inverse_degree = 1.0 / (degrees.reshape(grid).double().cpu().numpy() + 1.0)
    seed_box = seed_cell_box(seed, grid, scales, image_size)
    panels = [
        draw_box(image, seed_box, BOX_COLOR),
        draw_box(grid_to_image(correlation.astype(np.uint8), scales, image_size), seed_box, BOX_COLOR),
        draw_box(grid_to_image(colorize(inverse_degree), scales, image_size), seed_box, BOX_COLOR),
    ]
    return side_by_side(panels)


def seed_expansion_picture(
    image: Image.Image,
    seed: int,
    seed_box: np.ndarray,
    box: np.ndarray,
    grid: tuple[int, int],
    scales: tuple[float, float],
) -> Image.Image:
    """The paper's Figure 3: seed patch (yellow), box before expansion (blue), after (red)."""
    picture = fill_box(image, seed_cell_box(seed, grid, scales, (image.height, image.width)), SEED_COLOR)
    picture = draw_box(picture, seed_box, SEED_BOX_COLOR, width=2)
    return draw_box(picture, box, BOX_COLOR)


def save_png(picture: Image.Image, folder: Path, image_name: str, kind: str) -> Path:
    """Write ``<folder>/<image stem>_<kind>.png`` and return its path; an image of a tree, named
    by its path (``n01/x.JPEG``), gets its folders too (``<folder>/n01/x_<kind>.png``)."""
    name = Path(image_name)
    path = folder / name.parent / f"{name.stem}_{kind}.png"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
    return path


def found_picture(
    image: Image.Image, result: FoundResult, grid: tuple[int, int], scales: tuple[float, float]
) -> Image.Image:
    """FOUND's result: the image with its box in red | its foreground patches in yellow over the image.

    result.mask: (N,) bool over the grid (h, w); the box is ``[x1, y1, x2, y2]``, x2/y2 exclusive.
    """
    image_size = (image.height, image.width)
    mask = result.mask.reshape(grid).cpu().numpy()
    colors = np.where(mask[..., None], np.array(SEED_COLOR, np.uint8), np.uint8(30)).astype(np.uint8)
    overlay = Image.blend(image, grid_to_image(colors, scales, image_size), 0.6)
    return side_by_side([draw_box(image, result.box, BOX_COLOR), overlay])


def tokencut_picture(
    image: Image.Image, result: TokenCutResult, grid: tuple[int, int], scales: tuple[float, float]
) -> Image.Image:
    """TokenCut's cut: image with box and seed | second eigenvector | bipartition, box in each.

    The middle panel maps ``v`` (oriented so that the seed's side is positive: brightest = most
    object-like); the right one is yellow on the seed's side of the bipartition (``result.partition``).
    """
    image_size = (image.height, image.width)
    eigenvector = colorize(result.eigenvector.reshape(grid))
    partition = np.where(result.partition.reshape(grid)[..., None], np.array(SEED_COLOR, np.uint8), np.uint8(30))
    panels = [
        prediction_picture(image, result.box, result.seed, grid, scales),
        draw_box(grid_to_image(eigenvector, scales, image_size), result.box, BOX_COLOR),
        draw_box(grid_to_image(partition.astype(np.uint8), scales, image_size), result.box, BOX_COLOR),
    ]
    return side_by_side(panels)
