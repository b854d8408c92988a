"""safe_files.py: atomic writes, the restricted unpickler, prediction and detection files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from lost.errors import LostError
from lost.io import safe_files

REPO = Path(__file__).resolve().parents[1]


def test_shipped_lost_voc07_pickle_loads_with_restricted_unpickler():
    preds = safe_files.read_predictions(REPO / "data" / "LOST_predictions" / "LOST_VOC07.pkl")
    assert len(preds) == 5011
    box = preds["000005.jpg"]
    assert box.shape == (4,) and np.issubdtype(box.dtype, np.integer)
    assert box.tolist() == [96, 144, 480, 368]


class _WritesAFile:
    """A pickle payload that writes `target` when unpickled by a plain unpickler."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"with open({str(self.target)!r}, 'w') as f: f.write('pwned')",))


def test_malicious_pickle_is_refused_and_its_file_not_written(tmp_path):
    target = tmp_path / "pwned.txt"
    payload = pickle.dumps({"000005.jpg": np.array([1, 2, 3, 4]), "x": _WritesAFile(target)})
    pickle.loads(payload)  # the payload is real: a plain unpickler runs it
    assert target.exists()
    target.unlink()
    evil = tmp_path / "preds.pkl"
    evil.write_bytes(payload)
    with pytest.raises(LostError, match=r"refusing to load .*preds.pkl.*it tries to import builtins.exec"):
        safe_files.read_predictions(evil)
    assert not target.exists()


def test_pickle_importing_os_system_is_refused(tmp_path):
    evil = tmp_path / "preds.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")  # protocol 0: os.system("echo hi")
    with pytest.raises(LostError, match="it tries to import os.system"):
        safe_files.read_predictions(evil)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_of_every_protocol_load(tmp_path, protocol):
    preds = {
        "a.jpg": np.array([1, 2, 3, 4], dtype=np.int64),
        "b.jpg": np.array([0.5, 1.5, 2.5, 3.5], dtype=np.float32),
        "c.jpg": [np.int64(1), np.float32(2.5), 3, 4],
    }
    path = tmp_path / "preds.pkl"
    path.write_bytes(pickle.dumps(preds, protocol=protocol))
    loaded = safe_files.read_predictions(path)
    assert loaded["a.jpg"].tolist() == [1, 2, 3, 4] and loaded["a.jpg"].dtype == np.int64
    assert loaded["b.jpg"].tolist() == [0.5, 1.5, 2.5, 3.5] and loaded["b.jpg"].dtype == np.float32
    assert loaded["c.jpg"].tolist() == [1.0, 2.5, 3.0, 4.0]


def test_read_predictions_json_and_bad_contents(tmp_path):
    good = tmp_path / "preds.json"
    good.write_text(json.dumps({"000005.jpg": [96, 144, 480, 368]}))
    assert safe_files.read_predictions(good)["000005.jpg"].tolist() == [96, 144, 480, 368]
    detectron = tmp_path / "coco_instances_results.json"
    detectron.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    with pytest.raises(LostError, match="expected a mapping.*detectron"):
        safe_files.read_predictions(detectron)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"a.jpg": [1, 2, 3]}))
    with pytest.raises(LostError, match="'a.jpg' is not 4 numbers"):
        safe_files.read_predictions(wrong)
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(pickle.dumps({"a.jpg": np.arange(4)})[:-10])
    with pytest.raises(LostError, match="not a readable pickle"):
        safe_files.read_predictions(truncated)
    with pytest.raises(LostError, match="prediction file not found"):
        safe_files.read_predictions(tmp_path / "absent.pkl")


def test_write_predictions_round_trip_in_both_formats(tmp_path):
    preds = {"000005.jpg": np.array([96, 144, 480, 368]), "42": np.array([1.5, 2.0, 3.0, 4.0])}
    folder = tmp_path / "out" / "exp"
    safe_files.write_predictions(folder, preds)
    assert sorted(p.name for p in folder.iterdir()) == ["preds.json", "preds.pkl"]
    for name in ("preds.pkl", "preds.json"):
        loaded = safe_files.read_predictions(folder / name)
        assert loaded["000005.jpg"].tolist() == [96, 144, 480, 368]
        assert loaded["42"].tolist() == [1.5, 2.0, 3.0, 4.0]
    with open(folder / "preds.pkl", "rb") as f:
        assert isinstance(pickle.load(f)["000005.jpg"], np.ndarray)  # published format, our own file


def test_atomic_write_keeps_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "preds.pkl"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        safe_files.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["preds.pkl"]


