"""MaskCut (Wang et al., CVPR 2023, the pseudo-mask generator of CutLER): several objects per
image by repeated normalized cuts of TokenCut's patch graph, as pure functions.

For one image with patch features ``F: (N, d)`` over a grid ``(h, w)`` = (rows, cols) (TokenCut's
conventions, see ``tokencut.py``), at most ``max_objects`` times:

1. TokenCut's binary graph ``W`` on ``F`` with the patches of the objects found so far *removed*:
   their features are zeroed, so their cosine similarity with every patch (themselves included)
   is 0 and their weight is the graph's weight of a similarity 0 (``eps`` for ``tau >= 0``). The
   similarities are computed once per image; removing patches sets their rows and columns of ``W``.
2. TokenCut's second generalized eigenvector ``v`` of ``(D - W) v = λ D v`` (the same solvers:
   ``"auto"`` Lanczos, ``"dense"`` the published ``eigh``), signed positive at its largest
   ``|v|``, the seed (``tokencut.bipartition``).
3. Which side is the object (CutLER's object-centric prior): if at least 3 of the 4 corner patches
   lie strictly above the mean on the seed's side (``v > mean(v)``), the object is the other part:
   ``v`` is reversed, the seed becomes the largest entry of ``-v`` (the first of ties) and the part
   is ``-v >= mean(-v)``. Otherwise TokenCut's answer stands: the part ``v >= mean(v)`` that holds
   the seed. Patches at the mean (up to ``tokencut.TIE_TOLERANCE``) never vote and always join
   the object's side.
4. The object is the 4-connected component of that part holding the seed.
5. From the second object on, an object is dropped when its component has IoU > 0.5 with the
   previous object's component, covers at most 1% of the patches, or has no patch left once the
   patches of earlier objects are taken out of it (step 6). A drop ends the loop, and so does a
   degenerate graph (nothing left to cut: every patch removed, or every remaining weight equal).
6. The object's mask is its component less the patches of earlier objects; its box is that
   mask's box ``[x1, y1, x2, y2]`` in pixels of the image, x2/y2 exclusive, clipped to the
   unpadded image. The whole component is removed for the next cut.

Whenever the corner rule does not fire, the first object is TokenCut's (same seed, partition and
box, for the same ``tau``, ``eps`` and eigensolver).

Scores. Object k gets ``min(score_{k-1}, clip(1 - λ_k, 0, 1))`` where ``λ_k = vᵀ(D - W)v / vᵀDv``
is the eigenvalue of the cut that found it: ``1 - λ = vᵀWv / vᵀDv`` is the cut's normalized
association, near 1 when the two parts are almost disconnected and near 0 when the cut separates
nothing. Taking the running minimum keeps the boxes in the order MaskCut finds them, best first,
so that a threshold on the score keeps a prefix of them.

Nothing found (the very first graph is degenerate: a constant or all-zero map, every pair below
``tau``, fewer than three patches): one box, the whole image, with score 0 (TokenCut's box for such
a map), so that every image has a top box.

Deliberate differences from the published ``maskcut_forward`` (CutLER, ``maskcut/maskcut.py``):

* The published corner rule counts the corners in ``v > mean(v)`` with the sign LAPACK returns,
  so when the other part holds 3 corners and the seed its answer depends on that sign. Here ``v``
  is first signed positive at the seed: whenever one part holds 3 corners or more, the object is
  the other part. This is the published result for the sign that puts the seed in ``v > mean``.
* Ties and patches at the mean follow TokenCut's rules (``tokencut.TIE_TOLERANCE``).
* After a drop the published loop goes on with the same graph (the dropped mask is not removed),
  computes the same cut again and compares it with the empty mask that replaced the dropped one:
  an object dropped for its overlap comes back one step later, and one dropped for its size is
  dropped at every later step. Here a drop ends the loop.
* The published output subtracts the earlier masks from each later one at the image's resolution;
  here on the patch grid, which is the same for boxes of whole patches. An object left empty by
  the subtraction (published: an empty mask, which CutLER's annotation writer then skips) ends the
  loop. So the boxes here are those of the published non-empty masks up to its first empty one.
* From the second cut on, the published code computes the similarities in float64 (its float64
  painting mask promotes the features); here every cut uses the first cut's float32
  similarities, which can differ only for pairs within float32 rounding of ``tau``.
* CutLER resizes every image to 480 x 480 (so its grid is square, which its masking assumes) and
  refines each mask with a dense CRF before training. Here images keep their size (padded to the
  patch size like every method of the toolkit), grids may be rectangular, boxes are in the
  original image's pixels, and there is no CRF: boxes come from the patch masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from lost.backbones import BackboneSpec, Features
from lost.errors import LostError
from lost.geometry import cells_to_box, mask_box, mask_iou, seed_component
from lost.methods.entry import flag
from lost.methods.tokencut import (
    EIGENSOLVERS,
    EPS,
    TIE_TOLERANCE,
    bipartition,
    check_graph_settings,
    cosine_affinity,
    graph_weights,
    second_eigenvector,
)

TAU = 0.15
"""Similarity threshold of the graph (CutLER's published MaskCut command)."""

MAX_OBJECTS = 3
"""Cuts per image (CutLER's ``--N``)."""

MAX_OVERLAP = 0.5
"""An object whose component has an IoU above this with the previous object's is dropped."""

MIN_SHARE = 0.01
"""An object whose component covers at most this share of the patches is dropped."""

CORNER_VOTES = 3
"""Corner patches on the seed's side that make the other side the object."""


@dataclass(frozen=True)
class MaskCutObject:
    """One object, found by one cut.

    box: (4,) ``[x1, y1, x2, y2]`` of ``mask`` in pixels of the image as the method saw it
        (decoded, unpadded), x2/y2 exclusive; int64 for int scales, float64 for float ones.
    mask: (N,) bool, the object's patches: its component less the patches of earlier objects.
    component: (N,) bool, the 4-connected component of the object's part holding the seed.
    seed: raster index of the seed patch.
    eigenvector: (N,) float64, the cut's second eigenvector signed so that the object's side is
        the part at or above its mean.
    corner_rule: whether the corner rule made the side without the largest ``|v|`` the object.
    association: ``1 - λ`` of the cut (see the module docstring), not clipped.
    """

    box: np.ndarray
    mask: np.ndarray
    component: np.ndarray
    seed: int
    eigenvector: np.ndarray
    corner_rule: bool
    association: float


@dataclass(frozen=True)
class MaskCutResult:
    """What MaskCut found in one image (ranked objects, see ``results.MethodResult``).

    boxes: (K, 4) ``[x1, y1, x2, y2]`` in pixels of the image as the method saw it, x2/y2
        exclusive, best first (K >= 1); scores: (K,) float64 in [0, 1], non-increasing.
    patch_masks: (K, h, w) bool, each object's mask (its component less the patches of earlier
        objects), whose box is ``boxes[k]``.
    objects: the K objects, or () when nothing was found (then ``boxes`` is the whole image
        with score 0 and ``patch_masks`` the whole grid).
    """

    ranked: ClassVar[bool] = True

    boxes: np.ndarray
    scores: np.ndarray
    patch_masks: np.ndarray
    objects: tuple[MaskCutObject, ...]

    @property
    def box(self) -> np.ndarray:
        """(4,) the best box."""
        return self.boxes[0]


@dataclass(frozen=True)
class ObjectSide:
    """The object's side of one cut: part (N,) bool, seed, vector signed so that the part is
    at or above its mean, and whether the corner rule chose it."""

    part: np.ndarray
    seed: int
    eigenvector: np.ndarray
    corner_rule: bool


def corner_votes(part: np.ndarray, grid: tuple[int, int]) -> int:
    """How many of the 4 corner patches (top-left, top-right, bottom-left, bottom-right; a corner
    shared by a one-row or one-column grid counts for each) lie in ``part: (N,) bool``."""
    rows, cols = grid
    corners = (0, cols - 1, (rows - 1) * cols, rows * cols - 1)
    return int(sum(bool(part[index]) for index in corners))


def object_side(eigenvector: np.ndarray, grid: tuple[int, int]) -> ObjectSide:
    """Step 3 of the module docstring: TokenCut's side, or the other one by the corner rule.

    eigenvector: (N,) float, not all zero, any sign.
    """
    part, seed, oriented = bipartition(eigenvector)
    tolerance = np.abs(eigenvector).max() * TIE_TOLERANCE
    strictly_seed_side = oriented > np.sum(oriented) / len(oriented) + tolerance
    if corner_votes(strictly_seed_side, grid) < CORNER_VOTES:
        return ObjectSide(part, seed, oriented, corner_rule=False)
    reversed_vector = -oriented
    seed = int(np.argmax(reversed_vector >= reversed_vector.max() - tolerance))
    return ObjectSide(~strictly_seed_side, seed, reversed_vector, corner_rule=True)


def is_dropped(component: np.ndarray, previous: np.ndarray, mask: np.ndarray) -> bool:
    """Step 5: whether a later object is dropped. component, previous, mask: (N,) bool, the
    object's component, the previous object's component and the object's own patches."""
    too_small = np.count_nonzero(component) <= MIN_SHARE * component.size
    return mask_iou(component, previous) > MAX_OVERLAP or too_small or not mask.any()


def cut_association(weights: torch.Tensor, eigenvector: np.ndarray) -> float:
    """``vᵀWv / vᵀDv = 1 - λ`` of a cut: weights (N, N), eigenvector (N,) not all zero."""
    vector = torch.as_tensor(eigenvector, dtype=torch.float64, device=weights.device)
    weights = weights.to(torch.float64)
    association = vector @ (weights @ vector)
    return float(association / (vector.square() @ weights.sum(dim=1)))


def remove_patches(weights: torch.Tensor, patches: np.ndarray, removed_weight: float) -> None:
    """Give ``patches: (N,) bool`` the weight ``removed_weight`` with every patch, in place
    (their features zeroed: a cosine similarity of 0 with everything)."""
    index = torch.as_tensor(np.flatnonzero(patches), device=weights.device)
    weights[index] = removed_weight
    weights[:, index] = removed_weight


def find_objects(
    weights: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
    max_objects: int,
    eigensolver: str,
    removed_weight: float,
) -> list[MaskCutObject]:
    """Steps 2-6: the objects kept, in the order found.

    weights: (N, N) graph of the whole image, changed in place (the objects' patches removed);
    removed_weight: the graph's weight of a similarity 0; grid, scales, image_size: as in
    :func:`maskcut`.
    """
    taken = np.zeros(weights.shape[0], dtype=bool)
    objects: list[MaskCutObject] = []
    for _ in range(max_objects):
        eigenvector, solver = second_eigenvector(weights, eigensolver)
        if solver == "degenerate":
            break
        side = object_side(eigenvector, grid)
        component = seed_component(side.part, side.seed, grid).reshape(-1)
        mask = component & ~taken
        if objects and is_dropped(component, objects[-1].component, mask):
            break
        objects.append(
            MaskCutObject(
                box=mask_box(mask.reshape(grid), scales, image_size),
                mask=mask,
                component=component,
                seed=side.seed,
                eigenvector=side.eigenvector,
                corner_rule=side.corner_rule,
                association=cut_association(weights, eigenvector),
            )
        )
        remove_patches(weights, mask, removed_weight)
        taken |= component
    return objects


def running_scores(associations: list[float]) -> np.ndarray:
    """(K,) float64 scores: each association clipped to [0, 1], then at most the previous score."""
    clipped = np.clip(np.asarray(associations, dtype=np.float64), 0.0, 1.0)
    return np.minimum.accumulate(clipped)


def maskcut(
    feats: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
    tau: float = TAU,
    eps: float = EPS,
    max_objects: int = MAX_OBJECTS,
    eigensolver: str = "auto",
) -> MaskCutResult:
    """MaskCut on one image: up to ``max_objects`` boxes, best first.

    feats: (N, d) with N = h * w, on any device; grid: (h, w); scales: (sy, sx) pixels per cell;
    image_size: (H, W) unpadded. Boxes are ``[x1, y1, x2, y2]`` in the image's pixels, x2/y2
    exclusive. eigensolver: "auto" (Lanczos on the features' device) or "dense" (the published
    solve, on the CPU). Raises ValueError for a grid that does not match N or settings out of range.
    """
    return maskcut_batch(feats[None], grid, scales, [image_size], tau, eps, max_objects, eigensolver)[0]


def maskcut_batch(
    feats: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_sizes: list[tuple[int, int]],
    tau: float = TAU,
    eps: float = EPS,
    max_objects: int = MAX_OBJECTS,
    eigensolver: str = "auto",
) -> list[MaskCutResult]:
    """MaskCut on a batch of images that share one padded size (and so one grid).

    feats: (B, N, d) on any device; image_sizes: B unpadded (H, W). Each image is cut on its own,
    its (N, N) similarities computed once for all its cuts.
    """
    check_graph_settings(feats, grid, eps, eigensolver)
    if max_objects < 1:
        raise ValueError(f"max_objects must be at least 1 (got {max_objects})")
    removed_weight = float(graph_weights(torch.zeros(1, 1), tau, eps)[0, 0])
    results = []
    for image_feats, image_size in zip(feats, image_sizes, strict=True):
        weights = graph_weights(cosine_affinity(image_feats), tau, eps)
        objects = find_objects(weights, grid, scales, image_size, max_objects, eigensolver, removed_weight)
        results.append(_result(objects, grid, scales, image_size))
    return results


def _result(
    objects: list[MaskCutObject], grid: tuple[int, int], scales: tuple[float, float], image_size: tuple[int, int]
) -> MaskCutResult:
    """Boxes and scores of the objects; the whole image with score 0 when there are none."""
    if not objects:
        whole = cells_to_box(0, 0, grid[0], grid[1], scales, image_size)
        return MaskCutResult(boxes=whole[None], scores=np.zeros(1), patch_masks=np.ones((1, *grid), dtype=bool), objects=())
    return MaskCutResult(
        boxes=np.stack([item.box for item in objects]),
        scores=running_scores([item.association for item in objects]),
        patch_masks=np.stack([item.mask.reshape(grid) for item in objects]),
        objects=tuple(objects),
    )

# ----------------------------------------------------------------------------------------------
# The method's entry: parameters, batch adapter, experiment folder


@dataclass(frozen=True)
class MaskCutParams:
    max_objects: int = field(default=MAX_OBJECTS, metadata=flag("--max_objects", "most objects cut out of one image"))
    tau: float = field(default=TAU, metadata=flag("--tau", "similarity threshold of the patch graph"))
    eps: float = field(default=EPS, metadata=flag("--eps", "weight of the pairs below --tau"))
    eigensolver: str = field(
        default="auto",
        metadata=flag("--eigensolver", "auto: Lanczos, same partition, fast; dense: the published solve", choices=EIGENSOLVERS),
    )

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise LostError(f"--eps {self.eps}: must be positive (it keeps every patch's degree above zero)")
        if self.max_objects < 1:
            raise LostError(f"--max_objects {self.max_objects}: must be at least 1")


def discover_maskcut(
    features: Features, image_sizes: list[tuple[int, int]], params: MaskCutParams
) -> list[MaskCutResult]:
    """MaskCut on a batch: features.feats (B, N, d) -> one :class:`MaskCutResult` (boxes, scores) per image."""
    return maskcut_batch(
        features.feats, features.grid, features.scales, image_sizes,
        params.tau, params.eps, params.max_objects, params.eigensolver,
    )


def maskcut_folder(backbone: BackboneSpec, _params: MaskCutParams) -> str:
    """``MaskCut-vit_small16_k``."""
    return f"MaskCut-{backbone.label()}_{backbone.which_features}"
