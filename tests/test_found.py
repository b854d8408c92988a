"""FOUND and found_bkg on planted key and attention maps, checked by hand and against a
transcription of the published computation (valeoai/FOUND: model.py, bkg_seg.py, misc.py,
evaluation/uod.py)."""

import io
import math
import urllib.error
from collections import OrderedDict

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from conftest import TEST_DEVICE, on_test_device
from PIL import Image

from lost.errors import LostError
from lost.methods import found as found_module
from lost.methods.found import (
    FOUND_WEIGHTS_SHA256,
    FOUND_WEIGHTS_URL,
    background_seeds,
    coarse_object_masks,
    downsample_mask,
    drop_largest_region,
    foreground_masks,
    found,
    found_background_batch,
    found_batch,
    found_head_bytes,
    head_scores,
    head_sparsity,
    head_weights,
    image_solver,
    load_found_head,
    mask_box,
    new_found_head,
    refine_mask,
    refined_masks,
    save_found_head,
    seed_similarities,
    upsample_mask,
    weighted_keys,
    weights_cache_path,
)
from lost.refine import bilateral_solver
from lost.viz.pictures import found_picture

# ----------------------------------------------------------------------------------------------
# Transcriptions of the published computation


def published_found_box(keys, weight, bias, grid, patch_size, image_size):
    """model.forward_step (keys as a (1, d, h, w) map through the 1x1 decoder), evaluation/uod.py
    (sigmoid > 0.5) and misc.get_bbox_from_segmentation_labels, operation by operation."""
    h, w = grid
    feats = keys.reshape(1, h, w, -1).permute(0, 3, 1, 2)
    preds = F.conv2d(feats, weight, bias)
    segmentation = (torch.sigmoid(preds.detach()) > 0.5).float().squeeze().numpy()
    objects, _ = scipy.ndimage.label(segmentation)
    foreground_labels = objects.flatten()[objects.flatten() != 0]
    most_frequent = np.bincount(foreground_labels).argmax()
    where = np.where(objects == most_frequent)
    ymin, ymax = min(where[0]), max(where[0]) + 1
    xmin, xmax = min(where[1]), max(where[1]) + 1
    pred = [patch_size * xmin, patch_size * ymin, patch_size * xmax, patch_size * ymax]
    pred[2] = min(pred[2], image_size[1])
    pred[3] = min(pred[3], image_size[0])
    return np.asarray(pred)


def published_background_mask(cls_attention, keys, grid, threshold=0.3, epsilon=1e-10):
    """bkg_seg.compute_img_bkg_seg from the CLS row on: (B, heads, N), (B, N, d) -> (B, h, w)
    background mask and the seeds."""
    nb, nh, _ = cls_attention.shape
    h, w = grid
    att = cls_attention.reshape(nb, nh, h, w)
    mean = torch.mean(att.reshape(nb, -1), dim=1)
    q = torch.sum(att.reshape(nb, nh, h * w) > mean[:, None, None], axis=2) / (h * w)
    beta = torch.log(torch.sum(q + epsilon, dim=1)[:, None] / (q + epsilon))
    dim = keys.shape[2] // nh
    descs = (keys.reshape(nb, -1, nh, dim) * beta[:, None, :, None]).reshape(nb, -1, nh * dim)
    descs = F.normalize(descs, dim=-1, p=2)
    cos_sim = torch.bmm(descs, descs.permute(0, 2, 1))
    att = att * beta[:, :, None, None]
    seeds = torch.argmin(torch.sum(att, axis=1).reshape(nb, -1), dim=-1)
    cos_sim = cos_sim.reshape(nb, -1, h * w)
    background = cos_sim[torch.arange(nb), seeds, :].reshape(nb, h, w) > threshold
    return background, seeds


found_on_device = on_test_device(found)
"""FOUND with the keys on TEST_DEVICE (the head follows them)."""
found_batch_on_device = on_test_device(found_batch)


