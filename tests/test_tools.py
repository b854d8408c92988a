"""The tools/ scripts that prepare detector inputs: weights conversion, pseudo-boxes, COCO-style ground truth."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detection_fixtures import load_tool, make_voc_detection_tree
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tiny_datasets import coco_file_name, make_coco_tree

from lost import clustering
from lost.detection import data as detection_data
from lost.io import safe_files

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PREDICTIONS = ROOT / "data" / "LOST_predictions" / "LOST_VOC07.pkl"


def run_tool(name, *argv):
    return load_tool(name).main([str(a) for a in argv])


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def perfect_detections_ap(coco: COCO) -> float:
    """COCO AP of detections equal to the ground truth (crowd boxes left out): 1.0."""
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in coco.dataset["annotations"]
        if not a["iscrowd"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[1]  # AP50


# ----------------------------------------------------------------------------------------------
# Weights


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()


def test_key_mapping_by_hand():
    pairs = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.conv3.weight": "res2.0.conv3.weight",
        "layer4.2.bn1.bias": "res5.2.conv1.norm.bias",
        "layer3.0.downsample.0.weight": "res4.0.shortcut.weight",
        "layer2.0.downsample.1.running_mean": "res3.0.shortcut.norm.running_mean",
    }
    for torchvision_key, detectron2_key in pairs.items():
        assert detection_data.torchvision_to_detectron2_key(torchvision_key) == detectron2_key
        assert detection_data.detectron2_to_torchvision_key(detectron2_key) == torchvision_key
    assert detection_data.torchvision_to_detectron2_key("fc.weight") is None


def test_key_mapping_round_trips_over_resnet50(resnet50_state):
    kept = [k for k in resnet50_state if not detection_data.RESNET_DROPPED.fullmatch(k)]
    assert len(kept) == 265  # 53 convolutions + 53 batch norms x 4
    renamed = [detection_data.torchvision_to_detectron2_key(k) for k in kept]
    assert len(set(renamed)) == 265
    assert [detection_data.detectron2_to_torchvision_key(k) for k in renamed] == kept


def test_conversion_writes_detectron2_weights(resnet50_state, tmp_path, capsys):
    source = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(resnet50_state, source)
    output = tmp_path / "d2" / "weights.pkl"
    assert run_tool("convert_pretrained_to_detectron_format", "--input", source, "--output", output) == 0
    assert "265 ResNet-50 parameters" in capsys.readouterr().out
    content = safe_files.restricted_load(output)  # numpy arrays and builtins only
    assert content["matching_heuristics"] is True and "__author__" in content
    weights = content["model"]
    assert len(weights) == 265
    for name, array in weights.items():
        original = resnet50_state[detection_data.detectron2_to_torchvision_key(name)]
        np.testing.assert_array_equal(array, original.numpy())
    np.testing.assert_array_equal(
        weights["res3.0.shortcut.norm.running_mean"], resnet50_state["layer2.0.downsample.1.running_mean"].numpy()
    )


def test_conversion_reads_wrapped_training_checkpoints(resnet50_state, tmp_path):
    source = tmp_path / "checkpoint.pth"
    teacher = {f"module.backbone.{k}": v for k, v in resnet50_state.items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(2, 2048)  # DINO's projection head, dropped
    torch.save({"teacher": teacher, "student": {}, "epoch": 3}, source)
    assert run_tool("convert_pretrained_to_detectron_format", "--input", source, "--output", tmp_path / "w.pkl") == 0


def test_conversion_rejects_another_architecture(tmp_path, capsys):
    source = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), source)
    assert run_tool("convert_pretrained_to_detectron_format", "--input", source, "--output", tmp_path / "w.pkl") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a torchvision ResNet-50" in err and "missing" in err
    assert not (tmp_path / "w.pkl").exists()


def test_conversion_rejects_a_missing_file(tmp_path, capsys):
    assert (
        run_tool(
            "convert_pretrained_to_detectron_format", "--input", tmp_path / "no.pth", "--output", tmp_path / "w.pkl"
        )
        == 2
    )
    assert "--input" in capsys.readouterr().err


def test_converted_names_are_detectron2_resnet50_names(resnet50_state):
    pytest.importorskip("detectron2.modeling", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    expected = {k: tuple(v.shape) for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    converted = detection_data.resnet50_to_detectron2(resnet50_state, "test")
    assert {k: v.shape for k, v in converted.items()} == expected


# ----------------------------------------------------------------------------------------------
# VOC pseudo-boxes


@pytest.fixture
def voc_dir(tmp_path):
    return make_voc_detection_tree(tmp_path / "datasets")


def test_voc_cad_pseudo_boxes_become_detectron2_records(voc_dir, tmp_path):
    lost = tmp_path / "lost"
    safe_files.write_predictions(
        lost, {"000002.jpg": np.array([32, 16, 56, 40]), "000001.jpg": np.array([8, 8, 40, 32])}
    )
    out = tmp_path / "prepared"
    tool = "prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format"
    assert (
        run_tool(tool, "--year", "2007", "--pboxes", lost / "preds.pkl", "--voc_dir", voc_dir, "--output_dir", out) == 0
    )
    content = json.loads((out / "voc_2007_trainval_LOST_CAD.json").read_text())
    assert content["meta_data"]["thing_classes"] == ["object"]
    first, second = content["dataset"]
    assert first == {
        "file_name": str((voc_dir / "VOCdevkit/VOC2007/JPEGImages/000001.jpg").resolve()),
        "image_id": "000001",
        "height": 48,
        "width": 64,
        "annotations": [{"bbox": [8.0, 8.0, 40.0, 32.0], "bbox_mode": 0, "category_id": 0, "iscrowd": 0}],
    }
    assert second["image_id"] == "000002" and second["annotations"][0]["bbox"] == [32.0, 16.0, 56.0, 40.0]


def annotation(box, category=0):
    return {"bbox": [float(v) for v in box], "bbox_mode": 0, "category_id": category, "iscrowd": 0}


@pytest.mark.parametrize("name", ["preds.pkl", "preds.json"])
def test_every_box_of_a_multi_box_prediction_is_pseudo_ground_truth(voc_dir, tmp_path, capsys, name):
    scored = {
        "000001.jpg": safe_files.ScoredBoxes(np.array([[8, 8, 40, 32], [0, 0, 8, 8], [48, 0, 64, 16]]), np.array([0.9, 0.5, 0.1])),
        "000002.jpg": safe_files.ScoredBoxes(np.array([[32, 16, 56, 40]]), np.array([0.0])),
    }
    safe_files.write_scored_predictions(tmp_path / "maskcut", scored)
    out = tmp_path / "prepared"
    tool = "prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", tmp_path / "maskcut" / name, "--voc_dir", voc_dir, "--output_dir", out) == 0
    assert "2 images with 4 pseudo-boxes written" in capsys.readouterr().out
    first, second = json.loads((out / "voc_2007_trainval_LOST_CAD.json").read_text())["dataset"]
    assert first["annotations"] == [annotation([8, 8, 40, 32]), annotation([0, 0, 8, 8]), annotation([48, 0, 64, 16])]
    assert second["annotations"] == [annotation([32, 16, 56, 40])]


def test_clustered_multi_box_predictions_keep_one_cluster_per_box(voc_dir, tmp_path):
    pboxes = tmp_path / "preds_clustered_3clu.pkl"
    names = ["000001.jpg", "000001.jpg", "000002.jpg"]
    rows = [np.array([8, 8, 40, 32]), np.array([0, 0, 8, 8]), np.array([32, 16, 56, 40])]
    clustering.write_pseudo_labels(pboxes, names, np.array([2, 1, 0]), rows, grouped=True)
    out = tmp_path / "prepared"
    tool = "prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", pboxes, "--voc_dir", voc_dir, "--output_dir", out) == 0
    first, second = json.loads((out / "voc_2007_trainval_LOST_OD_clu3.json").read_text())["dataset"]
    assert first["annotations"] == [annotation([8, 8, 40, 32], 2), annotation([0, 0, 8, 8], 1)]
    assert second["annotations"] == [annotation([32, 16, 56, 40], 0)]


def test_pseudo_boxes_of_missing_images_are_a_user_error(voc_dir, tmp_path, capsys):
    safe_files.write_predictions(tmp_path / "lost", {"000009.jpg": np.array([0, 0, 4, 4])})
    tool = "prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format"
    argv = ["--pboxes", tmp_path / "lost" / "preds.pkl", "--voc_dir", voc_dir, "--output_dir", tmp_path]
    assert run_tool(tool, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 1 predicted images") and "000009.jpg" in err


def test_voc_od_pseudo_boxes_keep_their_clusters(voc_dir, tmp_path):
    pboxes = tmp_path / "preds_clustered_3clu.pkl"
    clustering.write_pseudo_labels(
        pboxes, ["000001.jpg", "000002.jpg"], np.array([2, 0]), [np.array([8, 8, 40, 32]), np.array([32, 16, 56, 40])]
    )
    out = tmp_path / "prepared"
    tool = "prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", pboxes, "--voc_dir", voc_dir, "--output_dir", out) == 0
    content = json.loads((out / "voc_2007_trainval_LOST_OD_clu3.json").read_text())
    assert content["meta_data"]["thing_classes"] == ["cluster_0", "cluster_1", "cluster_2"]
    assert [r["annotations"][0]["category_id"] for r in content["dataset"]] == [2, 0]


def shipped_tree(root: Path, names: list[str]) -> Path:
    """A VOC2007 tree holding the shipped predictions' images: annotations with a size, empty JPEGs."""
    devkit = root / "VOC2007" / "VOCdevkit" / "VOC2007"
    (devkit / "Annotations").mkdir(parents=True)
    (devkit / "JPEGImages").mkdir()
    for name in names:
        (devkit / "JPEGImages" / name).touch()
        size = "<size><width>500</width><height>375</height></size>"
        (devkit / "Annotations" / f"{Path(name).stem}.xml").write_text(f"<annotation>{size}</annotation>")
    return root / "VOC2007"


