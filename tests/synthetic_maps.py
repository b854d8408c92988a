"""Synthetic d = 384 feature maps with the statistics of ViT keys, seeded, for TokenCut's and
MaskCut's tests and for ``bench/tokencut_agreement.py``.

* "vit-like": a few random prototypes mixed over smooth random segments, a shared component
  (ViT keys share a large mean) and patch noise, so that the graph's edge density varies;
* "planted": the same kind of background with a rectangle of its own prototype (the object);
* "noise": independent patch features around a shared component, no spatial structure at all.

Every map is ``(h * w, 384) float32`` with patch index ``row * w + col``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_DIM = 384


def smooth_mixture(grid: tuple[int, int], components: int, sharpness: float, rng: np.random.Generator) -> torch.Tensor:
    """(h * w, components) soft assignment of every cell to smooth random segments."""
    coarse = torch.as_tensor(rng.normal(size=(1, components, int(rng.integers(3, 7)), int(rng.integers(3, 7)))))
    logits = F.interpolate(coarse, size=grid, mode="bilinear", align_corners=False)[0]
    return torch.softmax(logits * sharpness, dim=0).reshape(components, -1).T


def vit_like_map(grid: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """(h * w, 384) float32: prototypes over smooth segments + a shared component + noise."""
    components = int(rng.integers(2, 9))
    weights = smooth_mixture(grid, components, float(rng.uniform(1.0, 6.0)), rng)
    prototypes = torch.as_tensor(rng.normal(size=(components, FEATURE_DIM)))
    shared = torch.as_tensor(rng.normal(size=FEATURE_DIM)) * float(rng.uniform(0.0, 0.6))
    noise = torch.as_tensor(rng.normal(size=(grid[0] * grid[1], FEATURE_DIM))) * float(rng.uniform(0.3, 1.2))
    return (weights @ prototypes + shared + noise).float()


def planted_map(grid: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """(h * w, 384) float32: a vit-like background with a rectangle of one more prototype."""
    rows, cols = grid
    feats = vit_like_map(grid, rng).reshape(rows, cols, FEATURE_DIM)
    height, width = int(rng.integers(2, rows * 2 // 3)), int(rng.integers(2, cols * 2 // 3))
    top, left = int(rng.integers(0, rows - height + 1)), int(rng.integers(0, cols - width + 1))
    noise = torch.as_tensor(rng.normal(size=(height, width, FEATURE_DIM))).float() * float(rng.uniform(0.3, 1.2))
    feats[top : top + height, left : left + width] = torch.as_tensor(rng.normal(size=FEATURE_DIM)).float() * 2 + noise
    return feats.reshape(rows * cols, FEATURE_DIM)


def noise_map(grid: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """(h * w, 384) float32: i.i.d. Gaussian patches plus a shared component (edge density 0-1)."""
    shared = torch.as_tensor(rng.normal(size=FEATURE_DIM)) * float(rng.uniform(0.3, 0.7))
    return (torch.as_tensor(rng.normal(size=(grid[0] * grid[1], FEATURE_DIM))) + shared).float()


KINDS = {"vit-like": vit_like_map, "planted": planted_map, "noise": noise_map}
