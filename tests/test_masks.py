"""Masks of every method: patch masks to pixels, to the original size, and their agreement with the boxes."""


import numpy as np
import pytest
from conftest import method_params_for_tests, tiny_vit
from PIL import Image

from lost.backbones import FeatureExtractor
from lost.data.datasets import single_image_records
from lost.data.images import load_rgb, rescale_box
from lost.engine.discovery import DiscoveryConfig, discover
from lost.geometry import (
    largest_component,
    mask_box,
    masks_boxes,
    patch_masks_to_pixels,
    pixel_cells,
    resize_masks,
    seed_component,
)
from lost.methods import METHODS
from lost.viz.pictures import RANK_COLORS, masks_picture


@pytest.fixture(scope="module")
def vit_extractor() -> FeatureExtractor:
    return FeatureExtractor(tiny_vit(patch_size=8), "vit_tiny", 8)


def test_pixels_take_the_cell_whose_start_they_have_passed():
    assert pixel_cells(5, 3, 2).tolist() == [0, 0, 1, 1, 2]
    # cells of 2.5 pixels start at ceil(c * 2.5 - 1/2) = 0, 2, 5 (and 7)
    assert pixel_cells(7, 3, 2.5).tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_a_patch_mask_in_pixels_has_the_cells_box_clipped_to_the_image():
    patch = np.zeros((1, 3, 4), dtype=bool)
    patch[0, 1, 2] = patch[0, 2, 2] = patch[0, 2, 3] = True
    pixels = patch_masks_to_pixels(patch, (8, 8), (20, 30))
    assert pixels.shape == (1, 20, 30)
    assert masks_boxes(pixels)[0].tolist() == [[16, 8, 30, 20]] == [mask_box(patch[0], (8, 8), (20, 30)).tolist()]
    assert pixels[0, 8:16, 16:24].all() and not pixels[0, 8:16, 24:].any() and pixels[0, 16:, 16:].all()


def test_float_cells_in_pixels_have_the_box_rounded_to_pixel_edges():
    patch = np.zeros((1, 2, 3), dtype=bool)
    patch[0, 1, 1] = True  # box [2.5, 2.5, 5.0, 5.0] at 2.5 pixels per cell
    pixels = patch_masks_to_pixels(patch, (2.5, 2.5), (5, 7))
    assert mask_box(patch[0], (2.5, 2.5), (5, 7)).tolist() == [2.5, 2.5, 5.0, 5.0]
    assert masks_boxes(pixels)[0].tolist() == [[2, 2, 5, 5]]


def test_masks_resized_by_hand_and_their_box_is_the_rescaled_box():
    decoded = np.array([[[0, 1, 0], [0, 0, 1]]], dtype=bool)  # (2, 3) -> (5, 7)
    resized = resize_masks(decoded, (5, 7))
    # rows read (2Y + 1) * 2 // 10 = 0 0 1 1 1, columns (2X + 1) * 3 // 14 = 0 0 1 1 1 2 2
    expected = np.zeros((5, 7), dtype=bool)
    expected[:2, 2:5] = True
    expected[2:, 5:] = True
    assert resized[0].tolist() == expected.tolist()
    assert (
        masks_boxes(resized)[0].tolist()
        == [[2, 0, 7, 5]]
        == [rescale_box(np.array([1, 0, 3, 2]), (2, 3), (5, 7)).tolist()]
    )


@pytest.mark.parametrize(
    "decoded, original",
    [((7, 5), (13, 11)), ((5, 7), (11, 13)), ((24, 32), (48, 64)), ((17, 9), (33, 17)), ((6, 6), (6, 6))],
)
def test_the_box_of_a_resized_mask_is_its_rescaled_box_at_odd_and_swapped_sizes(decoded, original):
    rng = np.random.default_rng(sum(decoded))
    masks = np.zeros((40, *decoded), dtype=bool)
    for mask in masks:
        y1, y2 = sorted(rng.integers(0, decoded[0] + 1, 2))
        x1, x2 = sorted(rng.integers(0, decoded[1] + 1, 2))
        mask[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)] = (
            rng.random((max(y2, y1 + 1) - y1, max(x2, x1 + 1) - x1)) < 0.7
        )
    masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
    boxes, _ = masks_boxes(masks)
    resized_boxes, empty = masks_boxes(resize_masks(masks, original))
    assert not empty.any()
    assert resized_boxes.tolist() == rescale_box(boxes, decoded, original).tolist()


