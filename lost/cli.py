"""Command-line flags the discovery scripts share (``main_lost.py``, ``main_saliency_evaluation.py``):
the backbone, the method table and the engine, read back into a :class:`BackboneSpec`, the chosen
method's parameter dataclass and plain values. A flag that does not apply to
the chosen method or backbone is refused with one line, never ignored. The scripts' argparse
stops here; nothing below sees a namespace."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

import torch

from lost.backbones import ROPE_KEYS, WHICH_FEATURES, BackboneSpec, backbone_entry
from lost.engine.discovery import PRECISIONS
from lost.errors import LostError
from lost.methods import METHODS
from lost.methods.entry import Method
from lost.run_spec import BACKBONE_OPTIONS, DEFAULT_MAX_SIZE

BACKBONE_DEFAULTS = BackboneSpec()


def add_backbone_flags(parser: argparse.ArgumentParser) -> None:
    """The ``model`` group: --arch, --patch_size, --pretrained_weights, --checkpoint_key,
    --resnet_dilate, --which_features, --rope_keys. The options that apply to some backbones
    only default to None, so that :func:`backbone_spec` knows whether they were given."""
    model = parser.add_argument_group("model")
    defaults = BACKBONE_DEFAULTS
    model.add_argument("--arch", default=defaults.arch, help="backbone: vit_tiny, vit_small, vit_base, resnet50, resnet50_imagenet, vgg16_imagenet, or a timm ViT name such as vit_small_patch14_reg4_dinov2.lvd142m")
    model.add_argument("--patch_size", default=None, type=int, choices=[8, 16], help=f"patch size of DINO's ViTs (default: {defaults.patch_size}; a timm name has its own)")
    model.add_argument("--pretrained_weights", default=None, help="local checkpoint instead of the official download")
    model.add_argument("--checkpoint_key", default=defaults.checkpoint_key, help="teacher or student in a DINO training checkpoint")
    model.add_argument("--resnet_dilate", default=None, type=int, choices=[1, 2, 4], help=f"ResNet dilation level (default: {defaults.resnet_dilate})")
    model.add_argument("--which_features", default=None, choices=WHICH_FEATURES, help=f"last-block features of a ViT (default: {defaults.which_features})")
    model.add_argument("--rope_keys", default=None, choices=ROPE_KEYS, help=f"RoPE models (DINOv3): keys/queries before or after the rotary embedding (default: {defaults.rope_keys})")


def backbone_spec(args: argparse.Namespace, method: Method | None = None) -> BackboneSpec:
    """The backbone named by the flags of :func:`add_backbone_flags` (a script may declare some
    of them only); LostError for an option given where it does not apply (``--patch_size`` with
    a timm name, ``--resnet_dilate`` with a ViT, ``--which_features`` with a method that reads no
    patch features)."""
    entry = backbone_entry(args.arch)
    options = {}
    for name, option in BACKBONE_OPTIONS.items():
        given = getattr(args, name, None)
        if given is None:
            continue
        if not option.backbone(entry):
            raise LostError(f"{option.flag} applies to {option.applies_to}; not to --arch {args.arch}")
        if method is not None and not option.applies(entry, method):
            raise LostError(f"{option.flag} applies to {option.applies_to}; not to --method {method.name}")
        options[name] = given
    weights = None if args.pretrained_weights is None else str(args.pretrained_weights)
    return BackboneSpec(arch=args.arch, weights=weights, checkpoint_key=args.checkpoint_key, **options)


def add_engine_flags(group: argparse._ArgumentGroup) -> None:
    """--device, --batch_size, --num_workers, --precision, --max_size (the engine's settings)."""
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument("--batch_size", default=None, type=int, help="images per forward pass (default: 4 on CPU, 16 on GPU)")
    group.add_argument("--num_workers", default=None, type=int, help="image decoding processes (default: 1 on CPU, up to 8 on GPU)")
    group.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="backbone precision")
    group.add_argument("--max_size", default=DEFAULT_MAX_SIZE, type=int, help="scale down images whose longer side exceeds this (0: never); boxes are given in original pixels")


def default_workers(device: torch.device) -> int:
    """Decoding processes: 1 beside a CPU run (decoding takes ~2% of an image's time there and the
    backbone needs the cores), up to 8 to feed a GPU."""
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 1


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass: 16 on a GPU, 4 on the CPU."""
    return 16 if device.type == "cuda" else 4


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One argparse flag per method parameter, from the fields' :func:`flag` metadata.

    Methods may share a flag (``--tau``) with defaults of their own: the flags default to None
    and :func:`params_from_args` fills in the chosen method's default.
    """
    group = parser.add_argument_group("method parameters (each applies to the methods named)")
    for name, (param, defaults) in _flag_declarations().items():
        options = {key: value for key, value in param.metadata.items() if key not in ("flag", "help")}
        if "action" not in options:
            options["type"] = type(param.default)
        help_text = f"{param.metadata['help']} (default: {', '.join(defaults)})"
        group.add_argument(name, dest=_dest(name), default=None, help=help_text, **options)


def _flag_declarations() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Flag -> (its first declaring field, ``"<default> for <method>"`` of every method using it)."""
    declared: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for method in METHODS.values():
        for param in dataclasses.fields(method.params):
            entry = declared.setdefault(param.metadata["flag"], (param, []))
            entry[1].append(f"{param.name}={param.default} for {method.name}")
    return declared


def methods_of_flag(flag_name: str) -> list[str]:
    """The methods that declare ``flag_name`` (``--tau`` -> tokencut, maskcut)."""
    return [
        method.name
        for method in METHODS.values()
        if any(param.metadata["flag"] == flag_name for param in dataclasses.fields(method.params))
    ]


def params_from_args(method: Method, args: argparse.Namespace) -> Any:
    """The method's parameter dataclass filled from the parsed flags (None: the method's default);
    LostError for a flag of another method (``--tau applies to tokencut, maskcut; not to
    --method lost``)."""
    own = {param.metadata["flag"]: param for param in dataclasses.fields(method.params)}
    for flag_name in _flag_declarations():
        if flag_name not in own and getattr(args, _dest(flag_name)) is not None:
            raise LostError(
                f"{flag_name} applies to {', '.join(methods_of_flag(flag_name))}; not to --method {method.name}"
            )
    values = {}
    for flag_name, param in own.items():
        given = getattr(args, _dest(flag_name))
        values[param.name] = param.default if given is None else given
    return method.params(**values)


def _dest(flag_name: str) -> str:
    return flag_name.lstrip("-")