def test_detectron_predictions_keep_highest_score_as_corners(tmp_path):
    path = tmp_path / "coco_instances_results.json"
    detections = [
        {"image_id": "000005", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
        {"image_id": "000005", "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9},
        {"image_id": 9, "category_id": 1, "bbox": [1.5, 2.5, 3.0, 4.0], "score": 0.7},
        {"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.7},
    ]
    path.write_text(json.dumps(detections))
    preds = safe_files.read_detectron_predictions(path)
    assert sorted(preds) == ["000005", "9"]
    assert preds["000005"].tolist() == [10.0, 20.0, 40.0, 60.0]
    assert preds["9"].tolist() == [1.5, 2.5, 4.5, 6.5]  # first of equal scores


def test_detectron_predictions_bad_file(tmp_path):
    path = tmp_path / "coco_instances_results.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1]}]))
    with pytest.raises(LostError, match="detection 0 lacks image_id/score/bbox"):
        safe_files.read_detectron_predictions(path)
    path.write_text(json.dumps({"000005.jpg": [1, 2, 3, 4]}))
    with pytest.raises(LostError, match="expected a list of detections"):
        safe_files.read_detectron_predictions(path)


def test_atomic_write_gives_ordinary_permissions_and_leaves_no_temporary_file(tmp_path):
    mask = os.umask(0o022)
    try:
        safe_files.atomic_write(tmp_path / "out.txt", b"done")
    finally:
        os.umask(mask)
    assert (tmp_path / "out.txt").read_bytes() == b"done"
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]


def test_read_coco_results_converts_boxes_and_keeps_file_order(tmp_path):
    path = tmp_path / "coco_instances_results.json"
    detections = [
        {"image_id": "000005", "category_id": 3, "bbox": [10, 20, 30, 40], "score": 0.5},
        {"image_id": 9, "bbox": [1.5, 2.5, 3.0, 4.0], "score": 0.9},
    ]
    path.write_text(json.dumps(detections))
    first, second = safe_files.read_coco_results(path)
    assert (first.image_id, first.category_id, first.score, first.box.tolist()) == ("000005", 3, 0.5, [10, 20, 40, 60])
    assert (second.image_id, second.category_id, second.box.tolist()) == (9, None, [1.5, 2.5, 4.5, 6.5])


def test_read_coco_results_names_the_missing_file_and_the_bad_detection(tmp_path):
    with pytest.raises(LostError, match="absent.json: results file not found"):
        safe_files.read_coco_results(tmp_path / "absent.json")
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}, "oops"]))
    with pytest.raises(LostError, match="detection 1 lacks image_id/score/bbox"):
        safe_files.read_coco_results(path)


def test_write_json_creates_the_folder_and_reads_back(tmp_path):
    path = tmp_path / "prepared" / "a.json"
    safe_files.write_json(path, {"b": [1, 2.5]}, indent=2)
    assert path.read_text() == '{\n  "b": [\n    1,\n    2.5\n  ]\n}'
    assert safe_files.read_json(path, "write it again") == {"b": [1, 2.5]}
    path.write_text("{")
    with pytest.raises(LostError, match="a.json: not valid JSON .*; write it again"):
        safe_files.read_json(path, "write it again")


# ----------------------------------------------------------------------------------------------
# Multi-box prediction files

SCORED = {
    "a.jpg": safe_files.ScoredBoxes(np.array([[0, 16, 32, 48], [8, 8, 16, 16]]), np.array([0.75, 0.5])),
    "b.jpg": safe_files.ScoredBoxes(np.array([[1.5, 2.0, 3.0, 4.0]]), np.array([0.0])),
}


def test_multi_box_predictions_are_written_in_three_files_best_first(tmp_path):
    safe_files.write_scored_predictions(tmp_path, SCORED)
    assert json.loads((tmp_path / "preds.json").read_text()) == {
        "a.jpg": [{"box": [0, 16, 32, 48], "score": 0.75}, {"box": [8, 8, 16, 16], "score": 0.5}],
        "b.jpg": [{"box": [1.5, 2.0, 3.0, 4.0], "score": 0.0}],
    }
    boxes = safe_files.restricted_load(tmp_path / "preds.pkl")
    assert boxes["a.jpg"].shape == (2, 4) and boxes["a.jpg"].dtype == np.int64 and boxes["b.jpg"].shape == (1, 4)
    scores = safe_files.restricted_load(tmp_path / "preds.scores.pkl")
    assert scores["a.jpg"].tolist() == [0.75, 0.5] and scores["b.jpg"].dtype == np.float64


