"""The bilateral solver: its grid by brute force, its system against a transcription of the
published solver (valeoai/FOUND bilateral_solver.py, from TokenCut), and planted edges."""

import itertools

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from lost.refine.bilateral_solver import (
    BilateralSolver,
    SolverParams,
    bilateral_coordinates,
    bilateral_grid,
    bistochastize,
    rgb_to_yuv,
)


def published_bilateral_solve(image, target, confidence, sigma_spatial, sigma_luma, sigma_chroma):
    """The published grid (coordinates hashed in base 255), [1 0 1] neighbour blurs, 10
    bistochastization steps and the Jacobi-preconditioned CG (lam 256, 25 iterations, tol 1e-5)."""
    yuv = image.astype(float) @ np.array(
        [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
    ).T + np.array([0, 128.0, 128.0])
    iy, ix = np.mgrid[: image.shape[0], : image.shape[1]]
    coords = np.dstack(
        (
            (ix / sigma_spatial).astype(int),
            (iy / sigma_spatial).astype(int),
            (yuv[..., 0] / sigma_luma).astype(int),
            (yuv[..., 1:] / sigma_chroma).astype(int),
        )
    ).reshape(-1, 5)
    hash_vec = 255.0 ** np.arange(5)
    hashes = coords @ hash_vec
    unique_hashes, unique_idx, idx = np.unique(hashes, return_index=True, return_inverse=True)
    vertices = coords[unique_idx]
    nv, npix = len(vertices), len(coords)
    splat = scipy.sparse.csr_matrix((np.ones(npix), (idx.ravel(), np.arange(npix))))
    blurs = []
    for d in range(5):
        blur = 0.0
        for offset in (-1, 1):
            step = np.zeros(5)
            step[d] = offset
            neighbour = (vertices + step) @ hash_vec
            locs = np.clip(np.searchsorted(unique_hashes, neighbour), 0, nv - 1)
            valid = np.flatnonzero(unique_hashes[locs] == neighbour)
            blur = blur + scipy.sparse.csr_matrix((np.ones(len(valid)), (valid, locs[valid])), shape=(nv, nv))
        blurs.append(blur)

    def blur_of(x):
        out = 2 * 5 * x
        for b in blurs:
            out = out + b.dot(x)
        return out

    m = splat.dot(np.ones(npix))
    n = np.ones(nv)
    for _ in range(10):
        n = np.sqrt(n * m / blur_of(n))
    m = n * blur_of(n)
    dn, dm = scipy.sparse.diags(n, 0), scipy.sparse.diags(m, 0)
    w_splat = splat.dot(confidence[:, None])
    a = 256 * (dm - dn.dot(blur_of(dn))) + scipy.sparse.diags(w_splat[:, 0], 0)
    xw = target[:, None] * confidence[:, None]
    b = splat.dot(xw)
    preconditioner = scipy.sparse.diags(1 / np.maximum(a.diagonal(), 1e-5), 0)
    y0 = b / w_splat
    y, _ = scipy.sparse.linalg.cg(a, b[:, 0], x0=y0[:, 0], M=preconditioner, maxiter=25, rtol=1e-5)
    return splat.T.dot(y)


def random_image(shape, seed=0, levels=256):
    return np.random.default_rng(seed).integers(0, levels, size=(*shape, 3)).astype(np.uint8)


def test_yuv_is_jpeg_ycbcr_with_chroma_offset():
    yuv = rgb_to_yuv(np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8))
    assert yuv[0, 0] == pytest.approx([255.0, 128.0, 128.0])
    assert yuv[0, 1] == pytest.approx([0.0, 128.0, 128.0])
    assert yuv[0, 2] == pytest.approx([0.299 * 255, 128 - 0.168736 * 255, 128 + 127.5])


def test_pixels_fall_into_the_floor_cells_of_each_bandwidth():
    # pixel (row 1, col 17) of a black image: x 17 // 16 = 1, y 0, luma 0, chroma 128 // 8 = 16
    coords = bilateral_coordinates(np.zeros((2, 18, 3), dtype=np.uint8), 16, 16, 8)
    assert coords[1 * 18 + 17].tolist() == [1, 0, 0, 16, 16]