def test_an_empty_mask_is_flagged_and_has_a_zero_box():
    boxes, empty = masks_boxes(np.zeros((2, 3, 4), dtype=bool) | (np.arange(2)[:, None, None] == 1))
    assert empty.tolist() == [True, False] and boxes.tolist() == [[0, 0, 0, 0], [0, 0, 4, 3]]


@pytest.mark.parametrize("max_size", [None, 40])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_masks_in_original_pixels_whose_boxes_are_its_boxes(
    vit_extractor, mixed_images, tmp_path, method, max_size
):
    params = method_params_for_tests(method, tmp_path, vit_extractor.model.embed_dim)
    records = single_image_records(mixed_images)
    with_masks = DiscoveryConfig(method=method, params=params, batch_size=4, max_size=max_size, masks=True)
    without = {
        item.index: item
        for item in discover(
            vit_extractor, records, DiscoveryConfig(method=method, params=params, batch_size=4, max_size=max_size)
        )
    }
    for item in discover(vit_extractor, records, with_masks):
        original = load_rgb(records[item.index].path)
        assert item.masks.shape == (len(item.boxes), original.height, original.width)
        boxes, empty = masks_boxes(item.masks)
        assert not empty.any() and boxes.tolist() == item.boxes.tolist()
        assert item.boxes.tolist() == without[item.index].boxes.tolist(), "asking for masks changes no box"
        assert np.array_equal(item.result.patch_masks[0], expected_patch_mask(method, item))
        if method == "maskcut":
            assert (item.masks.sum(axis=0) <= 1).all(), "earlier objects are subtracted from later ones"


def expected_patch_mask(method: str, item) -> np.ndarray:
    """The first object's patch mask by each method's own definition, from its result."""
    result, grid = item.result, item.grid
    if method == "lost":
        return seed_component(result.expansion_map, result.seed, grid)
    if method == "tokencut":
        return seed_component(result.partition, result.seed, grid)
    if method in ("found", "found_bkg", "peekaboo"):
        return largest_component(result.mask.cpu().numpy().reshape(grid))
    if method == "maskcut":
        return result.objects[0].mask.reshape(grid) if result.objects else np.ones(grid, dtype=bool)
    return result.patch_mask  # dinoseg: its blob, checked against the box above


def test_a_mask_postprocessing_sees_the_decoded_image_and_its_masks_give_the_boxes(vit_extractor, mixed_images):
    records = single_image_records(mixed_images)
    seen = []

    def keep_the_top_row_of_the_first_and_empty_the_rest(pixels: np.ndarray, masks: np.ndarray) -> np.ndarray:
        seen.append((pixels.shape, pixels.dtype, masks.shape))
        refined = np.zeros_like(masks)
        top = np.flatnonzero(masks[0].any(axis=1))[0]
        refined[0, top] = masks[0, top]
        return refined

    config = DiscoveryConfig(
        method="maskcut", batch_size=4, max_size=40, mask_postprocess=keep_the_top_row_of_the_first_and_empty_the_rest
    )
    plain = {
        item.index: item
        for item in discover(vit_extractor, records, DiscoveryConfig(method="maskcut", batch_size=4, max_size=40))
    }
    for item in discover(vit_extractor, records, config):
        boxes, empty = masks_boxes(item.masks)
        assert not empty[0] and item.boxes[0].tolist() == boxes[0].tolist()
        assert boxes[0, 3] - boxes[0, 1] <= 2, "one decoded row is at most two original rows at max_size 40"
        assert item.boxes[1:].tolist() == plain[item.index].boxes[1:].tolist(), "an emptied mask keeps the method's box"
    for record, (pixel_shape, dtype, mask_shape) in zip(records, seen, strict=False):
        assert dtype == np.uint8 and pixel_shape[2] == 3 and mask_shape[1:] == pixel_shape[:2]
        assert max(pixel_shape[:2]) <= 40


def test_the_masks_picture_paints_each_object_in_its_rank_colour():
    image = Image.fromarray(np.full((20, 30, 3), 100, dtype=np.uint8))
    masks = np.zeros((2, 20, 30), dtype=bool)
    masks[0, 10:20, 20:30] = True
    masks[1, 0:5, 0:5] = True
    picture = np.asarray(masks_picture(image, masks, np.array([0.9, 0.5]), alpha=1.0))
    assert picture[19, 29].tolist() == list(RANK_COLORS[0]) and picture[4, 4].tolist() == list(RANK_COLORS[1])
    assert picture[15, 5].tolist() == [100, 100, 100], "outside every mask the image is unchanged"
