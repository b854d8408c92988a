"""TokenCut on feature maps whose cut is worked out by hand, and against the published computation."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import needs_cuda, on_test_device
from PIL import Image
from published_tokencut import published_cut, published_eigenvector
from synthetic_maps import planted_map as noisy_planted_map
from synthetic_maps import vit_like_map

from lost.methods import tokencut
from lost.methods.tokencut import (
    EigensolverDidNotConverge,
    bipartition,
    cosine_affinity,
    graph_weights,
    is_degenerate,
    second_eigenvector_dense,
    second_eigenvector_lanczos,
    tokencut_batch,
)
from lost.viz.pictures import tokencut_picture

E1, E2 = torch.eye(3)[:2]
A = torch.tensor([3.0, 4.0, 0.0])
"""Normalizes to exactly (float32(0.6), float32(0.8), 0): its similarity to E1 is float32(0.6)."""

SOLVERS = ("dense", "auto")

cut = on_test_device(tokencut.tokencut)
"""TokenCut on TEST_DEVICE: there the Lanczos solve runs ("auto"); the dense one on the CPU."""
cut_batch = on_test_device(tokencut_batch)


def planted(grid, groups, background=E1):
    """(h*w, 3) features: `background` everywhere, `groups` = [(vector, [(row, col), ...]), ...]."""
    h, w = grid
    feats = background.repeat(h * w, 1).clone()
    for vector, cells in groups:
        for row, col in cells:
            feats[row * w + col] = vector
    return feats


def block(rows, cols):
    """Cells (row, col) of the rectangle rows x cols."""
    return [(row, col) for row in rows for col in cols]


def two_clique_vector(size_a, size_b, eps):
    """Second generalized eigenvector of two cliques (self-loops included) joined by weight eps.

    v is constant on each clique: D-orthogonal to 1 (a d_A v_A + b d_B v_B = 0) and vᵀ D v = 1,
    with d_A = a + b eps, d_B = b + a eps. Returns (v_A, v_B) with v_A > 0.
    """
    degree_a, degree_b = size_a + size_b * eps, size_b + size_a * eps
    mass_a, mass_b = size_a * degree_a, size_b * degree_b
    value_a = 1 / np.sqrt(mass_a * (1 + mass_a / mass_b))
    return value_a, -value_a * mass_a / mass_b


def tied_with_maximum(vector, rtol=1e-9):
    """Indices whose |v| equals the maximum up to rounding (relative ``rtol``)."""
    magnitudes = np.abs(vector)
    return np.flatnonzero(np.isclose(magnitudes, magnitudes.max(), rtol=rtol, atol=0)).tolist()


def exact_tau_map(rng, grid=(6, 7)):
    """(N, 3) features drawn from E1, A and E2 in random blobs: many similarities exactly 0.6 (E1·A)."""
    choices = torch.stack([E1, A, E2])
    coarse = torch.as_tensor(rng.integers(0, 3, size=(3, 3)))
    labels = F.interpolate(coarse[None, None].float(), size=grid, mode="nearest")[0, 0].long()
    return choices[labels.reshape(-1)]


# --- steps -------------------------------------------------------------------------------------


def test_cosine_affinity_normalizes_rows_and_keeps_zero_rows_zero():
    feats = torch.stack([A, E1, torch.zeros(3)])
    similarity = cosine_affinity(feats)
    expected = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert similarity.dtype == torch.float32
    assert torch.allclose(similarity, expected, atol=1e-7)
    assert similarity[0, 1] == torch.tensor(0.6, dtype=torch.float32)


def test_cosine_affinity_is_exactly_symmetric():
    # the Lanczos solver relies on it (LAPACK would read the lower triangle only)
    similarity = cosine_affinity(torch.randn(300, 384, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(similarity, similarity.T)


def test_binary_graph_has_no_edge_at_exactly_tau_and_is_float64():
    similarity = torch.tensor([[1.0, 0.6, 0.7], [0.6, 1.0, 0.5], [0.7, 0.5, 1.0]])
    weights = graph_weights(similarity, tau=0.6, eps=1e-5, binary_graph=True)
    assert weights.dtype == torch.float64
    assert weights.tolist() == [[1.0, 1e-5, 1.0], [1e-5, 1.0, 1e-5], [1.0, 1e-5, 1.0]]


def test_weighted_graph_keeps_similarities_at_exactly_tau_in_float32():
    similarity = torch.tensor([[1.0, 0.6, 0.7], [0.6, 1.0, 0.5], [0.7, 0.5, 1.0]])
    weights = graph_weights(similarity, tau=0.6, eps=1e-5, binary_graph=False)
    eps32 = float(np.float32(1e-5))
    assert weights.dtype == torch.float32
    expected = [[1.0, 0.6, 0.7], [0.6, 1.0, eps32], [0.7, eps32, 1.0]]
    assert weights.tolist() == torch.tensor(expected).tolist()


def test_threshold_is_compared_in_float32():
    # float32(0.2) = 0.20000000298 > 0.2 in float64, but equal to tau once tau is float32
    at_tau = torch.tensor([[1.0, 0.2], [0.2, 1.0]], dtype=torch.float32)
    assert graph_weights(at_tau, tau=0.2, eps=1e-5)[0, 1] == 1e-5
    assert graph_weights(at_tau, tau=0.2, eps=1e-5, binary_graph=False)[0, 1] == at_tau[0, 1]


def test_degenerate_means_all_off_diagonal_weights_equal():
    assert is_degenerate(torch.full((4, 4), 1e-5))
    assert is_degenerate(torch.eye(4, dtype=torch.float64) * (1 - 1e-5) + 1e-5)
    assert is_degenerate(torch.ones(2, 2))
    weights = torch.full((4, 4), 1e-5)
    weights[1, 2] = weights[2, 1] = 1.0
    assert not is_degenerate(weights)


def test_both_eigensolvers_find_the_two_clique_vector():
    # cliques of 4 and 16 patches joined by eps: v is constant on each (see two_clique_vector)
    membership = torch.zeros(20, dtype=torch.bool)
    membership[[7, 8, 12, 13]] = True
    weights = torch.where(membership[:, None] == membership[None, :], 1.0, 1e-5).double()
    value_a, value_b = two_clique_vector(4, 16, 1e-5)
    expected = np.where(membership.numpy(), value_a, value_b)
    for vector in (second_eigenvector_dense(weights.numpy()), second_eigenvector_lanczos(weights).numpy()):
        sign = np.sign(vector[7])
        np.testing.assert_allclose(sign * vector, expected, rtol=1e-10)


def test_lanczos_stops_exactly_at_an_invariant_krylov_space():
    # start e1 is an eigenvector: the first step leaves nothing (β = 0 exactly); going on would
    # divide by zero
    matrix = torch.diag(torch.tensor([1.0, 0.5, 0.25, 0.0], dtype=torch.float64))
    deflated, start = torch.eye(4, dtype=torch.float64)[3], torch.eye(4, dtype=torch.float64)[0]
    vector, residual = tokencut._lanczos_top_vector(matrix, deflated, start)
    assert vector.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert residual == 0.0


def test_bipartition_splits_above_the_mean():
    partition, seed, oriented = bipartition(np.array([2.0, 1.0, -1.0, -1.5]))
    assert partition.tolist() == [True, True, False, False]
    assert seed == 0
    assert oriented.tolist() == [2.0, 1.0, -1.0, -1.5]


def test_flip_moves_the_seed_to_the_true_side():
    # mean -0.25: v > mean is {2, 3}; the seed (|-3|) is outside, so the partition is v <= mean
    partition, seed, oriented = bipartition(np.array([-3.0, -0.5, 1.25, 1.25]))
    assert seed == 0
    assert partition.tolist() == [True, True, False, False]
    assert oriented.tolist() == [3.0, 0.5, -1.25, -1.25]


def test_bipartition_does_not_depend_on_the_sign():
    vector = np.random.default_rng(0).normal(size=50)
    for first, second in zip(bipartition(vector), bipartition(-vector), strict=True):
        assert np.array_equal(first, second)


def test_patches_at_the_mean_join_the_seed_whatever_the_sign():
    # mean 0: the published code puts patch 1 with the seed for [-2, 0, 1, 1] (flipped to v <= 0)
    # but not for [2, 0, -1, -1] (v > 0); here it always does, also when off by rounding
    for vector in ([-2.0, 0.0, 1.0, 1.0], [2.0, 0.0, -1.0, -1.0], [2.0, 1e-15, -1.0, -1.0], [2.0, -1e-15, -1.0, -1.0]):
        partition, seed, _ = bipartition(np.array(vector))
        assert seed == 0
        assert partition.tolist() == [True, True, False, False]
    assert bipartition(np.array([2.0, -1e-6, -1.0, -1.0]))[0].tolist() == [True, False, False, False]


def test_seed_is_the_first_of_tied_magnitudes():
    partition, seed, oriented = bipartition(np.array([0.1, -0.5, 0.5, -0.1]))
    assert seed == 1
    assert partition.tolist() == [False, True, False, True]
    assert oriented.tolist() == [-0.1, 0.5, -0.5, 0.1]
    # rounding-level differences are ties; real ones are not
    assert bipartition(np.array([0.1, 0.5 - 1e-12, 0.5, -0.1]))[1] == 1
    assert bipartition(np.array([0.1, 0.5 - 1e-6, 0.5, -0.1]))[1] == 2


def test_zero_vector_bipartition_is_the_whole_grid_seeded_at_zero():
    partition, seed, _ = bipartition(np.zeros(6))
    assert seed == 0
    assert partition.all()


# --- whole method, hand-made maps ----------------------------------------------------------------


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_planted_block_is_cut_out_with_its_box(eigensolver):
    # grid 4x5, p = 16: object rows 1-2, cols 2-3 (E2) on E1 -> two cliques of 4 and 16;
    # |v| is largest on the smaller clique, whose first patch (row 1, col 2) = 7 is the seed
    cells = block([1, 2], [2, 3])
    result = cut(planted((4, 5), [(E2, cells)]), (4, 5), (16, 16), (64, 80), eigensolver=eigensolver)
    value_a, value_b = two_clique_vector(4, 16, 1e-5)
    assert result.box.tolist() == [32, 16, 64, 48]
    assert result.box.dtype == np.int64
    assert result.seed == 7
    assert np.flatnonzero(result.partition).tolist() == [7, 8, 12, 13]
    np.testing.assert_allclose(result.eigenvector, np.where(result.partition, value_a, value_b), rtol=1e-10)


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_similarity_at_exactly_tau_is_no_edge_of_the_binary_graph(eigensolver):
    # E1 block rows 1-2, cols 1-2; A block next to it (cols 3-4); E2 elsewhere.
    # E1·A = float32(0.6) = tau: no edge; A·E2 = 0.8 > tau: edge; E1·E2 = 0. So the graph is
    # two cliques, the E1 block (4) and the rest (20), and the cut takes the E1 block alone.
    feats = planted((4, 6), [(E1, block([1, 2], [1, 2])), (A, block([1, 2], [3, 4]))], background=E2)
    result = cut(feats, (4, 6), (16, 16), (64, 96), tau=0.6, eigensolver=eigensolver)
    value_a, value_b = two_clique_vector(4, 20, 1e-5)
    assert result.seed == 7
    assert np.flatnonzero(result.partition).tolist() == [7, 8, 13, 14]
    assert result.box.tolist() == [16, 16, 48, 48]
    np.testing.assert_allclose(result.eigenvector, np.where(result.partition, value_a, value_b), rtol=1e-10)


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_box_covers_the_seed_component_of_two_identical_objects(eigensolver):
    # two E2 blobs (top-left 2x2, bottom-right 2x2) on E1, grid 5x6, p = 8: both blobs form the
    # small clique, all tied in |v|; the seed is the first in raster order (0), the box its blob's
    objects = block([0, 1], [0, 1]) + block([3, 4], [4, 5])
    result = cut(planted((5, 6), [(E2, objects)]), (5, 6), (8, 8), (40, 48), eigensolver=eigensolver)
    assert result.seed == 0
    assert np.flatnonzero(result.partition).tolist() == [0, 1, 6, 7, 22, 23, 28, 29]
    assert result.box.tolist() == [0, 0, 16, 16]


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_nearly_complete_graph_keeps_the_patches_at_the_mean_with_the_seed(eigensolver):
    # every pair is an edge but (6, 13): v = a at 6, -a at 13 and exactly 0 (the mean) elsewhere,
    # a = 1 / sqrt(2 d), d = 19 + eps. The seed is 6 (first of the tie), and the 18 patches at the
    # mean join it: the box is the whole image (the published code's answer when LAPACK's sign
    # needs the flip; the box of cell 6 alone otherwise, then decided by rounding)
    feats = planted((4, 5), [(torch.tensor([1.0, 1.0, 0.0]), [(1, 1)]), (torch.tensor([1.0, -1.0, 0.0]), [(2, 3)])])
    result = cut(feats, (4, 5), (16, 16), (64, 80), eigensolver=eigensolver)
    value = 1 / np.sqrt(2 * (19 + 1e-5))
    assert result.seed == 6
    assert np.flatnonzero(~result.partition).tolist() == [13]
    assert result.box.tolist() == [0, 0, 80, 64]
    np.testing.assert_allclose(result.eigenvector, np.eye(20)[6] * value - np.eye(20)[13] * value, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_box_is_clipped_to_the_unpadded_image(eigensolver):
    # image 40x50 padded to 48x64: grid 3x4, object in the bottom-right 2x2 cells
    feats = planted((3, 4), [(E2, block([1, 2], [2, 3]))])
    result = cut(feats, (3, 4), (16, 16), (40, 50), eigensolver=eigensolver)
    assert result.box.tolist() == [32, 16, 50, 40]


@pytest.mark.parametrize("eigensolver", SOLVERS)
@pytest.mark.parametrize(
    "feats",
    [torch.ones(12, 5) * 3, torch.zeros(12, 5), torch.eye(12)],
    ids=["constant", "zeros", "all-below-tau"],
)
def test_degenerate_map_gives_the_whole_image(eigensolver, feats):
    result = cut(feats, (3, 4), (16, 16), (40, 50), eigensolver=eigensolver)
    assert result.solver == "degenerate"
    assert result.box.tolist() == [0, 0, 50, 40]
    assert result.seed == 0
    assert result.partition.all()
    assert not result.eigenvector.any()


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_fewer_than_three_patches_give_the_whole_image(eigensolver):
    # the published eigh(..., subset_by_index=[1, 2]) needs N >= 3
    feats = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    assert cut(feats, (1, 2), (16, 16), (16, 30), eigensolver=eigensolver).box.tolist() == [0, 0, 30, 16]
    assert cut(feats[:1], (1, 1), (16, 16), (12, 10), eigensolver=eigensolver).box.tolist() == [0, 0, 10, 12]


# --- against the published computation ---------------------------------------------------------


def random_maps():
    """(name, feats, grid, tau, binary): vit-like, noisy planted and exact-tau maps, both graphs.
    The exact-tau maps repeat three features, so many patches tie in |v|."""
    rng = np.random.default_rng(0)
    maps = []
    for index in range(6):
        grid = [(6, 8), (9, 7), (12, 10)][index % 3]
        maps.append((f"vit-like-{index}", vit_like_map(grid, rng), grid, 0.2, index % 2 == 0))
        maps.append((f"planted-{index}", noisy_planted_map(grid, rng), grid, 0.2, index % 2 == 1))
        maps.append((f"exact-tau-{index}", exact_tau_map(rng), (6, 7), 0.6, index % 2 == 0))
    return maps


MAPS = random_maps()


@pytest.mark.parametrize("name, feats, grid, tau, binary", MAPS, ids=[m[0] for m in MAPS])
def test_dense_solver_is_the_published_computation(name, feats, grid, tau, binary):
    image_size = (grid[0] * 8 - 3, grid[1] * 8)
    vector = published_eigenvector(feats, tau, 1e-5, not binary)
    result = cut(feats, grid, (8, 8), image_size, tau, 1e-5, binary, "dense")
    ties = tied_with_maximum(vector)
    box, seed, oriented, parts = published_cut(vector, grid, (8, 8), image_size, ties[0] if len(ties) > 1 else None)
    assert result.solver == "dense"
    assert result.seed == seed
    assert result.box.tolist() == box.tolist()
    assert np.array_equal(result.partition, parts)
    assert np.array_equal(result.eigenvector, oriented)


@pytest.mark.parametrize("name, feats, grid, tau, binary", MAPS, ids=[m[0] for m in MAPS])
def test_lanczos_solver_gives_the_published_partition(name, feats, grid, tau, binary):
    image_size = (grid[0] * 8, grid[1] * 8 - 5)
    vector = published_eigenvector(feats, tau, 1e-5, not binary)
    result = cut(feats, grid, (8, 8), image_size, tau, 1e-5, binary, "auto")
    # the published float32 solve of the weighted graph leaves ties unequal by up to ~1e-5
    ties = tied_with_maximum(vector, rtol=1e-9 if binary else 1e-4)
    box, _, oriented, parts = published_cut(vector, grid, (8, 8), image_size, result.seed)
    assert result.solver == "lanczos"
    assert result.seed in ties if len(ties) > 1 else result.seed == ties[0]
    assert result.box.tolist() == box.tolist()
    assert np.array_equal(result.partition, parts)
    # the published code solves the weighted graph in float32 (about 3 digits here), in float64 here
    tolerance = 1e-12 if binary else 1e-2 * np.abs(oriented).max()
    np.testing.assert_allclose(result.eigenvector, oriented, rtol=0, atol=tolerance)


@needs_cuda
def test_lanczos_runs_on_the_gpu_beside_the_features(monkeypatch):
    devices = []
    lanczos = tokencut.second_eigenvector_lanczos
    monkeypatch.setattr(
        tokencut, "second_eigenvector_lanczos", lambda weights: devices.append(weights.device.type) or lanczos(weights)
    )
    result = cut(vit_like_map((6, 8), np.random.default_rng(0)), (6, 8), (8, 8), (48, 64), eigensolver="auto")
    assert result.solver == "lanczos"
    assert devices == ["cuda"]


def test_exact_tau_maps_hit_tau_exactly():
    feats = exact_tau_map(np.random.default_rng(0))
    assert (cosine_affinity(feats) == torch.tensor(0.6)).sum() > 0


def test_batch_equals_single_images():
    rng = np.random.default_rng(3)
    feats = torch.stack([vit_like_map((5, 6), rng) for _ in range(3)])
    sizes = [(40, 48), (33, 45), (40, 41)]
    batched = cut_batch(feats, (5, 6), (8, 8), sizes)
    for image_feats, size, result in zip(feats, sizes, batched, strict=True):
        single = cut(image_feats, (5, 6), (8, 8), size)
        assert single.box.tolist() == result.box.tolist()
        assert single.seed == result.seed
        assert np.array_equal(single.eigenvector, result.eigenvector)


# --- fallback and errors -----------------------------------------------------------------------


def test_lanczos_that_cannot_converge_raises(monkeypatch):
    monkeypatch.setattr(tokencut, "LANCZOS_MAX_DIM", 2)
    monkeypatch.setattr(tokencut, "LANCZOS_RESTARTS", 0)
    weights = graph_weights(cosine_affinity(vit_like_map((8, 9), np.random.default_rng(1))))
    with pytest.raises(EigensolverDidNotConverge, match="residual"):
        second_eigenvector_lanczos(weights)


def test_auto_falls_back_to_dense_and_warns_once(monkeypatch):
    monkeypatch.setattr(tokencut, "LANCZOS_MAX_DIM", 2)
    monkeypatch.setattr(tokencut, "LANCZOS_RESTARTS", 0)
    tokencut._warn_dense_fallback.cache_clear()
    rng = np.random.default_rng(2)
    maps = [vit_like_map((8, 9), rng) for _ in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [cut(feats, (8, 9), (8, 8), (64, 72), eigensolver="auto") for feats in maps]
    assert len(caught) == 1
    assert caught[0].category is RuntimeWarning and "dense" in str(caught[0].message)
    for feats, result in zip(maps, results, strict=True):
        dense = cut(feats, (8, 9), (8, 8), (64, 72), eigensolver="dense")
        assert result.solver == "dense"
        assert result.box.tolist() == dense.box.tolist()
        assert np.array_equal(result.eigenvector, dense.eigenvector)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eigensolver": "arpack"}, "eigensolver"),
        ({"eps": 0.0}, "eps must be positive"),
        ({"binary_graph": False, "tau": 0.0}, "tau > 0"),
    ],
)
def test_bad_settings_are_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cut(torch.randn(12, 4), (3, 4), (16, 16), (48, 64), **kwargs)


def test_grid_mismatch_is_reported():
    with pytest.raises(ValueError, match="grid"):
        cut(torch.randn(12, 4), (3, 5), (16, 16), (48, 80))


# --- picture -----------------------------------------------------------------------------------


def test_picture_has_three_image_sized_panels_with_the_box():
    feats = planted((4, 5), [(E2, block([1, 2], [2, 3]))])
    result = cut(feats, (4, 5), (16, 16), (60, 75))
    image = Image.new("RGB", (75, 60), (128, 128, 128))
    picture = tokencut_picture(image, result, (4, 5), (16, 16))
    assert picture.size == (3 * 75 + 2 * 8, 60)
    assert picture.getpixel((32, 30)) == (255, 32, 32)  # left edge of the box [32, 16, 64, 48]
    assert picture.getpixel((2 * (75 + 8) + 40, 30)) == (255, 220, 0)  # partition panel, object cell
    assert picture.getpixel((2 * (75 + 8) + 5, 5)) == (30, 30, 30)  # partition panel, background
