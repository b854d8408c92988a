"""datasets.py: image loading, VOC / COCO20k records, IoU and CorLoc, prediction files."""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_datasets import make_coco_tree, make_voc_tree

import datasets
from datasets import ImageRecord
from errors import LostError

REPO = Path(__file__).resolve().parents[1]


def boxes(rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def assert_records(records, expected):
    """expected: list of (name, boxes rows)."""
    assert [r.name for r in records] == [name for name, _ in expected]
    for record, (_, rows) in zip(records, expected, strict=True):
        assert record.gt_boxes.dtype == np.int64
        np.testing.assert_array_equal(record.gt_boxes, boxes(rows))


# ---------------------------------------------------------------------------------------------
# VOC


def test_voc_corners_become_zero_based_exclusive(tmp_path):
    make_voc_tree(tmp_path)
    records = datasets.voc_records(tmp_path / "VOC2007", "2007", "trainval", remove_hards=False)
    assert_records(
        records,
        [
            ("000001.jpg", [[8, 8, 40, 32]]),
            ("000002.jpg", [[0, 0, 64, 48], [32, 16, 56, 40]]),
            ("000003.jpg", [[4, 4, 20, 20]]),
            ("000004.jpg", [[11, 7, 44, 40]]),
        ],
    )
    devkit = tmp_path / "VOC2007" / "VOCdevkit" / "VOC2007"
    assert records[0].path == devkit / "JPEGImages" / "000001.jpg"


def test_voc_no_hard_drops_truncated_difficult_objects_and_empty_images(tmp_path):
    make_voc_tree(tmp_path)
    records = datasets.voc_records(tmp_path / "VOC2007", "2007", "trainval", remove_hards=True)
    assert_records(
        records,
        [
            ("000001.jpg", [[8, 8, 40, 32]]),
            ("000002.jpg", [[32, 16, 56, 40]]),
            ("000004.jpg", [[11, 7, 44, 40]]),
        ],
    )


def test_voc_order_follows_image_set_and_name_is_xml_filename(tmp_path):
    tiny = make_voc_tree(tmp_path, year="2012", image_set="val")
    devkit = tmp_path / "VOC2012" / "VOCdevkit" / "VOC2012"
    (devkit / "ImageSets" / "Main" / "val.txt").write_text("000004\n\n000001\n")
    xml = devkit / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<filename>000001.jpg</filename>", "<filename>renamed.jpg</filename>"))
    records = datasets.voc_records(tmp_path / "VOC2012", "2012", "val", remove_hards=False)
    assert [r.name for r in records] == ["000004.jpg", "renamed.jpg"]
    assert records[1].path == tiny.image_paths["000001.jpg"]


def test_voc_object_free_annotation_gives_empty_boxes_and_is_dropped_by_no_hard(tmp_path):
    make_voc_tree(tmp_path, images={"000007": []})
    kept = datasets.voc_records(tmp_path / "VOC2007", "2007", "trainval", remove_hards=False)
    assert kept[0].gt_boxes.shape == (0, 4)
    assert datasets.voc_records(tmp_path / "VOC2007", "2007", "trainval", remove_hards=True) == []


def test_voc_missing_or_malformed_xml_raises_or_is_skipped(tmp_path):
    make_voc_tree(tmp_path)
    annotations = tmp_path / "VOC2007" / "VOCdevkit" / "VOC2007" / "Annotations"
    (annotations / "000002.xml").unlink()
    (annotations / "000003.xml").write_text("<annotation><object><bndbox><xmin>1</xmin></bndbox></object>")
    with pytest.raises(LostError, match="000002.xml: annotation file not found"):
        datasets.voc_records(tmp_path / "VOC2007", "2007", "trainval", remove_hards=False)
    skipped = []
    records = datasets.voc_records(tmp_path / "VOC2007", "2007", "trainval", remove_hards=False, skipped=skipped)
    assert [r.name for r in records] == ["000001.jpg", "000004.jpg"]
    assert [name for name, _ in skipped] == ["000002.jpg", "000003.jpg"]
    assert "malformed annotation" in skipped[1][1]


def test_voc_missing_bndbox_is_malformed(tmp_path):
    make_voc_tree(tmp_path)
    xml = tmp_path / "VOC2007" / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text("<annotation><filename>000001.jpg</filename><object><name>x</name></object></annotation>")
    with pytest.raises(LostError, match="000001.xml: malformed annotation"):
        datasets.parse_voc_xml(xml)


def test_voc_accepts_flattened_layout_without_vocdevkit(tmp_path):
    make_voc_tree(tmp_path / "archive")
    (tmp_path / "archive" / "VOC2007" / "VOCdevkit" / "VOC2007").rename(tmp_path / "VOC2007")
    spec = datasets.load_dataset("VOC07", "trainval", tmp_path, no_hard=False)
    assert len(spec.records) == 4


# ---------------------------------------------------------------------------------------------
# COCO20k


def test_coco_boxes_are_rounded_with_python_round_and_crowd_removed(tmp_path):
    make_coco_tree(tmp_path)
    records = datasets.coco20k_records(tmp_path / "COCO", tmp_path / "coco_20k_filenames.txt")
    # 42: x=10.5 -> round 10, x+w=12.5 -> 12; 7: 20.4+30.2=50.6 -> 51; 1000: 2.5 -> 2, 3.5 -> 4, 13.5 -> 14
    assert_records(
        records,
        [("42", [[10, 4, 12, 14]]), ("7", [[20, 11, 51, 31]]), ("1000", [[2, 4, 12, 14]]), ("1001", [])],
    )
    assert records[1].path == tmp_path / "COCO" / "images" / "train2014" / "COCO_train2014_000000000007.jpg"


def test_coco_list_order_is_kept(tmp_path):
    make_coco_tree(tmp_path, listed=(1000, 42))
    records = datasets.coco20k_records(tmp_path / "COCO", tmp_path / "coco_20k_filenames.txt")
    assert [r.name for r in records] == ["1000", "42"]


def test_coco_image_absent_from_json_raises_or_is_skipped(tmp_path):
    make_coco_tree(tmp_path, listed=(42, 99))
    with pytest.raises(LostError, match="image 99"):
        datasets.coco20k_records(tmp_path / "COCO", tmp_path / "coco_20k_filenames.txt")
    skipped = []
    records = datasets.coco20k_records(tmp_path / "COCO", tmp_path / "coco_20k_filenames.txt", skipped=skipped)
    assert [r.name for r in records] == ["42"]
    assert [name for name, _ in skipped] == ["99"]


def test_coco_index_reads_the_annotations_once(tmp_path):
    class CountingList(list):
        passes = 0

        def __iter__(self):
            CountingList.passes += 1
            return super().__iter__()

    rng = np.random.default_rng(0)
    image_ids = rng.integers(0, 80_000, size=200_000).tolist()
    bbox = [1.0, 2.0, 3.0, 4.0]
    annotations = CountingList(
        {"image_id": i, "bbox": bbox, "iscrowd": int(k % 50 == 0)} for k, i in enumerate(image_ids)
    )
    wanted = set(range(0, 80_000, 4))
    index = datasets.coco_boxes_by_image(annotations, wanted)
    assert CountingList.passes == 1
    assert set(index) == wanted
    expected = sum(1 for k, i in enumerate(image_ids) if i % 4 == 0 and k % 50 != 0)
    assert sum(len(v) for v in index.values()) == expected
    assert index[next(iter(i for i in index if index[i]))][0] == [1, 2, 4, 6]


def test_coco_bad_list_line_names_file_and_line(tmp_path):
    make_coco_tree(tmp_path)
    (tmp_path / "coco_20k_filenames.txt").write_text("train2014/COCO_train2014_000000000042.jpg\nnot_a_coco.jpg\n")
    with pytest.raises(LostError, match=r"coco_20k_filenames.txt:2"):
        datasets.coco20k_records(tmp_path / "COCO", tmp_path / "coco_20k_filenames.txt")


def test_shipped_coco20k_list_has_19817_train2014_images():
    lines = datasets.SHIPPED_COCO20K_LIST.read_text().split()
    assert len(lines) == len(set(lines)) == 19817
    assert all(line.startswith("train2014/COCO_train2014_") for line in lines)


# ---------------------------------------------------------------------------------------------
# load_dataset


def test_load_dataset_names_and_records(tmp_path):
    make_voc_tree(tmp_path)
    make_coco_tree(tmp_path)
    assert datasets.load_dataset("VOC07", "trainval", tmp_path, no_hard=False).name == "VOC07_trainval"
    spec = datasets.load_dataset("VOC07", "trainval", tmp_path, no_hard=True)
    assert spec.name == "VOC07_trainval-nohards"
    assert [r.name for r in spec.records] == ["000001.jpg", "000002.jpg", "000004.jpg"]
    coco = datasets.load_dataset("COCO20k", "train", tmp_path, no_hard=False)
    assert coco.name == "COCO20k_train"
    assert [r.name for r in coco.records] == ["42", "7", "1000", "1001"]


def test_load_dataset_lists_unreadable_annotations_as_skipped(tmp_path):
    make_voc_tree(tmp_path)
    (tmp_path / "VOC2007" / "VOCdevkit" / "VOC2007" / "Annotations" / "000003.xml").write_text("<oops")
    spec = datasets.load_dataset("VOC07", "trainval", tmp_path, no_hard=False)
    assert len(spec.records) == 3
    assert [name for name, _ in spec.skipped] == ["000003.jpg"]


@pytest.mark.parametrize(
    ("name", "image_set", "missing", "source"),
    [
        ("VOC07", "trainval", "VOC2007/VOCdevkit/VOC2007/JPEGImages", "host.robots.ox.ac.uk/pascal/VOC"),
        ("VOC12", "trainval", "VOC2012/VOCdevkit/VOC2012/JPEGImages", "VOCtrainval_11-May-2012.tar"),
        ("COCO20k", "train", "COCO/images/train2014", "cocodataset.org"),
    ],
)
def test_load_dataset_missing_folder_names_path_and_source(tmp_path, name, image_set, missing, source):
    with pytest.raises(LostError) as info:
        datasets.load_dataset(name, image_set, tmp_path, no_hard=False)
    assert str(tmp_path / missing) in str(info.value)
    assert source in str(info.value)


def test_load_dataset_other_user_errors(tmp_path):
    make_voc_tree(tmp_path)
    with pytest.raises(LostError, match="ImageSets/Main/test.txt: image set file not found"):
        datasets.load_dataset("VOC07", "test", tmp_path, no_hard=False)
    with pytest.raises(LostError, match="use --set train"):
        datasets.load_dataset("COCO20k", "val", tmp_path, no_hard=False)
    with pytest.raises(LostError, match="unknown data set"):
        datasets.load_dataset("VOC99", "trainval", tmp_path, no_hard=False)
    (tmp_path / "COCO" / "images" / "train2014").mkdir(parents=True)
    with pytest.raises(LostError, match="instances_train2014.json: file not found.*annotations_trainval2014.zip"):
        datasets.load_dataset("COCO20k", "train", tmp_path, no_hard=False)
    (tmp_path / "COCO" / "annotations").mkdir()
    (tmp_path / "COCO" / "annotations" / "instances_train2014.json").write_text("{truncated")
    with pytest.raises(LostError, match="not valid JSON"):
        datasets.load_dataset("COCO20k", "train", tmp_path, no_hard=False)


# ---------------------------------------------------------------------------------------------
# IoU and CorLoc


def test_iou_of_half_overlapping_boxes_is_one_third():
    # [0,0,10,10] and [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150
    iou = datasets.box_iou(np.array([0, 0, 10, 10]), np.array([[5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [50 / 150, 0.0, 1.0])
    assert iou.dtype == np.float64


def test_iou_uses_continuous_coordinates():
    # [0,0,2.5,2] vs [0,0,5,2]: intersection 5, union 10
    np.testing.assert_allclose(datasets.box_iou([0, 0, 2.5, 2], [[0, 0, 5, 2]]), [0.5])


def test_iou_of_degenerate_boxes_is_zero():
    np.testing.assert_array_equal(datasets.box_iou([3, 3, 3, 3], [[3, 3, 3, 3]]), [0.0])


def test_exact_half_iou_is_a_hit_and_no_ground_truth_is_a_miss():
    gt = boxes([[0, 0, 10, 10]])
    assert datasets.is_correct_localization(np.array([0, 0, 5, 10]), gt)  # 50 / 100
    assert not datasets.is_correct_localization(np.array([0, 0, 4, 10]), gt)  # 40 / 100
    assert datasets.is_correct_localization(np.array([0, 0, 4, 10]), boxes([[50, 50, 60, 60], [0, 0, 6, 10]]))
    assert not datasets.is_correct_localization(np.array([0, 0, 10, 10]), boxes([]))


def test_corloc_meter_summary():
    meter = datasets.CorLocMeter()
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
    meter = datasets.evaluate_corloc(records, predictions)
    assert meter.summary() == "corloc: 33.33 (1/3)"


# ---------------------------------------------------------------------------------------------
# Prediction files


def test_shipped_lost_voc07_pickle_loads_with_restricted_unpickler():
    preds = datasets.read_predictions(REPO / "data" / "LOST_predictions" / "LOST_VOC07.pkl")
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
        datasets.read_predictions(evil)
    assert not target.exists()


def test_pickle_importing_os_system_is_refused(tmp_path):
    evil = tmp_path / "preds.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")  # protocol 0: os.system("echo hi")
    with pytest.raises(LostError, match="it tries to import os.system"):
        datasets.read_predictions(evil)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_of_every_protocol_load(tmp_path, protocol):
    preds = {
        "a.jpg": np.array([1, 2, 3, 4], dtype=np.int64),
        "b.jpg": np.array([0.5, 1.5, 2.5, 3.5], dtype=np.float32),
        "c.jpg": [np.int64(1), np.float32(2.5), 3, 4],
    }
    path = tmp_path / "preds.pkl"
    path.write_bytes(pickle.dumps(preds, protocol=protocol))
    loaded = datasets.read_predictions(path)
    assert loaded["a.jpg"].tolist() == [1, 2, 3, 4] and loaded["a.jpg"].dtype == np.int64
    assert loaded["b.jpg"].tolist() == [0.5, 1.5, 2.5, 3.5] and loaded["b.jpg"].dtype == np.float32
    assert loaded["c.jpg"].tolist() == [1.0, 2.5, 3.0, 4.0]


def test_read_predictions_json_and_bad_contents(tmp_path):
    good = tmp_path / "preds.json"
    good.write_text(json.dumps({"000005.jpg": [96, 144, 480, 368]}))
    assert datasets.read_predictions(good)["000005.jpg"].tolist() == [96, 144, 480, 368]
    detectron = tmp_path / "coco_instances_results.json"
    detectron.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    with pytest.raises(LostError, match="expected a mapping.*detectron"):
        datasets.read_predictions(detectron)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"a.jpg": [1, 2, 3]}))
    with pytest.raises(LostError, match="'a.jpg' is not 4 numbers"):
        datasets.read_predictions(wrong)
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(pickle.dumps({"a.jpg": np.arange(4)})[:-10])
    with pytest.raises(LostError, match="not a readable pickle"):
        datasets.read_predictions(truncated)
    with pytest.raises(LostError, match="prediction file not found"):
        datasets.read_predictions(tmp_path / "absent.pkl")


