"""metrics.py: IoU and CorLoc, on boxes whose overlaps are worked out by hand."""

from __future__ import annotations

import numpy as np

from lost.data.datasets import ImageRecord
from lost.eval import metrics
from lost.io.safe_files import ScoredBoxes


def boxes(rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def test_iou_of_half_overlapping_boxes_is_one_third():
    # [0,0,10,10] and [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150
    iou = metrics.box_iou(np.array([0, 0, 10, 10]), np.array([[5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [50 / 150, 0.0, 1.0])
    assert iou.dtype == np.float64


def test_iou_uses_continuous_coordinates():
    # [0,0,2.5,2] vs [0,0,5,2]: intersection 5, union 10
    np.testing.assert_allclose(metrics.box_iou([0, 0, 2.5, 2], [[0, 0, 5, 2]]), [0.5])


def test_iou_of_degenerate_boxes_is_zero():
    np.testing.assert_array_equal(metrics.box_iou([3, 3, 3, 3], [[3, 3, 3, 3]]), [0.0])


def test_exact_half_iou_is_a_hit_and_no_ground_truth_is_a_miss():
    gt = boxes([[0, 0, 10, 10]])
    assert metrics.is_correct_localization(np.array([0, 0, 5, 10]), gt)  # 50 / 100
    assert not metrics.is_correct_localization(np.array([0, 0, 4, 10]), gt)  # 40 / 100
    assert metrics.is_correct_localization(np.array([0, 0, 4, 10]), boxes([[50, 50, 60, 60], [0, 0, 6, 10]]))
    assert not metrics.is_correct_localization(np.array([0, 0, 10, 10]), boxes([]))


def test_corloc_meter_summary():
    meter = metrics.CorLocMeter()
    assert meter.value == 0.0
    for k in range(5011):
        meter.update(k < 3103)
    assert (meter.hits, meter.count) == (3103, 5011)
    assert meter.summary() == "corloc: 61.92 (3103/5011)"


def test_evaluate_corloc_counts_missing_prediction_as_miss_and_skips_records_without_gt(tmp_path):
    records = [
        ImageRecord("a", tmp_path / "a.jpg", boxes([[0, 0, 10, 10]])),
        ImageRecord("b", tmp_path / "b.jpg", boxes([[0, 0, 10, 10]])),
        ImageRecord("c", tmp_path / "c.jpg", boxes([[0, 0, 10, 10]])),
        ImageRecord("d", tmp_path / "d.jpg", None),
    ]
    predictions = {"a": np.array([0, 0, 10, 10]), "b": np.array([20, 20, 30, 30]), "d": np.array([0, 0, 1, 1])}
    meter = metrics.evaluate_corloc(records, predictions)
    assert meter.summary() == "corloc: 33.33 (1/3)"


def test_box_iou_broadcasts_each_box_against_its_own_ground_truth():
    # box 0 [0,0,10,10] vs its [5,0,15,10] (50/150) and [0,0,10,10] (1);
    # box 1 [0,0,4,10] vs its [0,0,10,10] (40/100) and [20,20,30,30] (0)
    detections = np.array([[0, 0, 10, 10], [0, 0, 4, 10]])[:, None, :]
    ground_truth = np.array([[[5, 0, 15, 10], [0, 0, 10, 10]], [[0, 0, 10, 10], [20, 20, 30, 30]]])
    iou = metrics.box_iou(detections, ground_truth)
    assert iou.shape == (2, 2) and iou.dtype == np.float64
    np.testing.assert_allclose(iou, [[50 / 150, 1.0], [0.4, 0.0]])


def test_box_iou_is_symmetric_and_one_box_against_none_is_empty():
    a, b = np.array([1.5, 2, 7, 9]), np.array([[0, 0, 5, 5]])
    assert metrics.box_iou(a, b) == metrics.box_iou(b, a)
    assert metrics.box_iou(a, boxes([])).shape == (0,)


# ----------------------------------------------------------------------------------------------
# Class-agnostic AP (pycocotools' COCOeval), worked out by hand
#
# Image a: objects g1 [0,0,10,10], g2 [20,20,30,30] and a difficult one [40,40,50,50].
# Image b: object g4 [0,0,20,20] and a crowd region [30,0,60,30].
# Detections (score): a: d1 = g1 (0.9), d2 = the difficult box (0.8), d3 [20,20,30,35] (0.6),
# IoU with g2 100/150 = 2/3; b: d4 [50,50,60,60] (0.7) on nothing, d5 [35,5,45,15] (0.5) inside
# the crowd region, d6 [10,10,30,30] (0.4), IoU 100/700 with g4.
# d2 and d5 are ignored at every IoU; 3 objects count. By decreasing score the others are
# d1 TP, d4 FP, d3 TP up to IoU 0.65 (FP from 0.70), d6 FP.
# IoU 0.50-0.65: recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2, made non-increasing
# 1, 2/3, 2/3, 1/2: the 34 recall points 0.00-0.33 get 1, the 33 points 0.34-0.66 get 2/3, the 34
# points 0.67-1.00 get 0: AP = (34 + 22) / 101 = 56/101.
# IoU 0.70-0.95: recall 1/3 at most: AP = 34/101. AP over the 10 IoUs: (4·56 + 6·34) / 1010.
# AR@100: recall 2/3 at 4 IoUs and 1/3 at 6: 14/30; AR@1 keeps d1 and d4 only: 1/3.

HAND_RECORDS = [
    ImageRecord("a", None, boxes([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]), None, (False, False, True)),
    ImageRecord("b", None, boxes([[0, 0, 20, 20]]), None, (False,), boxes([[30, 0, 60, 30]])),
]
HAND_PREDICTIONS = {
    "a": ScoredBoxes(np.array([[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 35]]), np.array([0.9, 0.8, 0.6])),
    "b": ScoredBoxes(np.array([[50, 50, 60, 60], [35, 5, 45, 15], [10, 10, 30, 30]]), np.array([0.7, 0.5, 0.4])),
}


def test_class_agnostic_ap_equals_the_hand_computed_101_point_ap():
    result = metrics.class_agnostic_ap(HAND_RECORDS, HAND_PREDICTIONS)
    np.testing.assert_allclose(result.ap50, 56 / 101, rtol=1e-12)
    np.testing.assert_allclose(result.ap75, 34 / 101, rtol=1e-12)
    np.testing.assert_allclose(result.ap, (4 * 56 + 6 * 34) / 1010, rtol=1e-12)
    np.testing.assert_allclose([result.ar1, result.ar10, result.ar100], [1 / 3, 14 / 30, 14 / 30], rtol=1e-12)
    assert (result.images, result.objects) == (2, 3)


def test_without_the_ignore_regions_the_same_detections_score_lower():
    # the difficult box now counts as an object and the crowd region is gone: d2 is a true positive
    # and d5 a false positive; 4 objects. IoU 0.5: d1 TP, d2 TP, d4 FP, d3 TP, d5 FP, d6 FP:
    # recall 1/4, 2/4, 2/4, 3/4, ...; precision made non-increasing 1, 1, 3/4, 3/4, ...: the 51
    # points 0-0.50 get 1, the 25 points 0.51-0.75 get 3/4: AP50 = (51 + 18.75) / 101
    plain = [ImageRecord(r.name, None, r.gt_boxes) for r in HAND_RECORDS]
    result = metrics.class_agnostic_ap(plain, HAND_PREDICTIONS)
    np.testing.assert_allclose(result.ap50, (51 + 18.75) / 101, rtol=1e-12)
    assert result.objects == 4


def test_a_second_detection_of_a_difficult_object_is_a_false_positive():
    # pycocotools lets one detection match an ignored box: the second one, IoU 1 as well, is false
    records = [ImageRecord("a", None, boxes([[0, 0, 10, 10], [40, 40, 50, 50]]), None, (False, True))]
    twice = np.array([[0, 0, 10, 10], [40, 40, 50, 50], [40, 40, 50, 50]])
    once = metrics.class_agnostic_ap(records, {"a": ScoredBoxes(twice[:2], np.array([0.9, 0.8]))})
    both = metrics.class_agnostic_ap(records, {"a": ScoredBoxes(twice, np.array([0.9, 0.8, 0.7]))})
    np.testing.assert_allclose([once.ap50, both.ap50], [1.0, 1.0], rtol=1e-12, err_msg="the FP comes after full recall")
    low = metrics.class_agnostic_ap(records, {"a": ScoredBoxes(twice[[1, 2, 0]], np.array([0.9, 0.8, 0.7]))})
    np.testing.assert_allclose(low.ap50, 0.5, rtol=1e-12)  # ignored, FP, TP: precision 1/2 at recall 1


def test_crowd_regions_absorb_any_number_of_detections():
    records = [ImageRecord("b", None, boxes([[0, 0, 20, 20]]), None, (False,), boxes([[30, 0, 60, 30]]))]
    inside = np.array([[35, 5, 45, 15], [40, 10, 50, 20], [0, 0, 20, 20]])
    result = metrics.class_agnostic_ap(records, {"b": ScoredBoxes(inside, np.array([0.9, 0.8, 0.7]))})
    np.testing.assert_allclose(result.ap50, 1.0, rtol=1e-12)


def test_one_box_predictions_and_missing_images():
    # a: its one box finds g1 (1 of 3 objects, 2 of them in a); b has no prediction
    result = metrics.class_agnostic_ap(HAND_RECORDS, {"a": ScoredBoxes(np.array([[0, 0, 10, 10]]), np.ones(1))})
    np.testing.assert_allclose(result.ap50, 34 / 101, rtol=1e-12)
    np.testing.assert_allclose(result.ar100, 1 / 3, rtol=1e-12)
    assert metrics.class_agnostic_ap(HAND_RECORDS, {}).ap50 == 0.0


def test_records_without_ground_truth_are_not_evaluated_and_no_object_is_nan():
    records = [ImageRecord("x", None, None), ImageRecord("y", None, boxes([]))]
    result = metrics.class_agnostic_ap(records, {"y": ScoredBoxes(np.array([[0, 0, 4, 4]]), np.ones(1))})
    assert (result.images, result.objects) == (1, 0) and np.isnan(result.ap50)


def test_ap_summary_is_in_percent():
    lines = metrics.class_agnostic_ap(HAND_RECORDS, HAND_PREDICTIONS).summary().splitlines()
    assert lines[0] == "AP50: 55.45" and lines[1] == "AP75: 33.66" and lines[2] == "AP: 42.38"
    assert lines[3:] == ["AR@1: 33.33", "AR@10: 46.67", "AR@100: 46.67", "images: 2, objects: 3"]
