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
import safe_files

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
