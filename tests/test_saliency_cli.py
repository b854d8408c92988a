"""main_saliency_evaluation.py end to end on tiny saliency data sets: maps, metrics, resume, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from published_saliency import found_metrics, tokencut_metrics
from run_names import head_tag, input_folder, weights_tag
from test_reliability import run_and_kill
from tiny_datasets import SALIENCY_SIZES, make_saliency_tree

import main_saliency_evaluation
from lost.data.saliency import SALIENCY_DATASETS, SaliencySpec
from lost.methods.found import FoundResult
from lost.methods.saliency import saliency_mapper
from lost.methods.tokencut import TokenCutResult

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def head_file(tmp_path: Path) -> Path:
    """A random FOUND head for ViT-Tiny's 192-channel keys, in the released format."""
    torch.manual_seed(3)
    path = tmp_path / "head.pt"
    torch.save({"decoder": torch.nn.Conv2d(192, 1, kernel_size=1).state_dict()}, path)
    return path


def backbone(checkpoint: Path) -> list[str]:
    return ["--arch", "vit_tiny", "--pretrained_weights", str(checkpoint), "--device", "cpu", "--num_workers", "0"]


def run_cli(*args: str) -> int:
    return main_saliency_evaluation.main(list(args))


def read_maps(folder: Path) -> dict[str, np.ndarray]:
    return {path.stem: np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))}


def published_greys(root: Path, dataset: str = "ECSSD") -> list[np.ndarray]:
    masks = root / SALIENCY_DATASETS[dataset].masks
    return [np.array(Image.open(path).convert("L")) for path in sorted(masks.glob("*.png"))]


def test_found_run_writes_full_size_pngs_whose_scores_equal_founds_published_evaluation(tmp_path, vit_tiny_checkpoint, head_file, capsys):
    make_saliency_tree(tmp_path / "datasets")
    code = run_cli(
        "--dataset", "ECSSD", "--datasets_root", str(tmp_path / "datasets"), "--method", "found", "--protocol", "found",
        "--found_weights", str(head_file), "--output_dir", str(tmp_path / "out"), *backbone(vit_tiny_checkpoint),
    )
    assert code == 0
    run = tmp_path / "out" / "ECSSD" / f"FOUND-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}{head_tag(head_file)}_single_pad_found"
    maps = read_maps(run / "maps")
    assert list(maps) == ["000000", "000001", "000002"]
    assert [(m.shape[1], m.shape[0]) for m in maps.values()] == SALIENCY_SIZES
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255} for m in maps.values()), "single mode is binary"
    metrics = json.loads((run / "metrics.json").read_text())
    published = found_metrics([m / 255 for m in maps.values()], published_greys(tmp_path / "datasets"))
    assert metrics["protocol"] == "found" and metrics["images"] == 3 and metrics["skipped"] == 0
    assert metrics["acc"] == pytest.approx(published["pixel_acc"], abs=1e-6)
    assert metrics["iou"] == pytest.approx(published["iou"], abs=1e-6)
    assert metrics["max_fbeta"] == pytest.approx(published["f_max"], abs=1e-6)
    assert set(metrics["per_image"]) == set(maps) and metrics["settings"]["preprocess"] == "pad"
    assert all(0 <= metrics[key] <= 1 for key in ("acc", "iou", "max_fbeta", "max_fbeta_beta2_0.3"))
    out = capsys.readouterr().out
    assert f"protocol found: acc {metrics['acc']:.3f}" in out and "with beta^2 0.3" in out


