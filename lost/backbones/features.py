"""Extracting exactly the features a method asks for, in one pass.

A feature map leaves this module as :class:`Features`: ``feats: (B, N, d) float32`` with patch
index ``row * w + col`` on the grid ``(h, w)``, and the image pixels per feature cell ``(sy, sx)``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lost.backbones.entry import DEFAULT_ROPE_KEYS, ROPE_KEYS, WHICH_FEATURES
from lost.backbones.table import VIT_NAMES, BackboneSpec, backbone_entry
from lost.backbones.vit import attention_map, last_attention_inputs, rotated, timm_patch_size
from lost.errors import LostError

FEATURE_NEEDS = frozenset({"feats", "cls_attention"})
"""What a method may ask of the backbone: the patch features, the CLS attention over patches."""


@dataclass(frozen=True)
class Features:
    """What the backbone gives a method for a batch of same-size padded images.

    feats: (B, N, d) float32, patch index ``row * w + col`` (None when not asked for).
    cls_attention: (B, heads, N), the last block's attention of the CLS query over the patches
        only (prefix tokens dropped; None when not asked for).
    grid: (h, w) = (rows, cols); scales: (sy, sx) = image pixels per feature cell along rows /
    cols: the patch size (ints) for a ViT, padded size / map size (floats) for a CNN; boxes
    inherit that type.
    """

    feats: Tensor | None
    grid: tuple[int, int]
    scales: tuple[float, float]
    cls_attention: Tensor | None = None


class FeatureExtractor:
    """The features a method works on, for a batch of same-size padded images.

    ViT: the last block's keys (or queries/values), heads concatenated in head order, prefix
    tokens (CLS, registers) dropped, before or after the rotary position embedding of a RoPE
    model (``rope_keys``); and the CLS attention over the patches. ResNet/VGG: the last feature
    map, standardized by a layer norm over each image's (N, d) map.
    patch_size: a ViT's is its model's (ValueError when given and different); a ConvNet's is the
    padding multiple (default 16).
    The model runs where its parameters are; images are moved there.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        patch_size: int | None = None,
        which_features: str = "k",
        rope_keys: str = DEFAULT_ROPE_KEYS,
    ):
        if which_features not in WHICH_FEATURES:
            raise LostError(f"--which_features {which_features}: choose k, q or v")
        if rope_keys not in ROPE_KEYS:
            raise LostError(f"--rope_keys {rope_keys}: choose pre or post")
        self.model = model
        self.backbone = backbone_entry(arch)
        self.is_vit = self.backbone.is_vit
        self.arch = arch
        self.which_features = which_features
        self.rope_keys = rope_keys
        self.patch_size = self._checked_vit(patch_size) if self.is_vit else patch_size or 16
        self.pad_multiple = self.patch_size

    @classmethod
    def for_spec(cls, model: nn.Module, spec: BackboneSpec) -> "FeatureExtractor":
        """The extractor of a model loaded from ``spec`` (a timm name's patch size is its model's)."""
        patch_size = None if spec.entry.from_timm else spec.patch_size
        return cls(model, spec.arch, patch_size, spec.which_features, spec.rope_keys)

    def _checked_vit(self, patch_size: int | None) -> int:
        """The model's patch size, after checking the model against the stated patch size, the
        entry's prefix tokens and ``rope_keys``."""
        model_patch = timm_patch_size(self.model)
        if patch_size is not None and model_patch != patch_size:
            raise ValueError(f"patch_size {patch_size} differs from the model's {model_patch}")
        if self.model.num_prefix_tokens != self.backbone.prefix_tokens:
            raise ValueError(
                f"the model has {self.model.num_prefix_tokens} prefix tokens, --arch {self.arch} has "
                f"{self.backbone.prefix_tokens}"
            )
        if self.rope_keys != DEFAULT_ROPE_KEYS and getattr(self.model, "rope", None) is None:
            raise LostError(
                f"--rope_keys {self.rope_keys}: --arch {self.arch} has no rotary position embedding; "
                f"drop --rope_keys"
            )
        return model_patch

    @property
    def num_heads(self) -> int:
        """Attention heads of the last block (1 for a ConvNet)."""
        return self.model.blocks[-1].attn.num_heads if self.is_vit else 1

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Features:
        """images: (B, 3, H, W) normalized and padded to a multiple of ``pad_multiple`` -> feats."""
        return self.extract(images, frozenset({"feats"}))

    @torch.no_grad()
    def extract(self, images: Tensor, needs: frozenset[str]) -> Features:
        """Exactly the features in ``needs`` (a subset of :data:`FEATURE_NEEDS`), in one pass.

        A ViT stops at the last block's queries, keys and values; both the patch features and
        the CLS attention are read from them.
        """
        unknown = needs - FEATURE_NEEDS
        if unknown:
            raise ValueError(f"unknown feature needs {sorted(unknown)}")
        images = self._to_model_device(images)
        if not self.is_vit:
            if "cls_attention" in needs:
                raise LostError(f"this method needs a ViT --arch ({', '.join(VIT_NAMES)} or a timm ViT), not {self.arch}")
            return self._conv_features(images)
        if "cls_attention" in needs and getattr(self.model, "cls_token", None) is None:
            raise LostError(f"this method needs the CLS token's attention; --arch {self.arch} has no CLS token")
        grid = self._vit_grid(images)
        q, k, v, rope = last_attention_inputs(self.model, images)
        feats = self._vit_patch_features(q, k, v, rope) if "feats" in needs else None
        attention = self._vit_cls_attention(q, k, rope) if "cls_attention" in needs else None
        return Features(feats, grid, (self.patch_size, self.patch_size), attention)

    @torch.no_grad()
    def cls_attention(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images: (B, 3, H, W) -> (CLS attention on the patches (B, heads, N), grid (h, w))."""
        features = self.extract(images, frozenset({"cls_attention"}))
        return features.cls_attention, features.grid

    def _to_model_device(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        return images.to(device, non_blocking=True)

    def _vit_grid(self, images: Tensor) -> tuple[int, int]:
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"images {h}x{w} are not padded to a multiple of the patch size {p}")
        return h // p, w // p

    def _vit_patch_features(self, q: Tensor, k: Tensor, v: Tensor, rope: Tensor | None) -> Tensor:
        """q, k, v of the last block (B, heads, T, d/heads) before RoPE -> the chosen part of the
        patches, rotated for ``rope_keys`` post (values never are), heads concatenated in head
        order: (B, N, d) float32."""
        part = {"q": q, "k": k, "v": v}[self.which_features]
        if self.rope_keys == "post" and self.which_features != "v":
            part = rotated(self.model.blocks[-1].attn, part, rope)
        b, _, t, _ = part.shape
        return part.transpose(1, 2).reshape(b, t, -1)[:, self.model.num_prefix_tokens :].float().contiguous()

    def _vit_cls_attention(self, q: Tensor, k: Tensor, rope: Tensor | None) -> Tensor:
        """q, k: (B, heads, T, d/heads) before RoPE -> softmax attention of the CLS query over every
        token, read over the patches: (B, heads, N)."""
        attn = self.model.blocks[-1].attn
        cls_query = rotated(attn, q, rope)[:, :, :1]
        return attention_map(cls_query, rotated(attn, k, rope), attn.scale)[:, :, 0, self.model.num_prefix_tokens :]

    def _conv_features(self, images: Tensor) -> Features:
        maps = self.model(images)
        h, w = maps.shape[-2:]
        feats = maps.flatten(2).transpose(1, 2)
        feats = F.layer_norm(feats.float(), feats.shape[-2:])
        return Features(feats, (h, w), (images.shape[-2] / h, images.shape[-1] / w))
