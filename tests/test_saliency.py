"""Saliency evaluation: both published protocols, the data layouts, the maps and the script."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from conftest import write_noise_images
from PIL import Image
from published_saliency import (
    found_metrics,
    found_single_component,
    solver_region,
    tokencut_component_map,
    tokencut_metrics,
)
from tiny_datasets import make_saliency_tree

from lost.data.images import fit_to_grid, image_to_tensor, multiple_size
from lost.data.saliency import SALIENCY_DATASETS, load_saliency_dataset, read_grey_mask, saliency_records
from lost.errors import LostError
from lost.eval.saliency import (
    FOUND_BETA_SQUARE,
    curve_thresholds,
    evaluate_saliency,
    ground_truth_mask,
    image_counts,
    summary_line,
)
from lost.geometry import drop_largest_region, mask_iou
from lost.methods import METHODS
from lost.methods.found import FoundResult
from lost.methods.saliency import (
    MapGeometry,
    SaliencyOptions,
    found_map,
    largest_region,
    mapper_for_method,
    method_result_type,
    methods_with_maps,
    refine_pixel_mask,
    saliency_mapper,
    second_largest_region,
    tokencut_map,
)
from lost.methods.tokencut import TokenCutResult


def scored(maps: list[np.ndarray], greys: list[np.ndarray], protocol: str) -> dict:
    counts = [image_counts(saliency, ground_truth_mask(grey, protocol), protocol) for saliency, grey in zip(maps, greys)]
    return evaluate_saliency(counts, protocol)


# Two tiny images worked out by hand (see the values in each test).
HAND_MAPS = [np.array([[0.9, 0.65], [0.5, 0.1]]), np.array([[0.25, 0.75]])]
HAND_GREYS = [np.array([[255, 255], [128, 0]], dtype=np.uint8), np.array([[255, 0]], dtype=np.uint8)]


def test_tokencut_protocol_by_hand_grey_128_is_foreground_and_f_is_averaged_before_the_maximum():
    # image 1: gt (>0.5) = 3 pixels, map > 0.5 = 2 of them: acc 3/4, IoU 2/3.
    # image 2: gt = left pixel, map > 0.5 = right one: acc 0, IoU 0.
    # F (beta^2 0.3): image 1 is 1 for t in [0.1, 0.5); image 2 is 1.3*0.5/1.15 = 13/23 for t < 0.25;
    # the best mean is at t in [0.1, 0.25): (1 + 13/23) / 2 = 18/23.
    summary = scored(HAND_MAPS, HAND_GREYS, "tokencut")
    assert summary["acc"] == pytest.approx(0.375)
    assert summary["iou"] == pytest.approx(1 / 3)
    assert summary["max_fbeta"] == pytest.approx(18 / 23)
    assert summary["protocol"] == "tokencut" and summary["images"] == 2


def test_found_protocol_by_hand_grey_128_is_background_and_beta_square_is_squared():
    # gt (== 255): image 1 the top row, exactly map > 0.5: acc 1, IoU 2 / (2 + 1e-7).
    # image 2: acc 0, IoU 0. Per-image max F with beta^2 0.09: image 1 reaches 1 (t in [0.5, 0.65)),
    # image 2 1.09*0.5/1.045 with both pixels predicted; with beta^2 0.3: 1 and 13/23.
    summary = scored(HAND_MAPS, HAND_GREYS, "found")
    assert summary["acc"] == pytest.approx(0.5)
    assert summary["iou"] == pytest.approx(0.5 * 2 / (2 + 1e-7), abs=1e-12)
    assert summary["max_fbeta"] == pytest.approx((1 + 0.545 / 1.045) / 2, abs=1e-6)
    assert summary["max_fbeta_beta2_0.3"] == pytest.approx(18 / 23, abs=1e-6)
    assert summary["beta_square"] == pytest.approx(0.09) and FOUND_BETA_SQUARE == pytest.approx(0.09)


def random_maps(seed: int, count: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    maps, greys = [], []
    for _ in range(count):
        height, width = rng.integers(5, 40, size=2)
        maps.append(rng.random((height, width)))
        greys.append(rng.choice(np.array([0, 0, 0, 255, 255, 128, 1], dtype=np.uint8), size=(height, width)))
    return maps, greys


def assert_same_as_published(maps: list[np.ndarray], greys: list[np.ndarray]) -> None:
    tokencut, published_tokencut = scored(maps, greys, "tokencut"), tokencut_metrics(maps, greys)
    assert tokencut["acc"] == pytest.approx(published_tokencut["accuracy"], abs=1e-6)
    assert tokencut["iou"] == pytest.approx(published_tokencut["IoU"], abs=1e-6)
    assert tokencut["max_fbeta"] == pytest.approx(published_tokencut["F_max"], abs=1e-6)
    found, published_found = scored(maps, greys, "found"), found_metrics(maps, greys)
    assert found["acc"] == pytest.approx(published_found["pixel_acc"], abs=1e-6)
    assert found["iou"] == pytest.approx(published_found["iou"], abs=1e-6)
    assert found["max_fbeta"] == pytest.approx(published_found["f_max"], abs=1e-6)
    beside = found_metrics(maps, greys, beta_square=0.3**0.5)
    assert found["max_fbeta_beta2_0.3"] == pytest.approx(beside["f_max"], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_protocols_equal_the_published_code_on_random_soft_maps(seed):
    assert_same_as_published(*random_maps(seed))


def test_both_protocols_equal_the_published_code_on_quantized_maps_that_hit_every_threshold():
    # 8-bit maps k/255 sit exactly on the thresholds: numpy's float64 arange for TokenCut,
    # torch's float32 arange for FOUND.
    rng = np.random.default_rng(3)
    maps = [rng.integers(0, 256, size=(16, 16)) / 255 for _ in range(3)]
    maps.append(maps[0].astype(np.float32))
    greys = [rng.choice(np.array([0, 255, 200], dtype=np.uint8), size=(16, 16)) for _ in range(4)]
    assert_same_as_published(maps, greys)


def test_edge_cases_equal_the_published_code_empty_prediction_empty_gt_grey_gt_and_a_map_at_half():
    empty_prediction = (np.zeros((6, 7)), np.full((6, 7), 255, dtype=np.uint8))
    empty_gt = (np.random.default_rng(4).random((6, 7)), np.zeros((6, 7), dtype=np.uint8))
    grey_gt = (np.random.default_rng(5).random((6, 7)), np.full((6, 7), 100, dtype=np.uint8))
    at_half = (np.full((6, 7), 0.5), np.eye(6, 7, dtype=np.uint8) * 255)
    binary = (np.eye(6, 7), np.eye(6, 7, dtype=np.uint8) * 255)
    for saliency, grey in (empty_prediction, empty_gt, grey_gt, at_half, binary):
        assert_same_as_published([saliency], [grey])
    assert_same_as_published(*zip(empty_prediction, empty_gt, grey_gt, at_half, binary))


def test_a_map_at_exactly_half_is_background_for_accuracy_and_iou():
    saliency, grey = np.full((2, 2), 0.5), np.full((2, 2), 255, dtype=np.uint8)
    for protocol in ("tokencut", "found"):
        summary = scored([saliency], [grey], protocol)
        assert summary["acc"] == 0.0 and summary["iou"] == 0.0


def test_empty_prediction_and_empty_gt_count_as_agreement_under_tokencut_and_zero_under_found():
    # TokenCut's code divides 0 by 0 (NaN); FOUND's epsilon gives 0.
    saliency, grey = np.zeros((3, 3)), np.zeros((3, 3), dtype=np.uint8)
    tokencut = scored([saliency], [grey], "tokencut")
    assert tokencut["iou"] == 1.0 and tokencut["acc"] == 1.0 and tokencut["max_fbeta"] == pytest.approx(1.0)
    found = scored([saliency], [grey], "found")
    assert found["iou"] == 0.0 and found["acc"] == 1.0 and found["max_fbeta"] == 0.0


def test_ground_truth_is_any_nonzero_grey_for_tokencut_and_255_for_found():
    grey = np.array([[0, 1, 128, 254, 255]], dtype=np.uint8)
    assert ground_truth_mask(grey, "tokencut").tolist() == [[False, True, True, True, True]]
    assert ground_truth_mask(grey, "found").tolist() == [[False, False, False, False, True]]


def test_thresholds_are_the_published_aranges():
    assert curve_thresholds("found", np.float32).dtype == np.float32
    assert np.array_equal(curve_thresholds("tokencut", np.float64), np.arange(0.0, 1.0, 1 / 255))
    assert len(curve_thresholds("found", np.float32)) == 255 and curve_thresholds("found", np.float32)[0] == 0


def test_counts_survive_json_and_a_size_mismatch_is_refused():
    from lost.eval.saliency import ImageCounts

    counts = image_counts(HAND_MAPS[0], ground_truth_mask(HAND_GREYS[0], "found"), "found")
    again = ImageCounts.from_json(counts.to_json())
    assert again.to_json() == counts.to_json() and again.predicted.dtype == np.int64
    with pytest.raises(ValueError, match="differ in size"):
        image_counts(np.zeros((2, 3)), np.zeros((3, 2), dtype=bool), "found")


def test_summary_line_names_the_protocol_and_found_gives_beta_square_0_3_beside():
    line = summary_line(scored(HAND_MAPS, HAND_GREYS, "found"))
    assert line.startswith("protocol found: acc 0.500") and "beta^2 0.09" in line and "with beta^2 0.3: 0.783" in line
    assert summary_line(scored(HAND_MAPS, HAND_GREYS, "tokencut")).startswith("protocol tokencut: acc 0.375, IoU 0.333")


# ----------------------------------------------------------------------------------------------
# Data sets


@pytest.mark.parametrize("dataset", list(SALIENCY_DATASETS))
def test_each_data_set_is_read_from_the_layout_of_founds_readme(tmp_path, dataset):
    images, masks = make_saliency_tree(tmp_path, dataset)
    spec = load_saliency_dataset(dataset, tmp_path)
    assert [record.name for record in spec.records] == ["000000", "000001", "000002"]
    assert spec.masks["000001"] == masks / "000001.png" and spec.records[0].path == images / "000000.jpg"
    assert spec.name == dataset and spec.skipped == []


@pytest.mark.parametrize("missing", ["images", "masks"])
def test_a_missing_folder_names_the_path_and_where_the_data_comes_from(tmp_path, missing):
    images, masks = make_saliency_tree(tmp_path, "DUT-OMRON")
    shutil.rmtree(images if missing == "images" else masks)
    with pytest.raises(LostError) as error:
        load_saliency_dataset("DUT-OMRON", tmp_path)
    message = str(error.value)
    assert str(images if missing == "images" else masks) in message and "saliencydetection.net/dut-omron" in message
    assert "\n" not in message


def test_masks_pair_by_stem_png_first_and_an_image_without_mask_is_skipped(tmp_path):
    write_noise_images(tmp_path / "images", [(20, 10)] * 3)
    (tmp_path / "masks").mkdir()
    Image.new("L", (20, 10)).save(tmp_path / "masks" / "000000.bmp")
    Image.new("L", (20, 10)).save(tmp_path / "masks" / "000000.png")
    Image.new("L", (20, 10)).save(tmp_path / "masks" / "000001.bmp")
    spec = saliency_records(tmp_path / "images", tmp_path / "masks")
    assert spec.masks == {"000000": tmp_path / "masks" / "000000.png", "000001": tmp_path / "masks" / "000001.bmp"}
    assert spec.skipped == [("000002", f"no ground-truth mask {tmp_path / 'masks' / '000002.png'}")]


def test_a_grey_mask_is_read_as_convert_l_and_an_unreadable_one_is_a_clear_error(tmp_path):
    Image.fromarray(np.array([[[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)).save(tmp_path / "rgb.png")
    assert read_grey_mask(tmp_path / "rgb.png").tolist() == [[255, 0]]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(LostError, match="bad.png: cannot read the ground-truth mask"):
        read_grey_mask(tmp_path / "bad.png")


# ----------------------------------------------------------------------------------------------
# Saliency maps of method results


def test_grid_values_reach_the_pixels_cropped_when_padded_and_stretched_when_resized():
    values = np.array([[0.0, 1.0]])
    padded = MapGeometry((1, 2), (4, 4), (4, 6), (4, 6), "pad").to_pixels(values, "nearest")
    resized = MapGeometry((1, 2), (2, 3), (2, 4), (4, 6), "resize").to_pixels(values, "nearest")
    assert padded.numpy().tolist() == [[0, 0, 0, 0, 1, 1]] * 4
    assert resized.numpy().tolist() == [[0, 0, 0, 1, 1, 1]] * 4


def test_a_padded_grid_of_an_image_scaled_down_by_max_size_is_scaled_back_to_the_file_size():
    # seen 2 x 3 (padded to 2 x 4, one cell of 2 px per column pair); file 4 x 6
    geometry = MapGeometry((1, 2), (2, 2), (2, 3), (4, 6), "pad")
    assert geometry.to_pixels(np.array([[0.0, 1.0]]), "nearest").numpy().tolist() == [[0, 0, 0, 0, 1, 1]] * 4


def test_tokencut_map_is_the_seeds_component_nearest_to_the_pixels_as_published():
    partition = np.array([True, False, True, True, False, False])
    component = np.array([[False, False, False], [True, False, False]])  # not read by the map
    result = TokenCutResult(
        box=np.zeros(4), patch_mask=component, seed=3, eigenvector=np.zeros(6), partition=partition, solver="dense"
    )
    geometry = MapGeometry((2, 3), (16, 16), (32, 48), (30, 50), "resize")
    saliency = tokencut_map(result, geometry, SaliencyOptions(), np.zeros((0, 0, 3), dtype=np.uint8))
    # the seed (1, 0) and the cell above it form the component: column 0 of the grid, which nearest
    # interpolation maps to the columns x with floor(x * 3 / 50) = 0, x < 16.7, over all 30 rows
    expected = tokencut_component_map(partition.reshape(2, 3).astype(float), 3, (2, 3), (30, 50))
    assert saliency.dtype == np.float64 and np.array_equal(saliency, expected)
    assert saliency[:, :17].all() and saliency.sum() == 30 * 17


def found_result(scores: np.ndarray, seed: int | None = None, mask: np.ndarray | None = None) -> FoundResult:
    flat = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    patches = flat > 0 if mask is None else torch.as_tensor(mask).reshape(-1)
    grid = np.shape(scores)
    return FoundResult(box=np.zeros(4), patch_mask=patches.reshape(grid).numpy(), mask=patches, patch_scores=flat, seed=seed)


def test_found_head_map_single_is_the_largest_component_and_multi_the_sigmoid_of_the_logits():
    logits = np.array([[2.0, -1.0, 3.0], [-2.0, -3.0, 4.0]])
    geometry = MapGeometry((2, 3), (1, 1), (2, 3), (2, 3), "pad")
    blank = np.zeros((0, 0, 3), dtype=np.uint8)
    single = found_map(found_result(logits), geometry, SaliencyOptions(mode="single"), blank)
    assert single.tolist() == [[0, 0, 1], [0, 0, 1]]
    multi = found_map(found_result(logits), geometry, SaliencyOptions(mode="multi"), blank)
    assert np.allclose(multi, 1 / (1 + np.exp(-logits))) and multi.dtype == np.float32


def test_found_bkg_map_stretches_the_padded_grid_over_the_image_bilinearly_as_published():
    # object patches [1, 0] bilinear to 4 columns: 1, 0.75, 0.25, 0 -> > 0.5: 1, 1, 0, 0
    result = found_result(np.zeros((1, 2)), seed=1, mask=np.array([True, False]))
    geometry = MapGeometry((1, 2), (8, 8), (2, 4), (2, 4), "pad")
    saliency = found_map(result, geometry, SaliencyOptions(mode="multi"), np.zeros((0, 0, 3), dtype=np.uint8))
    assert saliency.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]


def random_binary_masks(seed: int, count: int = 20) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((12, 15)) > rng.uniform(0.3, 0.8) for _ in range(count)] + [np.zeros((4, 4), dtype=bool)]


def test_single_mode_component_equals_founds_selection_on_random_masks():
    for mask in random_binary_masks(6):
        assert np.array_equal(largest_region(mask), found_single_component(mask))


@pytest.mark.parametrize("get_all_cc", [False, True])
def test_solver_region_rules_equal_founds_on_random_masks(get_all_cc):
    # the larger-than-background case included (threshold 0.3 makes most masks mostly foreground)
    for mask in random_binary_masks(7):
        ours = drop_largest_region(mask) if get_all_cc else second_largest_region(mask)
        assert np.array_equal(ours, solver_region(mask, get_all_cc))


def test_bilateral_refinement_snaps_a_mask_to_the_square_it_overlaps_and_keeps_a_mask_it_disagrees_with():
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[10:34, 16:48] = 255
    coarse = np.zeros((48, 64), dtype=bool)
    coarse[8:32, 16:48] = True  # the square shifted up by two rows
    refined = refine_pixel_mask(coarse, image, all_components=False)
    assert mask_iou(refined, image[..., 0] > 0) > mask_iou(coarse, image[..., 0] > 0)
    empty = np.zeros((48, 64), dtype=bool)
    assert not refine_pixel_mask(empty, image, all_components=False).any(), "the whole-image fallback has IoU 0"


def test_map_functions_are_looked_up_by_result_type_and_subclasses_plug_in():
    assert method_result_type(METHODS["tokencut"]) is TokenCutResult
    assert method_result_type(METHODS["found_bkg"]) is FoundResult
    assert set(methods_with_maps()) == {"tokencut", "maskcut", "found", "found_bkg", "peekaboo"}

    @dataclasses.dataclass(frozen=True)
    class PeekabooLike(FoundResult):
        pass

    assert saliency_mapper(PeekabooLike).compute is found_map
    assert saliency_mapper(PeekabooLike).preprocess == "pad" and saliency_mapper(TokenCutResult).preprocess == "resize"


def test_a_method_without_masks_or_a_mode_it_lacks_is_refused_in_one_line():
    with pytest.raises(LostError, match="--method lost finds boxes, not masks.*tokencut, maskcut, found, found_bkg"):
        mapper_for_method(METHODS["lost"], SaliencyOptions())
    with pytest.raises(LostError, match="--mode multi does not apply to --method tokencut"):
        mapper_for_method(METHODS["tokencut"], SaliencyOptions(mode="multi"))
    with pytest.raises(LostError, match="--bilateral does not apply to --method maskcut"):
        mapper_for_method(METHODS["maskcut"], SaliencyOptions(bilateral=True))


def test_resize_preprocessing_rounds_each_side_to_the_nearest_multiple_with_lanczos():
    assert multiple_size(500, 375, 16) == (496, 368)  # 31.25 -> 31, 23.4 -> 23
    assert multiple_size(200, 8, 16) == (192, 16)  # 12.5 -> 12 (half to even); 0.5 -> 0, raised to one patch
    image = Image.fromarray(np.random.default_rng(8).integers(0, 256, (30, 41, 3), dtype=np.uint8))
    tensor = fit_to_grid(image, 8, "resize")
    assert tuple(tensor.shape) == (3, 32, 40)
    assert torch.equal(tensor, image_to_tensor(image.resize((40, 32), Image.LANCZOS)))
