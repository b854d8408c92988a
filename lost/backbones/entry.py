"""One entry of the backbone table (:class:`Backbone`) and the feature options every entry shares."""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

WHICH_FEATURES = ("k", "q", "v")
ROPE_KEYS = ("pre", "post")
DEFAULT_ROPE_KEYS = "pre"
"""Keys (and queries) of RoPE models are read before the rotary embedding by default: their
similarities then do not depend on where the two patches are (see the README, Backbones)."""


@dataclass(frozen=True)
class Backbone:
    """One entry of the backbone table: everything the code needs to know of an architecture.

    name: the ``--arch`` value. kind: ``"vit"`` (tokens: prefix tokens then patches, features
    read from the last block's attention) or ``"conv"`` (the last feature map).
    build: ``build(patch_size, resnet_dilate, initialize) -> nn.Module``, randomly initialized;
    ``initialize=False`` may skip the initialization of a model whose weights are loaded next.
    patch_sizes: the patch sizes it is built with (ViT); a ConvNet ignores ``--patch_size``.
    official_weights: ``official_weights(patch_size) -> URL`` or None when there is none.
    prefix_tokens: tokens before the patches (CLS, registers) dropped from the patch features.
    dilated: whether ``--resnet_dilate`` applies (and so names the experiment).
    from_timm: a timm model name (:func:`timm_backbone`): one patch size, the model's, whatever
    ``--patch_size`` says; weights from timm's pretrained download; labelled by the name alone.
    """

    name: str
    kind: str
    build: Callable[[int, int, bool], nn.Module]
    patch_sizes: tuple[int, ...]
    official_weights: Callable[[int], str | None]
    prefix_tokens: int = 1
    dilated: bool = False
    from_timm: bool = False

    @property
    def is_vit(self) -> bool:
        return self.kind == "vit"

    def label(self, patch_size: int, resnet_dilate: int, separator: str = "") -> str:
        """The backbone part of an experiment name: ``vit_small16`` (``vit_small-16`` with
        separator ``-``), ``resnet50dilate2``, ``vgg16_imagenet``, or a timm name as it is
        (``vit_small_patch14_reg4_dinov2.lvd142m``)."""
        if self.from_timm:
            return self.name
        if self.is_vit:
            return f"{self.name}{separator}{patch_size}"
        if self.dilated:
            return f"{self.name}dilate{resnet_dilate}"
        return self.name