def conv_head(weight, bias):
    head = new_found_head(len(weight))
    with torch.no_grad():
        head.weight.copy_(torch.tensor(weight, dtype=torch.float32).view(1, -1, 1, 1))
        head.bias.fill_(bias)
    return head


def planted_keys(grid, blobs, dim=6, noise=0.3, seed=0):
    """(N, dim) keys: a shared background vector, one vector per blob of cells, plus noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    keys = torch.randn(dim, generator=g).repeat(h * w, 1)
    for cells in blobs:
        vector = torch.randn(dim, generator=g)
        for row, col in cells:
            keys[row * w + col] = vector
    return keys + noise * torch.randn(h * w, dim, generator=g)


# ----------------------------------------------------------------------------------------------
# found: the trained head


def test_head_scores_are_the_1x1_convolution_of_each_patch_key():
    # head [2, -1] + 0.5: key (1, 3) -> 2 - 3 + 0.5 = -0.5; key (2, 1) -> 4 - 1 + 0.5 = 3.5
    keys = torch.tensor([[[1.0, 3.0], [2.0, 1.0]]])
    assert head_scores(keys, conv_head([2.0, -1.0], 0.5), (1, 2)).tolist() == [[-0.5, 3.5]]


def test_foreground_is_sigmoid_above_half_in_float32_not_a_positive_score():
    scores = torch.tensor([-1.0, 0.0, 1e-8, 6e-8, 1e-3, 5.0])
    assert foreground_masks(scores).tolist() == [False, False, False, False, True, True]


def test_box_is_the_largest_component_scaled_and_clipped_to_the_unpadded_image():
    # grid 4 x 6, p = 8, image 30 x 45: blob of 3 cells at rows 2-3, cols 4-5 -> x 32..min(48, 45),
    # y 16..min(32, 30); the 1-cell blob at (0, 0) is smaller
    mask = torch.zeros(24, dtype=torch.bool)
    mask[[0, 2 * 6 + 5, 3 * 6 + 5, 3 * 6 + 4]] = True
    assert mask_box(mask, (4, 6), (8, 8), (30, 45)).tolist() == [32, 16, 45, 30]


def test_equally_large_components_give_the_first_in_raster_order():
    # two 2x2 blobs of +1 on -1: rows 0-1 cols 3-4 (met first) and rows 2-3 cols 0-1
    grid = (4, 5)
    keys = -torch.ones(20, 1)
    for row, col in [(0, 3), (0, 4), (1, 3), (1, 4), (2, 0), (2, 1), (3, 0), (3, 1)]:
        keys[row * 5 + col] = 1.0
    head = conv_head([1.0], 0.0)
    result = found_on_device(keys, head, grid, (8, 8), (32, 40))
    assert result.box.tolist() == [24, 0, 40, 16]
    assert result.box.tolist() == published_found_box(keys, head.weight, head.bias, grid, 8, (32, 40)).tolist()


def test_empty_foreground_gives_the_whole_image_where_the_published_code_raises():
    keys = torch.randn(24, 3, generator=torch.Generator().manual_seed(0))
    head = conv_head([0.0, 0.0, 0.0], -1.0)
    result = found_on_device(keys, head, (4, 6), (8, 8), (30, 45))
    assert not result.mask.any()
    assert result.box.tolist() == [0, 0, 45, 30]
    with pytest.raises(ValueError):
        published_found_box(keys, head.weight, head.bias, (4, 6), 8, (30, 45))


@pytest.mark.parametrize("seed", range(8))
def test_found_box_matches_the_published_inference_on_planted_keys_and_random_heads(seed):
    g = torch.Generator().manual_seed(100 + seed)
    grid, image_size = (5, 7), (37, 53)
    blobs = [[(1, 1), (1, 2), (2, 1), (2, 2), (3, 2)], [(0, 5), (1, 5), (1, 6)], [(4, 0)]]
    keys = planted_keys(grid, blobs, seed=seed)
    head = conv_head(torch.randn(6, generator=g).tolist(), float(torch.randn(1, generator=g)))
    result = found_on_device(keys, head, grid, (8, 8), image_size)
    if not result.mask.any():
        assert result.box.tolist() == [0, 0, 53, 37]
        return
    expected = published_found_box(keys, head.weight, head.bias, grid, 8, image_size)
    assert result.box.tolist() == expected.tolist()
    assert result.mask.tolist() == (torch.sigmoid(result.patch_scores) > 0.5).tolist()


def test_batch_gives_each_image_its_own_box_and_int_boxes_for_patch_scales():
    grid = (3, 3)
    keys = -torch.ones(2, 9, 1)
    keys[0, 0] = 1.0
    keys[1, 8] = 1.0
    results = found_batch_on_device(keys, conv_head([1.0], 0.0), grid, (16, 16), [(48, 48), (40, 44)])
    assert [r.box.tolist() for r in results] == [[0, 0, 16, 16], [32, 32, 44, 40]]
    assert results[0].box.dtype == np.int64
    assert results[0].seed is None


# ----------------------------------------------------------------------------------------------
# found_bkg, step by step


def test_sparsity_threshold_is_the_mean_over_all_heads_not_per_head():
    # all-heads mean = (0.1 + 0.2 + 0.3 + 0.4 + 4 * 0.05) / 8 = 0.15: head 0 has 3 patches above
    # (a per-head mean of 0.25 would give 2); head 1 has none
    attention = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.05, 0.05, 0.05, 0.05]]])
    assert head_sparsity(attention).tolist() == [[0.75, 0.0]]


def test_sparsity_counts_attention_strictly_above_the_mean():
    # mean = (0.25 + 0.5 + 0.125 + 0.375 + 4 * 0.1875) / 8 = 0.25 exactly: 0.25 itself is not counted
    attention = torch.tensor([[[0.25, 0.5, 0.125, 0.375], [0.1875] * 4]])
    assert head_sparsity(attention).tolist() == [[0.5, 0.0]]


def test_head_weights_are_log_of_total_over_own_sparsity():
    weights = head_weights(torch.tensor([[0.5, 0.25], [0.75, 0.0]]))
    assert weights[0].tolist() == pytest.approx([math.log(0.75 / 0.5), math.log(0.75 / 0.25)], rel=1e-6)
    # Q = 0: w = log((0.75 + 2e-10) / 1e-10), in float32 where 0.75 + 1e-10 == 0.75
    assert weights[1].tolist() == pytest.approx([math.log(1.0), math.log(0.75 / 1e-10)], rel=1e-6)


def test_seed_is_argmin_of_the_weighted_attention_sum():
    # unweighted sums 0.9, 0.5, 0.7 would pick patch 1; with w = (1, 0.1): 0.81, 0.41, 0.07 -> patch 2
    attention = torch.tensor([[[0.8, 0.4, 0.0], [0.1, 0.1, 0.7]]])
    assert background_seeds(attention, torch.tensor([[1.0, 0.1]])).tolist() == [2]


def test_seed_ties_go_to_the_first_patch():
    attention = torch.tensor([[[0.5, 0.2, 0.2, 0.2]]])
    assert background_seeds(attention, torch.tensor([[1.0]])).tolist() == [1]


def test_keys_are_scaled_per_head_then_normalized():
    # heads of 2 channels: (3, 4 | 1, 0) with w = (1, 0) -> (3, 4, 0, 0) / 5
    keys = torch.tensor([[[3.0, 4.0, 1.0, 0.0]]])
    assert torch.equal(weighted_keys(keys, torch.tensor([[1.0, 0.0]])), torch.tensor([[[0.6, 0.8, 0.0, 0.0]]]))


def test_similarity_exactly_at_threshold_is_object_and_the_seed_is_background():
    # equal sparsity -> equal weights; head 1 all zero; patch 1 = (3, 9, 3, 1) / 10 has cosine
    # exactly float32(0.3) with the seed (1, 0, 0, 0): not above 0.3, so object
    keys = torch.zeros(1, 4, 8)
    keys[0, 0, :4] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    keys[0, 1, :4] = torch.tensor([3.0, 9.0, 3.0, 1.0])
    keys[0, 2, :4] = torch.tensor([2.0, 0.5, 0.0, 0.0])
    keys[0, 3, :4] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    attention = torch.tensor([[[0.0, 0.5, 0.5, 0.5], [0.0, 0.5, 0.5, 0.5]]])
    objects, similarity, seeds = coarse_object_masks(keys, attention)
    assert seeds.tolist() == [0]
    assert similarity[0, 1].item() == torch.tensor(0.3).item()
    assert objects.tolist() == [[False, True, False, True]]


def test_seed_similarity_is_the_seed_row_of_the_cosine_matrix():
    descriptors = F.normalize(torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    seeds = torch.tensor([3, 1])
    full = descriptors @ descriptors.transpose(1, 2)
    assert torch.allclose(seed_similarities(descriptors, seeds), full[torch.arange(2), seeds], atol=1e-6)


def test_one_head_has_zero_weight_so_nothing_is_background():
    # w = log(1) = 0: every weighted key is zero, so no similarity exceeds 0.3
    keys, attention = torch.randn(1, 6, 4).to(TEST_DEVICE), torch.rand(1, 1, 6).to(TEST_DEVICE)
    results = found_background_batch(keys, attention, (2, 3), (8, 8), [(16, 20)])
    assert results[0].mask.all()
    assert results[0].box.tolist() == [0, 0, 20, 16]


def test_found_bkg_boxes_the_block_that_is_not_like_the_least_attended_patch():
    # grid 3 x 4, 2 heads of 2 channels; background keys (1, 0 | 1, 0), object block rows 1-2,
    # cols 1-2 keys (0, 1 | 0, 1), attended by both heads; seed = patch 0 (first least attended)
    grid = (3, 4)
    block = [5, 6, 9, 10]
    keys = torch.tensor([1.0, 0.0, 1.0, 0.0]).repeat(12, 1)
    keys[block] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    attention = torch.full((2, 12), 0.02)
    attention[:, block] = torch.tensor([[0.2, 0.1, 0.2, 0.1], [0.05, 0.05, 0.3, 0.3]])
    keys, attention = keys[None].to(TEST_DEVICE), attention[None].to(TEST_DEVICE)
    result = found_background_batch(keys, attention, grid, (16, 16), [(40, 64)])[0]
    assert result.seed == 0
    assert result.mask.nonzero().flatten().tolist() == block
    assert result.box.tolist() == [16, 16, 48, 40]


@pytest.mark.parametrize("seed", range(6))
def test_found_bkg_masks_match_the_published_background_segmentation(seed):
    g = torch.Generator().manual_seed(seed)
    grid = (5, 6)
    keys = planted_keys(grid, [[(1, 1), (1, 2), (2, 1), (2, 2)], [(3, 4), (4, 4)]], dim=12, noise=0.5, seed=seed)[None]
    attention = torch.softmax(3 * torch.randn(1, 3, 30, generator=g), dim=-1)
    objects, _, seeds = coarse_object_masks(keys.to(TEST_DEVICE), attention.to(TEST_DEVICE))
    background, published_seeds = published_background_mask(attention, keys, grid)
    assert seeds.tolist() == published_seeds.tolist()
    assert objects.view(1, *grid).tolist() == (~background).tolist()


# ----------------------------------------------------------------------------------------------
# Refinement by the bilateral solver


def test_upsampling_is_bilinear_with_half_pixel_centres():
    # 2 -> 4 columns: source x = (x + 0.5) / 2 - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    up = upsample_mask(np.array([[0, 1], [0, 1]], dtype=bool), (4, 4))
    assert up.tolist() == [[0.0, 0.25, 0.75, 1.0]] * 4


def test_downsampling_reads_the_pixels_around_each_cells_sampling_point():
    # 16 -> 2: cell 0 samples pixel 3.5 (pixels 3 and 4), cell 1 samples 11.5 (pixels 11 and 12)
    pixels = np.zeros((16, 16), dtype=bool)
    pixels[4, 4] = True
    assert downsample_mask(pixels, (2, 2)).tolist() == [[True, False], [False, False]]
    pixels[:] = False
    pixels[5, 5] = True
    pixels[10, 13] = True
    assert not downsample_mask(pixels, (2, 2)).any()


def test_dropping_the_largest_region_keeps_every_component_below_the_background():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0:2, 0:2] = True
    mask[4:6, 3:6] = True
    assert drop_largest_region(mask).tolist() == mask.tolist()


def test_a_component_larger_than_the_background_is_dropped_and_the_background_kept():
    # the published rule: regions of the label map, background (label 0) included
    mask = np.ones((4, 4), dtype=bool)
    mask[0, 0] = mask[3, 3] = False
    mask[1, 1] = False  # a hole inside the component is background too
    assert drop_largest_region(mask).tolist() == (~mask).tolist()


def step_image(size=64, edge=36, seed=0):
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size, 3), 40.0)
    pixels[:, edge:] = 210.0
    return np.clip(pixels + rng.normal(0, 3, pixels.shape), 0, 255).astype(np.uint8)


def test_refinement_snaps_a_noisy_patch_mask_to_the_image_edge():
    # bright from x = 36: the cells whose sampling pixels (8c + 3, 8c + 4) touch it are cols 4-7
    image = step_image()
    coarse = np.zeros((8, 8), dtype=bool)
    coarse[:, 5:] = True
    coarse[1, 1] = True  # a false positive on the dark side
    coarse[6, 6] = False  # a hole on the bright side
    refined = refine_mask(image_solver(image), (64, 64), coarse)
    expected = np.zeros((8, 8), dtype=bool)
    expected[:, 4:] = True
    assert refined.tolist() == expected.tolist()


def test_refinement_keeps_the_coarse_mask_when_the_solver_disagrees():
    # on a flat image a mask of most of the image stays one big component, which outgrows the
    # background and is dropped: IoU with the coarse mask < 0.5, so the coarse mask is kept
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    coarse = np.ones((8, 8), dtype=bool)
    coarse[0, :] = False
    assert refine_mask(image_solver(image), (64, 64), coarse).tolist() == coarse.tolist()


def test_refined_masks_refine_every_family_of_the_same_images():
    image = step_image()
    coarse = torch.zeros(1, 8, 8, dtype=torch.bool)
    coarse[0, :, 5:] = True
    own, objects = refined_masks(image[None], [coarse, coarse.clone()])
    assert own.shape == (1, 8, 8) and own.dtype == torch.bool
    assert own[0, :, 4:].all() and not own[0, :, :4].any()
    assert torch.equal(own, objects)


# ----------------------------------------------------------------------------------------------
# The head's weights


def released_file(path, weight, bias):
    """A file laid out as the released decoder_weights.pt: {"decoder": OrderedDict}."""
    torch.save({"decoder": OrderedDict(weight=weight, bias=bias)}, path)
    return path


def test_released_format_round_trip(tmp_path):
    head = conv_head([0.5, -1.0, 2.0], 0.25)
    save_found_head(head, tmp_path / "decoder_weights.pt")
    raw = torch.load(tmp_path / "decoder_weights.pt", weights_only=True)
    assert list(raw) == ["decoder"] and sorted(raw["decoder"]) == ["bias", "weight"]
    loaded = load_found_head(tmp_path / "decoder_weights.pt", embed_dim=3)
    assert loaded.weight.flatten().tolist() == [0.5, -1.0, 2.0] and loaded.bias.tolist() == [0.25]
    assert not loaded.weight.requires_grad and not loaded.training


def test_a_file_laid_out_as_the_released_head_loads(tmp_path):
    path = released_file(tmp_path / "decoder_weights.pt", torch.ones(1, 384, 1, 1), torch.tensor([-0.5]))
    head = load_found_head(path, embed_dim=384)
    assert head.in_channels == 384 and head.bias.tolist() == [-0.5]


@pytest.mark.parametrize(
    "content",
    [
        {"decoder": {"weight": torch.ones(2, 8, 1, 1), "bias": torch.zeros(2)}},
        {"decoder": {"weight": torch.ones(1, 8, 3, 3), "bias": torch.zeros(1)}},
        {"weight": torch.ones(1, 8, 1, 1), "bias": torch.zeros(1)},
        {"decoder": {"weight": torch.ones(1, 8, 1, 1)}},
    ],
)
def test_wrong_shaped_heads_are_one_line_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "head.pt"
    torch.save(content, path)
    with pytest.raises(LostError) as error:
        load_found_head(path)
    message = str(error.value)
    assert "\n" not in message and f"--found_weights {path}" in message and "expected" in message


def test_a_head_for_other_features_names_both_sizes(tmp_path):
    path = released_file(tmp_path / "head.pt", torch.ones(1, 384, 1, 1), torch.zeros(1))
    with pytest.raises(LostError, match="takes 384 key channels but the backbone gives 192"):
        load_found_head(path, embed_dim=192)


def test_garbage_and_missing_files_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path, words in ((garbage, "not a readable PyTorch file"), (tmp_path / "absent.pt", "no such file")):
        with pytest.raises(LostError) as error:
            load_found_head(path)
        assert words in str(error.value) and "\n" not in str(error.value)


def test_offline_download_names_the_url_the_cache_path_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(LostError) as error:
        load_found_head()
    message = str(error.value)
    assert "\n" not in message
    assert FOUND_WEIGHTS_URL in message
    assert str(tmp_path / "hub" / "checkpoints" / "found_decoder_weights.pt") in message
    assert "--found_weights PATH" in message


def test_the_released_head_is_downloaded_once_with_its_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        released_file(dst, torch.full((1, 384, 1, 1), 0.5), torch.tensor([0.125]))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = load_found_head(embed_dim=384)
    second = load_found_head(embed_dim=384)
    assert calls == [(FOUND_WEIGHTS_URL, FOUND_WEIGHTS_SHA256)]
    assert weights_cache_path().is_file()
    assert torch.equal(first.weight, second.weight) and first.bias.tolist() == [0.125]


def test_a_damaged_cached_head_says_to_delete_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    weights_cache_path().parent.mkdir(parents=True)
    weights_cache_path().write_bytes(b"\x00" * 10)
    with pytest.raises(LostError, match="delete it to download it again"):
        load_found_head()


def test_head_bytes_are_the_released_format():
    head = conv_head([1.0, 2.0], 3.0)
    raw = torch.load(io.BytesIO(found_head_bytes(head)), weights_only=True)
    assert raw["decoder"]["weight"].shape == (1, 2, 1, 1) and raw["decoder"]["bias"].tolist() == [3.0]


def test_found_module_keeps_the_published_constants():
    assert found_module.FOREGROUND_PROBABILITY == 0.5
    assert found_module.BACKGROUND_SIMILARITY == 0.3
    assert found_module.SPARSITY_EPSILON == 1e-10
    assert bilateral_solver.SOLVER_SIGMAS == {"sigma_spatial": 16, "sigma_luma": 16, "sigma_chroma": 8}


# ----------------------------------------------------------------------------------------------
# Picture


def test_found_picture_shows_the_boxed_image_beside_its_foreground_mask():
    image = Image.fromarray(np.full((30, 45, 3), 90, dtype=np.uint8))
    mask = torch.zeros(24, dtype=torch.bool)
    mask[[8, 9]] = True
    result = found_module.found_result(mask, mask.float(), (4, 6), (8, 8), (30, 45))
    picture = found_picture(image, result, (4, 6), (8, 8))
    assert picture.size == (2 * 45 + 8, 30)
    right = np.asarray(picture)[:, 45 + 8 :]
    assert not np.array_equal(right[12, 20], right[28, 40])  # foreground cell (1, 2) vs background
