"""train_found.py: the published loss and schedule, augmentation, resuming, errors, and a tiny
run in which bright squares on a dark background become the foreground."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEVICE_FLAGS
from PIL import Image
from planted_squares import SIDE, crafted_vit_tiny, head_finds_the_squares

import train_found
from lost.methods.found import load_found_head, new_found_head
from lost.training import found as found_training


def training_args(data: Path, output: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "--data_dir", str(data), "--output_dir", str(output),
        "--arch", "vit_tiny", "--pretrained_weights", str(checkpoint),
        "--max_iter", "8", "--batch_size", "4", "--stop_bkg_loss", "4", "--step_lr_size", "4",
        "--crop_size", str(SIDE), "--num_workers", "0", *DEVICE_FLAGS, *extra,
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Learning


def test_training_makes_the_planted_squares_foreground(tmp_path, crafted_checkpoint, square_images):
    model = crafted_vit_tiny()
    torch.manual_seed(0)
    assert head_finds_the_squares(new_found_head(192), model) == [False] * 4, "the initial head must not find them"
    assert train_found.main(training_args(square_images, tmp_path, crafted_checkpoint)) == 0
    head = load_found_head(tmp_path / "decoder_weights.pt", embed_dim=192)
    assert head_finds_the_squares(head, model) == [True] * 4


def test_without_a_loss_the_squares_stay_undiscovered(tmp_path, crafted_checkpoint, square_images, monkeypatch):
    def zero_loss(logits, *args, **kwargs):
        return (logits * 0).sum()

    monkeypatch.setattr(found_training, "found_loss", zero_loss)
    assert train_found.main(training_args(square_images, tmp_path, crafted_checkpoint)) == 0
    head = load_found_head(tmp_path / "decoder_weights.pt", embed_dim=192)
    assert head_finds_the_squares(head, crafted_vit_tiny()) == [False] * 4


def test_killed_run_resumes_from_its_checkpoint_and_ends_with_the_same_head(
    tmp_path, crafted_checkpoint, square_images, monkeypatch
):
    # 6 iterations, found_bkg's loss up to iteration 2: the kill at 3 falls after the switch
    short = ("--max_iter", "6", "--stop_bkg_loss", "2")
    assert train_found.main(training_args(square_images, tmp_path / "whole", crafted_checkpoint, *short)) == 0
    step = found_training.train_step
    done = []

    def killed_at_3(*args):
        if args[5] == 3:
            raise KeyboardInterrupt
        done.append(args[5])
        return step(*args)

    monkeypatch.setattr(found_training, "train_step", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        train_found.main(training_args(square_images, tmp_path / "killed", crafted_checkpoint, *short))
    assert not (tmp_path / "killed" / "decoder_weights.pt").exists()
    assert torch.load(tmp_path / "killed" / "last_checkpoint.pt", weights_only=True)["iteration"] == 3

    def counted(*args):
        done.append(args[5])
        return step(*args)

    monkeypatch.setattr(found_training, "train_step", counted)
    assert train_found.main(training_args(square_images, tmp_path / "killed", crafted_checkpoint, *short)) == 0
    assert done == list(range(6))
    whole = torch.load(tmp_path / "whole" / "decoder_weights.pt", weights_only=True)["decoder"]
    resumed = torch.load(tmp_path / "killed" / "decoder_weights.pt", weights_only=True)["decoder"]
    assert torch.equal(whole["weight"], resumed["weight"]) and torch.equal(whole["bias"], resumed["bias"])


def test_resuming_with_other_settings_is_a_one_line_error(tmp_path, crafted_checkpoint, square_images, capsys):
    assert train_found.main(training_args(square_images, tmp_path, crafted_checkpoint, "--max_iter", "1")) == 0
    capsys.readouterr()
    assert (
        train_found.main(training_args(square_images, tmp_path, crafted_checkpoint, "--max_iter", "1", "--lr", "0.01"))
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "(lr)" in error and "--overwrite" in error
    overwrite = ("--max_iter", "1", "--lr", "0.01", "--overwrite")
    assert train_found.main(training_args(square_images, tmp_path, crafted_checkpoint, *overwrite)) == 0
    assert torch.load(tmp_path / "last_checkpoint.pt", weights_only=True)["settings"]["lr"] == 0.01


def test_found_bkg_targets_stop_after_stop_bkg_loss_iterations(
    tmp_path, crafted_checkpoint, square_images, monkeypatch
):
    loss = found_training.found_loss
    with_objects = []

    def recorded(logits, own, own_refined, objects_refined, settings):
        with_objects.append(objects_refined is not None)
        return loss(logits, own, own_refined, objects_refined, settings)

    monkeypatch.setattr(found_training, "found_loss", recorded)
    argv = training_args(square_images, tmp_path, crafted_checkpoint, "--max_iter", "3", "--stop_bkg_loss", "2")
    assert train_found.main(argv) == 0
    assert with_objects == [True, True, False]


# ----------------------------------------------------------------------------------------------
# Pieces


def test_loss_follows_the_published_weights_and_switch():
    # logits 0 and ln 3: sigmoid 0.5 and 0.75; BCE(t=1) = ln 2 and ln 4/3, BCE(t=0) = ln 2 and ln 4
    settings = found_training.TrainingSettings(data_dir="unused")
    logits = torch.tensor([[0.0, math.log(3.0)]])
    ones, zeros = torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool)
    bce_ones = (math.log(2) + math.log(4 / 3)) / 2
    bce_zeros = (math.log(2) + math.log(4)) / 2
    with_background = found_training.found_loss(logits, zeros, ones, zeros, settings)
    assert with_background.item() == pytest.approx(1.5 * bce_ones + bce_zeros, rel=1e-6)
    self_training = found_training.found_loss(logits, zeros, ones, None, settings)
    assert self_training.item() == pytest.approx(1.5 * bce_ones + 4.0 * bce_zeros, rel=1e-6)


def test_published_schedule_is_the_default():
    settings = train_found.settings_from(train_found.parse_args(["--data_dir", "d", "--output_dir", "o"]))
    assert (settings.arch, settings.patch_size, settings.max_iter, settings.batch_size) == ("vit_small", 8, 500, 50)
    assert (settings.lr, settings.step_lr_size, settings.step_lr_gamma) == (5e-2, 50, 0.95)
    assert (settings.w_bs_loss, settings.w_self_loss, settings.stop_bkg_loss) == (1.5, 4.0, 100)
    assert (settings.crop_size, settings.scale_range, settings.blur_probability) == (224, (0.1, 3.0), 0.5)


def test_each_epoch_visits_every_image_once_in_batches_of_the_batch_size():
    settings = found_training.TrainingSettings(data_dir="unused", batch_size=3)
    epoch = [found_training.iteration_batch(iteration, 7, settings) for iteration in range(3)]
    assert [len(batch) for batch in epoch] == [3, 3, 1]
    assert sorted(index for batch in epoch for index, _ in batch) == list(range(7))
    assert found_training.iteration_batch(1, 7, settings) == epoch[1]
    assert found_training.iteration_batch(3, 7, settings) != epoch[0]


def test_images_are_resized_on_the_shorter_side_as_published():
    assert found_training.shorter_side_size(300, 200, 224) == (336, 224)
    assert found_training.shorter_side_size(200, 301, 224) == (224, 337)
    assert found_training.rescaled_square(Image.new("RGB", (90, 40)), 64, 0.1).size == (64, 64)


def test_blur_kernel_is_opencvs_gaussian_of_a_tenth_of_the_side():
    assert found_training.blur_kernel_size(224) == 23 and found_training.blur_kernel_size(64) == 7
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[32, 32] = 255
    blurred = found_training.gaussian_blurred(pixels, 1.0)
    taps = np.exp(-(np.arange(-3, 4) ** 2) / 2.0)
    taps /= taps.sum()
    assert blurred[29:36, 32, 0].tolist() == np.rint(255 * taps * taps[3]).astype(int).tolist()


def test_views_depend_only_on_their_seed():
    settings = found_training.TrainingSettings(data_dir="unused", crop_size=32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    first = found_training.augmented_pixels(image, settings, np.random.default_rng(7))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, found_training.augmented_pixels(image, settings, np.random.default_rng(7)))


# ----------------------------------------------------------------------------------------------
# Errors


def test_bad_inputs_are_one_line_errors(tmp_path, crafted_checkpoint, square_images, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "000.png").write_bytes(b"not a png")
    cases = [
        (training_args(tmp_path / "absent", tmp_path / "o1", crafted_checkpoint), "no such folder"),
        (training_args(empty, tmp_path / "o2", crafted_checkpoint), "holds no image"),
        (
            training_args(square_images, tmp_path / "o3", crafted_checkpoint, "--crop_size", "60"),
            "multiple of --patch_size 8; use 56",
        ),
        (training_args(broken, tmp_path / "o4", crafted_checkpoint), "000.png"),
        (training_args(square_images, tmp_path / "o5", tmp_path / "absent.pth"), "no such file"),
        (training_args(square_images, tmp_path / "o6", crafted_checkpoint, "--max_iter", "0"), "--max_iter 0"),
    ]
    for argv, words in cases:
        assert train_found.main(argv) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, if any
        assert error.startswith("error: ") and words in error, error