@pytest.mark.skipif(not SHIPPED_PREDICTIONS.is_file(), reason="data/LOST_predictions/LOST_VOC07.pkl not shipped yet")
def test_shipped_lost_boxes_prepare_for_cad_and_od(tmp_path):
    boxes = safe_files.read_predictions(SHIPPED_PREDICTIONS)
    assert len(boxes) == 5011
    voc_dir = shipped_tree(tmp_path / "datasets", list(boxes))
    out = tmp_path / "prepared"
    tool = "prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", SHIPPED_PREDICTIONS, "--voc_dir", voc_dir, "--output_dir", out) == 0
    records = json.loads((out / "voc_2007_trainval_LOST_CAD.json").read_text())["dataset"]
    assert len(records) == 5011
    by_id = {r["image_id"]: r for r in records}
    assert by_id["000005"]["annotations"][0]["bbox"] == [float(v) for v in boxes["000005.jpg"]]

    names = sorted(boxes)
    pboxes = tmp_path / "LOST_VOC07_clustered_20clu.pkl"
    clustering.write_pseudo_labels(pboxes, names, np.arange(len(names)) % 20, [boxes[n] for n in names])
    tool = "prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", pboxes, "--voc_dir", voc_dir, "--output_dir", out) == 0
    records = json.loads((out / "voc_2007_trainval_LOST_OD_clu20.json").read_text())["dataset"]
    assert len(records) == 5011 and records[21]["annotations"][0]["category_id"] == 1


