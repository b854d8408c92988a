"""Runs that never lose work: bad files are skipped and reported, killed runs resume, shards merge."""

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DEVICE_FLAGS, write_noise_images
from PIL import Image
from run_names import input_folder, weights_tag
from tiny_datasets import make_coco_tree, make_voc_tree

import main_lost
from lost.io import journal as journal_module
from lost.io.safe_files import read_predictions, read_scored_predictions

ROOT = Path(__file__).resolve().parents[1]

# image id -> VOC object list; the files of the bad ones are replaced after the tree is written
BAD_INPUT_IMAGES = {f"{index:06d}": [(9, 9, 40, 32, 0, 0)] for index in range(1, 16)}
BAD_INPUT_IMAGES["000015"] = []


def write_bad_inputs(devkit: Path) -> None:
    """Replace VOC images and annotations of the tiny tree with every kind of bad input."""
    images, annotations = devkit / "JPEGImages", devkit / "Annotations"
    (images / "000001.jpg").write_bytes(b"")
    good = (images / "000002.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(good[: len(good) // 2])
    (images / "000003.jpg").write_text("this is a text file, not a JPEG")
    Image.new("L", (64, 48), 90).save(images / "000004.jpg", format="JPEG")
    Image.new("CMYK", (64, 48), (0, 128, 255, 0)).save(images / "000005.jpg", format="JPEG")
    Image.new("RGBA", (64, 48), (200, 10, 10, 128)).save(images / "000006.jpg", format="PNG")
    Image.new("P", (64, 48), 7).save(images / "000007.jpg", format="PNG")
    Image.fromarray(np.full((48, 64), 40000, dtype=np.uint16)).save(images / "000008.jpg", format="PNG")
    Image.new("RGB", (5, 4), (255, 255, 255)).save(images / "000009.jpg")
    Image.new("RGB", (12000, 9000), (30, 60, 90)).save(images / "000010.jpg", quality=50)
    (images / "000011.jpg").unlink()
    (annotations / "000012.xml").unlink()
    (annotations / "000013.xml").write_text("<annotation><object>")


def folder_run(output: Path, images: Path, checkpoint: Path, method: str = "LOST") -> Path:
    """The run folder of `method` on ViT-Tiny/16 with `checkpoint` over the folder `images`."""
    return output / input_folder(images) / f"{method}-vit_tiny16_k{weights_tag(checkpoint)}"


def run_cli(*args: str) -> int:
    return main_lost.main([*args, "--num_workers", "0", *DEVICE_FLAGS])


def test_every_bad_input_is_skipped_or_handled_and_reported(tmp_path, vit_tiny_checkpoint, capsys):
    tiny = make_voc_tree(tmp_path / "datasets", images=BAD_INPUT_IMAGES)
    devkit = tmp_path / "datasets" / "VOC2007" / "VOCdevkit" / "VOC2007"
    write_bad_inputs(devkit)
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
    )
    out = capsys.readouterr().out + capsys.readouterr().err
    assert code == 0
    run = tmp_path / "out" / "VOC07_trainval" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    skipped = dict(line.split("\t") for line in (run / "skipped.txt").read_text().splitlines())
    assert sorted(skipped) == ["000001.jpg", "000002.jpg", "000003.jpg", "000011.jpg", "000012.jpg", "000013.jpg"]
    assert "empty" in skipped["000001.jpg"] and "truncated" in skipped["000002.jpg"]
    assert "not an image" in skipped["000003.jpg"] and "not found" in skipped["000011.jpg"]
    assert all(f"skipped {name}" in out for name in skipped)
    preds = read_predictions(run / "preds.pkl")
    handled = ["000004.jpg", "000005.jpg", "000006.jpg", "000007.jpg", "000008.jpg", "000009.jpg", "000010.jpg", "000014.jpg", "000015.jpg"]
    assert list(preds) == handled
    x1, y1, x2, y2 = preds["000010.jpg"].tolist()
    assert 0 <= x1 < x2 <= 12000 and 0 <= y1 < y2 <= 9000, "the huge image's box is in its own pixels"
    assert preds["000009.jpg"].tolist() == [0, 0, 5, 4], "an image smaller than a patch is one patch"
    # 9 evaluated (000015 has no object: a miss), 6 skipped
    lines = (run / "results.txt").read_text().splitlines()
    assert lines[1:] == ["evaluated,9,,", "skipped,6,,"]
    assert tiny.names[0] == "000001.jpg"


def test_strict_turns_a_skip_into_a_failure(tmp_path, vit_tiny_checkpoint):
    make_voc_tree(tmp_path / "datasets")
    (tmp_path / "datasets" / "VOC2007" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000002.jpg").write_bytes(b"")
    args = ["--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"),
            "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out")]
    assert run_cli(*args) == 0
    assert run_cli(*args, "--strict") == 1


