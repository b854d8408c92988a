"""cluster_for_OD.py --instances: the masks of a run in the pseudo-classes of their boxes."""

import json

from conftest import tiny_vit
from run_names import weights_tag
from tiny_datasets import make_voc_tree

import cluster_for_OD
import main_lost
from lost import clustering
from lost.backbones import loading


def maskcut_run_with_masks(tmp_path, checkpoint):
    tree = make_voc_tree(tmp_path / "datasets")
    argv = [
        "--dataset",
        "VOC07",
        "--set",
        "trainval",
        "--datasets_root",
        str(tree.datasets_root),
        "--arch",
        "vit_tiny",
        "--pretrained_weights",
        str(checkpoint),
        "--output_dir",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--method",
        "maskcut",
        "--save_masks",
        "--no_report",
    ]
    assert main_lost.main(argv) == 0
    return tree, tmp_path / "out" / "VOC07_trainval" / f"MaskCut-vit_tiny16_k{weights_tag(checkpoint)}"


def test_each_mask_takes_the_pseudo_class_of_its_box(tmp_path, vit_tiny_checkpoint, monkeypatch, capsys):
    tree, run = maskcut_run_with_masks(tmp_path, vit_tiny_checkpoint)
    monkeypatch.setattr(loading, "get_model", lambda *args, **kwargs: tiny_vit(patch_size=16))
    argv = ["--pred_file", str(run / "preds.pkl"), "--instances", str(run / "instances.json"), "--nb_clusters", "2"]
    assert cluster_for_OD.main([*argv, "--datasets_root", str(tree.datasets_root), "--num_workers", "0"]) == 0
    assert f"clustered masks saved at {run / 'instances_clustered_2clu.json'}" in capsys.readouterr().out
    clustered = json.loads((run / "instances_clustered_2clu.json").read_text())
    original = json.loads((run / "instances.json").read_text())
    assert clustered["categories"] == [
        {"id": 1, "name": "cluster_0", "supercategory": "object"},
        {"id": 2, "name": "cluster_1", "supercategory": "object"},
    ]
    assert clustered["images"] == original["images"]
    labels = clustering.read_pseudo_labels(run / "preds_clustered_2clu.pkl")
    names = {image["id"]: image["file_name"] for image in original["images"]}
    assert len(clustered["annotations"]) == len(original["annotations"]) > 0
    for annotation, before in zip(clustered["annotations"], original["annotations"], strict=True):
        x, y, w, h = annotation["bbox"]
        entries = [
            entry for entry in labels[names[annotation["image_id"]]] if entry.box.tolist() == [x, y, x + w, y + h]
        ]
        assert annotation["category_id"] == entries[0].label + 1
        assert {**annotation, "category_id": 1} == before


def test_masks_of_another_run_are_one_line(tmp_path, vit_tiny_checkpoint, monkeypatch, capsys):
    tree, run = maskcut_run_with_masks(tmp_path, vit_tiny_checkpoint)
    content = json.loads((run / "instances.json").read_text())
    content["annotations"][0]["bbox"] = [0.0, 0.0, 1.0, 1.0]
    (run / "other.json").write_text(json.dumps(content))
    monkeypatch.setattr(loading, "get_model", lambda *args, **kwargs: tiny_vit(patch_size=16))
    capsys.readouterr()
    argv = ["--pred_file", str(run / "preds.pkl"), "--instances", str(run / "other.json"), "--nb_clusters", "2"]
    assert cluster_for_OD.main([*argv, "--datasets_root", str(tree.datasets_root), "--num_workers", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "other.json: annotation 1 of 000001.jpg matches no clustered box; a mask file from another run" in err
    )
    assert (
        not (run / "other_clustered_2clu.json").exists() and not (run / "preds_cropped_feats_vit_small16.npz").exists()
    ), "it stops before the crops"
