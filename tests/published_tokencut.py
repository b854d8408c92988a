"""TokenCut as the published code computes it, for tests (and the benchmark's reference loop) to
compare with: dense float64 ``scipy.linalg.eigh(D - W, D, subset_by_index=[1, 2])`` on the whole
(N, N) graph, split at the mean, flipped when the seed is outside, box of the seed's component.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F


def published_eigenvector(feats, tau, eps, no_binary_graph):
    """Steps 1-3 of the published computation, operation by operation: (N, d) -> (N,) v."""
    feats = F.normalize(feats, p=2)
    affinity = (feats @ feats.transpose(1, 0)).numpy()
    if no_binary_graph:
        affinity[affinity < tau] = eps
    else:
        affinity = affinity > tau
        affinity = np.where(affinity.astype(float) == 0, eps, affinity)
    degree_matrix = np.diag(np.sum(affinity, axis=1))
    _, eigenvectors = scipy.linalg.eigh(degree_matrix - affinity, degree_matrix, subset_by_index=[1, 2])
    return eigenvectors[:, 0]


def published_cut(vector, grid, scales, image_size, seed=None):
    """Steps 4-5 of the published computation. ``seed=None``: its ``np.argmax``; else the given
    seed, as if the argmax had picked it among tied magnitudes. Returns (box, seed, v, parts)."""
    vector = np.copy(vector)
    average = np.sum(vector) / len(vector)
    parts = vector > average
    if seed is None:
        seed = np.argmax(np.abs(vector))
    if parts[seed] != 1:
        vector = vector * -1
        parts = np.logical_not(parts)
    objects, _ = scipy.ndimage.label(parts.reshape(grid).astype(float))
    rows, cols = np.where(objects == objects[np.unravel_index(seed, grid)])
    box = [scales[1] * min(cols), scales[0] * min(rows), scales[1] * (max(cols) + 1), scales[0] * (max(rows) + 1)]
    box[2] = min(box[2], image_size[1])
    box[3] = min(box[3], image_size[0])
    return np.asarray(box), int(seed), vector, parts


def published_style_tokencut(
    feats: torch.Tensor, grid: tuple[int, int], patch: int, size: tuple[int, int], tau: float = 0.2, eps: float = 1e-5
) -> tuple[list[int], int]:
    """TokenCut's published computation on one image's keys feats: (N, d) (binary graph).
    size: (H, W) unpadded. Returns (box [x1, y1, x2, y2] as ints, seed)."""
    vector = published_eigenvector(feats.float(), tau, eps, no_binary_graph=False)
    box, seed, _, _ = published_cut(vector, grid, (patch, patch), size)
    return [int(value) for value in box], seed
