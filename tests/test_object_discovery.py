"""LOST and DINO-seg on planted feature maps whose answer is worked out by hand."""

import numpy as np
import pytest
import torch
from conftest import TEST_DEVICE, on_test_device
from published_lost import published_style_lost

from lost.geometry import seed_component_box
from lost.methods.dinoseg import dino_seg, top_mass_mask
from lost.methods.lost import expand_seed, lost, lost_batch, order_by_degree, patch_degrees

E1, E2, E3 = torch.eye(3)


def planted_map(grid, groups, background=E1):
    """(h*w, 3) features: `background` everywhere, `groups` = [(vector, [(row, col), ...]), ...]."""
    h, w = grid
    feats = background.repeat(h * w, 1).clone()
    for vector, cells in groups:
        for row, col in cells:
            feats[row * w + col] = vector
    return feats


BLOCK = [(1, 2), (1, 3), (2, 2), (2, 3)]

lost_on_device = on_test_device(lost)
"""LOST on TEST_DEVICE: degrees, order and expansion there, the components on the CPU."""
lost_batch_on_device = on_test_device(lost_batch)
dino_seg_on_device = on_test_device(dino_seg)


def test_degree_counts_positive_similarities_without_self():
    # A01 = 1 > 0, A02 = -1, A12 = -0.5 -> degrees 1, 1, 0
    feats = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]]])
    assert patch_degrees(feats).tolist() == [[1, 1, 0]]


def test_degree_ignores_zero_similarity_and_zero_features():
    # the zero vector is similar to nobody, itself included
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    assert patch_degrees(feats).tolist() == [[0, 0, 0]]


def test_degree_chunks_give_the_same_counts():
    feats = torch.randn(2, 37, 5, generator=torch.Generator().manual_seed(0))
    whole = patch_degrees(feats)
    brute = ((feats @ feats.transpose(1, 2)) > 0).sum(2) - 1
    assert torch.equal(whole, brute)
    assert torch.equal(patch_degrees(feats, chunk_elements=7), whole)


def test_order_reproduces_the_published_unstable_argsort():
    degrees = torch.randint(0, 5, (2000,), generator=torch.Generator().manual_seed(0))
    published = torch.argsort(-degrees.float(), descending=True)
    stable = torch.sort(-degrees.float(), descending=True, stable=True).indices
    order = order_by_degree(degrees)
    assert torch.equal(order, published)
    assert not torch.equal(order, stable), "ties must not be broken by index"
    assert torch.equal(degrees[order], torch.sort(degrees).values)


def test_seed_is_lowest_degree_patch_and_expands_over_similar_ones():
    feats = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    order = order_by_degree(patch_degrees(feats[None])[0])
    seed, similars, seed_similarity, expansion = expand_seed(feats, order, k_patches=100)
    assert seed == 2
    assert similars.tolist() == [2]
    assert seed_similarity.tolist() == [-1.0, -0.5, 1.25]
    assert expansion.tolist() == [-1.0, -0.5, 1.25]


def test_block_of_similar_patches_on_background_gives_its_box():
    # grid 4x5, p = 16: object cells rows 1-2, cols 2-3 -> x 32..64, y 16..48
    feats = planted_map((4, 5), [(E2, BLOCK)])
    result = lost_on_device(feats, (4, 5), (16, 16), (64, 80))
    assert result.seed in {1 * 5 + 2, 1 * 5 + 3, 2 * 5 + 2, 2 * 5 + 3}
    assert result.box.tolist() == [32, 16, 64, 48]
    assert result.box.dtype == np.int64
    assert sorted(result.similars.tolist()) == [7, 8, 12, 13]
    assert result.degrees[7] == 3 and result.degrees[0] == 15


def test_box_is_clipped_to_the_unpadded_image():
    # image 40x50 padded to 48x64: grid 3x4, object in the bottom-right corner cells
    feats = planted_map((3, 4), [(E2, [(1, 2), (1, 3), (2, 2), (2, 3)])])
    result = lost_on_device(feats, (3, 4), (16, 16), (40, 50))
    assert result.box.tolist() == [32, 16, 50, 40]


def test_cnn_scales_give_float_boxes():
    # float scales give float boxes even when whole, as in the published ResNet predictions
    assert lost_on_device(planted_map((3, 2), [(E2, [(1, 0)])]), (3, 2), (16.0, 16.0), (48, 32)).box.dtype == np.float64
    # 80x48 input, stride-32 map of 3x2: scales (80/3, 24); object cell (1, 0)
    feats = planted_map((3, 2), [(E2, [(1, 0)])])
    result = lost_on_device(feats, (3, 2), (80 / 3, 24.0), (80, 48))
    assert result.box.dtype == np.float64
    np.testing.assert_allclose(result.box, [0.0, 80 / 3, 24.0, 160 / 3])


