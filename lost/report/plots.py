"""The pictures of the run report, from plain numbers and boxes: PNG plots and JPEG thumbnails.

Plots use matplotlib's object API (``Figure`` then ``savefig``: the Agg renderer, no pyplot and
no global backend state), so they can be drawn from any thread or process without a display.
matplotlib is imported when the first plot is drawn, not with this module: a run that writes no
report never pays its import (about 0.4 s).
Thumbnails are drawn with Pillow, boxes ``[x1, y1, x2, y2]`` in pixels of the original image
(x2/y2 exclusive) scaled to the thumbnail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lost.data.images import load_rgb, rescale_box
from lost.errors import LostError
from lost.viz.pictures import draw_box

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

DPI = 96
BAR_COLOR = "#4c72b0"
REFERENCE_COLOR = "#c44e52"
MISSING_IMAGE_GREY = (128, 128, 128)

Colour = tuple[int, int, int]
Outline = tuple[np.ndarray, Colour, int]


def _new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure of `width` x `height` inches (matplotlib is imported on the first call)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _integer_ticks(axis: Axis) -> None:
    """Ticks of `axis` at whole numbers only (counts of images)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, format="png")


def plot_corloc_bars(
    labels: Sequence[str], corlocs: Sequence[float], counts: Sequence[int], overall: float, path: Path, title: str
) -> None:
    """Horizontal bars of CorLoc (%) per label, the first label at the top, each annotated with
    its image count, and a dashed line at the `overall` CorLoc."""
    rows = max(len(labels), 1)
    figure = _new_figure(7.5, 1.0 + 0.26 * rows)
    axes = figure.subplots()
    positions = np.arange(len(labels))[::-1]
    axes.barh(positions, corlocs, color=BAR_COLOR, height=0.7)
    axes.axvline(overall, color=REFERENCE_COLOR, linestyle="--", linewidth=1, label=f"all images: {overall:.1f}")
    for position, corloc, count in zip(positions, corlocs, counts, strict=True):
        axes.text(min(corloc, 100) + 1, position, f"{corloc:.1f} (n={count})", va="center", fontsize=8)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlim(0, 118)
    axes.set_ylim(-0.6, rows - 0.4)
    axes.set_xlabel("CorLoc (%)")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    _save(figure, path)


def plot_binned_corloc(
    panels: Sequence[tuple[str, Sequence[str], Sequence[float], Sequence[int]]], overall: float, path: Path
) -> None:
    """Side-by-side panels of vertical CorLoc (%) bars; each panel is (title, labels, corlocs,
    counts), a bar annotated with its CorLoc and image count; a dashed line marks the `overall`
    CorLoc."""
    figure = _new_figure(4.0 * len(panels), 3.4)
    for axes, (title, labels, corlocs, counts) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        positions = np.arange(len(labels))
        axes.bar(positions, corlocs, color=BAR_COLOR, width=0.7)
        axes.axhline(overall, color=REFERENCE_COLOR, linestyle="--", linewidth=1)
        for position, corloc, count in zip(positions, corlocs, counts, strict=True):
            text = f"{corloc:.1f}\nn={count}" if count else "no images"
            axes.text(position, corloc + 1.5, text, ha="center", va="bottom", fontsize=8)
        axes.set_xticks(positions, labels, fontsize=8)
        axes.set_ylim(0, 122)
        axes.set_ylabel("CorLoc (%)")
        axes.set_title(title, fontsize=10)
    _save(figure, path)


def plot_counts(labels: Sequence[str], counts: Sequence[int], path: Path, title: str) -> None:
    """Horizontal bars of counts, the first label at the top, each annotated with its count."""
    figure = _new_figure(5.0, 1.0 + 0.35 * max(len(labels), 1))
    axes = figure.subplots()
    positions = np.arange(len(labels))[::-1]
    axes.barh(positions, counts, color=REFERENCE_COLOR, height=0.6)
    for position, count in zip(positions, counts, strict=True):
        axes.text(count, position, f" {count}", va="center", fontsize=8)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlim(0, max([*counts, 1]) * 1.15)
    _integer_ticks(axes.xaxis)
    axes.set_xlabel("images")
    axes.set_title(title, fontsize=10)
    _save(figure, path)


def plot_share_histograms(series: Mapping[str, np.ndarray], path: Path, title: str) -> None:
    """Step histograms (5%-wide bins from 0 to 100%) of area shares in [0, 1], one per series."""
    figure = _new_figure(5.6, 3.2)
    axes = figure.subplots()
    edges = np.linspace(0, 100, 21)
    for (label, shares), color in zip(series.items(), (REFERENCE_COLOR, BAR_COLOR), strict=False):
        axes.hist(
            np.clip(np.asarray(shares) * 100, 0, 100),
            bins=edges,
            histtype="step",
            linewidth=2,
            color=color,
            label=label,
        )
    axes.set_xlim(0, 100)
    _integer_ticks(axes.yaxis)
    axes.set_xlabel("share of the image area (%)")
    axes.set_ylabel("images")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    _save(figure, path)


def plot_paired_corloc(
    labels: Sequence[str],
    corlocs_a: Sequence[float],
    corlocs_b: Sequence[float],
    names: tuple[str, str],
    colours: tuple[Colour, Colour],
    path: Path,
) -> None:
    """Pairs of horizontal CorLoc (%) bars per label (A above B, in `colours`), the first label
    at the top."""
    rows = max(len(labels), 1)
    figure = _new_figure(7.5, 1.2 + 0.42 * rows)
    axes = figure.subplots()
    positions = np.arange(len(labels))[::-1].astype(np.float64)
    for offset, corlocs, name, colour in zip((0.19, -0.19), (corlocs_a, corlocs_b), names, colours, strict=True):
        axes.barh(positions + offset, corlocs, height=0.38, color=np.array(colour) / 255, label=name)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlim(0, 105)
    axes.set_ylim(-0.6, rows - 0.4)
    axes.set_xlabel("CorLoc (%)")
    axes.legend(loc="lower right", fontsize=8)
    _save(figure, path)


def fitted_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled, up or down, so that the longer side is `side` (each at least 1)."""
    scale = side / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(path: Path | None, image_size: tuple[int, int], outlines: Sequence[Outline], side: int) -> Image.Image:
    """The image at `path` (original size (H, W) `image_size`) scaled, up or down, so that its
    longer side is `side`, with each (box, colour, line width) of `outlines` drawn in turn inside
    the box; a grey canvas of that size when the file is absent or unreadable. Large JPEGs are
    decoded at reduced scale first."""
    target = fitted_size(image_size[1], image_size[0], side)
    try:
        picture = load_rgb(path, side) if path is not None else None
    except LostError:
        picture = None
    if picture is None:
        picture = Image.new("RGB", target, MISSING_IMAGE_GREY)
    elif picture.size != target:
        picture = picture.resize(target, Image.BICUBIC)
    to_size = (picture.height, picture.width)
    for box, colour, width in outlines:
        picture = draw_box(picture, rescale_box(np.asarray(box), image_size, to_size), colour, width=width)
    return picture


def save_jpeg(picture: Image.Image, path: Path) -> None:
    """Write `picture` as a JPEG (quality 85)."""
    picture.save(path, format="JPEG", quality=85)
