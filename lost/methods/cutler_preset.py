"""CutLER's pseudo-masks (``--method maskcut --preset cutler``): ``maskcut/maskcut.py`` of
facebookresearch/CutLER, its loop and its post-processing as published, split in two parts.

Input: the image resized to ``--fixed_size`` x ``--fixed_size`` (480) with LANCZOS, then to the
nearest multiple of the patch size (TokenCut's ``resize_pil``; a no-op for 480 and patches of 8
or 16), normalized with ImageNet's mean and std (``lost.data.images.fixed_size_images``); the
last block's keys ``(N, d)`` over the grid ``(h, w)``, patch ``row * w + col``.

(a) :func:`cutler_cuts_batch`, on the features' device, a batch at a time. For k = 0 .. N-1
(``max_objects``, 3), as published:

1. Graph: ``W = 1`` where the cosine similarity exceeds ``tau`` (0.15), else ``eps`` (1e-5).
   Cut 0 uses float32 similarities compared with float32 ``tau``; from cut 1 on, the features of
   every patch painted so far are zeroed and, because the published painting is float64, the
   similarities are float64 and compared with float64 ``tau``. A painted patch has similarity 0
   with every patch, itself included, so weight ``eps`` (for ``tau >= 0``).
2. ``v``: the second generalized eigenvector of ``(D - W) v = λ D v``.
3. Published side rule *with LAPACK's sign of v*: ``part = v > mean(v)``; seed ``argmax |v|``; if
   3 or more corner patches are in ``part``, or the seed is not, the part is ``v <= mean(v)`` and
   the seed ``argmax(-v)``; else the seed is ``argmax(v)``.
4. The object: the 4-connected component of the part holding the seed.
5. From cut 1 on, it is dropped (replaced by an empty mask) when its IoU with the previous mask
   (float32, as ``metric.IoU``) exceeds 0.5 or its share ``count / h / w`` is at most 0.01.
   The previous mask is what the last cut left, empty after a drop. The loop goes on: the
   next cut paints nothing new, so it finds the same object again and compares it with the
   empty mask (an object dropped for its overlap comes back one cut later; one dropped for its
   size is dropped again). Here that repeated cut is not solved again: the graph is the same.
6. Mask k is the component less the components of cuts 0 .. k-1 (published: at the image's
   resolution after nearest upsampling, which is the same, cell by cell). It may be empty.

Eigensolver. ``"dense"`` is the published ``scipy.linalg.eigh(D - W, D, subset_by_index=[1, 2])``.
``"auto"`` uses TokenCut's Lanczos solver (``tokencut.second_eigenvector_lanczos``) whenever its
vector decides step 3 and 4 as the published one does for *either* sign, and else solves that
cut densely, so that the masks are the published ones. A Lanczos vector is used only when
(:func:`lanczos_decides`), with ``δ = DECISION_MARGIN · max |v|``:

* no patch is within ``δ`` of ``mean(v)`` (so both vectors give the same two parts);
* the patches within ``δ`` of ``max |v|`` lie in one part, and those within ``δ`` of the
  object's extreme in one component (so ties in the seed do not matter);
* the seed's part holds at most 2 corner patches. This is where LAPACK's sign matters: when the
  seed's part holds 3 or 4 corners, the published code returns the other part if LAPACK's ``v``
  is positive at the seed and the seed's part if it is negative, and that sign comes from
  LAPACK's inverse iteration and back-transformation, which nothing cheaper reproduces. Such cuts
  are solved densely (``CutlerCuts.solvers`` says "dense" for them).

A degenerate graph (all off-diagonal weights equal) is solved densely too: the published code
returns whatever LAPACK picks there. Lanczos and LAPACK both solve to ~1e-12; a vector whose
decisions are within ``1e-6 · max |v|`` of changing goes to LAPACK, so "auto" differs from the
published masks only when the eigengap is below about 1e-6.

(b) :func:`cutler_masks` (picklable, for the engine's worker processes), per mask as published:
nearest upsampling to the fixed-size image, CutLER's CRF (``lost.refine.crf``; skipped for an
empty mask, whose CRF is empty), ``binary_fill_holes`` of ``>= 0.5``, the mask emptied when its
IoU with the unrefined mask is below 0.5 (float32; an empty union is NaN, which keeps it), the
resize back to the original (H, W) as an 8-bit image with Pillow's default filter (bicubic),
and the threshold ``> max / 2`` of the resized mask (``create_annotation_info``).

Scores (the published code has none): ``1 - λ`` of the cut that found the mask, clipped to
[0, 1], at most the previous non-empty mask's score; 0 for an empty mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from lost.methods.maskcut import CORNER_VOTES, MAX_OVERLAP, MIN_SHARE, corner_votes, cut_association
from lost.methods.tokencut import (
    EIGENSOLVERS,
    EPS,
    EigensolverDidNotConverge,
    cosine_affinity,
    graph_weights,
    is_degenerate,
    second_eigenvector_dense,
    second_eigenvector_lanczos,
)
from lost.refine import crf

PRESETS = ("cutler",)
"""The published pipelines ``--preset`` runs as published."""
FIXED_SIZE = 480
TAU = 0.15
MAX_OBJECTS = 3
"""CutLER's README command: ``--fixed_size 480 --tau 0.15 --N 3``."""

