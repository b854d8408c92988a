"""metrics.py: IoU and CorLoc, on boxes whose overlaps are worked out by hand."""

from __future__ import annotations

import numpy as np

import metrics
from datasets import ImageRecord


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
