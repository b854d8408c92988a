"""Command-line pieces the discovery scripts share: the backbone flags, the engine flags, and
the values derived from them (``main_lost.py``, ``main_saliency_evaluation.py``).

Each function takes the parser or the parsed namespace at the scripts' edge and returns plain
values (a :class:`BackboneSpec`, a device, counts), so that the namespace stops in the scripts.
"""

from __future__ import annotations

import argparse
import os

import torch

from lost.backbones import BackboneSpec
from lost.engine.discovery import PRECISIONS


def add_backbone_flags(parser: argparse.ArgumentParser) -> None:
    """The ``model`` group: --arch, --patch_size, --pretrained_weights, --checkpoint_key,
    --resnet_dilate, --which_features, --rope_keys."""
    model = parser.add_argument_group("model")
    model.add_argument("--arch", default="vit_small", help="backbone: vit_tiny, vit_small, vit_base, resnet50, resnet50_imagenet, vgg16_imagenet, or a timm ViT name such as vit_small_patch14_reg4_dinov2.lvd142m")
    model.add_argument("--patch_size", default=16, type=int, choices=[8, 16], help="ViT patch size (and padding multiple)")
    model.add_argument("--pretrained_weights", default=None, help="local checkpoint instead of the official download")
    model.add_argument("--checkpoint_key", default="teacher", help="teacher or student in a DINO training checkpoint")
    model.add_argument("--resnet_dilate", default=2, type=int, choices=[1, 2, 4], help="ResNet dilation level")
    model.add_argument("--which_features", default="k", choices=["k", "q", "v"], help="last-block features")
    model.add_argument("--rope_keys", default="pre", choices=["pre", "post"], help="RoPE models (DINOv3): keys/queries before or after the rotary embedding")


def backbone_spec(args: argparse.Namespace) -> BackboneSpec:
    """The backbone named by the flags of :func:`add_backbone_flags`."""
    return BackboneSpec(
        arch=args.arch,
        patch_size=args.patch_size,
        resnet_dilate=args.resnet_dilate,
        weights=None if args.pretrained_weights is None else str(args.pretrained_weights),
        checkpoint_key=args.checkpoint_key,
        which_features=args.which_features,
        rope_keys=args.rope_keys,
    )


def add_engine_flags(group: argparse._ArgumentGroup) -> None:
    """--device, --batch_size, --num_workers, --precision, --max_size (the engine's settings)."""
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument("--batch_size", default=None, type=int, help="images per forward pass (default: 4 on CPU, 16 on GPU)")
    group.add_argument("--num_workers", default=None, type=int, help="image decoding processes (default: 1 on CPU, up to 8 on GPU)")
    group.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="backbone precision")
    group.add_argument("--max_size", default=1024, type=int, help="scale down images whose longer side exceeds this (0: never); boxes are given in original pixels")


def default_workers(device: torch.device) -> int:
    """Decoding processes: 1 beside a CPU run (decoding takes ~2% of an image's time there and the
    backbone needs the cores), up to 8 to feed a GPU."""
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 1


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: 16 on a GPU, 4 on the CPU."""
    return 16 if device.type == "cuda" else 4
