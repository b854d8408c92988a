"""VOC AP, the reward matrix and the Hungarian matching, on detections whose AP is worked out by hand."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detection_fixtures import load_tool, make_voc_detection_tree

from lost.data.datasets import VOC_CLASSES as CLASSES
from lost.errors import LostError
from lost.eval.detection_eval import (
    ClassGroundTruth,
    Detections,
    average_precision,
    evaluate_clusters,
    hungarian_matching,
    load_coco_results,
    load_voc_ground_truth,
    match_detections,
    voc_ap,
)
from lost.eval.metrics import box_iou

ROOT = Path(__file__).resolve().parents[1]


def dets(rows):
    """rows: (image index, score, [x1, y1, x2, y2])."""
    return Detections(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 4),
    )


# Image 0: A [0, 0, 10, 10], B [20, 20, 30, 30]; image 1: C [0, 0, 10, 10] difficult. 2 positives.
GT = ClassGroundTruth.from_lists([[((0, 0, 10, 10), False), ((20, 20, 30, 30), False)], [((0, 0, 10, 10), True)]])
# d1 on A (IoU 1), d2 on A again, d3 on the difficult C, d4 on B with IoU 100/150 = 0.667, d5 on nothing.
DETS = dets(
    [
        (0, 0.9, [0, 0, 10, 10]),
        (0, 0.8, [0, 0, 10, 10]),
        (1, 0.7, [0, 0, 10, 10]),
        (0, 0.6, [20, 20, 30, 35]),
        (1, 0.5, [40, 40, 45, 45]),
    ]
)


def test_voc_ap_is_area_under_the_monotone_envelope():
    # envelope of precision (1, 0.5, 2/3) is (1, 2/3, 2/3): 0.5 * 1 + 0.5 * 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)


def test_voc_ap_of_no_detection_is_zero():
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_duplicates_are_false_positives_and_difficult_hits_are_ignored():
    true_positive, false_positive = match_detections(DETS, GT, 0.5)
    assert true_positive.tolist() == [True, False, False, True, False]
    assert false_positive.tolist() == [False, True, False, False, True]


def test_average_precision_at_iou_050_by_hand():
    # tp 1,1,1,2,2 fp 0,1,1,1,2 -> recall .5 .5 .5 1 1, precision 1 .5 .5 2/3 .5 -> 0.5 + 0.5 * 2/3
    assert average_precision(DETS, GT, 0.5) == pytest.approx(0.5 + 1 / 3)


def test_average_precision_at_iou_075_by_hand():
    # d4 (IoU 0.667) becomes a false positive: recall stays 0.5 with precision 1 first
    assert average_precision(DETS, GT, 0.75) == pytest.approx(0.5)


def test_detections_are_taken_by_decreasing_score():
    shuffled = Detections(DETS.image_index[::-1], DETS.scores[::-1], DETS.boxes[::-1])
    assert average_precision(shuffled, GT, 0.5) == pytest.approx(0.5 + 1 / 3)


def test_iou_must_exceed_the_threshold_strictly():
    gt = ClassGroundTruth.from_lists([[((0, 0, 10, 20), False)]])
    half = dets([(0, 1.0, [0, 0, 10, 10])])  # IoU 100 / 200 = 0.5
    assert average_precision(half, gt, 0.5) == 0.0
    assert average_precision(half, gt, 0.45) == 1.0


def test_class_without_positives_has_no_ap():
    gt = ClassGroundTruth.from_lists([[((0, 0, 10, 10), True)], []])
    assert np.isnan(average_precision(DETS, gt, 0.5))


def test_iou_equals_the_devkit_plus_one_arithmetic():
    # VOC XML (1, 1, 10, 10) -> [0, 0, 10, 10]; detection [x, y, w, h] = [2, 2, 9, 9] -> [2, 2, 11, 11].
    # Devkit: det (x+1, y+1, x+w, y+h) = (3, 3, 11, 11); inter (10-3+1)^2 = 64;
    # union (11-3+1)^2 + (10-1+1)^2 - 64 = 117.
    iou = box_iou(np.array([2.0, 2, 11, 11]), np.array([0.0, 0, 10, 10]))
    assert iou == pytest.approx(64 / 117)


def test_hungarian_matching_maximizes_the_summed_reward():
    rewards = np.array([[0.9, 0.8, 0.1], [0.85, 0.2, 0.3]])
    matching = hungarian_matching(rewards)
    # greedy (0->0, 1->2) sums 1.2; the optimum 0->1, 1->0 sums 1.65
    assert matching.class_to_cluster == {0: 1, 1: 0}
    assert matching.cluster_to_class == {0: 1, 1: 0, 2: 2}  # the surplus cluster gets extra id 2
    assert matching.mean_ap50 == pytest.approx(0.825)


def test_hungarian_matching_with_fewer_clusters_than_classes():
    matching = hungarian_matching(np.array([[0.5], [0.7]]))
    assert matching.class_to_cluster == {0: None, 1: 0}
    assert matching.mean_ap50 == pytest.approx(0.35)


def test_classes_without_positives_leave_the_mean():
    matching = hungarian_matching(np.array([[0.6, 0.0], [np.nan, np.nan]]))
    assert matching.class_to_cluster[0] == 0
    assert matching.mean_ap50 == pytest.approx(0.6)


# Test set of detection_fixtures: 000003 dog [4, 4, 20, 20], person [30, 4, 60, 44]; 000004 cat [11, 7, 44, 40].
RESULTS = [
    # cluster 7: exactly the dog
    {"image_id": "000003", "category_id": 7, "bbox": [4, 4, 16, 16], "score": 0.9},
    # cluster 3: the person at IoU 30*31 / 1200 = 0.775 (true positive up to 0.75)
    {"image_id": "000003", "category_id": 3, "bbox": [30, 4, 30, 31], "score": 0.95},
    # cluster 5: a miss ranked above the cat (AP 0.5 at every IoU); image id given as a number
    {"image_id": 4, "category_id": 5, "bbox": [0, 0, 10, 10], "score": 0.8},
    {"image_id": "000004", "category_id": 5, "bbox": [11, 7, 33, 33], "score": 0.7},
    # an image outside the test set
    {"image_id": "000001", "category_id": 7, "bbox": [8, 8, 32, 24], "score": 0.9},
]


@pytest.fixture
def voc_dir(tmp_path):
    return make_voc_detection_tree(tmp_path / "datasets")


def test_matched_ap_on_a_tiny_voc_test_set(voc_dir, tmp_path):
    results = tmp_path / "coco_instances_results.json"
    results.write_text(json.dumps(RESULTS))
    image_ids, gts = load_voc_ground_truth(voc_dir, "2007", "test")
    detections, elsewhere = load_coco_results(results, image_ids)
    assert image_ids == ["000003", "000004"]
    assert elsewhere == 1
    result, matching, cluster_ids = evaluate_clusters(gts, detections, CLASSES)
    assert cluster_ids == [3, 5, 7]
    by_name = {name: matching.class_to_cluster[c] for c, name in enumerate(CLASSES)}
    assert [cluster_ids[by_name[name]] for name in ("dog", "person", "cat")] == [7, 3, 5]
    assert result.per_class(CLASSES.index("dog")) == pytest.approx({"AP50": 100, "AP75": 100, "AP": 100})
    # person: true positive at IoU 0.50 ... 0.75 (6 thresholds), false positive at 0.80 ... 0.95
    assert result.per_class(CLASSES.index("person")) == pytest.approx({"AP50": 100, "AP75": 100, "AP": 60})
    assert result.per_class(CLASSES.index("cat")) == pytest.approx({"AP50": 50, "AP75": 50, "AP": 50})
    assert np.isnan(result.per_class(CLASSES.index("car"))["AP50"])
    assert result.overall() == pytest.approx({"AP50": 250 / 3, "AP75": 250 / 3, "AP": 70})
    assert matching.mean_ap50 == pytest.approx(2.5 / 3)


def test_cli_prints_the_table_and_writes_json(voc_dir, tmp_path, capsys):
    results = tmp_path / "coco_instances_results.json"
    results.write_text(json.dumps(RESULTS))
    output = tmp_path / "ap.json"
    tool = load_tool("evaluate_unsupervised_detection_voc")
    assert tool.main(["--results", str(results), "--voc_dir", str(voc_dir), "--output", str(output)]) == 0
    out, err = capsys.readouterr()
    assert "mean AP50 83.33" in out
    assert "person                3  100.00  100.00   60.00" in out
    assert "1 detections on images outside VOC2007 test ignored" in err
    report = json.loads(output.read_text())
    assert report["class_to_cluster"]["dog"] == 7
    assert report["overall"]["AP"] == pytest.approx(70)


def test_cli_rejects_a_missing_results_file(voc_dir, tmp_path, capsys):
    tool = load_tool("evaluate_unsupervised_detection_voc")
    assert tool.main(["--results", str(tmp_path / "none.json"), "--voc_dir", str(voc_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.json" in err and len(err.strip().splitlines()) == 1


def test_cli_rejects_results_without_detections_on_the_set(voc_dir, tmp_path, capsys):
    results = tmp_path / "r.json"
    results.write_text(json.dumps(RESULTS[-1:]))
    tool = load_tool("evaluate_unsupervised_detection_voc")
    assert tool.main(["--results", str(results), "--voc_dir", str(voc_dir)]) == 2
    assert "no detection" in capsys.readouterr().err


def test_evaluation_runs_without_detectron2(voc_dir, tmp_path):
    results = tmp_path / "coco_instances_results.json"
    results.write_text(json.dumps(RESULTS))
    code = (
        "import runpy, sys; sys.modules['detectron2'] = None; "
        "runpy.run_path('tools/evaluate_unsupervised_detection_voc.py', run_name='__main__')"
    )
    argv = ["--results", str(results), "--voc_dir", str(voc_dir)]
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "mean AP50 83.33" in done.stdout


def test_results_without_category_are_refused(voc_dir, tmp_path):
    results = tmp_path / "coco_instances_results.json"
    results.write_text(json.dumps([{"image_id": "000003", "bbox": [4, 4, 16, 16], "score": 0.9}]))
    with pytest.raises(LostError, match="detection 0 has no category_id"):
        load_coco_results(results, ["000003"])
