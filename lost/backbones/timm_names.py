"""Any timm ViT name as a backbone: DINOv2 with or without registers, DINOv3, DINO v1 under its
timm name (``vit_small_patch16_224.dino``, which is DINO's model with DINO's position embeddings).

Its patch size and prefix tokens (CLS, registers) are the model's, its position embeddings (or
rotary embeddings) are resized timm's way, and its weights are timm's pretrained ones or a
checkpoint file, official DINOv2/DINOv3 layouts included (converted by timm's own checkpoint
filters).
"""

import contextlib
import functools
import io
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import Attention
from timm.models import eva as timm_eva
from timm.models import vision_transformer as timm_vision_transformer
from timm.models._hub import get_cache_dir, has_hf_hub
from torch import Tensor, nn

from lost.backbones.entry import Backbone
from lost.backbones.vit import DinoVisionTransformer, timm_patch_size, use_lost_attention
from lost.errors import LostError, one_line

DINO_V1_TAG = "dino"
"""timm's pretrained tag of DINO v1's weights (``vit_small_patch16_224.dino``, ...)."""
TIMM_VIT_MODULES = ("vision_transformer", "deit", "eva")
"""timm's model files whose models are ViTs LOST can read (given standard or EVA blocks)."""
TIMM_EXAMPLE = "vit_small_patch14_reg4_dinov2.lvd142m"


def is_timm_vit_name(name: str) -> bool:
    """Whether timm builds ``name`` (``architecture`` or ``architecture.tag``, tag known) from
    one of :data:`TIMM_VIT_MODULES`."""
    if not (timm.is_model(name) and timm.models.is_model_in_modules(name, TIMM_VIT_MODULES)):
        return False
    try:
        timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        return False
    return True


@functools.cache
def timm_backbone(name: str) -> Backbone:
    """The entry of the timm ViT ``name``. Its patch size and prefix tokens are read off the model
    built on the meta device (no memory, no download); LostError when its blocks are of a kind
    whose features this module cannot read."""
    with torch.device("meta"):
        probe = timm_vit(name)
    return Backbone(
        name, "vit", lambda _p, _d, _i: timm_vit(name), (timm_patch_size(probe),), lambda _p: None,
        probe.num_prefix_tokens, from_timm=True,
    )


def timm_vit(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """The timm ViT ``name`` without classifier, in eval mode with gradients off, for images of
    any size: random weights, or timm's pretrained ones from its cache (downloaded once; LostError
    naming the cache folder and ``--pretrained_weights`` when that fails). ``overrides`` go to
    ``timm.create_model`` (``depth=2``, ``embed_dim=48``, ...).

    DINO v1 (tag ``dino``) is a :class:`DinoVisionTransformer`, with DINO's resizing of the
    position embeddings; every other model resizes them (or its rotary embeddings) timm's way
    (``dynamic_img_size``). Attention runs through :func:`attention_forward`.
    """
    if timm.models.split_model_name_tag(name)[1] == DINO_V1_TAG:
        source = _create_timm_model(name, pretrained, num_classes=0, **overrides)
        model = DinoVisionTransformer(
            timm_patch_size(source), source.embed_dim, len(source.blocks), source.blocks[0].attn.num_heads,
            source.patch_embed.img_size[0],
        )
        model.load_state_dict(source.state_dict())
    else:
        model = _create_timm_model(
            name, pretrained, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True, **overrides
        )
        _check_readable(name, model)
        use_lost_attention(model)
    return model.eval().requires_grad_(False)


def _check_readable(name: str, model: nn.Module) -> None:
    """LostError unless every block is timm's standard or EVA block with its own attention (whose
    queries, keys and values :func:`attention_qkv` reads; a rotary embedding per block, timm's
    "mixed" RoPE, comes only with other attention modules)."""
    for block in model.blocks:
        attn = getattr(block, "attn", None)
        if type(block) not in (timm_vision_transformer.Block, timm_eva.EvaBlock) or type(attn) not in (Attention, timm_eva.EvaAttention):
            raise LostError(
                f"--arch {name}: timm builds it with {type(block).__name__} blocks and {type(attn).__name__} "
                "attention, whose features LOST cannot read; choose a ViT of timm's standard or EVA blocks"
            )


def _create_timm_model(name: str, pretrained: bool, **options: Any) -> nn.Module:
    if not pretrained:
        return timm.create_model(name, pretrained=False, **options)
    cfg = timm.models.get_pretrained_cfg(name)
    if not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise LostError(f"--arch {name}: timm has no pretrained weights for it; pass --pretrained_weights PATH")
    try:
        return timm.create_model(name, pretrained=True, **options)
    except OSError as exc:  # no network, HTTP errors, a missing cache entry
        raise LostError(
            f"--arch {name}: cannot get timm's pretrained weights ({one_line(exc)}); connect to the network "
            f"once (timm keeps them in {timm_cache_folder(cfg)}), or pass --pretrained_weights PATH to a "
            "checkpoint of this model"
        ) from exc


def timm_cache_folder(cfg: Any) -> Path:
    """Where timm keeps the downloaded weights of a pretrained configuration: the Hugging Face
    hub cache for hub weights, else the torch hub checkpoints folder."""
    if cfg.hf_hub_id and has_hf_hub():
        import huggingface_hub.constants

        return Path(huggingface_hub.constants.HF_HUB_CACHE)
    return Path(get_cache_dir())


def timm_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint for a timm ViT in timm's key layout, converted by timm's own checkpoint filter
    of the model's family (official DINOv2 files: ``mask_token``, ``register_tokens``, position
    embeddings with the CLS entry; official DINOv3 files: ``storage_tokens``, ``ls1.gamma``, one
    ``qkv.bias``). A patch embedding of another patch size is kept as it is, so that
    :func:`load_weights` reports it instead of the filter resampling it."""
    filter_fn = timm_eva.checkpoint_filter_fn if isinstance(model, timm_eva.Eva) else timm_vision_transformer.checkpoint_filter_fn
    with contextlib.redirect_stdout(io.StringIO()):  # EVA's filter prints every bias it sets aside
        converted = filter_fn(dict(state_dict), model)
    patch_key = "patch_embed.proj.weight"
    if patch_key in state_dict and state_dict[patch_key].shape[-2:] != model.patch_embed.proj.weight.shape[-2:]:
        converted[patch_key] = state_dict[patch_key]
    return converted
