"""TokenCut (Wang et al., CVPR 2022): a normalized cut of the patch graph, as pure functions.

For one image with patch features ``F: (N, d)`` (the last block's keys, heads concatenated, the
CLS token dropped) over a grid ``(h, w)`` = (rows, cols), patch ``i`` at row ``i // w``, col ``i % w``:

1. ``S = F̂ F̂ᵀ``, float32, with every row of ``F`` scaled to unit L2 norm (zero rows stay zero).
2. Graph weights, exactly as the published code builds them: binary (default)
   ``W = 1 if S > tau else eps`` in float64; with ``binary_graph=False``,
   ``W = S if S >= tau else eps`` (the published code sets ``W[S < tau] = eps``) in float32.
   ``tau`` is compared in float32, so a similarity equal to ``float32(tau)`` is *not* an edge
   of the binary graph and *is* kept by the weighted one.
3. ``D = diag(W 1)``; the eigenvector ``v`` of the second-smallest eigenvalue of
   ``(D - W) v = λ D v``, scaled so that ``vᵀ D v = 1``.
4. The seed is the patch with the largest ``|v|`` (the first one on ties); ``v`` takes the sign
   that makes it positive at the seed; the partition is ``v >= mean(v)``. (The published code
   splits at ``v > mean(v)`` and, if the seed is outside, flips to ``v <= mean(v)`` and ``-v``:
   the same partition but for patches exactly at the mean, see below.)
5. The box of the 4-connected component of the partition that holds the seed, in pixels:
   ``[x1, y1, x2, y2]`` of the original image, x2/y2 exclusive, clipped to the unpadded image
   (``geometry.seed_component``, the same conventions as LOST); that component is the mask.

``scales = (sy, sx)`` are image pixels per feature cell, ``image_size = (H, W)`` the unpadded size.

Eigensolvers. ``"dense"`` is the published computation: ``scipy.linalg.eigh(D - W, D,
subset_by_index=[1, 2])`` on dense ``(N, N)`` matrices, in float64 for the binary graph and, as
published, in float32 (single-precision LAPACK) for the weighted one: ``O(N³)``, seconds to tens of
seconds for a ViT-S/8 image (N = 3,000-4,300) on two CPU cores. ``"auto"`` solves the same
problem through ``M = D^{-1/2} W D^{-1/2}`` in float64: the bottom generalized eigenvectors are
``v = D^{-1/2} y`` for the top eigenvectors ``y`` of ``M``, the very top one is known exactly
(``y₁ ∝ D^{1/2} 1``, eigenvalue 1), and Lanczos with full reorthogonalization, kept orthogonal to
``y₁``, finds the next one from a fixed seeded start vector to a residual ``‖M y - θ y‖ ≤ 1e-12``:
a few dozen matrix-vector products, in torch on the features' device (a GPU when they are on
one). Both solvers approximate the same vector, to about ``1e-12 / gap`` and ``1e-16 / gap``.
Step 4 does not depend on the sign, so the partitions can only differ at patches whose ``v`` lies
within that error of the mean, or where the seed is decided by such an error: see
``TIE_TOLERANCE`` for the cases where exact arithmetic makes them equal, and
``bench/tokencut_agreement.py`` for the measured agreement. If Lanczos does not converge, that
image is solved densely and a warning is issued once per process.

Deliberate differences from the published code, all where its answer is decided by rounding:

* values of ``v`` equal up to ``TIE_TOLERANCE`` count as equal: the seed is the first of tied
  patches in raster order, and patches at the mean join the seed's side (published: whichever
  way LAPACK's sign and last bits fall);
* a degenerate graph, every off-diagonal weight equal (a constant or all-zero feature map, every
  pair below ``tau``, fewer than three patches), has no preferred cut: every vector orthogonal to
  ``D 1`` is a second eigenvector, and the published code returns whatever LAPACK picks (or
  fails for N < 3). Here ``v = 0``, which step 4 turns into seed 0, the whole grid as the
  partition and the whole image as the box, for both solvers.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from lost.backbones import BackboneSpec, Features
from lost.errors import LostError
from lost.geometry import mask_box, seed_component
from lost.methods.entry import flag
from lost.methods.results import OneObject

TAU = 0.2
"""Similarity threshold of the graph (the published default)."""

EPS = 1e-5
"""Weight of the pairs below the threshold (the published default)."""

EIGENSOLVERS = ("auto", "dense")

LANCZOS_TOLERANCE = 1e-12
"""Largest residual ``‖M y - θ y‖`` (``‖M‖ = 1``) accepted from Lanczos."""

LANCZOS_MAX_DIM = 400
"""Krylov vectors kept before Lanczos restarts from its current Ritz vector."""

LANCZOS_RESTARTS = 4
"""Restarts before Lanczos gives up and the image is solved densely."""

LANCZOS_CHECK_EVERY = 8
"""Lanczos steps between two checks of the Ritz residual."""

TIE_TOLERANCE = 1e-9
"""Gap, relative to ``max |v|``, below which values of ``v`` count as equal. Patches whose rows
of ``W`` are equal have equal ``v`` in exact arithmetic (and in a nearly complete graph most
patches sit exactly at the mean), so rounding, different in each solver and LAPACK build, must
not decide between them: the seed is the first of the tied patches in raster order, and the
patches at the mean join the seed's side."""