def test_neighbours_are_the_vertices_one_step_apart_along_one_dimension():
    image = random_image((12, 20), levels=64)
    grid = bilateral_grid(image, 4, 8, 8)
    vertex_of_pixel = grid.splat.T.tocsr().indices
    coords = bilateral_coordinates(image, 4, 8, 8)
    vertices = np.zeros((grid.num_vertices, 5), dtype=np.int64)
    vertices[vertex_of_pixel] = coords
    expected = np.zeros((grid.num_vertices, grid.num_vertices))
    for u, v in itertools.product(range(grid.num_vertices), repeat=2):
        expected[u, v] = np.abs(vertices[u] - vertices[v]).sum() == 1
    assert np.array_equal(grid.neighbours.toarray(), expected)
    assert grid.blur(np.ones(grid.num_vertices)).tolist() == (10 + expected.sum(axis=1)).tolist()


def test_bistochastized_rows_sum_to_the_vertex_mass():
    grid = bilateral_grid(random_image((16, 16), levels=32), 4, 16, 16)
    scale, mass = bistochastize(grid)
    normalized = scipy.sparse.diags(scale) @ grid.blur_matrix() @ scipy.sparse.diags(scale)
    assert np.allclose(np.asarray(normalized.sum(axis=1)).ravel(), mass)
    counts = np.asarray(grid.splat.sum(axis=1)).ravel()
    assert np.allclose(mass, counts, rtol=0.05)


def test_a_constant_target_stays_constant():
    image = random_image((20, 24), seed=1)
    solver = BilateralSolver(bilateral_grid(image, 8, 8, 8))
    solution = solver.solve(np.full(480, 0.7), np.full(480, 0.999))
    assert np.allclose(solution, 0.7)


@pytest.mark.parametrize("seed", range(3))
def test_solution_matches_the_published_solver(seed):
    image = random_image((40, 48), seed=seed, levels=128)
    rng = np.random.default_rng(seed)
    target = (rng.random(40 * 48) > 0.5).astype(float)
    confidence = np.full(40 * 48, 0.999)
    ours = BilateralSolver(bilateral_grid(image, 16, 16, 8)).solve(target, confidence)
    published = published_bilateral_solve(image, target, confidence, 16, 16, 8)
    assert np.allclose(ours, published, atol=1e-9)


def test_converged_solution_solves_the_linear_system():
    image = random_image((24, 24), seed=3)
    grid = bilateral_grid(image, 8, 16, 16)
    solver = BilateralSolver(grid, SolverParams(cg_tol=1e-12, cg_maxiter=5000))
    target, confidence = np.random.default_rng(0).random(576), np.full(576, 0.5)
    system = (256 * solver.smoothness + scipy.sparse.diags(grid.splat @ confidence)).toarray()
    direct = np.linalg.solve(system, grid.splat @ (confidence * target))
    assert np.allclose(solver.solve(target, confidence), grid.splat.T @ direct, atol=1e-8)


def test_a_noisy_mask_along_an_edge_becomes_the_edge():
    # dark left half, bright right half (x >= 37); the target is the bright half with 15% of its
    # pixels flipped: after solving, thresholding at 0.5 gives the clean half
    rng = np.random.default_rng(0)
    image = np.full((48, 64, 3), 30.0)
    image[:, 37:] = 220.0
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    clean = np.zeros((48, 64))
    clean[:, 37:] = 1.0
    noisy = np.where(rng.random(clean.shape) < 0.15, 1 - clean, clean)
    solution = BilateralSolver(bilateral_grid(image, 16, 16, 8)).solve(noisy.ravel(), np.full(48 * 64, 0.999))
    errors_before = np.count_nonzero((noisy > 0.5) != clean)
    errors_after = np.count_nonzero((solution.reshape(48, 64) > 0.5) != clean)
    assert errors_before > 400
    assert errors_after == 0
