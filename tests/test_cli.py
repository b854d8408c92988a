"""main_lost.py end to end: one image, VOC07, COCO20k, DINO-seg, ResNet, and its clear errors."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEVICE_FLAGS, TEST_DEVICE
from PIL import Image
from run_names import head_tag, weights_tag
from tiny_datasets import make_coco_tree, make_voc_tree

import main_lost
from lost.backbones import BackboneSpec, build_model
from lost.eval.metrics import is_correct_localization
from lost.io.safe_files import read_predictions, read_scored_predictions
from lost.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> int:
    return main_lost.main([*args, "--num_workers", "0", *DEVICE_FLAGS])


def hand_corloc(preds: dict[str, np.ndarray], gt: dict[str, np.ndarray]) -> float:
    hits = sum(is_correct_localization(preds[name], gt[name]) for name in gt)
    return round(100 * hits / len(gt), 1)


def test_one_image_prints_the_box_and_draws_every_visualization(tmp_path, vit_tiny_checkpoint, capsys):
    weights = ["--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path)]
    for kind in ("pred", "fms", "seed_expansion"):
        assert run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--visualize", kind, *weights) == 0
        picture = Image.open(tmp_path / "visualizations" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}" / f"chelsea_{kind}.png")
        assert picture.height == 300 and picture.width >= 451
    assert "chelsea.jpg: box [x1, y1, x2, y2] = [" in capsys.readouterr().out
    preds = read_predictions(tmp_path / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}" / "preds.pkl")
    x1, y1, x2, y2 = preds["chelsea.jpg"].tolist()
    assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300


def test_voc07_run_writes_published_outputs_with_its_corloc(tmp_path, vit_tiny_checkpoint):
    tiny = make_voc_tree(tmp_path / "datasets")
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
        "--visualize", "pred",
    )
    assert code == 0
    run = tmp_path / "out" / "VOC07_trainval" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    preds = read_predictions(run / "preds.pkl")
    assert list(preds) == tiny.names
    assert json.loads((run / "preds.json").read_text()) == {name: box.tolist() for name, box in preds.items()}
    assert (run / "results.txt").read_text().splitlines()[0] == f"corloc,{hand_corloc(preds, tiny.gt):.1f},,"
    assert len(list((tmp_path / "out" / "VOC07_trainval" / "visualizations" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}").glob("*.png"))) == 4


def test_no_hard_leaves_out_images_with_only_hard_objects(tmp_path, vit_tiny_checkpoint):
    tiny = make_voc_tree(tmp_path / "datasets")
    run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--no_hard", "--datasets_root", str(tmp_path / "datasets"),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
    )
    run = tmp_path / "out" / "VOC07_trainval-nohards" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    preds = read_predictions(run / "preds.pkl")
    assert list(preds) == ["000001.jpg", "000002.jpg", "000004.jpg"]
    assert (run / "results.txt").read_text().splitlines()[0] == f"corloc,{hand_corloc(preds, tiny.gt_nohard):.1f},,"


def test_coco20k_run_names_images_by_id(tmp_path, vit_tiny_checkpoint):
    tiny = make_coco_tree(tmp_path / "datasets")
    run_cli(
        "--dataset", "COCO20k", "--set", "train", "--datasets_root", str(tmp_path / "datasets"),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
    )
    run = tmp_path / "out" / "COCO20k_train" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    preds = read_predictions(run / "preds.pkl")
    assert list(preds) == ["42", "7", "1000", "1001"]
    assert (run / "results.txt").read_text().splitlines()[:2] == [f"corloc,{hand_corloc(preds, tiny.gt):.1f},,", "evaluated,4,,"]


def test_dinoseg_run_uses_the_published_folder_name(tmp_path, vit_tiny_checkpoint):
    make_voc_tree(tmp_path / "datasets")
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"), "--dinoseg",
        "--dinoseg_head", "2", "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint),
        "--output_dir", str(tmp_path / "out"), "--visualize", "fms",
    )
    assert code == 0
    assert len(read_predictions(tmp_path / "out" / "VOC07_trainval" / f"vit_tiny-16_dinoseg-head2{weights_tag(vit_tiny_checkpoint)}" / "preds.pkl")) == 4
    pictures = tmp_path / "out" / "VOC07_trainval" / "visualizations" / f"vit_tiny-16_dinoseg-head2{weights_tag(vit_tiny_checkpoint)}"
    assert min(path.name for path in pictures.glob("*.png")) == "000001_pred.png", "DINO-seg draws its box"


def test_dinoseg_head_beyond_the_model_is_a_clear_error(tmp_path, vit_tiny_checkpoint, capsys):
    code = run_cli(
        "--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--dinoseg", "--dinoseg_head", "4",
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path),
    )
    assert code == 2
    assert "--dinoseg_head 4" in capsys.readouterr().err


def test_resnet50_run_gives_float_boxes(tmp_path):
    make_voc_tree(tmp_path / "datasets")
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(build_model("resnet50").state_dict(), checkpoint)
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"),
        "--arch", "resnet50", "--pretrained_weights", str(checkpoint), "--output_dir", str(tmp_path / "out"),
    )
    assert code == 0
    preds = read_predictions(tmp_path / "out" / "VOC07_trainval" / f"LOST-resnet50dilate2{weights_tag(checkpoint)}" / "preds.pkl")
    assert len(preds) == 4 and all(box.dtype == np.float64 for box in preds.values())


def test_missing_dataset_is_one_clear_line(tmp_path, vit_tiny_checkpoint, capsys):
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "nowhere"),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint),
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and str(tmp_path / "nowhere") in err


def test_vit_tiny_without_weights_asks_for_them(capsys):
    code = run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--arch", "vit_tiny")
    assert code == 2
    assert "--pretrained_weights" in capsys.readouterr().err


def test_checkpoint_of_another_architecture_fails_at_start_up(tmp_path, vit_tiny_checkpoint, capsys):
    code = run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--pretrained_weights", str(vit_tiny_checkpoint))
    err = capsys.readouterr().err
    assert code == 2
    assert str(vit_tiny_checkpoint) in err and "pos_embed" in err


@pytest.mark.parametrize("flag", ["--visualize", "--batch_size"])
def test_bad_flag_values_are_refused_by_argparse(flag):
    with pytest.raises(SystemExit):
        main_lost.parse_args([flag, "nonsense"])


@pytest.fixture
def found_head_file(tmp_path):
    """A random FOUND head for ViT-Tiny's 192-channel keys, in the released format."""
    torch.manual_seed(3)
    path = tmp_path / "head.pt"
    torch.save({"decoder": torch.nn.Conv2d(192, 1, kernel_size=1).state_dict()}, path)
    return path


