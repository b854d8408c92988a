"""LOST as the published code computes it, for tests (and the benchmark's baseline) to compare with.

A transcription of the published computation, kept apart from ``object_discovery`` on purpose:
it builds the whole (N, N) similarity matrix and sorts the way the paper's code does.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch


def published_style_lost(
    feats: torch.Tensor, grid: tuple[int, int], patch: int, size: tuple[int, int], k: int
) -> tuple[list[int], int]:
    """LOST as the published code computes it, on the whole (N, N) similarity matrix: zeroed
    diagonal and negatives, -degree sorted as float32 by the unstable descending argsort,
    expansion over whole rows. feats: (N, d) on any device; size: (H, W). Returns (box, seed)."""
    similarity = feats @ feats.T
    positive = similarity.clone()
    positive.fill_diagonal_(0)
    positive[positive < 0] = 0
    order = torch.argsort(-torch.sum(positive > 0, dim=1).type(torch.float32), descending=True)
    seed = order[0]
    potentials = order[:k]
    similars = potentials[similarity[seed, potentials] > 0.0]
    expansion = torch.sum(similarity[similars, :], dim=0)
    labels, _ = scipy.ndimage.label(expansion.reshape(grid).cpu().numpy() > 0.0)
    rows, cols = np.nonzero(labels == labels[np.unravel_index(int(seed), grid)])
    box = [
        int(cols.min()) * patch,
        int(rows.min()) * patch,
        min(int(cols.max() + 1) * patch, size[1]),
        min(int(rows.max() + 1) * patch, size[0]),
    ]
    return box, int(seed)
