"""Saliency evaluation: both published protocols, the data layouts, the maps and the script."""

from __future__ import annotations

import numpy as np
import pytest
from published_saliency import found_metrics, tokencut_metrics

from lost.eval.saliency import (
    FOUND_BETA_SQUARE,
    curve_thresholds,
    evaluate_saliency,
    ground_truth_mask,
    image_counts,
    summary_line,
)


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
