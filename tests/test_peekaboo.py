"""PEEKABOO at inference: its released head (download, cache, hash, errors) and its boxes against
the transcription of the published inference (tests/published_peekaboo.py), on images through
main_lost.py and on planted keys built to hit the edge cases."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from published_peekaboo import PublishedPeekaboo, published_box_from_keys, published_uod_box
from run_names import weights_tag

import main_lost
from lost.backbones import BackboneSpec, Features, build_model
from lost.errors import LostError
from lost.io.safe_files import read_predictions
from lost.methods import METHODS, method_entry
from lost.methods import found as found_module
from lost.methods.found import FoundResult, load_found_head, weights_cache_path
from lost.methods.peekaboo import (
    PEEKABOO_HEAD,
    PEEKABOO_TRAINED_ON,
    PEEKABOO_WEIGHTS_SHA256,
    PEEKABOO_WEIGHTS_URL,
    PeekabooParams,
    discover_peekaboo,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_head_cache():
    """Heads are cached per process by file name: every test loads its own."""
    found_module.cached_found_head.cache_clear()
    yield
    found_module.cached_found_head.cache_clear()


def head_file(path: Path, weight: torch.Tensor, bias: float) -> Path:
    """A head in the released format, {"decoder": {"weight": (1, d, 1, 1), "bias": (1,)}}."""
    torch.save({"decoder": {"weight": weight.reshape(1, -1, 1, 1).float(), "bias": torch.tensor([bias])}}, path)
    return path


def run_peekaboo(tmp_path: Path, *args: str) -> int:
    return main_lost.main([*args, "--method", "peekaboo", "--output_dir", str(tmp_path / "out"),
                           "--num_workers", "0", "--device", "cpu"])  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The released head


def test_the_released_head_is_the_raw_file_of_the_peekaboo_repository():
    assert PEEKABOO_WEIGHTS_URL == (
        "https://raw.githubusercontent.com/hasibzunair/peekaboo/main/data/weights/peekaboo_decoder_weights_niter500.pt"
    )
    assert len(PEEKABOO_WEIGHTS_SHA256) == 64 and int(PEEKABOO_WEIGHTS_SHA256, 16) >= 0


def test_the_released_head_is_downloaded_once_into_the_hub_cache_with_its_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        head_file(Path(dst), torch.full((384,), 0.25), -0.5)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = load_found_head(embed_dim=384, release=PEEKABOO_HEAD)
    second = load_found_head(embed_dim=384, release=PEEKABOO_HEAD)
    cached = tmp_path / "hub" / "checkpoints" / "peekaboo_decoder_weights_niter500.pt"
    assert calls == [(PEEKABOO_WEIGHTS_URL, cached, PEEKABOO_WEIGHTS_SHA256)]
    assert weights_cache_path(PEEKABOO_HEAD) == cached and cached.is_file()
    assert first.bias.tolist() == [-0.5] and torch.equal(first.weight, second.weight)


def test_offline_run_names_the_url_the_cache_path_and_the_flag(tmp_path, vit_tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    on_vit_tiny = dataclasses.replace(PEEKABOO_TRAINED_ON, trained_on=BackboneSpec("vit_tiny", 16), trained_width=192)
    monkeypatch.setitem(METHODS, "peekaboo", dataclasses.replace(METHODS["peekaboo"], released_head=on_vit_tiny))
    code = run_peekaboo(tmp_path, "--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--arch", "vit_tiny",
                        "--pretrained_weights", str(vit_tiny_checkpoint))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    cached = tmp_path / "hub" / "checkpoints" / "peekaboo_decoder_weights_niter500.pt"
    assert PEEKABOO_WEIGHTS_URL in err and str(cached) in err and "--peekaboo_weights PATH" in err
    assert "PEEKABOO's head" in err


def test_bad_head_files_are_one_line_errors_naming_the_peekaboo_flag(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.ones(1, 8, 1, 1)}, wrong)
    for path, words in ((wrong, "not a PEEKABOO head"), (tmp_path / "absent.pt", "no such file")):
        with pytest.raises(LostError) as error:
            load_found_head(path, release=PEEKABOO_HEAD)
        message = str(error.value)
        assert "\n" not in message and f"--peekaboo_weights {path}" in message and words in message
        assert "train_found.py --recipe peekaboo" in message


def test_a_head_for_other_keys_names_both_sizes_and_the_flag(tmp_path):
    path = head_file(tmp_path / "head.pt", torch.ones(384), 0.0)
    features = Features(feats=torch.zeros(1, 4, 192), grid=(2, 2), scales=(8, 8))
    with pytest.raises(LostError, match="--peekaboo_weights .*takes 384 channels .* keys have 192"):
        discover_peekaboo(features, [(16, 16)], PeekabooParams(weights=str(path)))


def test_the_method_entry_reads_keys_and_names_its_folder():
    entry = method_entry("peekaboo")
    assert entry.needs == frozenset({"feats"}) and entry.vit_only and entry.prepare is not None
    assert entry.params().weights == ""


# ----------------------------------------------------------------------------------------------
# Boxes against the published inference, on images


def test_boxes_equal_the_published_inference_on_the_same_images_and_head(tmp_path, vit_tiny_checkpoint, mixed_images):
    torch.manual_seed(0)
    head = torch.nn.Conv2d(192, 1, kernel_size=1)
    path = tmp_path / "head.pt"
    torch.save({"decoder": head.state_dict()}, path)
    code = run_peekaboo(tmp_path, "--image_path", str(mixed_images), "--arch", "vit_tiny",
                        "--pretrained_weights", str(vit_tiny_checkpoint), "--peekaboo_weights", str(path))  # fmt: skip
    assert code == 0
    (preds_file,) = (tmp_path / "out").rglob("preds.pkl")
    assert preds_file.parent.name == f"PEEKABOO-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}_peekaboo_weights-{weights_tag(path)[9:]}"
    preds = read_predictions(preds_file)
    vit = build_model("vit_tiny", 16)
    vit.load_state_dict(torch.load(vit_tiny_checkpoint, weights_only=True))
    published = PublishedPeekaboo(vit, 16, torch.load(path, weights_only=True))
    images = sorted(mixed_images.glob("*.jpg"))
    assert sorted(preds) == [image.name for image in images]
    partial = 0
    for image_path in images:
        image = Image.open(image_path)
        try:
            expected = published_uod_box(image, published).tolist()
        except ValueError:  # nothing is foreground: the published code has no box
            expected = [0, 0, image.width, image.height]
        assert preds[image_path.name].tolist() == expected, image_path.name
        partial += expected != [0, 0, image.width, image.height]
    assert partial >= 3, "the heads must box parts of most images for this test to mean something"


# ----------------------------------------------------------------------------------------------
# Boxes against the published inference, on planted keys


def discover(keys: torch.Tensor, weight: list[float], bias: float, grid, image_size, tmp_path) -> FoundResult:
    """discover_peekaboo on one image's (N, d) keys with the head (weight, bias) read from a file."""
    path = head_file(tmp_path / f"head{len(list(tmp_path.iterdir()))}.pt", torch.tensor(weight), bias)
    features = Features(feats=keys[None].float(), grid=grid, scales=(8, 8))
    return discover_peekaboo(features, [image_size], PeekabooParams(weights=str(path)))[0]