def test_coco_image_missing_on_disk_is_skipped(tmp_path, vit_tiny_checkpoint):
    tiny = make_coco_tree(tmp_path / "datasets")
    tiny.image_paths["7"].unlink()
    run_cli(
        "--dataset", "COCO20k", "--set", "train", "--datasets_root", str(tmp_path / "datasets"),
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
    )
    run = tmp_path / "out" / "COCO20k_train" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    assert list(read_predictions(run / "preds.pkl")) == ["42", "1000", "1001"]
    assert (run / "skipped.txt").read_text().startswith("7\t")


def lost_command(folder: Path, output: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "main_lost.py"), "--image_path", str(folder), "--arch", "vit_tiny",
        "--pretrained_weights", str(checkpoint), "--output_dir", str(output), *DEVICE_FLAGS,
        "--num_workers", "0", "--batch_size", "1", *extra,
    ]


def journal_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_and_kill(command: list[str], journal: Path, after_lines: int) -> None:
    """Start the run, SIGKILL it once its journal holds `after_lines` lines (header included)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while journal_lines(journal) < after_lines and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def kill_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kill") / "photos"
    write_noise_images(folder, [(320, 240), (240, 320)] * 16)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(kill_images, vit_tiny_checkpoint, tmp_path_factory) -> dict[str, list]:
    output = tmp_path_factory.mktemp("whole")
    subprocess.run(lost_command(kill_images, output, vit_tiny_checkpoint), check=True, capture_output=True)
    return {name: box.tolist() for name, box in read_predictions(folder_run(output, kill_images, vit_tiny_checkpoint) / "preds.pkl").items()}


@pytest.mark.parametrize("after_lines", [1, 4, 10])
def test_killed_run_resumes_to_the_same_predictions(kill_images, vit_tiny_checkpoint, uninterrupted, tmp_path, after_lines):
    command = lost_command(kill_images, tmp_path, vit_tiny_checkpoint)
    journal = folder_run(tmp_path, kill_images, vit_tiny_checkpoint) / "journal.jsonl"
    run_and_kill(command, journal, after_lines)
    finished_before = journal_lines(journal) - 1
    assert not (folder_run(tmp_path, kill_images, vit_tiny_checkpoint) / "preds.pkl").exists()
    subprocess.run(command, check=True, capture_output=True)
    preds = read_predictions(folder_run(tmp_path, kill_images, vit_tiny_checkpoint) / "preds.pkl")
    assert {name: box.tolist() for name, box in preds.items()} == uninterrupted
    names = [line for line in journal.read_text().splitlines()[1:]]
    assert len(names) == len(uninterrupted), "no finished image was done twice"
    assert finished_before >= after_lines - 1


def test_torchrun_shards_merge_and_a_dead_rank_resumes_its_shard(tmp_path, vit_tiny_checkpoint, kill_images, uninterrupted):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        *lost_command(kill_images, tmp_path, vit_tiny_checkpoint)[1:],
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    run = folder_run(tmp_path, kill_images, vit_tiny_checkpoint)
    preds = read_predictions(run / "preds.pkl")
    assert {name: box.tolist() for name, box in preds.items()} == uninterrupted
    assert list(preds) == list(uninterrupted)
    assert journal_lines(run / "journal.rank0-of-2.jsonl") == 17 and journal_lines(run / "journal.rank1-of-2.jsonl") == 17

    # rank 1 "died" after 7 of its 16 images: the rerun redoes its 9 others and nothing of rank 0
    rank0, rank1 = run / "journal.rank0-of-2.jsonl", run / "journal.rank1-of-2.jsonl"
    rank0_before = rank0.read_text()
    rank1.write_text("".join(rank1.read_text().splitlines(keepends=True)[:8]))
    (run / "preds.pkl").unlink()
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert rank0.read_text() == rank0_before
    assert journal_lines(rank1) == 17
    resumed = read_predictions(run / "preds.pkl")
    assert {name: box.tolist() for name, box in resumed.items()} == uninterrupted


def test_a_second_run_on_a_busy_folder_stops_at_once_and_a_killed_runs_lock_is_taken_over(
    kill_images, vit_tiny_checkpoint, uninterrupted, tmp_path, capsys
):
    command = lost_command(kill_images, tmp_path, vit_tiny_checkpoint)
    run = folder_run(tmp_path, kill_images, vit_tiny_checkpoint)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while journal_lines(run / "journal.jsonl") < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        code = main_lost.main(command[2:])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1 and f"{run} is in use by pid {first.pid} on host {socket.gethostname()}" in err
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert main_lost.main(command[2:]) == 0, "the lock of a killed run is taken over"
    preds = read_predictions(run / "preds.pkl")
    assert {name: box.tolist() for name, box in preds.items()} == uninterrupted


def test_a_full_disk_is_one_line_and_the_same_command_resumes(kill_images, vit_tiny_checkpoint, uninterrupted, tmp_path, capsys, monkeypatch):
    command = lost_command(kill_images, tmp_path, vit_tiny_checkpoint)[2:]
    journal = folder_run(tmp_path, kill_images, vit_tiny_checkpoint) / "journal.jsonl"
    real_fsync, calls = os.fsync, []

    def fsync_until_the_disk_fills(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", fsync_until_the_disk_fills)
    assert main_lost.main(command) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last_line = err.splitlines()[-1]
    assert last_line.startswith(f"error: cannot write {journal}: no space left on the device;"), "after the progress bar"
    assert journal_lines(journal) == 6, "the header and 5 images: the 5th was written before its fsync failed"

    monkeypatch.setattr(journal_module.os, "fsync", real_fsync)
    assert main_lost.main(command) == 0
    assert journal_lines(journal) == 1 + len(uninterrupted), "no image is done twice"
    preds = read_predictions(folder_run(tmp_path, kill_images, vit_tiny_checkpoint) / "preds.pkl")
    assert {name: box.tolist() for name, box in preds.items()} == uninterrupted


def test_a_picture_on_a_read_only_file_system_isone_line(tmp_path, vit_tiny_checkpoint, capsys, monkeypatch):
    def read_only(self, path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(Image.Image, "save", read_only)
    code = run_cli(
        "--image_path", str(ROOT / "examples" / "chelsea.jpg"), "--visualize", "pred", "--arch", "vit_tiny",
        "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path),
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    picture = tmp_path / "visualizations" / f"LOST-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}" / "chelsea_pred.png"
    assert f"cannot write {picture}: read-only file system" in err


# ----------------------------------------------------------------------------------------------
# A multi-object method: the same guarantees


def test_maskcut_skips_and_handles_every_bad_input_like_the_others(tmp_path, vit_tiny_checkpoint):
    make_voc_tree(tmp_path / "datasets", images=BAD_INPUT_IMAGES)
    write_bad_inputs(tmp_path / "datasets" / "VOC2007" / "VOCdevkit" / "VOC2007")
    code = run_cli(
        "--dataset", "VOC07", "--set", "trainval", "--datasets_root", str(tmp_path / "datasets"), "--method", "maskcut",
        "--arch", "vit_tiny", "--pretrained_weights", str(vit_tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
    )
    assert code == 0
    run = tmp_path / "out" / "VOC07_trainval" / f"MaskCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}"
    skipped = dict(line.split("\t") for line in (run / "skipped.txt").read_text().splitlines())
    assert sorted(skipped) == ["000001.jpg", "000002.jpg", "000003.jpg", "000011.jpg", "000012.jpg", "000013.jpg"]
    scored = read_scored_predictions(run / "preds.pkl")
    handled = ["000004.jpg", "000005.jpg", "000006.jpg", "000007.jpg", "000008.jpg", "000009.jpg", "000010.jpg", "000014.jpg", "000015.jpg"]
    assert list(scored) == handled
    assert all(0 <= x1 < x2 <= 12000 and 0 <= y1 < y2 <= 9000 for x1, y1, x2, y2 in scored["000010.jpg"].boxes.tolist())
    # one patch: nothing to cut, the whole image with score 0
    assert scored["000009.jpg"].boxes.tolist() == [[0, 0, 5, 4]] and scored["000009.jpg"].scores.tolist() == [0.0]
    assert (run / "results.txt").read_text().splitlines()[1:] == ["evaluated,9,,", "skipped,6,,"]


@pytest.fixture(scope="module")
def maskcut_uninterrupted(kill_images, vit_tiny_checkpoint, tmp_path_factory) -> dict[str, list]:
    output = tmp_path_factory.mktemp("maskcut_whole")
    command = lost_command(kill_images, output, vit_tiny_checkpoint, "--method", "maskcut")
    subprocess.run(command, check=True, capture_output=True)
    return read_scored_predictions(folder_run(output, kill_images, vit_tiny_checkpoint, "MaskCut") / "preds.json")


def as_lists(scored) -> dict[str, tuple[list, list]]:
    return {name: (found.boxes.tolist(), found.scores.tolist()) for name, found in scored.items()}


def test_killed_maskcut_run_resumes_to_the_same_boxes_and_scores(kill_images, vit_tiny_checkpoint, maskcut_uninterrupted, tmp_path):
    assert any(len(found.boxes) > 1 for found in maskcut_uninterrupted.values()), "some image must have several boxes"
    command = lost_command(kill_images, tmp_path, vit_tiny_checkpoint, "--method", "maskcut")
    run = folder_run(tmp_path, kill_images, vit_tiny_checkpoint, "MaskCut")
    run_and_kill(command, run / "journal.jsonl", 6)
    assert not (run / "preds.pkl").exists()
    subprocess.run(command, check=True, capture_output=True)
    assert as_lists(read_scored_predictions(run / "preds.pkl")) == as_lists(maskcut_uninterrupted)
    assert journal_lines(run / "journal.jsonl") == 1 + len(maskcut_uninterrupted), "no image is done twice"
