"""safe_files.py: atomic writes, the restricted unpickler, prediction and detection files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import safe_files
from errors import LostError

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