START_VECTOR_SEED = 0
"""Seed of the Lanczos start vector, drawn on the CPU so that every device starts alike."""


class EigensolverDidNotConverge(RuntimeError):
    """Lanczos did not reach ``LANCZOS_TOLERANCE`` within its restarts."""


@dataclass(frozen=True)
class TokenCutResult(OneObject):
    """What TokenCut found in one image (one object, see ``results.OneObject``).

    box: (4,) ``[x1, y1, x2, y2]`` in original-image pixels, x2/y2 exclusive; int64 for int
        scales (ViT), float64 for float scales: the box of ``patch_mask``.
    patch_mask: (h, w) bool, the 4-connected component of the partition holding the seed.
    seed: index (raster order over the grid) of the patch with the largest ``|v|``.
    eigenvector: (N,) float64 (float32 for the dense solve of the weighted graph), the second
        generalized eigenvector with ``vᵀ D v = 1``, signed to be positive at the seed; zeros for
        a degenerate graph.
    partition: (N,) bool, the seed's side of the bipartition: ``v >= mean(v)`` (up to
        ``TIE_TOLERANCE``) with that sign.
    solver: "lanczos", "dense" or "degenerate": what produced the eigenvector.
    """

    box: np.ndarray
    patch_mask: np.ndarray
    seed: int
    eigenvector: np.ndarray
    partition: np.ndarray
    solver: str


