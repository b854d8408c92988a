"""The fast bilateral solver (Barron & Poole, ECCV 2016) on a simplified bilateral grid.

Smooths a per-pixel target so that it follows the edges of a reference image: the solution
``x`` minimizes ``lam/2 * Σ_ij Â_ij (x_i - x_j)² + Σ_i c_i (x_i - t_i)²`` where ``Â`` is the
bistochastized bilateral affinity of the image, ``t`` the target and ``c`` the confidence.
FOUND (and TokenCut before it) use it to snap coarse patch masks to the image's edges.

The bilateral space has 5 dimensions, ``(x, y, luma, chroma u, chroma v)``: every pixel falls
into the integer cell ``floor(coordinate / sigma)`` of each. The occupied cells are the
vertices; ``splat`` (V, P) sums pixels into their vertex, its transpose ``slice`` copies a
vertex value back to its pixels, and ``blur`` applies a [1 2 1] kernel along each dimension
(``2 * 5 * v`` plus the values of the up-to-10 occupied neighbour vertices). The problem is
solved in vertex space by preconditioned conjugate gradient and sliced back to the pixels.

Shapes: an image is ``(H, W, 3)`` uint8 RGB, P = H * W pixels in raster order; a grid has V
vertices. Per-pixel vectors are ``(P,)`` float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

RGB_TO_YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
"""JPEG's RGB -> YCbCr matrix; the chroma rows are offset by 128 so that every value is in [0, 256)."""

YUV_OFFSET = np.array([0.0, 128.0, 128.0])

BISTOCHASTIC_ITERATIONS = 10


@dataclass(frozen=True)
class BilateralGrid:
    """The bilateral grid of one image.

    splat: (V, P) sparse, ``splat[v, p] = 1`` when pixel p lies in vertex v.
    neighbours: (V, V) sparse, ``neighbours[u, v] = 1`` when u and v differ by exactly 1 along
        exactly one of the 5 dimensions (the blur kernel without its centre).
    dims: number of bilateral dimensions (5).
    """

    splat: scipy.sparse.csr_matrix
    neighbours: scipy.sparse.csr_matrix
    dims: int

    @property
    def num_vertices(self) -> int:
        return self.splat.shape[0]

    def blur(self, values: np.ndarray) -> np.ndarray:
        """(V,) vertex values blurred by [1 2 1] along every dimension (unnormalized)."""
        return 2 * self.dims * values + self.neighbours @ values

    def blur_matrix(self) -> scipy.sparse.csr_matrix:
        """The (V, V) sparse matrix of :meth:`blur`."""
        identity = scipy.sparse.identity(self.num_vertices, format="csr")
        return (2 * self.dims * identity + self.neighbours).tocsr()


def rgb_to_yuv(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB (0-255) -> (H, W, 3) float64 YUV, luma in [0, 255], chroma in [0.5, 255.5]."""
    return image.astype(np.float64) @ RGB_TO_YUV.T + YUV_OFFSET


def bilateral_coordinates(
    image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float
) -> np.ndarray:
    """(P, 5) int64 cell of every pixel: ``floor((x / σs, y / σs, Y / σl, U / σc, V / σc))``."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[:height, :width]
    yuv = rgb_to_yuv(image)
    scaled = np.stack(
        [
            cols / sigma_spatial,
            rows / sigma_spatial,
            yuv[..., 0] / sigma_luma,
            yuv[..., 1] / sigma_chroma,
            yuv[..., 2] / sigma_chroma,
        ],
        axis=-1,
    )
    return np.floor(scaled).astype(np.int64).reshape(-1, 5)


def bilateral_grid(image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float) -> BilateralGrid:
    """The grid of an (H, W, 3) uint8 RGB image with the given bandwidths (pixels, grey levels)."""
    coords = bilateral_coordinates(image, sigma_spatial, sigma_luma, sigma_chroma)
    vertices, vertex_of_pixel = np.unique(coords, axis=0, return_inverse=True)
    vertex_of_pixel = vertex_of_pixel.reshape(-1)
    num_pixels, dims = coords.shape
    splat = scipy.sparse.csr_matrix(
        (np.ones(num_pixels), (vertex_of_pixel, np.arange(num_pixels))), shape=(len(vertices), num_pixels)
    )
    return BilateralGrid(splat=splat, neighbours=_neighbour_matrix(vertices), dims=dims)


def _neighbour_matrix(vertices: np.ndarray) -> scipy.sparse.csr_matrix:
    """(V, V) adjacency of vertices one step apart along one dimension.

    Each vertex gets one integer key in a mixed radix whose digits have room for -1 and
    max + 1 (so a step never wraps onto another vertex); neighbours are found by key.
    """
    shifted = vertices - vertices.min(axis=0) + 1
    radix = shifted.max(axis=0) + 2
    place = np.concatenate([[1], np.cumprod(radix[:-1])])
    keys = shifted @ place
    order = np.argsort(keys)
    sorted_keys = keys[order]
    rows, cols = [], []
    for step in np.concatenate([place, -place]):
        position = np.searchsorted(sorted_keys, keys + step).clip(max=len(keys) - 1)
        found = sorted_keys[position] == keys + step
        rows.append(np.flatnonzero(found))
        cols.append(order[position[found]])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    size = len(vertices)
    return scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))


