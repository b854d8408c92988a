"""One run identity, end to end through the scripts' ``main``: inputs identified by their resolved
path, every non-default setting in the experiment name, flags that do not apply refused, FOUND's
released head kept to the backbone it was trained on, reports from journals of another schema,
the journal's lock released on every exit, and cluster_for_OD.py on a timm ViT with registers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_noise_images
from run_names import head_tag, input_folder, weights_tag
from tiny_datasets import make_voc_tree

import cluster_for_OD
import main_lost
import report
from lost import backbones, clustering
from lost.backbones import build_model, loading
from lost.data import images
from lost.errors import LostError
from lost.io import safe_files
from lost.io.journal import RunLock
from lost.io.safe_files import read_predictions

ROOT = Path(__file__).resolve().parents[1]
CHELSEA = str(ROOT / "examples" / "chelsea.jpg")
DINOV2_REG = "vit_small_patch14_reg4_dinov2.lvd142m"
DINOV3 = "vit_small_patch16_dinov3.lvd1689m"


def run_cli(*args: str) -> int:
    return main_lost.main([*args, "--num_workers", "0", "--device", "cpu"])


def tiny(checkpoint: Path, output: Path) -> list[str]:
    return ["--arch", "vit_tiny", "--pretrained_weights", str(checkpoint), "--output_dir", str(output)]


def journal_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]


# --- inputs ---------------------------------------------------------------------------------------


def test_two_folders_of_the_same_name_never_share_a_run_and_each_resumes(tmp_path, vit_tiny_checkpoint, capsys):
    first, second = tmp_path / "a" / "photos", tmp_path / "b" / "photos"
    write_noise_images(first, [(64, 48), (48, 64)], seed=1)
    write_noise_images(second, [(64, 48)], seed=2)
    out = tmp_path / "out"
    assert run_cli("--image_path", str(first), *tiny(vit_tiny_checkpoint, out)) == 0
    assert run_cli("--image_path", str(second), *tiny(vit_tiny_checkpoint, out)) == 0
    exp = f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    assert sorted(path.name for path in out.iterdir()) == sorted([input_folder(first), input_folder(second)])
    first_run, second_run = out / input_folder(first) / exp, out / input_folder(second) / exp
    assert sorted(read_predictions(first_run / "preds.pkl")) == ["000000.jpg", "000001.jpg"]
    assert sorted(read_predictions(second_run / "preds.pkl")) == ["000000.jpg"]
    assert journal_lines(first_run)[0]["run"]["input"] == str(first.resolve())

    written = journal_lines(first_run)
    assert run_cli("--image_path", str(tmp_path / "b" / ".." / "a" / "photos"), *tiny(vit_tiny_checkpoint, out)) == 0
    assert journal_lines(first_run) == written, "the same folder by another spelling resumes: nothing to redo"

    shutil.copy(first_run / "journal.jsonl", second_run / "journal.jsonl")
    capsys.readouterr()
    assert run_cli("--image_path", str(second), *tiny(vit_tiny_checkpoint, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"input: {first.resolve()} there, {second.resolve()} here" in err


# --- experiment names -----------------------------------------------------------------------------


def test_a_three_value_tau_sweep_gives_three_folders_the_default_keeping_the_published_name(tmp_path, vit_tiny_checkpoint):
    photos = tmp_path / "photos"
    write_noise_images(photos, [(64, 48)])
    out = tmp_path / "out"
    for tau in ("0.1", "0.2", "0.3"):
        assert run_cli("--image_path", str(photos), "--method", "tokencut", "--tau", tau, *tiny(vit_tiny_checkpoint, out)) == 0
    published = f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    runs = {path.name: path for path in (out / input_folder(photos)).iterdir()}
    assert sorted(runs) == sorted([f"{published}_tau-0.1", published, f"{published}_tau-0.3"])
    taus = {name: journal_lines(run)[0]["run"]["params"]["tau"] for name, run in runs.items()}
    assert taus == {f"{published}_tau-0.1": 0.1, published: 0.2, f"{published}_tau-0.3": 0.3}
    assert all(len(read_predictions(run / "preds.pkl")) == 1 for run in runs.values())


def test_precision_and_max_size_off_their_defaults_are_named(tmp_path, vit_tiny_checkpoint):
    assert run_cli("--image_path", CHELSEA, "--k_patches", "50", "--max_size", "200", *tiny(vit_tiny_checkpoint, tmp_path)) == 0
    assert (tmp_path / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}_k_patches-50_max_size-200" / "preds.pkl").is_file()


# --- flags that do not apply ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tau", "0.1"], "--tau applies to tokencut, maskcut; not to --method lost"),
        (["--method", "tokencut", "--max_objects", "2"], "--max_objects applies to maskcut; not to --method tokencut"),
        (["--method", "found_bkg", "--found_weights", "head.pt"], "--found_weights applies to found; not to --method found_bkg"),
        (["--arch", DINOV2_REG, "--patch_size", "16"],
         f"--patch_size applies to DINO's ViTs (vit_tiny, vit_small, vit_base); not to --arch {DINOV2_REG}"),
        (["--arch", "resnet50", "--patch_size", "8"],
         "--patch_size applies to DINO's ViTs (vit_tiny, vit_small, vit_base); not to --arch resnet50"),
        (["--resnet_dilate", "4"], "--resnet_dilate applies to resnet50, resnet50_imagenet; not to --arch vit_small"),
        (["--arch", "vgg16_imagenet", "--resnet_dilate", "1"],
         "--resnet_dilate applies to resnet50, resnet50_imagenet; not to --arch vgg16_imagenet"),
        (["--arch", "resnet50", "--which_features", "q"], "--which_features applies to a ViT's patch features; not to --arch resnet50"),
        (["--method", "dinoseg", "--which_features", "q"],
         "--which_features applies to a ViT's patch features; not to --method dinoseg"),
    ],
)
def test_a_flag_that_does_not_apply_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, flags, message):
    assert run_cli("--image_path", CHELSEA, "--output_dir", str(tmp_path / "out"), *flags) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()


# --- FOUND's released head ------------------------------------------------------------------------


def test_founds_released_head_on_vit_s16_is_refused_before_any_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *args, **kwargs: pytest.fail("nothing is downloaded"))
    assert run_cli("--image_path", CHELSEA, "--method", "found", "--output_dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: FOUND's released head was trained on --arch vit_small --patch_size 8 (k features), not on vit_small16_k")
    assert "--found_weights FILE" in err


@pytest.fixture(scope="module")
def vit_small16_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "vit_small16.pth"
    torch.save(build_model("vit_small", 16).state_dict(), path)
    return path


def test_an_explicit_head_of_the_same_width_on_vit_s16_runs_with_a_one_line_warning(tmp_path, vit_small16_checkpoint, capsys):
    head = tmp_path / "head.pt"
    torch.manual_seed(1)
    torch.save({"decoder": torch.nn.Conv2d(384, 1, kernel_size=1).state_dict()}, head)
    code = run_cli("--image_path", CHELSEA, "--method", "found", "--found_weights", str(head), "--arch", "vit_small",
                   "--pretrained_weights", str(vit_small16_checkpoint), "--output_dir", str(tmp_path / "out"))
    assert code == 0
    err = capsys.readouterr().err
    assert err == (
        "warning: --found_weights head.pt is not known to be trained on vit_small16 (FOUND's released head, of the "
        "same width, was trained on vit_small8); its boxes mean something only if it was\n"
    )
    exp = f"FOUND-vit_small16_k{weights_tag(vit_small16_checkpoint)}{head_tag(head)}"
    assert list(read_predictions(tmp_path / "out" / exp / "preds.pkl")) == ["chelsea.jpg"]


# --- reports and locks ----------------------------------------------------------------------------


def test_a_report_from_a_journal_of_another_schema_leaves_out_what_it_lacks(tmp_path, capsys):
    tree = make_voc_tree(tmp_path / "datasets")
    safe_files.write_predictions(tmp_path / "run", {name: boxes[0] for name, boxes in tree.gt.items()})
    old = {"run": {"dataset": "VOC07_trainval", "backbone": {"arch": "vit_small", "patch": 16}, "method": "lost", "params": [100]}}
    (tmp_path / "run" / "journal.jsonl").write_text(json.dumps(old) + "\n")
    code = report.main(["--pred_file", str(tmp_path / "run" / "preds.pkl"), "--set", "trainval",
                        "--datasets_root", str(tmp_path / "datasets")])
    assert code == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<tr><th>Method</th><td>LOST</td></tr>" in page
    assert "<tr><th>Backbone</th><td>not recorded</td></tr>" in page
    assert "<tr><th>CorLoc (%)</th>" in page


def test_report_py_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert report.main(["--pred_file", str(tmp_path / "preds.pkl"), "--datasets_root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_a_report_that_cannot_be_written_leaves_a_finished_run_successful(tmp_path, vit_tiny_checkpoint, monkeypatch, capsys):
    make_voc_tree(tmp_path / "datasets")

    def full_disk(*args, **kwargs):
        raise LostError("cannot write report.html: no space left on the device")

    monkeypatch.setattr(main_lost.report, "build_report", full_disk)
    code = run_cli("--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"),
                   *tiny(vit_tiny_checkpoint, tmp_path / "out"))
    assert code == 0
    assert "warning: report.html not written (cannot write report.html: no space left" in capsys.readouterr().err
    run = tmp_path / "out" / "VOC07_trainval" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    assert len(read_predictions(run / "preds.pkl")) == 4


def test_the_journal_lock_is_released_when_the_run_fails(tmp_path, vit_tiny_checkpoint, monkeypatch):
    photos = tmp_path / "photos"
    write_noise_images(photos, [(64, 48)])

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in the discovery loop")

    monkeypatch.setattr(main_lost, "process_shard", bug)
    with pytest.raises(RuntimeError, match="a bug") as failure:
        run_cli("--image_path", str(photos), *tiny(vit_tiny_checkpoint, tmp_path / "out"))
    run = tmp_path / "out" / input_folder(photos) / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    assert failure.traceback, "the failed run's frames, and whatever they hold, are still alive here"
    RunLock(run / "journal.jsonl.lock", run).release()


# --- cluster_for_OD.py on timm names --------------------------------------------------------------


@pytest.mark.parametrize("name, patch_size", [(DINOV2_REG, 14), (DINOV3, 16)])
def test_cluster_for_od_on_a_timm_vit_with_registers_uses_its_patch_heads_tokens_and_cls(tmp_path, monkeypatch, name, patch_size):
    tree = make_voc_tree(tmp_path / "datasets")
    preds = {record: boxes[0] for record, boxes in tree.gt.items()}
    safe_files.write_predictions(tmp_path / "lost", preds)
    torch.manual_seed(0)
    model = backbones.timm_vit(name, depth=2, embed_dim=48, num_heads=3)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    monkeypatch.setattr(loading, "get_model", lambda *args, **kwargs: model)
    budgets = []
    sized = clustering.attention_images_per_pass
    monkeypatch.setattr(clustering, "attention_images_per_pass", lambda *args: budgets.append(args) or sized(*args))
    pred_file = tmp_path / "lost" / "preds.pkl"
    argv = ["--pred_file", str(pred_file), "--nb_clusters", "2", "--datasets_root", str(tree.datasets_root),
            "--arch", name, "--num_workers", "0"]
    assert cluster_for_OD.main(argv) == 0
    assert budgets and {(args[1], args[2], args[4]) for args in budgets} == {(patch_size, 3, 5)}, "patch, heads, CLS + 4 registers"
    feats = np.load(clustering.features_cache_file(pred_file, name, patch_size))["feats"]
    with torch.no_grad():
        crops = [clustering.crop_tensor(images.load_rgb(path), preds[record], patch_size)
                 for record, path in ((record, tree.image_paths[record]) for record in tree.names)]
        assert all(crop.shape[1] % patch_size == 0 and crop.shape[2] % patch_size == 0 for crop in crops)
        cls = torch.cat([model.forward_features(crop[None])[:, 0] for crop in crops])
        pooled = torch.cat([model(crop[None]) for crop in crops])
    np.testing.assert_allclose(feats, torch.nn.functional.normalize(cls, dim=1).numpy(), atol=1e-5)
    if name == DINOV3:
        assert not np.allclose(feats, torch.nn.functional.normalize(pooled, dim=1).numpy(), atol=1e-3), "timm pools DINOv3 by the mean"


def test_cluster_for_od_refuses_a_patch_size_for_a_timm_name(tmp_path, capsys):
    argv = ["--pred_file", str(tmp_path / "preds.pkl"), "--arch", DINOV2_REG, "--patch_size", "16"]
    assert cluster_for_OD.main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: --patch_size applies to DINO's ViTs (vit_tiny, vit_small, vit_base); not to --arch {DINOV2_REG}\n"
    )