# ----------------------------------------------------------------------------------------------
# VOC ground truth in COCO style


def test_voc_ground_truth_in_coco_style(voc_dir, tmp_path, capsys):
    out = tmp_path / "prepared"
    argv = ["--voc07_dir", voc_dir, "--voc12_dir", tmp_path / "VOC2012", "--output_dir", out]
    assert run_tool("prepare_voc_data_in_coco_style", *argv) == 0
    assert "skipped VOC2012 trainval" in capsys.readouterr().err
    test = load_coco(out / "voc_2007_test_coco_style.json")
    assert [c["name"] for c in test.loadCats(test.getCatIds())][:3] == ["aeroplane", "bicycle", "bird"]
    assert sorted(test.getImgIds()) == ["000003", "000004"]
    anns = test.loadAnns(test.getAnnIds(imgIds=["000003"]))
    # dog (5, 5, 20, 20) -> [4, 4, 16, 16] as [x, y, w, h]; person (31, 5, 60, 44) -> [30, 4, 30, 40]
    assert [(a["category_id"], a["bbox"]) for a in anns] == [
        (12, [4.0, 4.0, 16.0, 16.0]),
        (15, [30.0, 4.0, 30.0, 40.0]),
    ]
    assert len(test.getAnnIds(imgIds=["000004"])) == 1  # the "thing" is not a VOC class
    trainval = load_coco(out / "voc_2007_trainval_coco_style.json")
    assert len(trainval.getAnnIds(imgIds=["000002"])) == 1  # the difficult dog is left out
    assert perfect_detections_ap(test) == pytest.approx(1.0)
    assert Path(test.loadImgs(["000003"])[0]["file_name"]).is_file()


def test_voc_ground_truth_in_coco_style_class_agnostic(voc_dir, tmp_path):
    out = tmp_path / "prepared"
    assert run_tool("prepare_voc_data_in_coco_style", "--is_CAD", "--voc07_dir", voc_dir, "--output_dir", out) == 0
    test = load_coco(out / "voc_2007_test_CAD_coco_style.json")
    assert test.loadCats(test.getCatIds()) == [{"id": 1, "name": "object", "supercategory": "none"}]
    assert len(test.getAnnIds()) == 3 and {a["category_id"] for a in test.loadAnns(test.getAnnIds())} == {1}
    assert perfect_detections_ap(test) == pytest.approx(1.0)


def test_voc_coco_style_without_any_image_set_is_a_user_error(tmp_path, capsys):
    argv = ["--voc07_dir", tmp_path / "none07", "--voc12_dir", tmp_path / "none12", "--output_dir", tmp_path]
    assert run_tool("prepare_voc_data_in_coco_style", *argv) == 2
    assert "error: no VOC image set found" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# COCO20k


