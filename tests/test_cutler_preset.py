"""The CutLER preset against the transcription of CutLER's ``maskcut.py`` (tests/published_cutler.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from published_cutler import published_binary_mask, published_cutler, published_maskcut_forward
from synthetic_maps import KINDS

from lost.backbones import FeatureExtractor
from lost.data.datasets import single_image_records
from lost.data.images import ImageFileDataset, image_to_tensor
from lost.methods.cutler_preset import (
    CutlerCuts,
    CutlerItem,
    cutler_cuts,
    cutler_cuts_batch,
    cutler_masks,
    cutler_postprocess,
    is_dropped,
    lanczos_decides,
    published_iou,
    published_side,
    refined_mask,
    resized_back,
)
from tests.conftest import tiny_vit

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# ----------------------------------------------------------------------------------------------
# The published rules, by hand


def test_corner_rule_takes_the_part_below_the_mean_when_three_corners_are_above():
    vector = np.array([2.0, 0, 2, 0, 0, 0, 2, 0, -1])
    part, seed = published_side(vector, (3, 3))
    assert part.tolist() == [False, True, False, True, True, True, False, True, True]
    assert seed == 8


def test_seed_below_the_mean_flips_to_the_part_at_or_below_it():
    vector = np.array([-3.0, 1, 1, 1, 0, 0, 0, 0, 0])
    part, seed = published_side(vector, (3, 3))
    assert part.tolist() == [True, False, False, False, True, True, True, True, True]
    assert seed == 0


def test_seed_above_the_mean_keeps_its_part():
    part, seed = published_side(np.array([0.0, 3, 1, 0, 0, 0, 0, 0, 0]), (3, 3))
    assert part.tolist() == [False, True, True, False, False, False, False, False, False]
    assert seed == 1


def test_lanczos_is_not_trusted_when_the_seeds_part_holds_three_corners():
    vector = np.array([3.0, -1, 2.9, -1, -1, -1, 2.8, -1, 0.5])
    assert not lanczos_decides(vector, (3, 3))
    assert not lanczos_decides(-vector, (3, 3))


def test_lanczos_is_trusted_for_a_clear_cut_of_either_sign():
    vector = np.array([3.0, -1, 2.9, -1, -1, -1, -1, -1, -1])
    assert lanczos_decides(vector, (3, 3))
    assert lanczos_decides(-vector, (3, 3))


def test_lanczos_is_not_trusted_with_a_patch_at_the_mean_or_seeds_in_two_components():
    assert not lanczos_decides(np.array([3.0, 1, -4, 0, 0, 0, 0, 0, 0]), (3, 3))
    two_seeds = np.array([3.0, -0.2, 3, -0.1, -0.3, -0.4, -0.5, -0.6, -0.7])
    assert not lanczos_decides(two_seeds, (3, 3))
    assert lanczos_decides(np.array([3.0, 2.9, 3, -0.1, -0.3, -0.4, -0.5, -0.6, -0.7]), (3, 3))


def test_share_of_exactly_one_percent_is_dropped_and_iou_of_exactly_half_is_not():
    grid = (10, 10)
    single = np.zeros(100, dtype=bool)
    single[5] = True
    assert is_dropped(single, np.zeros(100, dtype=bool), grid)
    pair = single.copy()
    pair[6] = True
    assert not is_dropped(pair, single, grid)
    assert is_dropped(pair, pair, grid)


def test_published_iou_is_nan_for_two_empty_masks_so_they_are_kept():
    empty = np.zeros((4, 4))
    assert np.isnan(published_iou(empty, empty))


def test_threshold_of_the_resized_mask_is_half_its_own_maximum():
    mask = np.zeros((16, 16), dtype=bool)
    mask[7, 7] = True
    resized = np.asarray(Image.fromarray(np.uint8(mask * 255)).resize((6, 6), Image.BICUBIC))
    assert 0 < resized.max() <= 127
    back = resized_back(mask, (6, 6))
    assert back.any() and np.array_equal(back, resized > resized.max() / 2)


# ----------------------------------------------------------------------------------------------
# The loop against the transcription


def symmetric_two_objects() -> torch.Tensor:
    """(64, 8): two mirror-image blocks on a uniform background: the background's v is exactly
    the mean in exact arithmetic, all four corners are in it, and rounding decides."""
    a, b, c = np.zeros(8), np.zeros(8), np.zeros(8)
    a[[0, 2]] = [1, 0.3]
    b[[1, 2]] = [1, 0.3]
    c[2] = 1
    feats = np.tile(c, (8, 8, 1))
    feats[2:6, 0:3] = a
    feats[2:6, 5:8] = b
    return torch.tensor(feats.reshape(-1, 8), dtype=torch.float32)


def planted(seed: int, kind: str) -> torch.Tensor:
    return KINDS[kind]((10, 10), np.random.default_rng(seed))


def assert_same_as_published(feats: torch.Tensor, grid: tuple[int, int]) -> tuple[CutlerCuts, list[dict]]:
    bipartitions, trace = published_maskcut_forward(feats.T, list(grid), [1, 1], list(grid))
    ours = cutler_cuts(feats, grid)
    for published, mine in zip(bipartitions, ours.patch_masks, strict=True):
        assert np.array_equal(published.astype(bool), mine)
    return ours, trace


def test_ties_at_the_mean_and_the_corner_rule_go_to_the_published_dense_solve():
    ours, trace = assert_same_as_published(symmetric_two_objects(), (8, 8))
    assert trace[0]["corners"] >= 3 and abs(trace[0]["mean"]) < 1e-12
    assert ours.solvers[0] == "dense"


def test_drop_lets_the_loop_go_on_and_the_repeated_cut_is_not_solved_again():
    ours, trace = assert_same_as_published(planted(3, "planted"), (10, 10))
    assert trace[1]["dropped"] and ours.patch_masks[2].any()
    assert ours.solvers[2] == "repeat"


def test_object_emptied_by_the_subtraction_of_earlier_objects():
    ours, trace = assert_same_as_published(planted(0, "vit-like"), (10, 10))
    emptied = [k for k in (1, 2) if not trace[k]["dropped"] and not ours.patch_masks[k].any()]
    assert emptied and all(trace[k]["component"].any() for k in emptied)


@pytest.mark.parametrize(("seed", "kind"), [(0, "planted"), (1, "vit-like"), (2, "noise"), (7, "planted"), (19, "vit-like")])
def test_planted_maps_match_the_published_loop(seed, kind):
    ours, _ = assert_same_as_published(planted(seed, kind), (10, 10))
    assert len(ours.scores) == 3 and np.all(np.diff(ours.scores[ours.patch_masks.any(axis=(1, 2))]) <= 0)


def test_both_solvers_are_used_on_one_image():
    ours, trace = assert_same_as_published(planted(0, "planted"), (10, 10))
    assert {"dense", "lanczos"} <= set(ours.solvers)
    assert any(item["corners"] >= 3 for item in trace)


def test_bad_settings_are_refused():
    feats = planted(0, "planted")
    with pytest.raises(ValueError, match="grid"):
        cutler_cuts_batch(feats[None], (9, 10))
    with pytest.raises(ValueError, match="eigensolver"):
        cutler_cuts_batch(feats[None], (10, 10), eigensolver="arpack")
    with pytest.raises(ValueError, match="tau"):
        cutler_cuts_batch(feats[None], (10, 10), tau=-0.1)


# ----------------------------------------------------------------------------------------------
# The post-processing


def ring_image() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 image with a bright ring 4 pixels thick, and the ring as the mask."""
    image = np.full((64, 64, 3), 30, np.uint8)
    image[8:56, 8:56] = 220
    image[12:52, 12:52] = 30
    mask = np.zeros((64, 64), dtype=bool)
    mask[8:56, 8:56] = True
    mask[12:52, 12:52] = False
    return image, mask


