"""The run journal: durable per batch, resumable, repaired after a kill, strict about settings."""

import json

import numpy as np
import pytest

from lost.errors import LostError
from lost.io.journal import Journal, box_from_json, box_to_json, merge_journals
from lost.io.safe_files import ScoredBoxes

RUN = {"input": "VOC07_trainval", "arch": "vit_small", "k_patches": 100}


def test_finished_images_survive_a_restart(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, RUN)
    journal.record({"a.jpg": np.array([1, 2, 3, 4])}, {"b.jpg": "truncated file"})
    journal.close()
    again = Journal(path, RUN)
    assert again.is_done("a.jpg")
    assert not again.is_done("b.jpg"), "skipped images are tried again on resume"
    assert again.boxes["a.jpg"].tolist() == [1, 2, 3, 4]
    assert again.errors == {"b.jpg": "truncated file"}


def test_a_line_cut_by_a_kill_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, RUN).record({"a.jpg": np.array([1, 2, 3, 4])}, {})
    with open(path, "a") as file:
        file.write('{"name": "c.jpg", "box": [1, 2')
    journal = Journal(path, RUN)
    assert list(journal.boxes) == ["a.jpg"]
    journal.record({"c.jpg": np.array([5, 6, 7, 8])}, {})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("name") for line in lines] == [None, "a.jpg", "c.jpg"]


def test_other_settings_refuse_to_resume(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, RUN)
    with pytest.raises(LostError, match="--overwrite"):
        Journal(path, {**RUN, "k_patches": 50})


def test_overwrite_starts_over(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, RUN).record({"a.jpg": np.array([1, 2, 3, 4])}, {})
    assert Journal(path, {**RUN, "k_patches": 50}, overwrite=True).boxes == {}


def test_box_types_survive_json():
    assert box_from_json(box_to_json(np.array([0, 16, 32, 48]))).dtype == np.int64
    floats = box_from_json(box_to_json(np.array([0.0, 26.5, 24.0, 53.0])))
    assert floats.dtype == np.float64 and floats.tolist() == [0.0, 26.5, 24.0, 53.0]


def test_shard_journals_merge(tmp_path):
    first, second = tmp_path / "journal.rank0-of-2.jsonl", tmp_path / "journal.rank1-of-2.jsonl"
    Journal(first, RUN).record({"a.jpg": np.array([1, 2, 3, 4])}, {})
    Journal(second, RUN).record({"b.jpg": np.array([0.5, 1.0, 2.0, 3.0])}, {"c.jpg": "zero-byte file"})
    boxes, errors, detections = merge_journals([first, second])
    assert {name: box.tolist() for name, box in boxes.items()} == {"a.jpg": [1, 2, 3, 4], "b.jpg": [0.5, 1.0, 2.0, 3.0]}
    assert errors == {"c.jpg": "zero-byte file"}
    assert detections == {}


def test_one_box_lines_keep_their_published_form(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, RUN).record({"a.jpg": np.array([1, 2, 3, 4])}, {})
    assert json.loads(path.read_text().splitlines()[1]) == {"name": "a.jpg", "box": [1, 2, 3, 4]}


def test_multi_box_lines_round_trip_with_their_scores_and_top_box(tmp_path):
    path = tmp_path / "journal.jsonl"
    scored = ScoredBoxes(np.array([[0, 16, 32, 48], [8, 8, 16, 16]]), np.array([0.75, 0.5]))
    Journal(path, RUN).record({"a.jpg": scored, "b.jpg": np.array([1, 2, 3, 4])}, {})
    line = json.loads(path.read_text().splitlines()[1])
    assert line == {"name": "a.jpg", "boxes": [[0, 16, 32, 48], [8, 8, 16, 16]], "scores": [0.75, 0.5]}
    again = Journal(path, RUN)
    assert again.is_done("a.jpg") and again.boxes["a.jpg"].tolist() == [0, 16, 32, 48]
    assert again.detections["a.jpg"].boxes.dtype == np.int64
    assert again.detections["a.jpg"].boxes.tolist() == [[0, 16, 32, 48], [8, 8, 16, 16]]
    assert again.detections["a.jpg"].scores.tolist() == [0.75, 0.5]
    assert list(again.detections) == ["a.jpg"], "one-box images have no detections entry"
    again.close()
    _, _, merged = merge_journals([path])
    assert merged["a.jpg"].scores.tolist() == [0.75, 0.5]


def test_a_later_skip_removes_an_images_boxes(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, RUN)
    journal.record({"a.jpg": ScoredBoxes(np.array([[0, 0, 8, 8]]), np.array([0.5]))}, {})
    journal.record({}, {"a.jpg": "unreadable now"})
    assert journal.boxes == {} and journal.detections == {} and journal.errors == {"a.jpg": "unreadable now"}