def published(keys, weight, bias, grid, image_size):
    weight_tensor = torch.tensor(weight, dtype=torch.float32).reshape(1, -1, 1, 1)
    return published_box_from_keys(keys, weight_tensor, torch.tensor([bias]), grid, 8, image_size).tolist()


@pytest.mark.parametrize("seed", range(6))
def test_boxes_equal_the_published_inference_on_planted_keys_and_random_heads(tmp_path, seed):
    rng = np.random.default_rng(seed)
    grid, image_size = (5, 7), (37, 53)
    keys = torch.from_numpy(rng.normal(0, 0.3, (35, 4))).float()
    for cells, vector in (([8, 9, 15, 16, 23], rng.normal(0, 1, 4)), ([12, 13, 20], rng.normal(0, 1, 4))):
        keys[cells] += torch.from_numpy(vector).float()
    weight, bias = rng.normal(0, 1, 4).tolist(), float(rng.normal(0, 0.5))
    result = discover(keys, weight, bias, grid, image_size, tmp_path)
    if not result.mask.any():
        with pytest.raises(ValueError):
            published(keys, weight, bias, grid, image_size)
        assert result.box.tolist() == [0, 0, 53, 37]
    else:
        assert result.box.tolist() == published(keys, weight, bias, grid, image_size)