def test_mask_emptied_when_its_filled_crf_result_has_iou_below_half():
    image, mask = ring_image()
    assert np.count_nonzero(mask) == 704
    assert refined_mask(image, mask, (64, 64)).sum() == 0
    assert published_binary_mask(image, mask * 1.0, 64, 64).max() == 0


def test_kept_mask_is_the_crf_result_resized_to_the_original_size():
    image, mask = ring_image()
    image[12:52, 12:52] = 220
    masks = cutler_masks(image, mask[None], (100, 80))
    assert masks.shape == (1, 100, 80)
    assert np.array_equal(masks[0], published_binary_mask(image, mask * 1.0, 80, 100) > 0)


def test_postprocess_gives_empty_masks_a_score_of_zero():
    image, mask = ring_image()
    cuts = CutlerCuts(np.stack([mask, np.zeros_like(mask)]), np.array([0.9, 0.8]), ("lanczos", "dense"))
    result = cutler_postprocess(CutlerItem(image, cuts, (64, 64)))
    assert result.scores.tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------------------------
# Small photos, tiny random ViT


@pytest.mark.parametrize("name", ["chelsea.jpg", "coffee.jpg"])
def test_photos_match_the_published_script(name, tmp_path):
    (tmp_path / name).write_bytes((EXAMPLES / name).read_bytes())
    record = single_image_records(tmp_path)[0]
    item = ImageFileDataset([record], 8, fixed_size=96, keep_pixels=True)[0]
    image_new = Image.open(EXAMPLES / name).convert("RGB").resize((96, 96), Image.LANCZOS)
    assert torch.equal(item.image, image_to_tensor(image_new)) and np.array_equal(item.pixels, np.array(image_new))
    extractor = FeatureExtractor(tiny_vit(8), "vit_small", 8)
    feats = extractor.extract(item.image[None], frozenset({"feats"}))
    cuts = cutler_cuts_batch(feats.feats, feats.grid)[0]
    ours = cutler_masks(item.pixels, cuts.patch_masks, item.original_size)
    published, _ = published_cutler(image_new, feats.feats[0].T, 8, item.original_size)
    assert ours.shape == (3, *item.original_size)
    assert np.array_equal(ours, published)
