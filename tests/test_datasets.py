"""datasets.py: VOC / COCO20k records, ground truth and class names, one reader per file kind."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from detection_fixtures import make_voc_detection_tree
from PIL import Image
from pycocotools.coco import COCO
from tiny_datasets import make_coco_tree, make_voc_tree

from lost.data import datasets
from lost.data.datasets import ImageRecord
from lost.detection import data as detection_data
from lost.errors import LostError
from lost.eval import detection_eval, predictions


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


HAND_WRITTEN_XML = """<annotation>
    <filename>000042.jpg</filename>
    <size><width>500</width><height>375</height><depth>3</depth></size>
    <object><name> dog </name><truncated>1</truncated><difficult>0</difficult>
        <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>100</xmax><ymax>200</ymax></bndbox></object>
    <object><name>cat</name>
        <bndbox><xmin>50.0</xmin><ymin>60.0</ymin><xmax>150.0</xmax><ymax>160.0</ymax></bndbox></object>
    <object><name>person</name><truncated>0</truncated><difficult>1</difficult>
        <bndbox><xmin>300</xmin><ymin>10</ymin><xmax>499</xmax><ymax>375</ymax></bndbox></object>
</annotation>"""
"""dog truncated [0, 1, 100, 200]; cat with neither tag [49, 59, 150, 160]; person difficult [299, 9, 499, 375]."""


def hand_written_voc_tree(root, xml=HAND_WRITTEN_XML):
    """VOC2007 trainval holding one image, 000042, annotated by `xml`; returns the VOC2007 folder."""
    devkit = root / "VOC2007" / "VOCdevkit" / "VOC2007"
    (devkit / "Annotations").mkdir(parents=True)
    (devkit / "ImageSets" / "Main").mkdir(parents=True)
    (devkit / "Annotations" / "000042.xml").write_text(xml)
    (devkit / "ImageSets" / "Main" / "trainval.txt").write_text("000042\n")
    return root / "VOC2007"


def test_voc_annotation_read_by_hand(tmp_path):
    voc_root = hand_written_voc_tree(tmp_path)
    annotation = datasets.read_voc_annotation(voc_root / "VOCdevkit" / "VOC2007" / "Annotations" / "000042.xml")
    assert annotation == datasets.VocAnnotation(
        "000042.jpg",
        500,
        375,
        (
            datasets.VocObject("dog", (0, 1, 100, 200), truncated=True, difficult=False),
            datasets.VocObject("cat", (49, 59, 150, 160), truncated=False, difficult=False),
            datasets.VocObject("person", (299, 9, 499, 375), truncated=False, difficult=True),
        ),
    )


def test_voc_records_label_each_box_with_its_class_name(tmp_path):
    voc_root = hand_written_voc_tree(tmp_path)
    (record,) = datasets.voc_records(voc_root, "2007", "trainval", remove_hards=False)
    assert record.gt_labels == ("dog", "cat", "person")
    np.testing.assert_array_equal(record.gt_boxes, boxes([[0, 1, 100, 200], [49, 59, 150, 160], [299, 9, 499, 375]]))


def test_voc_no_hard_drops_the_labels_of_the_dropped_boxes(tmp_path):
    voc_root = hand_written_voc_tree(tmp_path)
    (record,) = datasets.voc_records(voc_root, "2007", "trainval", remove_hards=True)
    assert record.gt_labels == ("cat",)
    assert record.gt_difficult == (False,)
    np.testing.assert_array_equal(record.gt_boxes, boxes([[49, 59, 150, 160]]))


def test_voc_records_flag_each_difficult_box_and_have_no_crowd(tmp_path):
    voc_root = hand_written_voc_tree(tmp_path)
    (record,) = datasets.voc_records(voc_root, "2007", "trainval", remove_hards=False)
    assert record.gt_difficult == (False, False, True)
    assert record.crowd_boxes is None


@pytest.mark.parametrize(
    "broken",
    [
        "<size><width>500</width><height>375</height><depth>3</depth></size>",
        "<name>cat</name>",
    ],
)
def test_voc_annotation_without_size_or_class_name_is_malformed(tmp_path, broken):
    assert broken in HAND_WRITTEN_XML
    voc_root = hand_written_voc_tree(tmp_path, HAND_WRITTEN_XML.replace(broken, ""))
    with pytest.raises(LostError, match="000042.xml: malformed annotation"):
        datasets.voc_records(voc_root, "2007", "trainval", remove_hards=False)


def test_voc_image_ids_are_first_words_in_file_order(tmp_path):
    voc_root = hand_written_voc_tree(tmp_path)
    (voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "dog_val.txt").write_text("000042  1\n\n000007 -1\n")
    assert datasets.voc_image_ids(voc_root, "2007", "dog_val") == ["000042", "000007"]


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


def test_coco_records_keep_crowd_regions_apart_rounded_alike(tmp_path):
    make_coco_tree(tmp_path)
    records = datasets.coco20k_records(tmp_path / "COCO", tmp_path / "coco_20k_filenames.txt")
    crowds = {record.name: record.crowd_boxes.tolist() for record in records}
    assert crowds == {"42": [[0, 0, 64, 48]], "7": [], "1000": [], "1001": [[0, 0, 64, 48]]}
    assert [record.gt_difficult for record in records] == [(False,), (False,), (False,), ()]


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


def hand_written_coco_tree(root, annotations):
    """COCO/annotations/instances_train2014.json with images 42 and 7 (64 x 48), categories 1
    "person" and 18 "dog", and `annotations`; a COCO20k list naming 42 then 7."""
    (root / "COCO" / "annotations").mkdir(parents=True)
    content = {
        "images": [{"id": i, "file_name": coco_name(i), "width": 64, "height": 48} for i in (42, 7)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (root / "COCO" / "annotations" / "instances_train2014.json").write_text(json.dumps(content))
    (root / "coco_20k_filenames.txt").write_text(f"train2014/{coco_name(42)}\n\ntrain2014/{coco_name(7)}\n")
    return root / "COCO"


def coco_name(image_id):
    return f"COCO_train2014_{image_id:012d}.jpg"


def test_coco_records_label_each_box_with_its_category_name(tmp_path):
    annotations = [
        {"id": 1, "image_id": 42, "category_id": 18, "bbox": [1.5, 2.0, 10.0, 20.0], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 0},
        {"id": 3, "image_id": 42, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        {"id": 4, "image_id": 42, "category_id": 1, "bbox": [30.0, 10.0, 4.5, 5.5], "iscrowd": 0},
    ]
    coco_root = hand_written_coco_tree(tmp_path, annotations)
    first, second = datasets.coco20k_records(coco_root, tmp_path / "coco_20k_filenames.txt")
    # 42: dog [1.5, 2, 11.5, 22] -> [2, 2, 12, 22] (half to even); the crowd person is dropped;
    # person [30, 10, 34.5, 15.5] -> [30, 10, 34, 16]
    assert (first.name, first.gt_labels) == ("42", ("dog", "person"))
    np.testing.assert_array_equal(first.gt_boxes, boxes([[2, 2, 12, 22], [30, 10, 34, 16]]))
    assert (second.name, second.gt_labels) == ("7", ("person",))


def test_coco_annotation_of_an_unknown_category_is_not_a_coco_file(tmp_path):
    annotations = [{"id": 1, "image_id": 42, "category_id": 5, "bbox": [0, 0, 1, 1], "iscrowd": 0}]
    coco_root = hand_written_coco_tree(tmp_path, annotations)
    with pytest.raises(LostError, match="instances_train2014.json: not a COCO instances file"):
        datasets.coco20k_records(coco_root, tmp_path / "coco_20k_filenames.txt")


@pytest.mark.parametrize(
    ("content", "problem"),
    [("[1, 2]", "not a COCO instances file"), ('{"images": []}', "not a COCO instances file"), ("{", "not valid JSON")],
)
def test_unreadable_coco_instances_file_is_a_user_error(tmp_path, content, problem):
    (tmp_path / "COCO" / "annotations").mkdir(parents=True)
    (tmp_path / "COCO" / "annotations" / "instances_train2014.json").write_text(content)
    with pytest.raises(LostError, match=f"instances_train2014.json: {problem}.*annotations_trainval2014.zip"):
        datasets.read_coco_instances(tmp_path / "COCO")


def test_coco_index_is_built_without_printing(tmp_path, capsys):
    make_coco_tree(tmp_path)
    coco = datasets.read_coco_instances(tmp_path / "COCO")
    assert sorted(coco.imgs) == [5, 7, 42, 1000, 1001]
    assert capsys.readouterr().out == ""


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


# ---------------------------------------------------------------------------------------------
# One reader per file kind, for CorLoc and the detector tools alike

# detection_fixtures' VOC07 test set, zero-based boxes worked out from its 1-based corners:
TEST_SET = {
    "000003": [("dog", [4, 4, 20, 20]), ("person", [30, 4, 60, 44])],
    "000004": [("cat", [11, 7, 44, 40]), ("thing", [0, 0, 5, 5])],
}


def spy(monkeypatch, module, name):
    """Replace module.name by a wrapper that records its first argument; returns the record."""
    calls = []
    original = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def test_one_voc_xml_reader_gives_corloc_and_the_detector_tools_the_same_objects(tmp_path, monkeypatch):
    voc_dir = make_voc_detection_tree(tmp_path)
    reads = spy(monkeypatch, datasets, "read_voc_annotation")

    records = datasets.voc_records(voc_dir, "2007", "test", remove_hards=False)
    assert [Path(path).stem for path in reads] == ["000003", "000004"]
    assert [record.name for record in records] == ["000003.jpg", "000004.jpg"]
    for record, objects in zip(records, TEST_SET.values(), strict=True):
        assert record.gt_labels == tuple(name for name, _ in objects)
        np.testing.assert_array_equal(record.gt_boxes, boxes([box for _, box in objects]))

    reads.clear()
    image_ids, gts = detection_eval.load_voc_ground_truth(voc_dir, "2007", "test")
    assert [Path(path).stem for path in reads] == image_ids == ["000003", "000004"]
    for i, objects in enumerate(TEST_SET.values()):
        for name, box in objects:
            if name in datasets.VOC_CLASSES:
                gt = gts[datasets.VOC_CLASSES.index(name)]
                assert gt.boxes[i][gt.valid[i]].tolist() == [box]

    reads.clear()
    coco_style = detection_data.voc_coco_style(voc_dir, "2007", "test", class_agnostic=False)
    assert [Path(path).stem for path in reads] == ["000003", "000004"]
    by_image = [
        (a["image_id"], datasets.VOC_CLASSES[a["category_id"] - 1], a["bbox"]) for a in coco_style["annotations"]
    ]
    expected = [
        (image_id, name, [x1, y1, x2 - x1, y2 - y1])
        for image_id, objects in TEST_SET.items()
        for name, (x1, y1, x2, y2) in objects
        if name in datasets.VOC_CLASSES
    ]
    assert by_image == expected


def test_one_voc_image_set_reader_orders_every_user_alike(tmp_path, monkeypatch):
    voc_dir = make_voc_detection_tree(tmp_path)
    set_file = voc_dir / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    set_file.write_text("000004 1\n\n000003\n")
    lists = spy(monkeypatch, datasets, "voc_image_ids")
    names = [record.name for record in datasets.voc_records(voc_dir, "2007", "test", remove_hards=False)]
    image_ids, _ = detection_eval.load_voc_ground_truth(voc_dir, "2007", "test")
    coco_style = detection_data.voc_coco_style(voc_dir, "2007", "test", class_agnostic=True)
    assert len(lists) == 3
    assert names == ["000004.jpg", "000003.jpg"]
    assert image_ids == [image["id"] for image in coco_style["images"]] == ["000004", "000003"]


def test_one_coco20k_list_reader_for_records_and_class_agnostic_ground_truth(tmp_path, monkeypatch):
    make_coco_tree(tmp_path, listed=(1000, 42))
    coco_list = tmp_path / "coco_20k_filenames.txt"
    coco_list.write_text(coco_list.read_text().replace("\n", "\n\n", 1))  # a blank line in between
    lists = spy(monkeypatch, datasets, "read_coco20k_list")
    records = datasets.coco20k_records(tmp_path / "COCO", coco_list)
    ground_truth = detection_data.coco20k_cad_gt(tmp_path / "COCO", coco_list)
    assert len(lists) == 2
    assert [record.name for record in records] == ["1000", "42"]
    assert [image["id"] for image in ground_truth["images"]] == [1000, 42]
    coco_list.write_text("train2014/COCO_train2014_000000000042.jpg\nnot_a_coco.jpg\n")
    for read in (datasets.coco20k_records, detection_data.coco20k_cad_gt):
        with pytest.raises(LostError, match=r"coco_20k_filenames.txt:2: 'not_a_coco.jpg' is not a COCO file name"):
            read(tmp_path / "COCO", coco_list)


def test_one_coco_index_for_records_ground_truth_and_pseudo_boxes(tmp_path, monkeypatch, capsys):
    tiny = make_coco_tree(tmp_path)
    coco_root = tmp_path / "COCO"
    indexes = spy(monkeypatch, datasets, "read_coco_instances")
    records = datasets.coco20k_records(coco_root, tmp_path / "coco_20k_filenames.txt")
    ground_truth = detection_data.coco20k_cad_gt(coco_root, tmp_path / "coco_20k_filenames.txt")
    pseudo = detection_data.coco_pseudo_box_records(coco_root, {"7": np.array([20, 11, 51, 31])})
    assert [Path(root) for root in indexes] == [coco_root] * 3
    assert capsys.readouterr().out == ""
    # image 7's one box, [20.4, 10.6, 30.2, 20.0]: rounded corners in the record, as written in the
    # class-agnostic ground truth, and its size in the pseudo-box record
    np.testing.assert_array_equal(records[1].gt_boxes, tiny.gt["7"])
    assert [a["bbox"] for a in ground_truth["annotations"] if a["image_id"] == 7] == [[20.4, 10.6, 30.2, 20.0]]
    assert (pseudo[0]["image_id"], pseudo[0]["width"], pseudo[0]["height"]) == (7, 64, 48)


@pytest.mark.parametrize(
    ("image_id", "canonical"),
    [("000005", "5"), (5, "5"), ("5", "5"), ("2008_000008", "2008_000008"), ("0", "0")],
)
def test_canonical_image_id_reads_digit_only_ids_as_numbers(image_id, canonical):
    assert datasets.canonical_image_id(image_id) == canonical


def test_corloc_and_ap_match_detector_image_ids_alike(tmp_path):
    record = ImageRecord("000005.jpg", tmp_path / "JPEGImages" / "000005.jpg", None)
    assert predictions.detectron_image_id(record, "VOC07") == "5"
    assert predictions.detectron_image_id(ImageRecord("42", tmp_path / "x.jpg", None), "COCO20k") == "42"
    results = tmp_path / "coco_instances_results.json"
    results.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    detections, elsewhere = detection_eval.load_coco_results(results, ["000005"])
    assert elsewhere == 0 and detections[1].image_index.tolist() == [0]