@pytest.mark.parametrize("name", ["preds.pkl", "preds.json"])
def test_every_reader_reads_multi_box_files(tmp_path, name):
    safe_files.write_scored_predictions(tmp_path, SCORED)
    path = tmp_path / name
    assert {n: box.tolist() for n, box in safe_files.read_predictions(path).items()} == {
        "a.jpg": [0, 16, 32, 48], "b.jpg": [1.5, 2.0, 3.0, 4.0],
    }  # fmt: skip
    assert safe_files.read_prediction_boxes(path)["a.jpg"].tolist() == [[0, 16, 32, 48], [8, 8, 16, 16]]
    scored = safe_files.read_scored_predictions(path)
    assert scored["a.jpg"].boxes.tolist() == [[0, 16, 32, 48], [8, 8, 16, 16]]
    assert scored["a.jpg"].scores.tolist() == [0.75, 0.5] and scored["b.jpg"].scores.tolist() == [0.0]


@pytest.mark.parametrize("name", ["preds.pkl", "preds.json"])
def test_one_box_files_read_as_one_detection_of_score_one(tmp_path, name):
    safe_files.write_predictions(tmp_path, {"a.jpg": np.array([1, 2, 3, 4])})
    scored = safe_files.read_scored_predictions(tmp_path / name)
    assert scored["a.jpg"].boxes.tolist() == [[1, 2, 3, 4]] and scored["a.jpg"].scores.tolist() == [1.0]
    assert safe_files.read_prediction_boxes(tmp_path / name)["a.jpg"].shape == (4,)


def test_json_boxes_are_ordered_by_decreasing_score_ties_in_file_order(tmp_path):
    entries = [{"box": [0, 0, 1, 1], "score": 0.2}, {"box": [0, 0, 2, 2], "score": 0.9}, {"box": [0, 0, 3, 3], "score": 0.2}]
    (tmp_path / "preds.json").write_text(json.dumps({"a.jpg": entries}))
    scored = safe_files.read_scored_predictions(tmp_path / "preds.json")["a.jpg"]
    assert scored.boxes[:, 2].tolist() == [2, 1, 3] and scored.scores.tolist() == [0.9, 0.2, 0.2]
    assert safe_files.read_predictions(tmp_path / "preds.json")["a.jpg"].tolist() == [0, 0, 2, 2]


def test_a_multi_box_pickle_without_its_scores_gives_boxes_but_no_scores(tmp_path):
    safe_files.write_scored_predictions(tmp_path, SCORED)
    (tmp_path / "preds.scores.pkl").unlink()
    assert safe_files.read_predictions(tmp_path / "preds.pkl")["a.jpg"].tolist() == [0, 16, 32, 48]
    with pytest.raises(LostError, match=r"preds.scores.pkl: scores of the multi-box predictions .* not found; .*preds.json"):
        safe_files.read_scored_predictions(tmp_path / "preds.pkl")


def test_scores_that_do_not_match_the_boxes_are_refused(tmp_path):
    safe_files.write_scored_predictions(tmp_path, SCORED)
    (tmp_path / "preds.scores.pkl").write_bytes(pickle.dumps({"a.jpg": np.array([0.5]), "b.jpg": np.array([0.0])}))
    with pytest.raises(LostError, match=r"no 2 scores for 'a.jpg'"):
        safe_files.read_scored_predictions(tmp_path / "preds.pkl")


def test_scores_file_follows_the_predictions_name():
    assert safe_files.scores_file(Path("runs/MaskCut_VOC07.pkl")) == Path("runs/MaskCut_VOC07.scores.pkl")


@pytest.mark.parametrize(
    "entry",
    [[{"box": [0, 0, 1], "score": 1.0}], [{"box": [0, 0, 1, 1]}], [[0, 0, 1, 1], [0, 0, 2, 2]]],
    ids=["three-numbers", "no-score", "lists-without-scores"],
)
def test_malformed_multi_box_json_is_one_clear_error(tmp_path, entry):
    (tmp_path / "preds.json").write_text(json.dumps({"a.jpg": entry}))
    with pytest.raises(LostError, match=r"prediction for 'a.jpg' is not"):
        safe_files.read_scored_predictions(tmp_path / "preds.json")


def test_detectron_results_give_every_detection_by_score(tmp_path):
    detections = [
        {"image_id": 5, "bbox": [0, 0, 2, 2], "score": 0.3},
        {"image_id": 5, "bbox": [1, 1, 2, 2], "score": 0.8},
        {"image_id": 7, "bbox": [0, 0, 4, 4], "score": 0.5},
    ]
    (tmp_path / "results.json").write_text(json.dumps(detections))
    scored = safe_files.read_detectron_scored(tmp_path / "results.json")
    assert scored["5"].boxes.tolist() == [[1, 1, 3, 3], [0, 0, 2, 2]] and scored["5"].scores.tolist() == [0.8, 0.3]
    assert safe_files.read_detectron_predictions(tmp_path / "results.json")["5"].tolist() == [1, 1, 3, 3]