def test_write_predictions_round_trip_in_both_formats(tmp_path):
    preds = {"000005.jpg": np.array([96, 144, 480, 368]), "42": np.array([1.5, 2.0, 3.0, 4.0])}
    folder = tmp_path / "out" / "exp"
    datasets.write_predictions(folder, preds)
    assert sorted(p.name for p in folder.iterdir()) == ["preds.json", "preds.pkl"]
    for name in ("preds.pkl", "preds.json"):
        loaded = datasets.read_predictions(folder / name)
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
        datasets.atomic_write(target, b"new")
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
    preds = datasets.read_detectron_predictions(path)
    assert sorted(preds) == ["000005", "9"]
    assert preds["000005"].tolist() == [10.0, 20.0, 40.0, 60.0]
    assert preds["9"].tolist() == [1.5, 2.5, 4.5, 6.5]  # first of equal scores


def test_detectron_predictions_bad_file(tmp_path):
    path = tmp_path / "coco_instances_results.json"
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1]}]))
    with pytest.raises(LostError, match="detection 0 lacks image_id/score/bbox"):
        datasets.read_detectron_predictions(path)
    path.write_text(json.dumps({"000005.jpg": [1, 2, 3, 4]}))
    with pytest.raises(LostError, match="expected a list of detections"):
        datasets.read_detectron_predictions(path)


