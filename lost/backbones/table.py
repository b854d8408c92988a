"""The backbone table: ``--arch`` name -> :class:`Backbone`, and :class:`BackboneSpec`, every
setting of the backbone that changes features."""

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torchvision

from lost.backbones.convnets import resnet50_features, vgg16_features
from lost.backbones.entry import DEFAULT_ROPE_KEYS, Backbone
from lost.backbones.timm_names import TIMM_EXAMPLE, is_timm_vit_name, timm_backbone
from lost.backbones.vit import DinoVisionTransformer
from lost.errors import LostError

DINO_URL = "https://dl.fbaipublicfiles.com/dino/"


def dino_vit_weights(name: str) -> Callable[[int], str | None]:
    """URL of DINO's official checkpoint of the ViT ``name`` by patch size (None if unpublished)."""
    files = {
        ("vit_small", 16): "dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
        ("vit_small", 8): "dino_deitsmall8_300ep_pretrain/dino_deitsmall8_300ep_pretrain.pth",
        ("vit_base", 16): "dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
        ("vit_base", 8): "dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
    }
    return lambda patch_size: DINO_URL + files[(name, patch_size)] if (name, patch_size) in files else None


def torchvision_weights(weights_enum: str) -> Callable[[int], str]:
    """URL of torchvision's ImageNet weights ``weights_enum`` (e.g. ``ResNet50_Weights``)."""
    return lambda _patch_size: getattr(torchvision.models, weights_enum).IMAGENET1K_V1.url


def dino_vit(embed_dim: int, num_heads: int) -> Callable[[int, int, bool], DinoVisionTransformer]:
    """Builder of DINO's 12-block ViT of width ``embed_dim``."""
    return lambda patch_size, _dilate, initialize: DinoVisionTransformer(
        patch_size, embed_dim, depth=12, num_heads=num_heads, initialize=initialize
    )


BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone("vit_tiny", "vit", dino_vit(192, 3), (8, 16), dino_vit_weights("vit_tiny")),
        Backbone("vit_small", "vit", dino_vit(384, 6), (8, 16), dino_vit_weights("vit_small")),
        Backbone("vit_base", "vit", dino_vit(768, 12), (8, 16), dino_vit_weights("vit_base")),
        Backbone(
            "resnet50", "conv", lambda _p, dilate, _i: resnet50_features(dilate), (), lambda _p: DINO_URL
            + "dino_resnet50_pretrain/dino_resnet50_pretrain.pth", 0, dilated=True,
        ),
        Backbone(
            "resnet50_imagenet", "conv", lambda _p, dilate, _i: resnet50_features(dilate), (),
            torchvision_weights("ResNet50_Weights"), 0, dilated=True,
        ),
        Backbone("vgg16_imagenet", "conv", lambda _p, _d, _i: vgg16_features(), (), torchvision_weights("VGG16_Weights"), 0),
    )
}
"""The backbone table: ``--arch`` name -> :class:`Backbone`."""

VIT_NAMES = tuple(name for name, backbone in BACKBONES.items() if backbone.is_vit)


def backbone_entry(arch: str) -> Backbone:
    """The entry of ``arch``: the table's, or one built for a timm ViT name (:func:`timm_backbone`);
    LostError for any other name."""
    if arch in BACKBONES:
        return BACKBONES[arch]
    if is_timm_vit_name(arch):
        return timm_backbone(arch)
    raise LostError(
        f"--arch {arch}: unknown architecture; choose one of {', '.join(BACKBONES)} or a timm ViT name "
        f"such as {TIMM_EXAMPLE}"
    )


def vit_arch(name: str) -> str:
    """``name`` when it names a ViT backbone (table or timm), for argparse's ``type=``;
    ``argparse.ArgumentTypeError`` otherwise."""
    try:
        entry = backbone_entry(name)
    except LostError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not entry.is_vit:
        raise argparse.ArgumentTypeError(f"{name} is not a ViT; choose one of {', '.join(VIT_NAMES)} or a timm ViT name")
    return name


@dataclass(frozen=True)
class BackboneSpec:
    """Every setting of the backbone that changes features: the architecture and its options,
    the weights (None: the official download) and which last-block features are read, with the
    rotary position embedding applied or not (``rope_keys``, RoPE models only)."""

    arch: str = "vit_small"
    patch_size: int = 16
    resnet_dilate: int = 2
    weights: str | None = None
    checkpoint_key: str = "teacher"
    which_features: str = "k"
    rope_keys: str = "pre"

    @property
    def entry(self) -> Backbone:
        return backbone_entry(self.arch)

    def label(self, separator: str = "") -> str:
        """``vit_small16``, ``resnet50dilate2``, ``vit_small_patch16_dinov3.lvd1689m``, ...: the
        backbone part of experiment names (``vit_small-16`` with separator ``-``); post-RoPE
        features add ``_postrope``."""
        label = self.entry.label(self.patch_size, self.resnet_dilate, separator)
        return label if self.rope_keys == DEFAULT_ROPE_KEYS else f"{label}_{self.rope_keys}rope"

    def model_id(self) -> str:
        """One string naming the model and its weights (caches of features are keyed by it)."""
        return f"{self.label()} {self.weights or 'official weights'} {self.checkpoint_key}"
