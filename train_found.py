"""Train FOUND's head on a folder of images (the paper: DUTS-TR, 10,553 images).

    python train_found.py --data_dir datasets/DUTS/DUTS-TR-Image --output_dir outputs/found

Writes ``<output_dir>/decoder_weights.pt`` in the released format (for ``--found_weights``) and
``<output_dir>/last_checkpoint.pt`` after every iteration; the same command resumes a killed run.
The schedule, the losses and the differences from the published script: :mod:`lost.training.found`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lost.backbones import VIT_NAMES
from lost.errors import run_cli
from lost.training.found import TrainingSettings, check_settings, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train FOUND's head on a folder of images.")
    parser.add_argument("--data_dir", required=True, help="folder of training images (DUTS-TR-Image in the paper)")
    parser.add_argument("--output_dir", required=True, help="where decoder_weights.pt and the checkpoint go")
    model = parser.add_argument_group("backbone (frozen)")
    model.add_argument("--arch", default="vit_small", choices=VIT_NAMES)
    model.add_argument("--patch_size", default=8, type=int, choices=[8, 16])
    model.add_argument(
        "--pretrained_weights", default=None, help="local checkpoint instead of the official DINO download"
    )
    model.add_argument("--checkpoint_key", default="teacher", help="teacher or student in a DINO training checkpoint")
    schedule = parser.add_argument_group("schedule (published values)")
    schedule.add_argument("--max_iter", default=500, type=int)
    schedule.add_argument("--batch_size", default=50, type=int)
    schedule.add_argument("--lr", default=5e-2, type=float, help="AdamW learning rate")
    schedule.add_argument("--step_lr_size", default=50, type=int, help="iterations between learning-rate decays")
    schedule.add_argument("--step_lr_gamma", default=0.95, type=float, help="learning-rate decay factor")
    schedule.add_argument("--w_bs_loss", default=1.5, type=float, help="weight of the refined self-prediction loss")
    schedule.add_argument(
        "--w_self_loss", default=4.0, type=float, help="weight of the self-prediction loss once found_bkg's stops"
    )
    schedule.add_argument("--stop_bkg_loss", default=100, type=int, help="iterations trained on found_bkg's masks")
    schedule.add_argument("--crop_size", default=224, type=int, help="side of the square training images")
    schedule.add_argument("--bkg_threshold", default=0.3, type=float, help="found_bkg's similarity threshold")
    schedule.add_argument("--seed", default=0, type=int)
    run = parser.add_argument_group("run")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument(
        "--num_workers", default=None, type=int, help="image decoding processes (default: 1 on CPU, up to 8 on GPU)"
    )
    run.add_argument("--overwrite", action="store_true", help="start over instead of resuming the run in --output_dir")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> TrainingSettings:
    """The run's settings from the command line, checked."""
    settings = TrainingSettings(
        data_dir=str(Path(args.data_dir).resolve()),
        arch=args.arch,
        patch_size=args.patch_size,
        pretrained_weights=None if args.pretrained_weights is None else str(Path(args.pretrained_weights).resolve()),
        checkpoint_key=args.checkpoint_key,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        lr=args.lr,
        step_lr_size=args.step_lr_size,
        step_lr_gamma=args.step_lr_gamma,
        w_bs_loss=args.w_bs_loss,
        w_self_loss=args.w_self_loss,
        stop_bkg_loss=args.stop_bkg_loss,
        crop_size=args.crop_size,
        bkg_threshold=args.bkg_threshold,
        seed=args.seed,
    )
    check_settings(settings)
    return settings


# ----------------------------------------------------------------------------------------------
# Images


# ----------------------------------------------------------------------------------------------
# One step


# ----------------------------------------------------------------------------------------------
# Checkpoints


# ----------------------------------------------------------------------------------------------
# The run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    """Train (or resume) the head the command line describes."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    train(settings_from(args), Path(args.output_dir), device, args.num_workers, args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