@pytest.mark.parametrize("method, head", [("found", True), ("found_bkg", False)])
def test_found_runs_write_their_folder_and_masks(tmp_path, vit_tiny_checkpoint, found_head_file, method, head):
    make_voc_tree(tmp_path / "datasets")
    head_flags = ["--found_weights", str(found_head_file)] if head else []
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"), "--method", method,
        *head_flags, "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint),
        "--output_dir", str(tmp_path / "out"), "--visualize", "mask",
    )
    assert code == 0
    weights = weights_tag(vit_tiny_checkpoint)
    folder = f"FOUND-vit_tiny16_k{weights}{head_tag(found_head_file)}" if head else f"FOUND-bkg-vit_tiny16_k{weights}"
    preds = read_predictions(tmp_path / "out" / "VOC07_trainval" / folder / "preds.pkl")
    assert len(preds) == 4 and all(0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 48 for box in preds.values())
    pictures = sorted((tmp_path / "out" / "VOC07_trainval" / "visualizations" / folder).glob("*_mask.png"))
    assert len(pictures) == 4 and Image.open(pictures[0]).width == 2 * 64 + 8


def test_found_without_network_names_the_url_the_cache_and_the_flag(tmp_path, vit_tiny_checkpoint, capsys, monkeypatch):
    from lost.methods import found

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    on_vit_tiny = dataclasses.replace(found.FOUND_TRAINED_ON, trained_on=BackboneSpec("vit_tiny", 16), trained_width=192)
    monkeypatch.setitem(METHODS, "found", dataclasses.replace(METHODS["found"], released_head=on_vit_tiny))
    code = run_cli(
        "--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--method", "found", "--arch", "vit_tiny",
        "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path),
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert found.FOUND_WEIGHTS_URL in err and str(tmp_path / "hub") in err and "--found_weights" in err


def test_found_head_of_another_width_is_a_clear_error(tmp_path, vit_tiny_checkpoint, capsys):
    path = tmp_path / "head384.pt"
    torch.save({"decoder": torch.nn.Conv2d(384, 1, kernel_size=1).state_dict()}, path)
    code = run_cli(
        "--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--method", "found", "--found_weights", str(path),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path),
    )
    err = capsys.readouterr().err
    assert code == 2 and "384 channels" in err and "192" in err