@pytest.mark.parametrize("bilateral", [False, True])
def test_tokencut_run_resizes_and_scores_as_tokencuts_published_evaluation(tmp_path, vit_tiny_checkpoint, bilateral):
    make_saliency_tree(tmp_path / "datasets", "DUTS-TE")
    code = run_cli(
        "--dataset", "DUTS-TE", "--datasets_root", str(tmp_path / "datasets"), "--method", "tokencut",
        "--protocol", "tokencut", "--output_dir", str(tmp_path / "out"), *backbone(vit_tiny_checkpoint),
        *(["--bilateral"] if bilateral else []),
    )
    assert code == 0
    run = tmp_path / "out" / "DUTS-TE" / f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}{'_bs' if bilateral else ''}_resize_tokencut"
    metrics = json.loads((run / "metrics.json").read_text())
    maps = read_maps(run / "maps")
    assert [(m.shape[1], m.shape[0]) for m in maps.values()] == SALIENCY_SIZES
    assert metrics["protocol"] == "tokencut" and metrics["beta_square"] == 0.3 and metrics["images"] == 3
    published = tokencut_metrics([m / 255 for m in maps.values()], published_greys(tmp_path / "datasets", "DUTS-TE"))
    if bilateral:
        # scored on the solver's soft output; the PNGs round it to 1/255
        assert any(len(np.unique(m)) > 2 for m in maps.values())
        assert metrics["max_fbeta"] == pytest.approx(published["F_max"], abs=0.01)
    else:
        assert all(set(np.unique(m)) <= {0, 255} for m in maps.values())
        assert metrics["acc"] == pytest.approx(published["accuracy"], abs=1e-6)
        assert metrics["iou"] == pytest.approx(published["IoU"], abs=1e-6)
        assert metrics["max_fbeta"] == pytest.approx(published["F_max"], abs=1e-6)


def test_killed_run_resumes_keeping_finished_maps_and_scores_as_an_uninterrupted_one(tmp_path, vit_tiny_checkpoint, head_file):
    make_saliency_tree(tmp_path / "datasets", "ECSSD", SALIENCY_SIZES * 3)

    def command(output: Path) -> list[str]:
        return [
            sys.executable, str(ROOT / "main_saliency_evaluation.py"), "--dataset", "ECSSD", "--datasets_root",
            str(tmp_path / "datasets"), "--method", "found", "--mode", "multi", "--protocol", "found", "--found_weights",
            str(head_file), "--output_dir", str(output), "--batch_size", "1", *backbone(vit_tiny_checkpoint),
        ]

    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    run = tmp_path / "killed" / "ECSSD" / f"FOUND-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}{head_tag(head_file)}_multi_pad_found"
    run_and_kill(command(tmp_path / "killed"), run / "journal.jsonl", 3)
    kept = {path.name: path.stat().st_mtime_ns for path in (run / "maps").glob("*.png")}
    assert kept and not (run / "metrics.json").exists()
    subprocess.run(command(tmp_path / "killed"), check=True, capture_output=True)
    assert {name: (run / "maps" / name).stat().st_mtime_ns for name in kept} == kept, "finished maps are kept"
    whole = json.loads((tmp_path / "whole" / "ECSSD" / run.name / "metrics.json").read_text())
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["per_image"] == whole["per_image"] and resumed["max_fbeta"] == whole["max_fbeta"]
    assert len((run / "journal.jsonl").read_text().splitlines()) == 1 + 9, "no image was done twice"


def test_a_broken_image_and_one_without_mask_are_skipped_and_reported(tmp_path, vit_tiny_checkpoint, capsys):
    images, masks = make_saliency_tree(tmp_path)
    (images / "000001.jpg").write_bytes((images / "000001.jpg").read_bytes()[:200])
    (masks / "000002.png").unlink()
    args = ["--image_dir", str(images), "--mask_dir", str(masks), "--method", "found_bkg", "--protocol", "tokencut"]
    assert run_cli(*args, "--output_dir", str(tmp_path / "out"), *backbone(vit_tiny_checkpoint)) == 0
    run = tmp_path / "out" / input_folder(images) / f"FOUND-bkg-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}_single_pad_tokencut"
    skipped = dict(line.split("\t") for line in (run / "skipped.txt").read_text().splitlines())
    assert set(skipped) == {"000001", "000002"} and "truncated or corrupt" in skipped["000001"]
    assert list(read_maps(run / "maps")) == ["000000"]
    assert "skipped 000001:" in capsys.readouterr().out
    assert run_cli(*args, "--output_dir", str(tmp_path / "out"), "--strict", *backbone(vit_tiny_checkpoint)) == 1


