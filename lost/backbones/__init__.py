"""Backbones: the table of architectures, building them, loading their weights, and extracting
exactly the features a method asks for.

- :mod:`~lost.backbones.table`: ``--arch`` name -> :class:`Backbone` (DINO ViTs, ResNet-50, VGG16,
  and any timm ViT name), and :class:`BackboneSpec`, every setting that changes features.
- :mod:`~lost.backbones.vit`: timm's ViT with DINO's position embeddings and the attention kernels.
- :mod:`~lost.backbones.timm_names`: timm ViT names (DINOv2 ± registers, DINOv3, ...).
- :mod:`~lost.backbones.convnets`: torchvision's ResNet-50 and VGG16 trunks.
- :mod:`~lost.backbones.loading`: official downloads, checkpoint files, strict weight loading.
- :mod:`~lost.backbones.features`: :class:`FeatureExtractor` -> :class:`Features`,
  ``feats: (B, N, d) float32`` with patch index ``row * w + col`` on the grid ``(h, w)``.
"""

from lost.backbones.convnets import ConvFeatures, resnet50_features, vgg16_features
from lost.backbones.entry import DEFAULT_ROPE_KEYS, ROPE_KEYS, WHICH_FEATURES, Backbone
from lost.backbones.features import FEATURE_NEEDS, FeatureExtractor, Features
from lost.backbones.loading import (
    build_model,
    download_state_dict,
    get_model,
    load_backbone,
    load_checkpoint_state_dict,
    load_weights,
)
from lost.backbones.table import BACKBONES, VIT_NAMES, BackboneSpec, backbone_entry, vit_arch
from lost.backbones.timm_names import is_timm_vit_name, timm_backbone, timm_state_dict, timm_vit
from lost.backbones.vit import (
    DinoVisionTransformer,
    attention_forward,
    blocked_attention,
    dino_position_embeddings,
    embedded_tokens,
    last_attention_inputs,
    last_selfattention,
)

__all__ = [
    "BACKBONES", "DEFAULT_ROPE_KEYS", "FEATURE_NEEDS", "ROPE_KEYS", "VIT_NAMES", "WHICH_FEATURES",
    "Backbone", "BackboneSpec", "ConvFeatures", "DinoVisionTransformer", "FeatureExtractor", "Features",
    "attention_forward", "backbone_entry", "blocked_attention", "build_model", "dino_position_embeddings",
    "download_state_dict", "embedded_tokens", "get_model", "is_timm_vit_name", "last_attention_inputs",
    "last_selfattention", "load_backbone", "load_checkpoint_state_dict", "load_weights", "resnet50_features",
    "timm_backbone", "timm_state_dict", "timm_vit", "vgg16_features", "vit_arch",
]