@pytest.fixture
def coco_tree(tmp_path):
    return make_coco_tree(tmp_path / "datasets")


def test_coco20k_pseudo_boxes_become_detectron2_records(coco_tree, tmp_path):
    coco_dir = coco_tree.datasets_root / "COCO"
    preds = {"42": np.array([10, 4, 12, 14]), coco_file_name(7): np.array([20, 11, 51, 31])}
    safe_files.write_predictions(tmp_path / "lost", preds)
    out = tmp_path / "prepared"
    tool = "prepare_coco_LOST_CAD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", tmp_path / "lost" / "preds.pkl", "--coco_dir", coco_dir, "--output_dir", out) == 0
    records = json.loads((out / "coco20k_train_LOST_CAD.json").read_text())["dataset"]
    assert [(r["image_id"], r["width"], r["height"]) for r in records] == [(7, 64, 48), (42, 64, 48)]
    assert records[0]["file_name"] == str((coco_dir / "images" / "train2014" / coco_file_name(7)).resolve())
    assert records[1]["annotations"] == [
        {"bbox": [10.0, 4.0, 12.0, 14.0], "bbox_mode": 0, "category_id": 0, "iscrowd": 0}
    ]


def test_coco20k_multi_box_predictions_become_every_pseudo_box(coco_tree, tmp_path):
    coco_dir = coco_tree.datasets_root / "COCO"
    scored = {"42": safe_files.ScoredBoxes(np.array([[10, 4, 12, 14], [0, 0, 30, 20]]), np.array([0.8, 0.3]))}
    safe_files.write_scored_predictions(tmp_path / "maskcut", scored)
    out = tmp_path / "prepared"
    tool = "prepare_coco_LOST_CAD_pseudo_boxes_in_detectron2_format"
    assert run_tool(tool, "--pboxes", tmp_path / "maskcut" / "preds.pkl", "--coco_dir", coco_dir, "--output_dir", out) == 0
    (record,) = json.loads((out / "coco20k_train_LOST_CAD.json").read_text())["dataset"]
    assert record["image_id"] == 42
    assert record["annotations"] == [annotation([10, 4, 12, 14]), annotation([0, 0, 30, 20])]


def test_coco20k_pseudo_boxes_of_unknown_images_are_a_user_error(coco_tree, tmp_path, capsys):
    safe_files.write_predictions(tmp_path / "lost", {"12345": np.array([0, 0, 4, 4])})
    tool = "prepare_coco_LOST_CAD_pseudo_boxes_in_detectron2_format"
    argv = [
        "--pboxes",
        tmp_path / "lost" / "preds.pkl",
        "--coco_dir",
        coco_tree.datasets_root / "COCO",
        "--output_dir",
        tmp_path,
    ]
    assert run_tool(tool, *argv) == 2
    assert "image 12345" in capsys.readouterr().err


def test_coco20k_class_agnostic_ground_truth(coco_tree, tmp_path, capsys):
    out = tmp_path / "prepared"
    coco_list = coco_tree.datasets_root / "coco_20k_filenames.txt"
    # the list names 42, 7, 1000, 1001 (all annotated and on disk)
    argv = ["--coco_dir", coco_tree.datasets_root / "COCO", "--file_coco20k", coco_list, "--output_dir", out]
    assert run_tool("prepare_coco_CAD_gt", *argv) == 0
    gt = load_coco(out / "coco20k_train_CAD_gt.json")
    assert [image["id"] for image in gt.dataset["images"]] == [42, 7, 1000, 1001]
    anns = gt.loadAnns(gt.getAnnIds(imgIds=[42]))
    assert [(a["bbox"], a["iscrowd"], a["category_id"]) for a in anns] == [
        ([10.5, 4.0, 2.0, 10.0], 0, 1),
        ([0.0, 0.0, 64.0, 48.0], 1, 1),
    ]
    assert gt.getAnnIds(imgIds=[5]) == []  # not in the list
    assert perfect_detections_ap(gt) == pytest.approx(1.0)


def test_coco20k_ground_truth_needs_the_annotations(tmp_path, capsys):
    argv = ["--coco_dir", tmp_path / "COCO", "--output_dir", tmp_path]
    assert run_tool("prepare_coco_CAD_gt", *argv) == 2
    assert "instances_train2014.json: file not found" in capsys.readouterr().err


def test_default_prepared_dir_follows_the_environment(monkeypatch):
    monkeypatch.delenv(detection_data.PREPARED_DIR_ENV, raising=False)
    assert detection_data.default_prepared_dir() == Path("datasets")
    monkeypatch.setenv(detection_data.PREPARED_DIR_ENV, "/data/prepared")
    assert detection_data.default_prepared_dir() == Path("/data/prepared")
