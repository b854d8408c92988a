"""train_found.py --recipe peekaboo: PEEKABOO's loss against its published transcription, its
masked views (official mask files and procedural ones), resuming, flags, and a tiny run in which
bright squares on a dark background become the foreground."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from planted_squares import SIDE, crafted_vit_tiny, head_finds_the_squares
from published_peekaboo import published_scribble, published_training_loss

import train_found
from lost.methods.found import load_found_head, new_found_head
from lost.training import found as found_training
from lost.training import masking


def peekaboo_args(data: Path, output: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "--recipe", "peekaboo", "--data_dir", str(data), "--output_dir", str(output),
        "--arch", "vit_tiny", "--pretrained_weights", str(checkpoint),
        "--max_iter", "6", "--batch_size", "4", "--step_lr_size", "4",
        "--crop_size", str(SIDE), "--num_workers", "0", "--device", "cpu", *extra,
    ]  # fmt: skip


def write_mask(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(path)
    return path


# ----------------------------------------------------------------------------------------------
# The loss


def our_loss(preds, preds_mask, preds_mask_bs, preds_mfp, preds_mask_mfp_bs):
    """FOUND's loss without found_bkg's targets plus the masked-image terms, in (B, N) layout."""
    settings = found_training.TrainingSettings(data_dir="unused", stop_bkg_loss=0, masking=masking.MaskingSettings())
    size = len(preds)
    logits, masked_logits = preds.reshape(size, -1), preds_mfp.reshape(size, -1)
    own, own_refined, masked_refined = (
        m.reshape(size, -1).bool() for m in (preds_mask, preds_mask_bs, preds_mask_mfp_bs)
    )
    loss = found_training.found_loss(logits, own, own_refined, None, settings)
    return loss + masking.masked_image_loss(masked_logits, masked_refined, own_refined, settings.masking)


@pytest.mark.parametrize("seed", range(4))
def test_loss_equals_the_published_loss_on_fixed_tensors(seed):
    g = torch.Generator().manual_seed(seed)
    preds, preds_mfp = 3 * torch.randn(2, 1, 3, 5, generator=g), 3 * torch.randn(2, 1, 3, 5, generator=g)
    preds_mask = (torch.sigmoid(preds) > 0.5).float()
    preds_mask_bs = torch.rand(2, 3, 5, generator=g) > 0.5
    preds_mask_mfp_bs = torch.rand(2, 3, 5, generator=g) > 0.3
    expected = published_training_loss(preds, preds_mask, preds_mask_bs, preds_mfp, preds_mask_mfp_bs)
    actual = our_loss(preds, preds_mask, preds_mask_bs, preds_mfp, preds_mask_mfp_bs)
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_terms_are_weighted_as_published_by_hand():
    # logits 0 and ln 3 (sigmoid 0.5 and 0.75), masked logits ln 3 and 0
    # BCE(t=1) of [0, ln 3] = (ln 2 + ln 4/3) / 2; BCE(t=0) of [0, ln 3] = (ln 2 + ln 4) / 2
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])
    masked = torch.tensor([[[[math.log(3.0), 0.0]]]])
    ones, zeros = torch.ones(1, 1, 2), torch.zeros(1, 1, 2)
    mixed = torch.tensor([[[1.0, 0.0]]])
    bce_ones, bce_zeros = (math.log(2) + math.log(4 / 3)) / 2, (math.log(2) + math.log(4)) / 2
    bce_mixed = (math.log(4 / 3) + math.log(2)) / 2  # masked [ln 3, 0] against [1, 0]
    mse = 0.5  # [1, 1] against [1, 0]
    expected = 1.5 * bce_ones + bce_mixed + mse + 4.0 * bce_zeros
    assert our_loss(logits, zeros, ones, masked, mixed).item() == pytest.approx(expected, rel=1e-6)


def test_the_consistency_term_adds_to_the_value_not_to_the_gradient():
    head = new_found_head(3)
    keys = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    own_refined = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    masked_refined = torch.tensor([[1, 0, 0, 0, 0, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    gradients, values = [], []
    for w_pcl in (1.0, 0.0):
        head.zero_grad()
        logits = found_training.head_scores(keys, head, (2, 3))
        loss = masking.masked_image_loss(logits, masked_refined, own_refined, masking.MaskingSettings(w_pcl_loss=w_pcl))
        loss.backward()
        gradients.append(head.weight.grad.clone())
        values.append(loss.item())
    assert torch.equal(gradients[0], gradients[1])
    assert values[0] - values[1] == pytest.approx(3 / 12, rel=1e-6)  # 3 of 12 targets disagree


# ----------------------------------------------------------------------------------------------
# Masked views


def test_masked_views_set_the_hidden_pixels_to_the_mean_colour_and_keep_the_rest():
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) + 1
    hidden = torch.tensor([[[True, False], [False, False]], [[False, False], [True, True]]])
    views = masking.masked_views(images, hidden)
    assert views[0, :, 0, 0].tolist() == [0, 0, 0] and torch.equal(views[0, :, 1], images[0, :, 1])
    assert views[1, :, 1].abs().sum() == 0 and torch.equal(views[1, :, 0], images[1, :, 0])


@pytest.mark.parametrize(
    "size, mode",
    [((30, 50), "L"), ((50, 30), "L"), ((37, 37), "1"), ((41, 23), "RGB"), ((16, 16), "L"), ((17, 40), "L")],
)
def test_a_mask_file_hides_what_the_published_scribble_hides(tmp_path, size, mode):
    width, height = size
    rng = np.random.default_rng(width * height)
    pixels = (rng.random((height, width)) < 0.4) * rng.integers(1, 256, (height, width))
    path = write_mask(tmp_path / "mask.png", pixels, mode)
    for side in (16, 24):
        hidden = masking.scribble_from_file(path, side)
        published = published_scribble(path, side)[0]
        assert hidden.shape == (side, side) and 0 < hidden.sum() < side * side
        assert hidden.tolist() == (published == 0).tolist()


def test_a_mask_file_without_strokes_hides_nothing_where_the_published_one_hides_all(tmp_path):
    path = write_mask(tmp_path / "blank.png", np.zeros((20, 20)))
    assert not masking.scribble_from_file(path, 16).any()
    assert published_scribble(path, 16).sum() == 0  # the published multiplier zeroes every pixel


def test_centre_crop_offsets_round_half_to_even_as_torchvision():
    assert masking.centre_crop_box(17, 16, 16) == (0, 0, 16, 16)  # (17 - 16) / 2 = 0.5 -> 0
    assert masking.centre_crop_box(19, 16, 16) == (2, 0, 18, 16)  # 1.5 -> 2
    assert masking.centre_crop_box(16, 21, 16) == (0, 2, 16, 18)  # 2.5 -> 2


def test_mask_files_are_drawn_from_the_first_951_names_in_reverse_order(tmp_path):
    for index in range(960):
        write_mask(tmp_path / f"{index:05d}.png", np.ones((1, 1)))
    (tmp_path / "notes.txt").write_text("not a mask")
    files = masking.scribble_files(tmp_path)
    assert len(files) == 951 and files[0].name == "00959.png" and files[-1].name == "00009.png"
    few = tmp_path / "few"
    few.mkdir()
    for name in ("b.png", "a.png", "c.png"):
        write_mask(few / name, np.ones((1, 1)))
    assert [p.name for p in masking.scribble_files(few)] == ["c.png", "b.png", "a.png"]


def test_procedural_masks_depend_only_on_their_seed_and_reach_their_coverage():
    shares = []
    for seed in range(6):
        first = masking.procedural_hidden(64, np.random.default_rng(seed), (0.3, 0.6))
        again = masking.procedural_hidden(64, np.random.default_rng(seed), (0.3, 0.6))
        assert first.dtype == bool and first.shape == (64, 64) and np.array_equal(first, again)
        shares.append(first.mean())
    assert all(0.3 <= share < 0.9 for share in shares)
    assert len(set(shares)) == 6


def test_a_hole_is_a_filled_ellipse_of_the_drawn_semi_axes():
    canvas = Image.new("L", (200, 200), 0)
    rng = np.random.default_rng(3)
    masking.draw_hole(masking.ImageDraw.Draw(canvas), 200, rng)
    replay = np.random.default_rng(3)
    x, y = replay.uniform(0, 200, 2)
    rx, ry = 200 * replay.uniform(*masking.HOLE_SEMI_AXIS, size=2)
    rows, cols = np.mgrid[0:200, 0:200]
    inside = ((cols + 0.5 - x) / rx) ** 2 + ((rows + 0.5 - y) / ry) ** 2 <= 0.8
    outside = ((cols + 0.5 - x) / rx) ** 2 + ((rows + 0.5 - y) / ry) ** 2 >= 1.25
    drawn = np.asarray(canvas) != 0
    assert drawn[inside].all() and not drawn[outside].any()


def test_views_carry_their_hidden_pixels_drawn_from_the_same_seed(tmp_path):
    image = tmp_path / "000.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    settings = found_training.TrainingSettings(data_dir="unused", crop_size=32, masking=masking.MaskingSettings())
    dataset = found_training.AugmentedImages([image], settings)
    first, again = dataset[(0, 11)], dataset[(0, 11)]
    assert first[2].shape == (32, 32) and first[2].dtype == torch.bool and torch.equal(first[2], again[2])
    plain = found_training.AugmentedImages([image], found_training.TrainingSettings(data_dir="unused", crop_size=32))
    assert plain[(0, 11)][2] is None and torch.equal(plain[(0, 11)][1], first[1])  # masking draws after the view


# ----------------------------------------------------------------------------------------------
# Training


def test_peekaboo_training_makes_the_planted_squares_foreground(tmp_path, crafted_checkpoint, square_images):
    model = crafted_vit_tiny()
    torch.manual_seed(0)
    assert head_finds_the_squares(new_found_head(192), model) == [False] * 4, "the initial head must not find them"
    assert train_found.main(peekaboo_args(square_images, tmp_path, crafted_checkpoint)) == 0
    head = load_found_head(tmp_path / "decoder_weights.pt", embed_dim=192)
    assert head_finds_the_squares(head, model) == [True] * 4


def test_the_masked_terms_alone_make_the_squares_foreground(tmp_path, crafted_checkpoint, square_images, monkeypatch):
    def no_found_loss(logits, *args, **kwargs):
        return (logits * 0).sum()

    monkeypatch.setattr(found_training, "found_loss", no_found_loss)
    assert train_found.main(peekaboo_args(square_images, tmp_path, crafted_checkpoint)) == 0
    head = load_found_head(tmp_path / "decoder_weights.pt", embed_dim=192)
    assert head_finds_the_squares(head, crafted_vit_tiny()) == [True] * 4


def test_masked_targets_are_refined_on_the_unmasked_image_without_found_bkg(
    tmp_path, crafted_checkpoint, square_images, monkeypatch
):
    refine = found_training.refined_masks
    calls = []

    def recorded(images, masks):
        calls.append((images.copy(), len(masks)))
        return refine(images, masks)

    step = found_training.train_step
    batches = []

    def kept(*args):
        batches.append(args[4])
        return step(*args)

    monkeypatch.setattr(found_training, "refined_masks", recorded)
    monkeypatch.setattr(found_training, "train_step", kept)
    assert train_found.main(peekaboo_args(square_images, tmp_path, crafted_checkpoint, "--max_iter", "2")) == 0
    assert [count for _, count in calls] == [2, 2]  # the image's and the masked view's, no found_bkg
    for (pixels, _), batch in zip(calls, batches, strict=True):
        assert np.array_equal(pixels, batch.pixels.numpy()) and batch.hidden.any()


def test_killed_peekaboo_run_resumes_and_ends_with_the_same_head(
    tmp_path, crafted_checkpoint, square_images, monkeypatch
):
    short = ("--max_iter", "3")
    assert train_found.main(peekaboo_args(square_images, tmp_path / "whole", crafted_checkpoint, *short)) == 0
    step = found_training.train_step

    def killed_at_2(*args):
        if args[5] == 2:
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(found_training, "train_step", killed_at_2)
    with pytest.raises(KeyboardInterrupt):
        train_found.main(peekaboo_args(square_images, tmp_path / "killed", crafted_checkpoint, *short))
    monkeypatch.setattr(found_training, "train_step", step)
    assert train_found.main(peekaboo_args(square_images, tmp_path / "killed", crafted_checkpoint, *short)) == 0
    whole = torch.load(tmp_path / "whole" / "decoder_weights.pt", weights_only=True)["decoder"]
    resumed = torch.load(tmp_path / "killed" / "decoder_weights.pt", weights_only=True)["decoder"]
    assert torch.equal(whole["weight"], resumed["weight"]) and torch.equal(whole["bias"], resumed["bias"])


def test_training_reads_the_official_mask_files_when_given(tmp_path, crafted_checkpoint, square_images, monkeypatch):
    scribbles = tmp_path / "SCRIBBLES"
    scribbles.mkdir()
    write_mask(scribbles / "0001.png", np.full((30, 30), 255))
    read = []

    def striped(path, side):
        read.append(path)
        return np.arange(side)[None, :].repeat(side, 0) % 3 == 0

    monkeypatch.setattr(masking, "scribble_from_file", striped)
    argv = peekaboo_args(
        square_images, tmp_path / "out", crafted_checkpoint, "--max_iter", "1", "--scribbles", str(scribbles)
    )
    assert train_found.main(argv) == 0
    assert read == [scribbles / "0001.png"] * 4
    saved = torch.load(tmp_path / "out" / "last_checkpoint.pt", weights_only=True)["settings"]
    assert saved["masking"]["scribbles"] == str(scribbles.resolve()) and saved["stop_bkg_loss"] == 0


# ----------------------------------------------------------------------------------------------
# Flags


def test_the_published_recipes_are_the_defaults():
    found = train_found.settings_from(train_found.parse_args(["--data_dir", "d", "--output_dir", "o"]))
    assert found.stop_bkg_loss == 100 and found.masking is None
    args = ["--data_dir", "d", "--output_dir", "o", "--recipe", "peekaboo"]
    peekaboo = train_found.settings_from(train_found.parse_args(args))
    assert peekaboo.stop_bkg_loss == 0 and peekaboo.masking == masking.MaskingSettings(1.0, 1.0, None, (0.3, 0.6))
    assert (peekaboo.max_iter, peekaboo.batch_size, peekaboo.lr, peekaboo.w_bs_loss, peekaboo.w_self_loss) == (
        500, 50, 5e-2, 1.5, 4.0,
    )  # fmt: skip
    assert (peekaboo.step_lr_size, peekaboo.step_lr_gamma, peekaboo.crop_size, peekaboo.blur_probability) == (
        50, 0.95, 224, 0.5,
    )  # fmt: skip


def test_a_found_checkpoint_from_before_masking_existed_still_resumes():
    settings = found_training.TrainingSettings(data_dir="d")
    identity = found_training.run_identity(settings, 3)
    older = {key: value for key, value in identity.items() if key != "masking"}
    assert all(identity.get(key) == older.get(key) for key in identity.keys() | older.keys())


def test_bad_peekaboo_flags_are_one_line_errors(tmp_path, crafted_checkpoint, square_images, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.png").write_bytes(b"not a png")
    base = peekaboo_args(square_images, tmp_path / "o", crafted_checkpoint, "--max_iter", "1")
    found_only = [arg for arg in base if arg not in ("--recipe", "peekaboo")]
    cases = [
        ([*found_only, "--scribbles", str(empty)], "--scribbles applies to --recipe peekaboo only"),
        ([*found_only, "--w_mfp_loss", "2"], "--w_mfp_loss applies to --recipe peekaboo only"),
        ([*base, "--scribbles", str(tmp_path / "absent")], "no such folder"),
        ([*base, "--scribbles", str(empty)], "holds no .png mask"),
        ([*base, "--scribbles", str(broken)], "0.png: not a readable mask image"),
        ([*base, "--scribbles", str(empty), "--mask_coverage", "0.1", "0.2"], "drop one of them"),
        ([*base, "--mask_coverage", "0.6", "0.3"], "0 < LOW <= HIGH < 1"),
    ]
    for argv, words in cases:
        assert train_found.main(argv) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and words in error, error
