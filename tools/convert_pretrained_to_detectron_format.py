"""Convert a torchvision-named ResNet-50 checkpoint (DINO's) into detectron2's weight format.

    python tools/convert_pretrained_to_detectron_format.py --input data/dino_resnet50_pretrain.pth \
        --output data/dino_RN50_pretrain_d2_format.pkl

DINO's ResNet-50: https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth
The output is the MODEL.WEIGHTS of the tools/configs/RN50_DINO_FRCNN_*.yaml trainings.
"""

import argparse
import sys
from pathlib import Path

from lost import backbones
from lost.detection import data as detection_data
from lost.errors import run_cli
from lost.io import safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert ResNet-50 weights to detectron2's format.")
    parser.add_argument("--input", type=Path, required=True, help="torchvision-named ResNet-50 checkpoint (.pth)")
    parser.add_argument("--output", type=Path, required=True, help="detectron2 weights to write (.pkl)")
    parser.add_argument(
        "--checkpoint_key", default="teacher", help="entry of a training checkpoint holding the weights"
    )
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> None:
    state_dict = backbones.load_checkpoint_state_dict(args.input, args.checkpoint_key, flag="--input")
    weights = detection_data.resnet50_to_detectron2(state_dict, f"--input {args.input}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    safe_files.atomic_write(args.output, detection_data.detectron2_weights_pickle(weights))
    print(f"{len(weights)} ResNet-50 parameters written in detectron2's format at {args.output}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: convert(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
