"""datasets.py: VOC / COCO20k records, ground truth and class names, one reader per file kind."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from tiny_datasets import make_coco_tree, make_voc_tree

import datasets
from datasets import ImageRecord
from errors import LostError


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
        datasets.read_voc_annotation(xml)


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


def test_coco_ground_truth_comes_from_the_index_without_another_pass():
    class CountingList(list):
        passes = 0

        def __iter__(self):
            CountingList.passes += 1
            return super().__iter__()

    rng = np.random.default_rng(0)
    image_ids = rng.integers(0, 80_000, size=200_000).tolist()
    bbox = [1.0, 2.0, 3.0, 4.0]
    annotations = CountingList(
        {"id": k, "image_id": i, "category_id": 1, "bbox": bbox, "iscrowd": int(k % 50 == 0)}
        for k, i in enumerate(image_ids)
    )
    coco = COCO()
    coco.dataset = {"images": [], "annotations": annotations, "categories": [{"id": 1, "name": "dog"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    passes_to_index = CountingList.passes
    wanted = range(0, 80_000, 4)
    ground_truth = {image_id: datasets.coco_ground_truth(coco, image_id) for image_id in wanted}
    assert CountingList.passes == passes_to_index  # 20,000 images looked up, no pass over 200,000 annotations
    expected = sum(1 for k, i in enumerate(image_ids) if i % 4 == 0 and k % 50 != 0)
    assert sum(len(boxes) for boxes, _ in ground_truth.values()) == expected
    boxes, labels = next(value for value in ground_truth.values() if len(value[0]))
    assert boxes[0].tolist() == [1, 2, 4, 6] and set(labels) == {"dog"}


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