def test_a_vit_only_method_on_a_convnet_fails_before_loading(tmp_path, capsys):
    code = run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--method", "found_bkg", "--arch", "resnet50")
    assert code == 2 and "--method found_bkg needs a ViT --arch" in capsys.readouterr().err


def test_an_evaluated_run_writes_its_report_with_the_results_corloc(tmp_path, vit_tiny_checkpoint):
    make_voc_tree(tmp_path / "datasets")
    common = ["--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"),
              "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint)]
    assert run_cli(*common, "--output_dir", str(tmp_path / "out")) == 0
    run = tmp_path / "out" / "VOC07_trainval" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    corloc = (run / "results.txt").read_text().splitlines()[0].split(",")[1]
    page = (run / "report.html").read_text()
    assert f"{corloc}" in page and "LOST (k_patches = 100)" in page
    assert (run / "report").is_dir()
    assert run_cli(*common, "--output_dir", str(tmp_path / "quiet"), "--no_report") == 0
    assert not (tmp_path / "quiet" / "VOC07_trainval" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}" / "report.html").exists()


def test_a_folder_run_writes_no_report(tmp_path, vit_tiny_checkpoint, mixed_images):
    assert run_cli("--image_path", str(mixed_images), "--arch", "vit_tiny", "--pretrained_weights",
                   str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out")) == 0
    assert not list((tmp_path / "out").rglob("report.html"))


def test_tokencut_run_writes_the_published_folder_and_its_cut_pictures(tmp_path, vit_tiny_checkpoint):
    tiny = make_voc_tree(tmp_path / "datasets")
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"), "--method", "tokencut",
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
        "--visualize", "cut",
    )
    assert code == 0
    run = tmp_path / "out" / "VOC07_trainval" / f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    preds = read_predictions(run / "preds.pkl")
    assert list(preds) == tiny.names
    assert (run / "results.txt").read_text().splitlines()[0] == f"corloc,{hand_corloc(preds, tiny.gt):.1f},,"
    pictures = sorted((tmp_path / "out" / "VOC07_trainval" / "visualizations" / f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}").glob("*_cut.png"))
    assert len(pictures) == 4 and Image.open(pictures[0]).width == 3 * 64 + 2 * 8


def test_tokencut_flags_reach_the_settings_and_bad_values_are_one_line(tmp_path, vit_tiny_checkpoint, capsys):
    spec = main_lost.run_spec(main_lost.parse_args(["--method", "tokencut", "--tau", "0.3", "--no_binary_graph",
                                                    "--eigensolver", "dense"]), "x")
    assert (spec.params.tau, spec.params.binary_graph, spec.params.eigensolver) == (0.3, False, "dense")
    assert spec.settings()["params"] == {"tau": 0.3, "eps": 1e-5, "binary_graph": False, "eigensolver": "dense"}
    code = run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--method", "tokencut", "--eps", "0",
                   "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--eps 0.0: must be positive" in err


def test_maskcut_run_writes_every_box_with_its_score_and_draws_them(tmp_path, vit_tiny_checkpoint):
    tiny = make_voc_tree(tmp_path / "datasets")
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"), "--method", "maskcut",
        "--max_objects", "3", "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint),
        "--output_dir", str(tmp_path / "out"), "--visualize", "pred",
    )
    assert code == 0
    run = tmp_path / "out" / "VOC07_trainval" / f"MaskCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    scored = read_scored_predictions(run / "preds.pkl")
    assert list(scored) == tiny.names
    assert all(1 <= len(found.boxes) <= 3 and np.all(np.diff(found.scores) <= 0) for found in scored.values())
    listed = json.loads((run / "preds.json").read_text())
    assert listed == {
        name: [{"box": box.tolist(), "score": float(score)} for box, score in zip(found.boxes, found.scores, strict=True)]
        for name, found in scored.items()
    }
    top = {name: found.box for name, found in scored.items()}
    assert {name: box.tolist() for name, box in read_predictions(run / "preds.pkl").items()} == {n: b.tolist() for n, b in top.items()}
    assert (run / "results.txt").read_text().splitlines()[0] == f"corloc,{hand_corloc(top, tiny.gt):.1f},,"
    pictures = sorted((tmp_path / "out" / "VOC07_trainval" / "visualizations" / f"MaskCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}").glob("*_pred.png"))
    assert len(pictures) == 4 and Image.open(pictures[0]).size == (64, 48)
    journal_lines = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()[1:]]
    assert all(set(line) == {"name", "boxes", "scores"} for line in journal_lines)
    assert "MaskCut (max_objects = 3, tau = 0.15" in (run / "report.html").read_text()