def cosine_affinity(feats: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of the patches.

    feats: (N, d), cast to float32. Returns (N, N) float32 ``S = F̂ F̂ᵀ`` with every row of ``F``
    divided by ``max(‖f_i‖, 1e-12)`` (zero rows stay zero), on the features' device.
    """
    unit = F.normalize(feats.float(), p=2, dim=1)
    return unit @ unit.T


def graph_weights(similarity: torch.Tensor, tau: float = TAU, eps: float = EPS, binary_graph: bool = True) -> torch.Tensor:
    """Weights ``W`` of the patch graph, in the published dtypes.

    similarity: (N, N) float32. Binary graph: (N, N) float64, ``1`` where ``S > tau`` else ``eps``.
    Weighted graph: (N, N) float32, ``S`` where ``S >= tau`` else ``float32(eps)``. The threshold
    is compared in float32, as the published numpy code compares a float32 array with a Python float.
    """
    threshold = torch.tensor(tau, dtype=torch.float32, device=similarity.device)
    if binary_graph:
        one = torch.ones((), dtype=torch.float64, device=similarity.device)
        return torch.where(similarity > threshold, one, torch.full_like(one, eps))
    return torch.where(similarity < threshold, torch.full_like(threshold, eps), similarity)


def is_degenerate(weights: torch.Tensor) -> bool:
    """Whether all off-diagonal weights are equal (always so for N < 3): no cut beats another.

    weights: (N, N). Then every vector orthogonal to ``D 1`` is a second eigenvector.
    """
    if weights.shape[0] < 3:
        return True
    reference = weights[0, 1]
    off_diagonal_differs = weights != reference
    off_diagonal_differs.fill_diagonal_(False)
    return not bool(off_diagonal_differs.any())


def second_eigenvector_dense(weights: np.ndarray) -> np.ndarray:
    """The published solve: ``eigh(D - W, D, subset_by_index=[1, 2])``, first vector.

    weights: (N, N) float64 or float32, N >= 3; LAPACK works in that precision.
    Returns (N,) in the same dtype, with ``vᵀ D v = 1`` and LAPACK's sign.
    """
    degrees = np.sum(weights, axis=1)
    degree_matrix = np.diag(degrees)
    _, eigenvectors = scipy.linalg.eigh(degree_matrix - weights, degree_matrix, subset_by_index=[1, 2])
    return eigenvectors[:, 0]


def second_eigenvector_lanczos(weights: torch.Tensor) -> torch.Tensor:
    """The same vector as ``second_eigenvector_dense``, by Lanczos on the normalized matrix.

    weights: (N, N), N >= 3, non-negative with positive row sums, on any device; the work is
    done in float64 on that device. With ``D = diag(W 1)`` and ``M = D^{-1/2} W D^{-1/2}``,
    ``y₁ = D^{1/2} 1 / ‖D^{1/2} 1‖`` is the top eigenvector of ``M``; the top eigenvector ``y``
    of ``M`` restricted to ``y₁⊥`` gives ``v = D^{-1/2} y`` (so ``vᵀ D v = 1``). ``W`` must be
    symmetric, as ``cosine_affinity`` computes it: entry (i, j) and (j, i) are the same products.
    Returns (N,) float64 on the weights' device, sign arbitrary.
    Raises EigensolverDidNotConverge when the residual stays above ``LANCZOS_TOLERANCE``.
    """
    normalized = weights.to(torch.float64, copy=True)
    inverse_sqrt_degrees = normalized.sum(dim=1).rsqrt()
    normalized.mul_(inverse_sqrt_degrees[:, None]).mul_(inverse_sqrt_degrees[None, :])
    trivial = inverse_sqrt_degrees.reciprocal()
    trivial = trivial / trivial.norm()
    start = torch.randn(
        weights.shape[0], generator=torch.Generator().manual_seed(START_VECTOR_SEED), dtype=torch.float64
    ).to(weights.device)
    for _ in range(LANCZOS_RESTARTS + 1):
        vector, residual = _lanczos_top_vector(normalized, trivial, start)
        if residual <= LANCZOS_TOLERANCE:
            return vector * inverse_sqrt_degrees
        start = vector
    raise EigensolverDidNotConverge(f"Lanczos residual {residual:.1e} > {LANCZOS_TOLERANCE:.0e}")


def _lanczos_top_vector(matrix: torch.Tensor, deflated: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Top eigenvector of a symmetric ``matrix`` on the complement of the unit vector ``deflated``.

    matrix: (N, N) float64; deflated, start: (N,) float64. Runs at most ``LANCZOS_MAX_DIM``
    steps of Lanczos with full reorthogonalization (Gram-Schmidt twice against ``deflated`` and
    the basis), checking the Ritz residual ``|β_k s_k| <= β_k`` every ``LANCZOS_CHECK_EVERY`` steps
    and whenever ``β_k`` is below the tolerance (the Krylov space is invariant: it stops there
    rather than divide by a vanishing ``β_k``).
    Returns the unit Ritz vector and its measured residual ``‖A y - θ y‖``.
    """
    dimension = min(LANCZOS_MAX_DIM, matrix.shape[0] - 1)
    basis = torch.zeros(dimension + 1, matrix.shape[0], dtype=torch.float64, device=matrix.device)
    basis[0] = deflated
    vector = start - deflated * (deflated @ start)
    diagonal, off_diagonal = [], []
    for step in range(1, dimension + 1):
        basis[step] = vector / vector.norm()
        product = matrix @ basis[step]
        coefficients = basis[: step + 1] @ product
        product = product - basis[: step + 1].T @ coefficients
        correction = basis[: step + 1] @ product
        product = product - basis[: step + 1].T @ correction
        alpha, beta = torch.stack([coefficients[step] + correction[step], product.norm()]).tolist()
        diagonal.append(alpha)
        off_diagonal.append(beta)
        vector = product
        if beta <= LANCZOS_TOLERANCE / 10 or step % LANCZOS_CHECK_EVERY == 0 or step == dimension:
            ritz, estimate = _top_ritz_pair(diagonal, off_diagonal)
            if estimate <= LANCZOS_TOLERANCE / 10:
                break
    return _ritz_vector(matrix, basis[1 : step + 1], ritz)


def _top_ritz_pair(diagonal: list[float], off_diagonal: list[float]) -> tuple[np.ndarray, float]:
    """Top eigenvector ``s`` of the Lanczos tridiagonal matrix and its residual ``|β_k s_k|``."""
    size = len(diagonal)
    _, vectors = scipy.linalg.eigh_tridiagonal(
        np.asarray(diagonal), np.asarray(off_diagonal[: size - 1]), select="i", select_range=(size - 1, size - 1)
    )
    ritz = vectors[:, 0]
    return ritz, abs(off_diagonal[-1] * ritz[-1])


def _ritz_vector(matrix: torch.Tensor, basis: torch.Tensor, ritz: np.ndarray) -> tuple[torch.Tensor, float]:
    """Unit Ritz vector ``y = Qᵀ s`` and its measured residual ``‖A y - (yᵀ A y) y‖``."""
    vector = basis.T @ torch.as_tensor(ritz, dtype=torch.float64, device=basis.device)
    vector = vector / vector.norm()
    product = matrix @ vector
    residual = product - (vector @ product) * vector
    return vector, float(residual.norm())


def bipartition(eigenvector: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Seed at the largest ``|v|``, sign so that the seed is positive, split at the mean.

    eigenvector: (N,) float. Returns ``(partition (N,) bool, seed, oriented (N,))``. The seed is
    the first index whose ``|v|`` is within ``TIE_TOLERANCE`` (relative) of ``max |v|``; ``u`` is
    ``v`` or ``-v``, whichever is positive at the seed; the partition is ``u >= mean(u)`` up to
    ``TIE_TOLERANCE · max |v|``. This is the published rule (``v > mean``, flipped to ``v <= mean``
    when the seed is outside) except for patches at the mean up to rounding: they always join
    the seed's side, where the published code puts them only when LAPACK's sign needs the flip.
    So the answer does not depend on the eigenvector's sign, and ``v = 0`` gives the whole grid.
    """
    magnitudes = np.abs(eigenvector)
    tolerance = magnitudes.max() * TIE_TOLERANCE
    seed = int(np.argmax(magnitudes >= magnitudes.max() - tolerance))
    oriented = -eigenvector if eigenvector[seed] < 0 else eigenvector
    partition = oriented >= np.sum(oriented) / len(oriented) - tolerance
    return partition, seed, oriented


def tokencut(
    feats: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
    tau: float = TAU,
    eps: float = EPS,
    binary_graph: bool = True,
    eigensolver: str = "auto",
) -> TokenCutResult:
    """TokenCut on one image: normalized cut of the patch graph, box of the seed's component.

    feats: (N, d) with N = h * w, on any device; grid: (h, w); scales: (sy, sx) pixels per cell;
    image_size: (H, W) unpadded. The box is ``[x1, y1, x2, y2]`` in original-image pixels,
    x2/y2 exclusive. tau, eps, binary_graph: the graph (see ``graph_weights``; eps > 0, and
    tau > 0 for the weighted graph). eigensolver: "dense" (the published computation, on the
    CPU) or "auto" (Lanczos on the features' device, dense if it does not converge).
    Raises ValueError for a grid that does not match N or for settings outside those ranges.
    """
    return tokencut_batch(feats[None], grid, scales, [image_size], tau, eps, binary_graph, eigensolver)[0]


def tokencut_batch(
    feats: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_sizes: list[tuple[int, int]],
    tau: float = TAU,
    eps: float = EPS,
    binary_graph: bool = True,
    eigensolver: str = "auto",
) -> list[TokenCutResult]:
    """TokenCut on a batch of images that share one padded size (and so one grid).

    feats: (B, N, d) on any device; image_sizes: B unpadded (H, W). Each image is cut on its own:
    the (N, N) graph of one image at a time is held in memory.
    """
    check_graph_settings(feats, grid, eps, eigensolver)
    if not binary_graph and not tau > 0:
        raise ValueError(f"the weighted graph needs tau > 0 (got {tau}): weights below 0 break the cut")
    results = []
    for image_feats, image_size in zip(feats, image_sizes, strict=True):
        weights = graph_weights(cosine_affinity(image_feats), tau, eps, binary_graph)
        eigenvector, solver = second_eigenvector(weights, eigensolver)
        partition, seed, oriented = bipartition(eigenvector)
        component = seed_component(partition, seed, grid)
        results.append(
            TokenCutResult(
                box=mask_box(component, scales, image_size),
                patch_mask=component,
                seed=seed,
                eigenvector=oriented,
                partition=partition,
                solver=solver,
            )
        )
    return results


def check_graph_settings(feats: torch.Tensor, grid: tuple[int, int], eps: float, eigensolver: str) -> None:
    """ValueError unless ``feats: (B, N, d)`` fills the grid ``(h, w)``, ``eps > 0`` (every patch
    keeps a positive degree) and the eigensolver is known."""
    if feats.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"feats hold {feats.shape[1]} patches but the grid {grid} has {grid[0] * grid[1]}")
    if eigensolver not in EIGENSOLVERS:
        raise ValueError(f"eigensolver {eigensolver!r} is not one of {EIGENSOLVERS}")
    if not eps > 0:
        raise ValueError(f"eps must be positive (got {eps}): a patch's degree could be zero")


def second_eigenvector(weights: torch.Tensor, eigensolver: str) -> tuple[np.ndarray, str]:
    """(N,) second generalized eigenvector of ``weights: (N, N)`` on the CPU and the name of what
    produced it: "degenerate" (zeros, see ``is_degenerate``), "lanczos" or "dense"."""
    if is_degenerate(weights):
        return np.zeros(weights.shape[0], dtype=np.float64), "degenerate"
    if eigensolver == "auto":
        try:
            return second_eigenvector_lanczos(weights).cpu().numpy(), "lanczos"
        except EigensolverDidNotConverge:
            _warn_dense_fallback()
    return second_eigenvector_dense(weights.cpu().numpy()), "dense"


@functools.cache
def _warn_dense_fallback() -> None:
    """Say once per process that an image fell back to the dense solver."""
    warnings.warn(
        "TokenCut: Lanczos did not converge on an image; such images are solved by the dense "
        "published eigensolver (same result, slower). Shown once.",
        RuntimeWarning,
        stacklevel=4,
    )

# ----------------------------------------------------------------------------------------------
# The method's entry: parameters, batch adapter, experiment folder


@dataclass(frozen=True)
class TokenCutParams:
    tau: float = field(default=TAU, metadata=flag("--tau", "similarity threshold of the patch graph"))
    eps: float = field(default=EPS, metadata=flag("--eps", "weight of the pairs below --tau"))
    binary_graph: bool = field(
        default=True,
        metadata=flag("--no_binary_graph", "weight the edges by their similarity instead of 1", action="store_const", const=False),
    )
    eigensolver: str = field(
        default="auto",
        metadata=flag("--eigensolver", "auto: Lanczos, same partition, fast; dense: the published solve", choices=EIGENSOLVERS),
    )

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise LostError(f"--eps {self.eps}: must be positive (it keeps every patch's degree above zero)")
        if not self.binary_graph and not self.tau > 0:
            raise LostError(f"--tau {self.tau}: the weighted graph (--no_binary_graph) needs a positive --tau")


def discover_tokencut(features: Features, image_sizes: list[tuple[int, int]], params: TokenCutParams) -> list[TokenCutResult]:
    """TokenCut on a batch: features.feats (B, N, d) -> one :class:`TokenCutResult` per image."""
    return tokencut_batch(
        features.feats, features.grid, features.scales, image_sizes,
        params.tau, params.eps, params.binary_graph, params.eigensolver,
    )


def tokencut_folder(backbone: BackboneSpec, _params: TokenCutParams) -> str:
    """``TokenCut-vit_small16_k`` (the published name)."""
    return f"TokenCut-{backbone.label()}_{backbone.which_features}"