CRF_MIN_IOU = 0.5
"""A mask whose CRF result has an IoU below this with it is emptied."""

DECISION_MARGIN = 1e-6
"""Relative distance (to ``max |v|``) below which a Lanczos vector's decision goes to LAPACK."""


@dataclass(frozen=True)
class CutlerCuts:
    """Part (a) for one image.

    patch_masks: (K, h, w) bool, K = ``max_objects``, in the published order; mask k is its
        object's component less the earlier ones; empty when dropped.
    scores: (K,) float64 (see the module docstring).
    solvers: K names, "lanczos", "dense" or "repeat" (the cut after a drop, not solved again).
    """

    patch_masks: np.ndarray
    scores: np.ndarray
    solvers: tuple[str, ...]


@dataclass(frozen=True)
class Cut:
    """One cut: component (N,) bool, the eigenvector's association ``1 - λ``, its solver."""

    component: np.ndarray
    association: float
    solver: str


def published_side(vector: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Step 3 on ``vector: (N,)`` with its own sign: (part (N,) bool, seed)."""
    part = vector > np.sum(vector) / len(vector)
    seed = int(np.argmax(np.abs(vector)))
    if corner_votes(part, grid) >= CORNER_VOTES or not part[seed]:
        return ~part, int(np.argmax(-vector))
    return part, int(np.argmax(vector))


def seed_component(part: np.ndarray, seed: int, grid: tuple[int, int]) -> np.ndarray:
    """Step 4: (N,) bool 4-connected component of ``part`` that holds ``seed``."""
    labels, _ = scipy.ndimage.label(part.reshape(grid))
    labels = labels.reshape(-1)
    return labels == labels[seed]


def lanczos_decides(vector: np.ndarray, grid: tuple[int, int]) -> bool:
    """Whether steps 3-4 on ``vector`` agree with those on any vector within ``DECISION_MARGIN``
    of it, of either sign (see the module docstring)."""
    margin = DECISION_MARGIN * np.abs(vector).max()
    offsets = vector - np.sum(vector) / len(vector)
    if np.abs(offsets).min() <= margin:
        return False
    magnitudes = np.abs(vector)
    seed_candidates = magnitudes >= magnitudes.max() - margin
    seed_side = offsets > 0 if offsets[np.argmax(magnitudes)] > 0 else offsets < 0
    if seed_side[seed_candidates].any() != seed_side[seed_candidates].all():
        return False
    if corner_votes(seed_side, grid) >= CORNER_VOTES:
        return False
    oriented = vector if offsets[np.argmax(magnitudes)] > 0 else -vector
    extremes = np.flatnonzero(oriented >= oriented.max() - margin)
    component = seed_component(seed_side, int(extremes[0]), grid)
    return bool(component[extremes].all())


def solve_cut(weights: torch.Tensor, grid: tuple[int, int], eigensolver: str) -> Cut:
    """Steps 2-4 on ``weights: (N, N)`` float64: the published component, by Lanczos when it
    decides it (``eigensolver="auto"``), else by the published dense solve."""
    vector, solver = None, "dense"
    if eigensolver == "auto" and not is_degenerate(weights):
        try:
            candidate = second_eigenvector_lanczos(weights).cpu().numpy()
        except EigensolverDidNotConverge:
            candidate = None
        if candidate is not None and lanczos_decides(candidate, grid):
            vector, solver = candidate, "lanczos"
    if vector is None:
        vector = second_eigenvector_dense(weights.cpu().numpy())
    part, seed = published_side(vector, grid)
    return Cut(seed_component(part, seed, grid), cut_association(weights, vector), solver)


def is_dropped(component: np.ndarray, previous: np.ndarray, grid: tuple[int, int]) -> bool:
    """Step 5 as published: float32 IoU with the previous mask > 0.5, or ``count / h / w <= 0.01``."""
    union = np.count_nonzero(component | previous)
    iou = np.float32(np.count_nonzero(component & previous)) / np.float32(union)
    share = float(np.count_nonzero(component)) / grid[0] / grid[1]
    return bool(iou > MAX_OVERLAP) or share <= MIN_SHARE


def painted_weights(unit64: torch.Tensor, painted: np.ndarray, tau: float, eps: float) -> torch.Tensor:
    """Step 1 from cut 1 on: (N, N) float64 weights of the float64 unit features ``unit64: (N, d)``
    with the ``painted: (N,) bool`` patches zeroed."""
    keep = torch.as_tensor(~painted, device=unit64.device)
    features = unit64 * keep[:, None]
    similarity = features @ features.T
    one = torch.ones((), dtype=torch.float64, device=unit64.device)
    return torch.where(similarity > tau, one, torch.full_like(one, eps))


def cutler_cuts(
    feats: torch.Tensor,
    grid: tuple[int, int],
    tau: float = TAU,
    max_objects: int = MAX_OBJECTS,
    eigensolver: str = "auto",
    eps: float = EPS,
) -> CutlerCuts:
    """Part (a) on one image: ``feats: (N, d)`` keys over ``grid: (h, w)``, on any device."""
    unit64 = F.normalize(feats.double(), p=2, dim=1)
    painted = np.zeros(feats.shape[0], dtype=bool)
    previous = painted
    cuts: list[Cut] = []
    for index in range(max_objects):
        if index == 0:
            found = solve_cut(graph_weights(cosine_affinity(feats), tau, eps), grid, eigensolver)
        elif previous.any():
            painted = painted | previous
            found = solve_cut(painted_weights(unit64, painted, tau, eps), grid, eigensolver)
        else:
            found = Cut(found.component, found.association, "repeat")
        kept = index == 0 or not is_dropped(found.component, previous, grid)
        cuts.append(found if kept else Cut(np.zeros_like(found.component), found.association, found.solver))
        previous = cuts[-1].component
    return CutlerCuts(
        patch_masks=subtracted_masks([cut.component for cut in cuts]).reshape(max_objects, *grid),
        scores=mask_scores([cut.component for cut in cuts], [cut.association for cut in cuts]),
        solvers=tuple(cut.solver for cut in cuts),
    )


def subtracted_masks(components: list[np.ndarray]) -> np.ndarray:
    """Step 6: (K, N) bool, each component less the union of the earlier ones."""
    taken = np.zeros_like(components[0])
    masks = []
    for component in components:
        masks.append(component & ~taken)
        taken = taken | component
    return np.stack(masks)


def mask_scores(components: list[np.ndarray], associations: list[float]) -> np.ndarray:
    """(K,) float64: clipped associations, non-increasing over the non-empty masks, 0 for empty ones."""
    masks = subtracted_masks(components)
    scores = np.zeros(len(components))
    best = 1.0
    for index, (mask, association) in enumerate(zip(masks, associations, strict=True)):
        if mask.any():
            best = min(best, float(np.clip(association, 0.0, 1.0)))
            scores[index] = best
    return scores


def cutler_cuts_batch(
    feats: torch.Tensor,
    grid: tuple[int, int],
    tau: float = TAU,
    max_objects: int = MAX_OBJECTS,
    eigensolver: str = "auto",
    eps: float = EPS,
) -> list[CutlerCuts]:
    """Part (a) on a batch: ``feats: (B, N, d)`` keys of B fixed-size images over one grid (h, w).

    Raises ValueError for a grid that does not match N (or N < 3), an unknown eigensolver,
    ``eps <= 0``, ``tau < 0`` (painted patches would become edges) or ``max_objects < 1``.
    """
    if feats.shape[1] != grid[0] * grid[1] or feats.shape[1] < 3:
        raise ValueError(f"feats hold {feats.shape[1]} patches for the grid {grid}: need h * w of them, at least 3")
    if eigensolver not in EIGENSOLVERS:
        raise ValueError(f"eigensolver {eigensolver!r} is not one of {EIGENSOLVERS}")
    if not eps > 0 or not tau >= 0 or max_objects < 1:
        raise ValueError(f"need eps > 0, tau >= 0 and max_objects >= 1 (got {eps}, {tau}, {max_objects})")
    return [cutler_cuts(image_feats, grid, tau, max_objects, eigensolver, eps) for image_feats in feats]


# ----------------------------------------------------------------------------------------------
# (b) Post-processing, per image, in the engine's worker processes


@dataclass(frozen=True)
class CutlerItem:
    """What a worker process needs for one image: pixels (S, S, 3) uint8, the fixed-size image
    the CRF sees; the image's :class:`CutlerCuts`; its original (H, W)."""

    pixels: np.ndarray
    cuts: CutlerCuts
    original_size: tuple[int, int]


@dataclass(frozen=True)
class CutlerMasks:
    """The preset's output for one image: masks (K, H, W) bool in original pixels, in the
    published order (empty ones included: they get no annotation); scores (K,) float64, 0 for
    an empty mask."""

    masks: np.ndarray
    scores: np.ndarray


def upsampled_mask(patch_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool -> (S, S) float64 0/1, torch's nearest upsampling as published."""
    tensor = torch.from_numpy(patch_mask.astype(np.float64))[None, None]
    return F.interpolate(tensor, size=size, mode="nearest")[0, 0].numpy()


def published_iou(first: np.ndarray, second: np.ndarray) -> float:
    """TokenCut's ``metric.IoU`` of two masks (> 0.5 is in): float32 ratio, NaN for an empty union."""
    first, second = first > 0.5, second > 0.5
    union = np.float32(np.count_nonzero(first | second))
    with np.errstate(invalid="ignore"):
        return float(np.float32(np.count_nonzero(first & second)) / union)


def resized_back(mask: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(S, S) bool -> (H, W) bool: 8-bit image, Pillow's default resize (bicubic), ``> max / 2``."""
    height, width = original_size
    resized = np.asarray(Image.fromarray(np.uint8(mask * 255)).resize((width, height), Image.BICUBIC))
    upper = int(resized.max())
    return resized > upper / 2.0 if upper else np.zeros(original_size, dtype=bool)


def refined_mask(pixels: np.ndarray, patch_mask: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """One patch mask -> (H, W) bool: upsampling, CRF, hole filling, the IoU rule, resize back."""
    if not patch_mask.any():
        return np.zeros(original_size, dtype=bool)
    coarse = upsampled_mask(patch_mask, pixels.shape[:2])
    refined = scipy.ndimage.binary_fill_holes(crf.dense_crf(pixels, coarse))
    if published_iou(coarse, refined) < CRF_MIN_IOU:
        return np.zeros(original_size, dtype=bool)
    return resized_back(refined, original_size)


def cutler_masks(pixels: np.ndarray, patch_masks: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Part (b): pixels (S, S, 3) uint8 (the fixed-size image), patch_masks (K, h, w) bool,
    original_size (H, W) -> (K, H, W) bool masks in original pixels, as published."""
    return np.stack([refined_mask(pixels, mask, tuple(original_size)) for mask in patch_masks])


def cutler_postprocess(item: CutlerItem) -> CutlerMasks:
    """Part (b) of one image with its scores, for ``lost.engine.postprocess.map_in_workers``."""
    masks = cutler_masks(item.pixels, item.cuts.patch_masks, item.original_size)
    return CutlerMasks(masks=masks, scores=np.where(masks.any(axis=(1, 2)), item.cuts.scores, 0.0))
