"""Start-up of ``main_lost.py``: whole processes, wall time, from the interpreter's start to its exit.

    python -m bench.bench_startup                              # this tree, 3 rounds
    python -m bench.bench_startup --other_tree /tmp/old_lost   # this tree against another checkout
    python -m bench.bench_startup --rounds 5 --images 48

Three commands, each in a fresh process:

- ``import main_lost``: the imports alone;
- one image: ``main_lost.py --image_path examples/chelsea.jpg --arch vit_small --pretrained_weights CKPT``;
- mini run: the same on a folder of ``--images`` VOC-like JPEGs (``tests.synthetic_images``).

The checkpoint is a random-weight ViT-S/16 state dict in DINO's format (the keys of DINO's
``vit_small``), written into a temporary folder with the images; every run writes into a folder
of its own there, so none resumes another. With ``--other_tree`` each round runs every command in
both trees, one after the other, so that both see the same machine; the table gives the median
and the fastest of the rounds, and the ratio of the other tree's median to this tree's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lost.backbones import build_model
from tests.synthetic_images import VOC_SIZES, make_images

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(path: Path) -> Path:
    """A random-weight ViT-S/16 state dict (seed 0) at `path`."""
    torch.manual_seed(0)
    torch.save(build_model("vit_small", 16).state_dict(), path)
    return path


def commands(tree: Path, checkpoint: Path, folder: Path, output: Path) -> dict[str, list[str]]:
    """The timed command lines, by row name, to run from `tree`; results go under `output`."""
    run = [sys.executable, "main_lost.py", "--arch", "vit_small", "--pretrained_weights", str(checkpoint)]
    return {
        "import main_lost": [sys.executable, "-c", "import main_lost"],
        "one image": [*run, "--image_path", "examples/chelsea.jpg", "--output_dir", str(output / "one")],
        "mini run": [*run, "--image_path", str(folder), "--output_dir", str(output / "mini")],
    }


def timed_run(command: list[str], tree: Path) -> float:
    """Wall-clock seconds of `command` run from `tree` with `tree` on PYTHONPATH; exits with the
    command's error output when it fails."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run(
        command, check=False, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} (in {tree}) failed:\n{done.stderr}")
    return seconds


def measure(trees: list[Path], checkpoint: Path, folder: Path, scratch: Path, rounds: int) -> dict:
    """{(row, tree): [seconds per round]}, every row run in every tree within each round."""
    times: dict[tuple[str, Path], list[float]] = {}
    for round_index in range(rounds):
        for tree_index, tree in enumerate(trees):
            output = scratch / f"out_{round_index}_{tree_index}"
            for row, command in commands(tree, checkpoint, folder, output).items():
                times.setdefault((row, tree), []).append(timed_run(command, tree))
    return times


def print_table(times: dict, trees: list[Path]) -> None:
    print("| run | tree | median (s) | fastest (s) | rounds | median / this tree's |")
    print("|---|---|---|---|---|---|")
    for (row, tree), seconds in times.items():
        ratio = statistics.median(seconds) / statistics.median(times[(row, trees[0])])
        name = "this tree" if tree == trees[0] else str(tree)
        print(
            f"| {row} | {name} | {statistics.median(seconds):.2f} | {min(seconds):.2f} | {len(seconds)} | {ratio:.2f}x |"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Start-up of main_lost.py: import, one image, a mini run.")
    parser.add_argument("--images", type=int, default=48, help="images of the mini run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median of each row is kept")
    parser.add_argument("--other_tree", type=Path, default=None, help="another checkout to time beside this one")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    trees = [ROOT] if args.other_tree is None else [ROOT, args.other_tree.resolve()]
    with tempfile.TemporaryDirectory(prefix="lost_startup_") as scratch_name:
        scratch = Path(scratch_name)
        checkpoint = write_checkpoint(scratch / "vit_small16_random.pth")
        folder = scratch / f"{args.images}_images"
        make_images(folder, args.images, VOC_SIZES)
        print(f"ViT-S/16 random weights, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.rounds} rounds")
        print_table(measure(trees, checkpoint, folder, scratch, args.rounds), trees)


if __name__ == "__main__":
    main()