# ---------------------------------------------------------------------------------------------
# Images


def write_png16_rgb(path: Path, values: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): values (H, W, 3) uint16."""
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def rgb_array(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_load_rgb_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(LostError, match=r"empty.jpg: image file is empty \(0 bytes\)"):
        datasets.load_rgb(path)


def test_load_rgb_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LostError, match="cut.jpg: cannot decode the image .*truncated"):
        datasets.load_rgb(path)


def test_load_rgb_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(LostError, match="notes.jpg: not an image Pillow can read"):
        datasets.load_rgb(path)


def test_load_rgb_missing_file(tmp_path):
    with pytest.raises(LostError, match="absent.jpg: image file not found"):
        datasets.load_rgb(tmp_path / "absent.jpg")


def test_load_rgb_grayscale_repeats_the_channel(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((4, 6), 77, dtype=np.uint8)).save(path)
    assert (rgb_array(datasets.load_rgb(path)) == 77).all()


def test_load_rgb_cmyk(tmp_path):
    tif = tmp_path / "cmyk.tif"
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tif)  # no cyan, full magenta + yellow: red
    assert rgb_array(datasets.load_rgb(tif))[0, 0].tolist() == [255, 0, 0]
    jpg = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (0, 0, 0, 0)).save(jpg)
    assert np.abs(rgb_array(datasets.load_rgb(jpg)).astype(int) - 255).max() <= 2  # white


def test_load_rgb_rgba_drops_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (6, 4), (10, 20, 30, 0)).save(path)
    assert rgb_array(datasets.load_rgb(path))[0, 0].tolist() == [10, 20, 30]
    la = tmp_path / "la.png"
    Image.new("LA", (6, 4), (90, 0)).save(la)
    assert rgb_array(datasets.load_rgb(la))[0, 0].tolist() == [90, 90, 90]


def test_load_rgb_palette_with_transparency_gives_palette_colours_without_warning(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (6, 4), 0)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(path, transparency=bytes([0, 255] + [255] * 254))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = rgb_array(datasets.load_rgb(path))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[0, 1].tolist() == [200, 100, 50]


def test_load_rgb_scales_16_bit_grey_png_instead_of_clipping(tmp_path):
    path = tmp_path / "grey16.png"
    values = np.array([[0, 25700, 32768, 65535]], dtype=np.uint16)  # /257: 0, 100, 127.5, 255
    Image.fromarray(values).save(path)
    pixels = rgb_array(datasets.load_rgb(path))
    assert pixels[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_load_rgb_16_bit_rgb_png(tmp_path):
    path = tmp_path / "rgb16.png"
    write_png16_rgb(path, np.array([[[0, 25700, 65535]]], dtype=np.uint16))
    assert rgb_array(datasets.load_rgb(path))[0, 0].tolist() == [0, 100, 255]


def test_image_smaller_than_a_patch_is_padded_to_one_patch(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (5, 3), (255, 255, 255)).save(path)
    record = ImageRecord("tiny.png", path, None)
    assert datasets.padded_size(record, 16) == (16, 16)
    decoded = datasets.ImageFileDataset([record], 16)[0]
    tensor = decoded.image
    assert tensor.shape == (3, 16, 16) and decoded.index == 0 and decoded.size == decoded.original_size == (3, 5)
    white = (1 - np.array(datasets.IMAGENET_MEAN)) / np.array(datasets.IMAGENET_STD)
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), white, rtol=1e-6)
    assert (tensor[:, 3:, :] == 0).all() and (tensor[:, :, 5:] == 0).all()


def test_image_to_tensor_normalizes_with_imagenet_statistics():
    image = Image.new("RGB", (2, 1), (255, 0, 51))
    tensor = datasets.image_to_tensor(image)
    assert tensor.shape == (3, 1, 2) and tensor.dtype == torch.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), expected, rtol=1e-6)


def test_image_to_tensor_equals_torchvision_totensor_normalize():
    from torchvision import transforms

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(datasets.IMAGENET_MEAN, datasets.IMAGENET_STD)]
    )
    assert torch.equal(datasets.image_to_tensor(image), reference(image))


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    t = torch.ones(3, 50, 65)
    padded = datasets.pad_to_multiple(t, 16)
    assert padded.shape == (3, 64, 80)
    assert (padded[:, :50, :65] == 1).all()
    assert padded[:, 50:, :].abs().sum() == 0 and padded[:, :, 65:].abs().sum() == 0
    exact = torch.ones(3, 48, 64)
    assert datasets.pad_to_multiple(exact, 16) is exact


def test_padded_size_reads_the_header_only(tmp_path):
    tiny = make_voc_tree(tmp_path)
    path = tiny.image_paths["000001.jpg"]
    assert datasets.padded_size(ImageRecord("a", path, None), 16) == (48, 64)
    assert datasets.padded_size(ImageRecord("a", path, None), 10) == (50, 70)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])  # header intact, scan cut
    assert datasets.padded_size(ImageRecord("a", path, None), 8) == (48, 64)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(LostError, match="empty.jpg: cannot read the image header"):
        datasets.padded_size(ImageRecord("e", empty, None), 16)


def test_image_file_dataset_returns_sentinel_for_unreadable_image_in_a_worker(tmp_path):
    tiny = make_voc_tree(tmp_path)
    good = ImageRecord("000001.jpg", tiny.image_paths["000001.jpg"], None)
    bad_path = tmp_path / "bad.jpg"
    bad_path.write_text("no image")
    dataset = datasets.ImageFileDataset([good, ImageRecord("bad.jpg", bad_path, None)], pad_multiple=16)
    assert len(dataset) == 2
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, collate_fn=lambda item: item)
    good_image, bad_image = list(loader)
    assert good_image.image.shape == (3, 48, 64) and good_image.index == 0 and good_image.size == (48, 64)
    assert bad_image.image is None and bad_image.index == 1
    assert "bad.jpg: not an image Pillow can read" in bad_image.error


def test_max_size_caps_the_longer_side_and_keeps_the_original_size(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (4000, 1000), (200, 10, 10)).save(path)
    record = ImageRecord("wide.jpg", path, None)
    # 4000 x 1000 capped to 1000: scale 1/4 -> 1000 x 250, padded to 16 -> (256, 1008)
    assert datasets.capped_size(4000, 1000, 1000) == (1000, 250)
    assert datasets.capped_size(400, 300, 1000) == (400, 300)
    assert datasets.capped_size(400, 300, None) == (400, 300)
    assert datasets.padded_size(record, 16, max_size=1000) == (256, 1008)
    decoded = datasets.ImageFileDataset([record], 16, max_size=1000)[0]
    assert decoded.image.shape == (3, 256, 1008)
    assert decoded.size == (250, 1000) and decoded.original_size == (1000, 4000)


def test_rescale_box_maps_decoded_pixels_back_to_the_original():
    # decoded 250 x 1000 (H x W) from an original 1000 x 4000: x and y times 4
    box = np.array([16, 32, 64, 250])
    assert datasets.rescale_box(box, (250, 1000), (1000, 4000)).tolist() == [64.0, 128.0, 256.0, 1000.0]
    assert datasets.rescale_box(box, (250, 1000), (250, 1000)) is box


def test_single_image_records(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.JPG")
    (tmp_path / "notes.txt").write_text("x")
    records = datasets.single_image_records(tmp_path)
    assert [r.name for r in records] == ["a.JPG", "b.png"]
    assert all(r.gt_boxes is None for r in records)
    assert datasets.single_image_records(tmp_path / "b.png") == [ImageRecord("b.png", tmp_path / "b.png", None)]
    with pytest.raises(LostError, match="no such image file or folder"):
        datasets.single_image_records(tmp_path / "absent.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LostError, match="folder holds no image"):
        datasets.single_image_records(tmp_path / "empty")


def test_atomic_write_gives_ordinary_permissions_and_leaves_no_temporary_file(tmp_path):
    mask = os.umask(0o022)
    try:
        datasets.atomic_write(tmp_path / "out.txt", b"done")
    finally:
        os.umask(mask)
    assert (tmp_path / "out.txt").read_bytes() == b"done"
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]
