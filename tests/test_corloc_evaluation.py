"""main_corloc_evaluation.py on tiny VOC and COCO20k trees, CorLoc worked out by hand.

Tiny VOC ground truth (tests/tiny_datasets.py): 000001 [8,8,40,32]; 000002 [0,0,64,48] (truncated)
and [32,16,56,40]; 000003 [4,4,20,20] (difficult); 000004 [11,7,44,40].
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from tiny_datasets import make_coco_tree, make_voc_tree

import main_corloc_evaluation
from lost.io import safe_files

# 000001 exact: hit. 000002 whole image: IoU 1 with the truncated box, 576/3072 with the other.
# 000003 [4,4,12,20] vs [4,4,20,20]: 128/256 = 0.5 exactly: hit. 000004 absent: miss.
VOC_BOXES = {
    "000001.jpg": np.array([8, 8, 40, 32]),
    "000002.jpg": np.array([0, 0, 64, 48]),
    "000003.jpg": np.array([4, 4, 12, 20]),
}

# Top-scoring boxes: 000001 [8,8,40,32] hit; 000002 [32,16,56,40] hit (the 0.3 one would miss);
# 000003 [30,30,40,40] disjoint: miss; 000004 none: miss; 000009 is not in the set.
VOC_DETECTIONS = [
    {"image_id": "000001", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
    {"image_id": "000001", "category_id": 1, "bbox": [8, 8, 32, 24], "score": 0.9},
    {"image_id": "000002", "category_id": 1, "bbox": [40, 40, 10, 5], "score": 0.3},
    {"image_id": "000002", "category_id": 1, "bbox": [32, 16, 24, 24], "score": 0.8},
    {"image_id": "000003", "category_id": 1, "bbox": [30, 30, 10, 10], "score": 0.6},
    {"image_id": "000009", "category_id": 1, "bbox": [0, 0, 64, 48], "score": 0.6},
]


def run(capsys, pred_file, root, dataset="VOC07", image_set="trainval", type_pred="boxes_OD", extra=()):
    """main_corloc_evaluation.main on these flags -> (exit code, stdout, stderr)."""
    argv = ["--dataset", dataset, "--set", image_set, "--type_pred", type_pred]
    code = main_corloc_evaluation.main([*argv, "--pred_file", str(pred_file), "--datasets_root", str(root), *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def voc_root(tmp_path):
    make_voc_tree(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("no_hard", "expected"), [([], "corloc: 75.00 (3/4)"), (["--no_hard"], "corloc: 33.33 (1/3)")])
def test_boxes_od_pickle_on_voc(voc_root, tmp_path, capsys, no_hard, expected):
    # --no_hard: 000003 is gone; 000002 is judged on [32,16,56,40] only (576/3072): miss.
    safe_files.write_predictions(tmp_path / "run", VOC_BOXES)
    code, out, err = run(capsys, tmp_path / "run" / "preds.pkl", voc_root, extra=no_hard)
    assert code == 0
    assert out.strip() == expected
    assert "have no prediction and count as misses" in err


def test_boxes_od_json_on_voc(voc_root, tmp_path, capsys):
    safe_files.write_predictions(tmp_path / "run", VOC_BOXES)
    code, out, _ = run(capsys, tmp_path / "run" / "preds.json", voc_root)
    assert (code, out.strip()) == (0, "corloc: 75.00 (3/4)")


@pytest.mark.parametrize("int_ids", [False, True])
@pytest.mark.parametrize(("no_hard", "expected"), [([], "corloc: 50.00 (2/4)"), (["--no_hard"], "corloc: 66.67 (2/3)")])
def test_detectron_results_on_voc(voc_root, tmp_path, capsys, int_ids, no_hard, expected):
    detections = [{**d, "image_id": int(d["image_id"])} if int_ids else d for d in VOC_DETECTIONS]
    pred_file = tmp_path / "coco_instances_results.json"
    pred_file.write_text(json.dumps(detections))
    code, out, _ = run(capsys, pred_file, voc_root, type_pred="detectron", extra=no_hard)
    assert (code, out.strip()) == (0, expected)


def test_detectron_on_voc12_uses_image_set_ids(tmp_path, capsys):
    make_voc_tree(
        tmp_path, year="2012", images={"2008_000008": [(9, 9, 40, 32, 0, 0)], "2008_000015": [(1, 1, 8, 8, 0, 0)]}
    )
    pred_file = tmp_path / "coco_instances_results.json"
    pred_file.write_text(json.dumps([{"image_id": "2008_000008", "bbox": [8, 8, 32, 24], "score": 1.0}]))
    code, out, _ = run(capsys, pred_file, tmp_path, dataset="VOC12", type_pred="detectron")
    assert (code, out.strip()) == (0, "corloc: 50.00 (1/2)")


def test_both_prediction_types_on_coco20k(tmp_path, capsys):
    # Ground truth 42 [10,4,12,14], 7 [20,11,51,31], 1000 [2,4,12,14], 1001 none.
    make_coco_tree(tmp_path)
    boxes = {"42": [10, 4, 12, 14], "7": [20, 11, 51, 31], "1000": [0, 0, 64, 48], "1001": [0, 0, 10, 10]}
    (tmp_path / "preds.json").write_text(json.dumps(boxes))
    code, out, _ = run(capsys, tmp_path / "preds.json", tmp_path, dataset="COCO20k", image_set="train")
    assert (code, out.strip()) == (0, "corloc: 50.00 (2/4)")
    detections = [
        {"image_id": 42, "bbox": [10, 4, 2, 10], "score": 0.9},
        {"image_id": 7, "bbox": [20, 11, 31, 20], "score": 0.4},
        {"image_id": 7, "bbox": [0, 0, 5, 5], "score": 0.7},
    ]
    (tmp_path / "coco_instances_results.json").write_text(json.dumps(detections))
    results = tmp_path / "coco_instances_results.json"
    code, out, _ = run(capsys, results, tmp_path, dataset="COCO20k", image_set="train", type_pred="detectron")
    assert (code, out.strip()) == (0, "corloc: 25.00 (1/4)")


def assert_one_error_line(out, err, *fragments):
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_prediction_file_is_a_one_line_error(voc_root, tmp_path, capsys):
    code, out, err = run(capsys, tmp_path / "nope.pkl", voc_root)
    assert code == 2
    assert_one_error_line(out, err, "nope.pkl: prediction file not found")


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    code, out, err = run(capsys, tmp_path / "p.pkl", tmp_path / "none", dataset="VOC12")
    assert code == 2
    assert_one_error_line(out, err, "VOC2012", "host.robots.ox.ac.uk/pascal/VOC")


def test_malicious_prediction_pickle_is_refused(voc_root, tmp_path, capsys):
    evil = tmp_path / "preds.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    code, out, err = run(capsys, evil, voc_root)
    assert code == 2
    assert_one_error_line(out, err, "refusing to load", "os.system")
    assert not (tmp_path / "pwned").exists()


def test_predictions_for_another_dataset_are_an_error(voc_root, tmp_path, capsys):
    (tmp_path / "preds.json").write_text(json.dumps({"42": [0, 0, 1, 1]}))
    code, out, err = run(capsys, tmp_path / "preds.json", voc_root)
    assert code == 2
    assert_one_error_line(out, err, "no prediction for any of the 4 images of VOC07_trainval")


def test_skipped_annotations_are_reported_and_not_counted(voc_root, tmp_path, capsys):
    (voc_root / "VOC2007" / "VOCdevkit" / "VOC2007" / "Annotations" / "000004.xml").write_text("<broken")
    (tmp_path / "preds.pkl").write_bytes(pickle.dumps(VOC_BOXES))
    code, out, err = run(capsys, tmp_path / "preds.pkl", voc_root)
    assert (code, out.strip()) == (0, "corloc: 100.00 (3/3)")
    assert "skipped 000004.jpg:" in err and "malformed annotation" in err


# ----------------------------------------------------------------------------------------------
# Multi-box predictions, --metric ap
#
# VOC, best first: 000001 [8,8,40,32] (0.9, exact) and [0,0,4,4] (0.2, on nothing); 000002
# [40,40,50,45] (0.8, on nothing) and [32,16,56,40] (0.6, exact); 000003 [4,4,20,20] (0.7, the
# difficult object exactly); 000004 nothing.
# CorLoc of the top boxes: 000001 hit, 000002 miss, 000003 hit (CorLoc counts difficult objects),
# 000004 miss: 2/4.
# AP: 4 objects count (000003's is ignored, and so is its detection). Every IoU is 1 or 0, so AP is
# the same at every threshold: TP, FP, TP, FP by score; recall 1/4, 1/4, 1/2, 1/2; precision made
# non-increasing 1, 2/3, 2/3, 1/2: 26 recall points get 1, 25 get 2/3: (26 + 50/3) / 101 = 128/303.
# AR@100 = 1/2; AR@1 keeps 000001's TP and 000002's FP: 1/4.
VOC_MULTI = {
    "000001.jpg": safe_files.ScoredBoxes(np.array([[8, 8, 40, 32], [0, 0, 4, 4]]), np.array([0.9, 0.2])),
    "000002.jpg": safe_files.ScoredBoxes(np.array([[40, 40, 50, 45], [32, 16, 56, 40]]), np.array([0.8, 0.6])),
    "000003.jpg": safe_files.ScoredBoxes(np.array([[4, 4, 20, 20]]), np.array([0.7])),
}
VOC_MULTI_AP = ["AP50: 42.24", "AP75: 42.24", "AP: 42.24", "AR@1: 25.00", "AR@10: 50.00", "AR@100: 50.00",
                "images: 4, objects: 4", "corloc: 50.00 (2/4)"]  # fmt: skip


@pytest.mark.parametrize("name", ["preds.pkl", "preds.json"])
def test_multi_box_predictions_give_the_corloc_of_their_top_box(voc_root, tmp_path, capsys, name):
    safe_files.write_scored_predictions(tmp_path / "run", VOC_MULTI)
    code, out, _ = run(capsys, tmp_path / "run" / name, voc_root)
    assert (code, out.strip()) == (0, "corloc: 50.00 (2/4)")


@pytest.mark.parametrize("name", ["preds.pkl", "preds.json"])
def test_multi_box_predictions_give_their_class_agnostic_ap(voc_root, tmp_path, capsys, name):
    safe_files.write_scored_predictions(tmp_path / "run", VOC_MULTI)
    code, out, _ = run(capsys, tmp_path / "run" / name, voc_root, extra=["--metric", "ap"])
    assert code == 0 and out.strip().splitlines() == VOC_MULTI_AP


def test_ap_of_a_multi_box_pickle_without_its_scores_is_one_error_line(voc_root, tmp_path, capsys):
    safe_files.write_scored_predictions(tmp_path / "run", VOC_MULTI)
    (tmp_path / "run" / "preds.scores.pkl").unlink()
    code, out, err = run(capsys, tmp_path / "run" / "preds.pkl", voc_root, extra=["--metric", "ap"])
    assert code == 2
    assert_one_error_line(out, err, "preds.scores.pkl", "not found")


def test_one_box_predictions_are_detections_of_score_one(voc_root, tmp_path, capsys):
    # 000001 exact, 000002 the whole image = the truncated object, 000003 IoU 0.5 with the difficult
    # object (ignored at 0.5, a false positive from 0.55, after the others); recall 1/2 at precision 1
    safe_files.write_predictions(tmp_path / "run", VOC_BOXES)
    code, out, _ = run(capsys, tmp_path / "run" / "preds.pkl", voc_root, extra=["--metric", "ap"])
    assert code == 0
    assert out.strip().splitlines() == ["AP50: 50.50", "AP75: 50.50", "AP: 50.50", "AR@1: 50.00", "AR@10: 50.00",
                                        "AR@100: 50.00", "images: 4, objects: 4", "corloc: 75.00 (3/4)"]  # fmt: skip


def test_detectron_results_give_their_ap_with_every_detection(voc_root, tmp_path, capsys):
    # by score: 0.9 TP, 0.8 TP, 0.6 FP, 0.5 FP, 0.3 FP (000009 is not in the set): 51 points at 1
    pred_file = tmp_path / "coco_instances_results.json"
    pred_file.write_text(json.dumps(VOC_DETECTIONS))
    code, out, _ = run(capsys, pred_file, voc_root, type_pred="detectron", extra=["--metric", "ap"])
    assert code == 0
    assert out.strip().splitlines() == ["AP50: 50.50", "AP75: 50.50", "AP: 50.50", "AR@1: 50.00", "AR@10: 50.00",
                                        "AR@100: 50.00", "images: 4, objects: 4", "corloc: 50.00 (2/4)"]  # fmt: skip


def test_coco20k_ap_ignores_detections_in_crowd_regions(tmp_path, capsys):
    # objects 42 [10,4,12,14], 7 [20,11,51,31], 1000 [2,4,12,14]; crowds (0,0,64,48) in 42 and 1001.
    # By score: 1001 inside its crowd (ignored), 7 on nothing (FP), 42 exact (TP), 42 inside the
    # crowd (ignored): precision 1/2 at recall 1/3, 34 recall points: AP = 17/101
    make_coco_tree(tmp_path)
    preds = {
        "42": [{"box": [10, 4, 12, 14], "score": 0.9}, {"box": [30, 30, 40, 40], "score": 0.8}],
        "7": [{"box": [0, 0, 5, 5], "score": 0.95}],
        "1001": [{"box": [0, 0, 10, 10], "score": 0.99}],
    }
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    code, out, _ = run(capsys, tmp_path / "preds.json", tmp_path, dataset="COCO20k", image_set="train", extra=["--metric", "ap"])
    assert code == 0
    assert out.strip().splitlines() == ["AP50: 16.83", "AP75: 16.83", "AP: 16.83", "AR@1: 33.33", "AR@10: 33.33",
                                        "AR@100: 33.33", "images: 4, objects: 3", "corloc: 25.00 (1/4)"]  # fmt: skip
