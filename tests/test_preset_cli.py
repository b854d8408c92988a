"""main_lost.py --preset cutler and --refine, end to end: the files they write hold exactly the
masks of the pipeline functions they wire, and options that do not go together are one line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import write_noise_images
from pycocotools.coco import COCO
from run_names import input_folder, weights_tag

import main_lost
from lost.backbones import FeatureExtractor, get_model
from lost.data.datasets import single_image_records
from lost.data.images import load_rgb
from lost.engine.cutler_run import cutler_pseudo_masks
from lost.refine.masks import refine_masks

SIZES = [(64, 48), (48, 64), (40, 40)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos") / "photos"
    write_noise_images(folder, SIZES, seed=5)
    return folder


def command(photos: Path, output: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "--image_path", str(photos), "--arch", "vit_tiny", "--pretrained_weights", str(checkpoint),
        "--output_dir", str(output), "--device", "cpu", "--num_workers", "0", "--save_masks", *extra,
    ]


def instance_masks(path: Path) -> dict[str, list[np.ndarray]]:
    """file_name -> the masks of its annotations, in file order, read back by pycocotools."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    return {
        image["file_name"]: [coco.annToMask(ann).astype(bool) for ann in coco.imgToAnns[image["id"]]]
        for image in coco.dataset["images"]
    }


def test_the_cutler_preset_writes_the_masks_of_the_preset_pipeline(photos, vit_tiny_checkpoint, tmp_path):
    extra = ("--method", "maskcut", "--preset", "cutler", "--fixed_size", "64", "--postprocess_workers", "0")
    assert main_lost.main(command(photos, tmp_path, vit_tiny_checkpoint, *extra)) == 0
    exp = f"MaskCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}_preset-cutler_fixed_size-64"
    written = instance_masks(tmp_path / input_folder(photos) / exp / "instances.json")
    extractor = FeatureExtractor(get_model("vit_tiny", 16, pretrained_weights=vit_tiny_checkpoint), "vit_tiny", 16)
    records = single_image_records(photos)
    expected = {
        records[result.index].path.name: [mask for mask in result.masks if mask.any()]
        for result in cutler_pseudo_masks(extractor, records, "cpu", fixed_size=64, postprocess_workers=0)
    }
    assert sorted(written) == sorted(expected) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    for name, masks in expected.items():
        assert len(written[name]) == len(masks)
        assert all(np.array_equal(a, b) for a, b in zip(written[name], masks, strict=True))


def test_refine_bilateral_writes_the_refined_masks_of_the_unrefined_run(photos, vit_tiny_checkpoint, tmp_path):
    plain, refined = tmp_path / "plain", tmp_path / "refined"
    assert main_lost.main(command(photos, plain, vit_tiny_checkpoint, "--method", "tokencut")) == 0
    assert main_lost.main(command(photos, refined, vit_tiny_checkpoint, "--method", "tokencut", "--refine", "bilateral")) == 0
    exp = f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    before = instance_masks(plain / input_folder(photos) / exp / "instances.json")
    after = instance_masks(refined / input_folder(photos) / f"{exp}_refine-bilateral" / "instances.json")
    changed = [not np.array_equal(a, b) for name in before for a, b in zip(before[name], after[name], strict=True)]
    assert any(changed), "the solver moved some mask's edges"
    for name, masks in before.items():
        expected = refine_masks(np.asarray(load_rgb(photos / name)), np.stack(masks), "bilateral")
        assert len(after[name]) == int(expected.reshape(len(expected), -1).any(axis=1).sum())
        assert all(np.array_equal(a, b) for a, b in zip(after[name], [m for m in expected if m.any()], strict=True))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "tokencut", "--preset", "cutler"], "--preset cutler is CutLER's MaskCut: use it with --method maskcut"),
        (["--method", "maskcut", "--preset", "cutler", "--refine", "crf"], "refines its masks with its own CRF"),
        (["--method", "maskcut", "--fixed_size", "240"], "--fixed_size applies to --preset cutler only"),
        (["--method", "maskcut", "--postprocess_workers", "2"], "--postprocess_workers applies to --preset cutler only"),
        (["--method", "maskcut", "--preset", "cutler", "--fixed_size", "0"], "--fixed_size 0: must be positive"),
    ],
)
def test_mask_options_that_do_not_go_together_are_one_line(photos, vit_tiny_checkpoint, tmp_path, capsys, extra, message):
    assert main_lost.main(command(photos, tmp_path, vit_tiny_checkpoint, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
