"""Synthetic photographs, seeded: a smooth colour ramp with noise and three coloured ellipses,
for the backbone tests and for ``bench/`` (which imports them from here).

``VOC_SIZES`` holds (width, height) in roughly VOC07's proportions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VOC_SIZES = (
    [(500, 375)] * 8
    + [(375, 500)] * 4
    + [(500, 333)] * 4
    + [(333, 500)] * 2
    + [
        (500, 400),
        (500, 281),
        (480, 360),
        (353, 500),
        (500, 366),
        (400, 500),
    ]
)
"""(width, height) drawn in these proportions, roughly VOC07's: 500x375 and 375x500 dominate."""


def draw_scene(
    rng: np.random.Generator, width: int, height: int, noise: float = 10.0, smallest: int = 5
) -> Image.Image:
    """A `width` x `height` RGB image: a horizontal ramp of a random colour plus Gaussian noise
    (standard deviation `noise`), and three ellipses of random colours whose sides are between
    1/`smallest` and 1/2 of the image's, all drawn from `rng`."""
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(40, 200, size=(1, 1, 3))
    grain = rng.normal(0, noise, size=(height, width, 3))
    image = Image.fromarray(np.clip(ramp + 30 + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x1, y1 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        x2 = x1 + rng.integers(width // smallest, width // 2)
        y2 = y1 + rng.integers(height // smallest, height // 2)
        draw.ellipse([x1, y1, x2, y2], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


def make_images(folder: Path, count: int, sizes: list[tuple[int, int]], seed: int = 0) -> None:
    """``count`` JPEGs ``000000.jpg``, ``000001.jpg``, ... in `folder`, sizes (width, height)
    cycling through `sizes`, drawn one after the other from one generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        draw_scene(rng, width, height, noise=12.0, smallest=6).save(folder / f"{index:06d}.jpg", quality=90)
