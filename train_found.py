"""Train FOUND's head, or PEEKABOO's, on a folder of images (the papers: DUTS-TR, 10,553 images).

    python train_found.py --data_dir datasets/DUTS/DUTS-TR-Image --output_dir outputs/found
    python train_found.py --recipe peekaboo --data_dir datasets/DUTS/DUTS-TR-Image --output_dir outputs/peekaboo

PEEKABOO's recipe is FOUND's with masked images added and found_bkg's targets left out, so it is
an option of this command rather than a second one: the backbone, schedule and run flags are
the same. Writes ``<output_dir>/decoder_weights.pt`` in the released format (for
``--found_weights`` or ``--peekaboo_weights``) and ``<output_dir>/last_checkpoint.pt`` after
every iteration; the same command resumes a killed run. The schedule, the losses and the
differences from the published scripts: :mod:`lost.training.found`, :mod:`lost.training.masking`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lost.backbones import VIT_NAMES
from lost.errors import LostError, run_cli
from lost.training.found import TrainingSettings, check_settings, train
from lost.training.masking import MaskingSettings

STOP_BKG_LOSS = {"found": 100, "peekaboo": 0}
"""Iterations trained on found_bkg's masks: FOUND's published 100; PEEKABOO uses none."""

MASKING_FLAGS = ("scribbles", "w_mfp_loss", "w_pcl_loss", "mask_coverage")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train FOUND's head, or PEEKABOO's, on a folder of images.")
    parser.add_argument(
        "--recipe", default="found", choices=sorted(STOP_BKG_LOSS), help="FOUND's training, or PEEKABOO's masked images"
    )
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
    schedule.add_argument(
        "--stop_bkg_loss",
        default=None,
        type=int,
        help="iterations trained on found_bkg's masks (found: 100, peekaboo: 0)",
    )
    schedule.add_argument("--crop_size", default=224, type=int, help="side of the square training images")
    schedule.add_argument("--bkg_threshold", default=0.3, type=float, help="found_bkg's similarity threshold")
    schedule.add_argument("--seed", default=0, type=int)
    masking = parser.add_argument_group("masked images (--recipe peekaboo only)")
    masking.add_argument(
        "--scribbles", default=None, help="folder of the official masks (SCRIBBLES.zip); default: procedural masks"
    )
    masking.add_argument("--w_mfp_loss", default=None, type=float, help="weight of the masked-view loss (default: 1)")
    masking.add_argument("--w_pcl_loss", default=None, type=float, help="weight of the consistency loss (default: 1)")
    masking.add_argument(
        "--mask_coverage", default=None, type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="range of the hidden share of procedural masks (default: 0.3 0.6)",
    )  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument(
        "--num_workers", default=None, type=int, help="image decoding processes (default: 1 on CPU, up to 8 on GPU)"
    )
    run.add_argument("--overwrite", action="store_true", help="start over instead of resuming the run in --output_dir")
    return parser.parse_args(argv)


def masking_from(args: argparse.Namespace) -> MaskingSettings | None:
    """PEEKABOO's masked-image settings (None for FOUND's recipe, which refuses their flags)."""
    given = [name for name in MASKING_FLAGS if getattr(args, name) is not None]
    if args.recipe != "peekaboo":
        if given:
            raise LostError(f"--{given[0]} applies to --recipe peekaboo only; add --recipe peekaboo or drop it")
        return None
    if args.scribbles is not None and args.mask_coverage is not None:
        raise LostError("--mask_coverage shapes procedural masks, not --scribbles files; drop one of them")
    defaults = MaskingSettings()
    return MaskingSettings(
        w_mfp_loss=defaults.w_mfp_loss if args.w_mfp_loss is None else args.w_mfp_loss,
        w_pcl_loss=defaults.w_pcl_loss if args.w_pcl_loss is None else args.w_pcl_loss,
        scribbles=None if args.scribbles is None else str(Path(args.scribbles).resolve()),
        coverage=defaults.coverage if args.mask_coverage is None else tuple(args.mask_coverage),
    )


def settings_from(args: argparse.Namespace) -> TrainingSettings:
    """The run's settings from the command line, checked."""
    stop_bkg_loss = STOP_BKG_LOSS[args.recipe] if args.stop_bkg_loss is None else args.stop_bkg_loss
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
        stop_bkg_loss=stop_bkg_loss,
        crop_size=args.crop_size,
        bkg_threshold=args.bkg_threshold,
        seed=args.seed,
        masking=masking_from(args),
    )
    check_settings(settings)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    """Train (or resume) the head the command line describes."""
    settings = settings_from(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    train(settings, Path(args.output_dir), device, args.num_workers, args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