def test_one_image_maskcut_run_prints_every_box_best_first(tmp_path, vit_tiny_checkpoint, capsys):
    code = run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--method", "maskcut", "--arch", "vit_tiny",
                   "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path))
    assert code == 0
    line = next(text for text in capsys.readouterr().out.splitlines() if text.startswith("chelsea.jpg:"))
    assert line.startswith("chelsea.jpg: boxes [x1, y1, x2, y2] (score), best first = [")
    scored = read_scored_predictions(tmp_path / f"MaskCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}" / "preds.json")["chelsea.jpg"]
    assert line.count("(") - 1 == len(scored.boxes)


def test_maskcut_flags_share_tau_with_tokencut_but_not_its_default(capsys):
    spec = main_lost.run_spec(main_lost.parse_args(["--method", "maskcut"]), "x")
    assert spec.settings()["params"] == {"max_objects": 3, "tau": 0.15, "eps": 1e-5, "eigensolver": "auto"}
    assert main_lost.run_spec(main_lost.parse_args(["--method", "tokencut"]), "x").params.tau == 0.2
    spec = main_lost.run_spec(main_lost.parse_args(["--method", "maskcut", "--tau", "0.3", "--max_objects", "5",
                                                    "--eigensolver", "dense"]), "x")
    assert (spec.params.tau, spec.params.max_objects, spec.params.eigensolver) == (0.3, 5, "dense")
    assert spec.experiment_name() == "MaskCut-vit_small16_k_max_objects-5_tau-0.3_eigensolver-dense"


def test_maskcut_bad_max_objects_is_one_line(tmp_path, vit_tiny_checkpoint, capsys):
    code = run_cli("--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--method", "maskcut", "--max_objects", "0",
                   "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--max_objects 0: must be at least 1" in err


def test_workers_and_batch_size_default_to_the_devices_own(tmp_path, vit_tiny_checkpoint, mixed_images, monkeypatch):
    # a CPU run decodes in 1 worker, 4 images a batch; a GPU run in up to 8 workers, 16 a batch
    configs = []
    make_config = main_lost.discovery_config
    monkeypatch.setattr(main_lost, "discovery_config", lambda *args: configs.append(make_config(*args)) or configs[-1])
    weights = ["--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path)]
    assert main_lost.main(["--image_path", str(mixed_images), *weights, *DEVICE_FLAGS]) == 0
    on_gpu = TEST_DEVICE.type == "cuda"
    expected = (min(8, os.cpu_count() or 1), 16) if on_gpu else (1, 4)
    assert [(config.num_workers, config.batch_size) for config in configs] == [expected]