def test_box_covers_only_the_seed_component():
    # obj1 (e2, 2 cells) is the seed; obj2 (e2 + e3) is similar to it but far away and has more
    # neighbours thanks to bg2 (e1 + e3). With k=2 the similars are obj1's cells; M > 0 on obj1
    # and obj2, which are not 4-connected: the box is obj1's.
    obj1 = [(0, 0), (0, 1)]
    obj2 = [(3, 3), (3, 4), (4, 3), (4, 4)]
    bg2 = [(0, 4), (1, 4)]
    feats = planted_map((5, 5), [(E2, obj1), (E2 + E3, obj2), (E1 + E3, bg2)])
    result = lost_on_device(feats, (5, 5), (8, 8), (40, 40), k_patches=2)
    assert result.seed in {0, 1}
    assert (result.expansion_map.reshape(5, 5)[3:, 3:] > 0).all()
    assert result.box.tolist() == [0, 0, 16, 8]


def test_diagonal_neighbours_are_not_connected():
    score = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    box = seed_component_box(score, 0, (2, 2), (16, 16), (32, 32))
    assert box.tolist() == [0, 0, 16, 16]


def test_batch_equals_single_images():
    generator = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 12, 6, generator=generator)
    sizes = [(40, 60), (48, 64), (33, 50)]
    batched = lost_batch_on_device(feats, (3, 4), (16, 16), sizes, k_patches=5)
    for image_feats, size, result in zip(feats, sizes, batched, strict=True):
        single = lost_on_device(image_feats, (3, 4), (16, 16), size, k_patches=5)
        assert single.seed == result.seed
        assert single.box.tolist() == result.box.tolist()


def test_low_precision_features_decide_signs_in_float32():
    feats = planted_map((4, 5), [(E2, BLOCK)]).to(torch.bfloat16)
    assert lost_on_device(feats, (4, 5), (16, 16), (64, 80)).box.tolist() == [32, 16, 64, 48]


def test_grid_mismatch_is_reported():
    with pytest.raises(ValueError, match="grid"):
        lost_on_device(torch.ones(10, 3), (3, 4), (16, 16), (48, 64))


def test_top_mass_keeps_patches_above_forty_percent_cumulative():
    # sorted: 0.1, 0.2, 0.3, 0.4 -> cumulative 0.1, 0.3, 0.6, 1.0 -> keep the 0.3 and 0.4 patches
    attention = torch.tensor([0.4, 0.1, 0.3, 0.2])
    assert top_mass_mask(attention).tolist() == [True, False, True, False]


def test_dinoseg_boxes_the_largest_attention_blob():
    # 4x4 grid: blob (0,0),(0,1) at 0.25 each, lone (3,3) at 0.3, 13 others share 0.2.
    # Ascending cumulative: 13 small -> 0.2, then 0.45 (> 0.4, kept), 0.7, 1.0: three cells kept;
    # the largest component is the 2-cell blob -> cols 0-1, row 0.
    attention = torch.full((16,), 0.2 / 13)
    attention[0] = attention[1] = 0.25
    attention[15] = 0.3
    heads = torch.stack([torch.rand(16), attention])
    box = dino_seg_on_device(heads, (4, 4), 16, (64, 64), head=1)
    assert box.tolist() == [0, 0, 32, 16]


def test_dinoseg_rejects_a_missing_head():
    with pytest.raises(ValueError, match="head 6"):
        dino_seg_on_device(torch.rand(6, 16), (4, 4), 16, (64, 64), head=6)


@pytest.mark.parametrize("dim", [2, 3, 16])
def test_same_seed_and_box_as_the_full_matrix_computation(dim):
    # low dimensions make many equal degrees, so the tie order is exercised; entries in
    # {-2, -1, 1, 2} so that no feature is zero (the published code raises on a zero seed)
    generator = torch.Generator().manual_seed(dim)
    for _ in range(20):
        magnitudes = torch.randint(1, 3, (24 * 32, dim), generator=generator)
        signs = torch.randint(0, 2, (24 * 32, dim), generator=generator) * 2 - 1
        feats = (magnitudes * signs).float()
        expected_box, expected_seed = published_style_lost(feats.to(TEST_DEVICE), (24, 32), 16, (375, 500), 100)
        result = lost_on_device(feats, (24, 32), (16, 16), (375, 500))
        assert result.seed == expected_seed
        assert result.box.tolist() == expected_box


def test_a_zero_feature_seed_gives_its_own_cell():
    # the zero patch has degree 0, so it is the seed; nothing is similar to it: its cell is the box
    feats = planted_map((3, 4), [(torch.zeros(3), [(1, 2)])])
    result = lost_on_device(feats, (3, 4), (16, 16), (48, 64))
    assert result.seed == 6
    assert result.box.tolist() == [32, 16, 48, 32]