def test_other_settings_or_another_folder_of_the_same_name_never_share_a_run(tmp_path, vit_tiny_checkpoint):
    images, masks = make_saliency_tree(tmp_path / "a")
    other_images, other_masks = make_saliency_tree(tmp_path / "b")
    assert images.name == other_images.name
    common = ["--method", "tokencut", "--protocol", "found", "--output_dir", str(tmp_path / "out"), *backbone(vit_tiny_checkpoint)]
    assert run_cli("--image_dir", str(images), "--mask_dir", str(masks), *common) == 0
    assert run_cli("--image_dir", str(images), "--mask_dir", str(masks), "--tau", "0.3", *common) == 0
    assert run_cli("--image_dir", str(other_images), "--mask_dir", str(other_masks), *common) == 0
    name = f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    runs = sorted(path.relative_to(tmp_path / "out") for path in (tmp_path / "out").glob("*/*/metrics.json"))
    assert runs == sorted([
        Path(input_folder(images)) / f"{name}_resize_found" / "metrics.json",
        Path(input_folder(images)) / f"{name}_tau-0.3_resize_found" / "metrics.json",
        Path(input_folder(other_images)) / f"{name}_resize_found" / "metrics.json",
    ])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "ECSSD", "--method", "found", "--protocol", "found"], "ECSSD/images: folder not found; ECSSD comes from https://www.cse.cuhk.edu.hk"),
        (["--dataset", "ECSSD", "--method", "lost", "--protocol", "found"], "--method lost finds boxes, not masks"),
        (["--dataset", "ECSSD", "--method", "tokencut", "--protocol", "found", "--mode", "multi"], "--mode multi does not apply to --method tokencut"),
        (["--image_dir", "x", "--method", "found", "--protocol", "found"], "--image_dir and --mask_dir go together"),
        (["--method", "found", "--protocol", "found"], "no input: give --dataset"),
    ],
)
def test_bad_input_stops_with_one_line(tmp_path, args, message, capsys):
    assert run_cli(*args, "--datasets_root", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_experiment_name_and_the_run_identity_follow_the_flags(tmp_path):
    spec = SaliencySpec("ECSSD", [], {}, tmp_path / "images", tmp_path / "masks")
    found_args = main_saliency_evaluation.parse_args(
        ["--method", "found", "--protocol", "found", "--bilateral", "--mode", "multi", "--patch_size", "8"]
    )
    found = main_saliency_evaluation.run_spec(found_args, spec, saliency_mapper(FoundResult))
    assert found.experiment_name() == "FOUND-vit_small8_k_multi_bs_pad_found"
    assert found.settings()["image_dir"] == str((tmp_path / "images").resolve()) and found.settings()["run"]["input"] == "ECSSD"
    tokencut_args = main_saliency_evaluation.parse_args(["--method", "tokencut", "--protocol", "tokencut", "--preprocess", "pad"])
    tokencut = main_saliency_evaluation.run_spec(tokencut_args, spec, saliency_mapper(TokenCutResult))
    assert tokencut.experiment_name() == "TokenCut-vit_small16_k_pad_tokencut" and tokencut.mode is None


def test_maps_of_images_scaled_down_by_max_size_are_written_at_the_files_size(tmp_path, vit_tiny_checkpoint):
    images, masks = make_saliency_tree(tmp_path)
    args = ["--image_dir", str(images), "--mask_dir", str(masks), "--method", "found_bkg", "--protocol", "found"]
    assert run_cli(*args, "--max_size", "40", "--output_dir", str(tmp_path / "out"), *backbone(vit_tiny_checkpoint)) == 0
    run = f"FOUND-bkg-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}_max_size-40_single_pad_found"
    maps = read_maps(tmp_path / "out" / input_folder(images) / run / "maps")
    assert [(m.shape[1], m.shape[0]) for m in maps.values()] == SALIENCY_SIZES