def bistochastize(grid: BilateralGrid, iterations: int = BISTOCHASTIC_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Vertex scalings ``(n, m)`` (each (V,)) that make ``diag(n) blur diag(n)`` nearly bistochastic.

    Sinkhorn-like iterations ``n <- sqrt(n * m / blur(n))`` from ``n = 1`` with ``m`` the pixel
    count of each vertex; ``m`` is then reset to ``n * blur(n)`` so that the rows of the
    smoothness matrix ``diag(m) - diag(n) blur diag(n)`` sum to exactly zero.
    """
    counts = np.asarray(grid.splat.sum(axis=1)).ravel()
    scale = np.ones(grid.num_vertices)
    for _ in range(iterations):
        scale = np.sqrt(scale * counts / grid.blur(scale))
    return scale, scale * grid.blur(scale)


@dataclass(frozen=True)
class SolverParams:
    """lam: weight of the smoothness term; cg_tol / cg_maxiter: conjugate-gradient stop
    (relative residual, iterations); diag_min: floor of the Jacobi preconditioner's diagonal."""

    lam: float = 256.0
    cg_tol: float = 1e-5
    cg_maxiter: int = 25
    diag_min: float = 1e-5


class BilateralSolver:
    """The solver of one image: build once, :meth:`solve` any number of targets."""

    def __init__(self, grid: BilateralGrid, params: SolverParams = SolverParams()):
        self.grid = grid
        self.params = params
        scale, mass = bistochastize(grid)
        normalized_blur = scipy.sparse.diags(scale) @ grid.blur_matrix() @ scipy.sparse.diags(scale)
        self.smoothness = (scipy.sparse.diags(mass) - normalized_blur).tocsr()

    def solve(self, target: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """target, confidence: (P,) per pixel (confidence >= 0) -> (P,) float64 smoothed target.

        Solves ``(lam * smoothness + diag(splat c)) y = splat(c * t)`` by conjugate gradient,
        Jacobi-preconditioned, started from the confidence-weighted mean of each vertex, and
        slices ``y`` back to the pixels.
        """
        splat = self.grid.splat
        weights = splat @ confidence.astype(np.float64)
        rhs = splat @ (confidence * target).astype(np.float64)
        system = (self.params.lam * self.smoothness + scipy.sparse.diags(weights)).tocsr()
        preconditioner = scipy.sparse.diags(1.0 / np.maximum(system.diagonal(), self.params.diag_min))
        start = np.divide(rhs, weights, out=np.zeros_like(rhs), where=weights > 0)
        vertex_values, _ = scipy.sparse.linalg.cg(
            system, rhs, x0=start, M=preconditioner, rtol=self.params.cg_tol, atol=0.0, maxiter=self.params.cg_maxiter
        )
        return splat.T @ vertex_values


SOLVER_SIGMAS = {"sigma_spatial": 16, "sigma_luma": 16, "sigma_chroma": 8}
SOLVER_CONFIDENCE = 0.999
REFINED_MIN_IOU = 0.5
"""TokenCut's and FOUND's refinement: bandwidths of the grid, the constant confidence of the coarse mask, and
the IoU with the coarse mask the refined one needs to be used."""


def image_solver(image: np.ndarray) -> BilateralSolver:
    """The bilateral solver of an (H, W, 3) uint8 RGB image with FOUND's bandwidths (16, 16, 8)."""
    return BilateralSolver(bilateral_grid(image, **SOLVER_SIGMAS))