def test_largest_component_is_boxed_in_patch_pixels_and_clipped_to_the_unpadded_image(tmp_path):
    # grid 3 x 4 over a 20 x 30 image (padded to 24 x 32); logits = keys
    logits = torch.tensor([[-1, -1, -1, -1], [-1, -1, 2, 2], [3, -1, 2, 2]], dtype=torch.float32)
    result = discover(logits.reshape(12, 1), [1.0], 0.0, (3, 4), (20, 30), tmp_path)
    # the 2 x 2 block at rows 1-2, cols 2-3: x 16 .. min(32, 30), y 8 .. min(24, 20)
    assert result.box.tolist() == [16, 8, 30, 20] == published(logits.reshape(12, 1), [1.0], 0.0, (3, 4), (20, 30))


def test_equally_large_components_give_the_first_in_raster_order_as_published(tmp_path):
    logits = torch.tensor([[-1, -1, 1], [1, -1, 1], [1, -1, -1]], dtype=torch.float32).reshape(9, 1)
    result = discover(logits, [1.0], 0.0, (3, 3), (24, 24), tmp_path)
    # two components of 2 cells: (0,2)-(1,2) is met first in raster order
    assert result.box.tolist() == [16, 0, 24, 16] == published(logits, [1.0], 0.0, (3, 3), (24, 24))


def test_a_logit_exactly_at_the_threshold_is_background_as_published(tmp_path):
    # logit 0 is sigmoid 0.5, and a positive logit below ~1e-7 rounds to 0.5 in float32: neither
    # is > 0.5; the single cell of logit 1 is the box
    logits = torch.tensor([[0.0, 0.0, 1e-8], [0.0, 1.0, 0.0]]).reshape(6, 1)
    result = discover(logits, [1.0], 0.0, (2, 3), (16, 24), tmp_path)
    assert result.mask.tolist() == [False, False, False, False, True, False]
    assert result.box.tolist() == [8, 8, 16, 16] == published(logits, [1.0], 0.0, (2, 3), (16, 24))


def test_an_empty_foreground_gives_the_whole_image_where_the_published_code_raises(tmp_path):
    logits = torch.tensor([0.0, -2.0, 1e-8, -0.5]).reshape(4, 1)
    result = discover(logits, [1.0], 0.0, (2, 2), (13, 15), tmp_path)
    assert not result.mask.any() and result.box.tolist() == [0, 0, 15, 13]
    with pytest.raises(ValueError, match="empty sequence"):
        published(logits, [1.0], 0.0, (2, 2), (13, 15))


def test_results_are_founds_so_its_masks_and_pictures_serve_peekaboo(tmp_path):
    logits = torch.tensor([1.0, -1.0, -1.0, 2.0]).reshape(4, 1)
    result = discover(logits, [2.0], 0.5, (2, 2), (16, 16), tmp_path)
    assert isinstance(result, FoundResult) and result.seed is None
    assert result.patch_scores.tolist() == [2.5, -1.5, -1.5, 4.5]
    assert method_entry("peekaboo").pictures == method_entry("found").pictures
