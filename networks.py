"""Backbones for LOST: building them, loading their weights, extracting the features LOST needs.

Vision Transformers are timm's. The table's DINO ViTs (``vit_tiny``, ``vit_small``, ``vit_base``)
are timm's ViT, whose parameter names are DINO's, so DINO's checkpoints load as they are, with
DINO's resizing of the position embeddings (:class:`DinoVisionTransformer`): their features are
DINO's. Any timm ViT name is a backbone too (:func:`timm_backbone`: DINOv2 with or without
registers, DINOv3, ...): its patch size and prefix tokens (CLS, registers) are the model's, its
position embeddings (or rotary embeddings) are resized timm's way, and its weights are timm's
pretrained ones or a checkpoint file, official DINOv2/DINOv3 layouts included (converted by timm's
own checkpoint filters). DINO v1 under its timm name (``vit_small_patch16_224.dino``) is DINO's
model as above.

The features are read by running the model's parts here (:func:`last_attention_inputs`): its
patch and position embeddings, the blocks before the last, then the last block's first norm and
its attention's queries, keys and values; nothing after them runs. Every attention module runs
through :func:`attention_forward`, a forward over the module's own parameters that picks the
kernel: ``F.scaled_dot_product_attention``, or in bfloat16 on a CPU :func:`blocked_attention`,
which is faster there; neither changes a result beyond float rounding. A model with rotary
position embeddings (DINOv3) gives its keys before the rotation by default, after it on request
(``rope_keys``); its CLS attention is always the model's own, after the rotation.
:func:`last_selfattention` gives the last block's whole attention matrix, as DINO's
``get_last_selfattention`` does.

ResNet-50 and VGG16 are torchvision's, without their pooling and classifier; their parameter
names stay torchvision's so that torchvision and DINO state dicts load.

A feature map leaves this module as :class:`Features`: ``feats: (B, N, d) float32`` with patch
index ``row * w + col`` on the grid ``(h, w)``, and the image pixels per feature cell ``(sy, sx)``.
"""

import argparse
import contextlib
import functools
import io
import math
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import Attention, apply_rot_embed_cat
from timm.models import eva as timm_eva
from timm.models import vision_transformer as timm_vision_transformer
from timm.models._hub import get_cache_dir, has_hf_hub
from torch import Tensor, nn

from errors import LostError

DINO_URL = "https://dl.fbaipublicfiles.com/dino/"
RESNET_DILATIONS = {1: [False, False, False], 2: [False, False, True], 4: [False, True, True]}
WHICH_FEATURES = ("k", "q", "v")
ROPE_KEYS = ("pre", "post")
DEFAULT_ROPE_KEYS = "pre"
"""Keys (and queries) of RoPE models are read before the rotary embedding by default: their
similarities then do not depend on where the two patches are (see the README, Backbones)."""
DINO_V1_TAG = "dino"
"""timm's pretrained tag of DINO v1's weights (``vit_small_patch16_224.dino``, ...)."""

# Keys of a checkpoint that are not backbone weights: DINO's projection head and timm's classifier
# (``head.*``), torchvision's classifiers (``fc.*``, ``classifier.*``, ConvNets only).
VIT_IGNORED_PREFIXES = ("head.",)
CONV_IGNORED_PREFIXES = ("head.", "fc.", "classifier.")
WRAPPER_PREFIXES = ("module.", "backbone.")
MAX_LISTED = 5


# ----------------------------------------------------------------------------------------------
# Vision Transformers (timm)
# ----------------------------------------------------------------------------------------------


class DinoVisionTransformer(timm_vision_transformer.VisionTransformer):
    """DINO's ViT as timm builds it (qkv bias, LayerNorm eps 1e-6, MLP ratio 4, no classifier;
    DINO's parameter names are timm's), with DINO's resizing of the position embeddings.

    Tokens: CLS first, then the patches row-major; T = 1 + N with N = (H//p) * (W//p) for images
    (B, 3, H, W): like DINO's, the patch embedding takes any image size and leaves out the pixels
    past the last whole patch.
    """

    def __init__(
        self, patch_size: int, embed_dim: int, depth: int, num_heads: int, img_size: int = 224, initialize: bool = True
    ):
        """``initialize=False`` leaves timm's weight initialization out (the parameters hold
        whatever they were created with), for a model whose weights are loaded next."""
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_classes=0,
            dynamic_img_size=True,
            weight_init="" if initialize else "skip",
        )
        self.patch_embed.img_size = None  # timm checks the image size against the patch size only when it has one
        use_lost_attention(self)

    @property
    def num_heads(self) -> int:
        return self.blocks[-1].attn.num_heads

    def _pos_embed(self, x: Tensor) -> Tensor:
        """x: patch tokens (B, rows, cols, d) -> CLS then patches, with DINO's position embeddings: (B, 1 + rows*cols, d)."""
        b, rows, cols, d = x.shape
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), x.reshape(b, rows * cols, d)), dim=1)
        return self.pos_drop(tokens + dino_position_embeddings(self.pos_embed, rows, cols))


def dino_position_embeddings(pos_embed: Tensor, rows: int, cols: int) -> Tensor:
    """Position embeddings (1, 1 + n, d) trained on a sqrt(n) x sqrt(n) grid, for a rows x cols
    grid: (1, 1 + rows*cols, d).

    DINO's resizing, kept exactly (timm's resampling gives other features): unchanged for the
    trained square grid, else a bicubic interpolation with scale factors (rows + 0.1) / sqrt(n)
    and (cols + 0.1) / sqrt(n).
    """
    n = pos_embed.shape[1] - 1
    if rows * cols == n and rows == cols:
        return pos_embed
    side = int(math.sqrt(n))
    patch_pos = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((rows + 0.1) / math.sqrt(n), (cols + 0.1) / math.sqrt(n)),
        mode="bicubic",
    )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat((pos_embed[:, :1], patch_pos), dim=1)


def use_lost_attention(model: nn.Module) -> None:
    """Run the attention modules of a timm ViT's blocks through :func:`attention_forward`."""
    for block in model.blocks:
        block.attn.forward = functools.partial(attention_forward, block.attn)


def attention_forward(
    attn: nn.Module, x: Tensor, rope: Tensor | None = None, attn_mask: Tensor | None = None, is_causal: bool = False
) -> Tensor:
    """What a timm attention module (``Attention``, ``EvaAttention``) computes in eval mode,
    x: (B, T, d) -> (B, T, d), with the kernel chosen by :func:`attention_kernel` (explicit when
    the module's ``fused_attn`` is off, as timm does). Masked or causal calls go to the module's
    own forward."""
    if attn_mask is not None or is_causal:
        rope_argument = {} if rope is None else {"rope": rope}
        return type(attn).forward(attn, x, attn_mask=attn_mask, is_causal=is_causal, **rope_argument)
    q, k, v = attention_qkv(attn, x)
    q, k = (rotated(attn, t, rope).type_as(v) for t in (q, k))
    out = attention_kernel(q, k, v, attn.scale, explicit=not attn.fused_attn)
    b, t, _ = x.shape
    out = attn.norm(out.transpose(1, 2).reshape(b, t, -1))
    gate = getattr(attn, "gate", None)  # older timm releases have no gated attention
    if gate is not None:
        out = out * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out))


def attention_kernel(q: Tensor, k: Tensor, v: Tensor, scale: float, explicit: bool = False) -> Tensor:
    """softmax(q k^T * scale) v for q, k, v: (B, heads, T, dh) -> (B, heads, T, dh).

    ``explicit``: the attention matrix as DINO computes it; else :func:`blocked_attention` for
    bfloat16 on a CPU (faster there), the fused kernel elsewhere.
    """
    if explicit:
        return attention_map(q, k, scale) @ v
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        return blocked_attention(q, k, v, scale)
    return F.scaled_dot_product_attention(q, k, v)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, block_elements: int = 2**20) -> Tensor:
    """softmax(q k^T * scale) v for q, k, v: (B, heads, T, dh) -> (B, heads, T, dh), in their dtype.

    Two batched matrix products and a softmax over blocks of heads and query rows, each block's
    logits holding at most ``block_elements`` values (about 2 MiB in bfloat16: they stay in
    cache). On a CPU with bfloat16 matrix instructions this runs at the matrix products' rate,
    faster than the fused kernel. The logits are rounded to the inputs' dtype before the softmax
    (which computes in float32); the fused kernel keeps them in float32.
    """
    b, heads, t, dh = q.shape
    queries = (q * scale).flatten(0, 1)
    keys_t = k.flatten(0, 1).transpose(1, 2)
    values = v.flatten(0, 1)
    out = torch.empty_like(queries)
    heads_per_block = max(1, block_elements // (t * t))
    rows_per_block = min(t, max(1, block_elements // t))
    with torch.autocast(q.device.type, enabled=False):
        for first in range(0, b * heads, heads_per_block):
            head_slice = slice(first, first + heads_per_block)
            for row in range(0, t, rows_per_block):
                row_slice = slice(row, row + rows_per_block)
                logits = torch.bmm(queries[head_slice, row_slice], keys_t[head_slice])
                torch.bmm(logits.softmax(dim=-1), values[head_slice], out=out[head_slice, row_slice])
    return out.view(b, heads, t, dh)


def attention_map(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """q: (B, heads, Tq, dh), k: (B, heads, T, dh) -> softmax(q k^T * scale): (B, heads, Tq, T)."""
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)


def attention_qkv(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The queries, keys and values of a timm attention module on x: (B, T, d) -> three
    (B, heads, T, d/heads), after its q/k norms and before rotary embeddings. Head h holds the
    channels ``h * d/heads`` to ``(h + 1) * d/heads`` of its part of the projection."""
    b, t, _ = x.shape
    if attn.qkv is None:
        q, k, v = (proj(x).reshape(b, t, attn.num_heads, -1).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    else:
        q, k, v = qkv_projection(attn, x).reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def qkv_projection(attn: nn.Module, x: Tensor) -> Tensor:
    """The fused projection x: (B, T, d) -> (B, T, 3 d), laid out (3, heads, d/heads). EVA's
    attention (DINOv3) keeps its biases apart (``q_bias``, a zero ``k_bias``, ``v_bias``) and
    applies them without calling ``qkv`` when they exist."""
    if getattr(attn, "q_bias", None) is None:
        return attn.qkv(x)
    bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    if attn.qkv_bias_separate:
        return attn.qkv(x) + bias
    return F.linear(x, attn.qkv.weight, bias)


def rotated(attn: nn.Module, t: Tensor, rope: Tensor | None) -> Tensor:
    """Queries or keys t: (B, heads, T, dh) with the rotary position embedding applied to the
    patches (prefix tokens are not rotated); t itself without RoPE."""
    if rope is None:
        return t
    prefix = attn.num_prefix_tokens
    half = getattr(attn, "rotate_half", False)
    return torch.cat((t[:, :, :prefix], apply_rot_embed_cat(t[:, :, prefix:], rope, half=half)), dim=2)


def embedded_tokens(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor | None]:
    """images: (B, 3, H, W) -> the tokens entering the first block (B, T, d), prefix tokens
    (CLS, registers) first, and the model's rotary position embedding (None without RoPE), as
    the model's ``forward_features`` computes them."""
    x = model.patch_embed(images)
    if isinstance(model, timm_eva.Eva):
        x, rope = model._pos_embed(x)
    else:
        x, rope = model.patch_drop(model._pos_embed(x)), None
    return model.norm_pre(x), rope


def last_attention_inputs(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """images: (B, 3, H, W) -> q, k, v of the last block's attention (B, heads, T, d/heads),
    before RoPE, and the rotary embedding of that block (None without RoPE). The blocks before
    run with :func:`attention_kernel`; nothing after the last attention's projection runs."""
    tokens, rope = embedded_tokens(model, images)
    blocks = list(model.blocks)
    for block in blocks[:-1]:
        tokens = block(tokens) if rope is None else block(tokens, rope=rope)
    last = blocks[-1]
    q, k, v = attention_qkv(last.attn, last.norm1(tokens))
    return q, k, v, rope


def last_selfattention(model: nn.Module, images: Tensor) -> Tensor:
    """images: (B, 3, H, W) -> attention of the last block: (B, heads, T, T), softmax(q k^T * scale)
    with the rotary embedding applied, as DINO's ``get_last_selfattention`` computes it."""
    attn = model.blocks[-1].attn
    q, k, _, rope = last_attention_inputs(model, images)
    return attention_map(rotated(attn, q, rope), rotated(attn, k, rope), attn.scale)


def timm_patch_size(model: nn.Module) -> int:
    """The patch side p of a timm ViT (square patches)."""
    rows, cols = model.patch_embed.patch_size
    if rows != cols:
        raise LostError(f"patches of {rows}x{cols} pixels are not supported; choose a ViT with square patches")
    return rows


# ----------------------------------------------------------------------------------------------
# ConvNets (torchvision)
# ----------------------------------------------------------------------------------------------


class ConvFeatures(nn.Sequential):
    """The convolutional trunk of a torchvision classifier: (B, 3, H, W) -> (B, d, h, w).

    Sub-modules keep torchvision's names (``conv1``, ``layer4.2.bn3``, ``features.28``), so a
    torchvision or DINO state dict loads once its classifier keys are set aside.
    """


def resnet50_features(resnet_dilate: int = 2) -> ConvFeatures:
    """torchvision ResNet-50 without avgpool and fc; the last stages dilated instead of strided
    (output stride 32, 16, 8 for ``resnet_dilate`` 1, 2, 4)."""
    resnet = torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=RESNET_DILATIONS[resnet_dilate]
    )
    layers = [(name, m) for name, m in resnet.named_children() if name not in ("avgpool", "fc")]
    return ConvFeatures(OrderedDict(layers))


def vgg16_features() -> ConvFeatures:
    """torchvision VGG16 ``features`` without the last max-pool (output stride 16)."""
    vgg = torchvision.models.vgg16(weights=None)
    return ConvFeatures(OrderedDict(features=vgg.features[:-1]))


# ----------------------------------------------------------------------------------------------
# Building and loading weights
# ----------------------------------------------------------------------------------------------


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

TIMM_VIT_MODULES = ("vision_transformer", "deit", "eva")
"""timm's model files whose models are ViTs LOST can read (given standard or EVA blocks)."""

TIMM_EXAMPLE = "vit_small_patch14_reg4_dinov2.lvd142m"


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


def build_model(arch: str, patch_size: int = 16, resnet_dilate: int = 2, initialize: bool = True) -> nn.Module:
    """A randomly initialized backbone in eval mode with gradients off (``initialize=False``: a
    DINO ViT's parameters are left as created, for weights loaded next)."""
    entry = _checked_entry(arch, patch_size, resnet_dilate)
    return entry.build(patch_size, resnet_dilate, initialize).eval().requires_grad_(False)


def get_model(
    arch: str,
    patch_size: int = 16,
    resnet_dilate: int = 2,
    device: str | torch.device = "cpu",
    pretrained_weights: str | Path | None = None,
    checkpoint_key: str = "teacher",
) -> nn.Module:
    """The backbone with its weights, on `device`, in eval mode with gradients off.

    Weights come from `pretrained_weights` when given (a timm name also reads the official files
    of its family, see :func:`timm_state_dict`), else from the official download: DINO's
    checkpoints and torchvision's ImageNet ones (``*_imagenet``) cached in the torch hub folder,
    timm's pretrained weights for a timm name, cached by timm.
    """
    entry = _checked_entry(arch, patch_size, resnet_dilate)
    target = _check_device(device)
    if pretrained_weights is None and entry.from_timm:
        return timm_vit(arch, pretrained=True).to(target)
    if pretrained_weights is not None:
        state_dict = load_checkpoint_state_dict(pretrained_weights, checkpoint_key)
        source = f"--pretrained_weights {pretrained_weights}"
    else:
        source = _official_url(entry, patch_size)
        state_dict = download_state_dict(source)
    model = build_model(arch, patch_size, resnet_dilate, initialize=False)
    if entry.from_timm:
        state_dict = timm_state_dict(model, state_dict)
    load_weights(model, state_dict, source, entry.label(patch_size, resnet_dilate, separator="/"))
    return model.to(target)


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The model of ``spec`` with its weights (see :func:`get_model`)."""
    return get_model(spec.arch, spec.patch_size, spec.resnet_dilate, device, spec.weights, spec.checkpoint_key)


def _checked_entry(arch: str, patch_size: int, resnet_dilate: int) -> Backbone:
    entry = backbone_entry(arch)
    if entry.dilated and resnet_dilate not in RESNET_DILATIONS:
        raise LostError(f"--resnet_dilate {resnet_dilate}: choose 1, 2 or 4")
    if entry.is_vit and not entry.from_timm and patch_size not in entry.patch_sizes:
        sizes = " or ".join(str(size) for size in entry.patch_sizes)
        raise LostError(f"--arch {arch} --patch_size {patch_size}: {arch} is built with patch size {sizes}")
    return entry


def _official_url(entry: Backbone, patch_size: int) -> str:
    url = entry.official_weights(patch_size)
    if url is None:
        raise LostError(
            f"--arch {entry.name} --patch_size {patch_size} has no official DINO weights; "
            "pass --pretrained_weights PATH to a checkpoint of that architecture"
        )
    return url


def _check_device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise LostError(f"--device {device}: not a device ({one_line(exc)}); use cpu or cuda") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise LostError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return target


def download_state_dict(url: str) -> dict[str, Tensor]:
    """The state dict at `url`, downloaded once into ``<torch hub dir>/checkpoints``."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True, weights_only=True)
    except Exception as exc:  # no network, HTTP errors, or a damaged file in the cache
        raise LostError(
            f"cannot get the weights {url} ({one_line(exc)}); connect to the network, or put that "
            f"file at {cached}, or pass --pretrained_weights PATH to a local copy"
        ) from exc


def load_checkpoint_state_dict(
    path: str | Path, checkpoint_key: str = "teacher", flag: str = "--pretrained_weights"
) -> dict[str, Tensor]:
    """Backbone weights from a checkpoint file, heads included (``load_weights`` drops them).

    Reads a plain state dict, a DINO full checkpoint (``teacher``/``student``, picked by
    `checkpoint_key`), ``model``/``state_dict``/``network`` wrappers (timm, torchvision training
    scripts) and strips ``module.`` and ``backbone.`` prefixes. Only tensors and plain containers
    are unpickled. Errors name the file after `flag`, the option that passed it.
    """
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{flag} {path}: no such file; pass the path of a .pth checkpoint")
    try:
        with _admitting_training_arguments():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # arbitrary bytes make the unpickler fail in arbitrary ways
        raise LostError(
            f"{flag} {path}: not a readable PyTorch checkpoint ({one_line(exc)}); pass a file written by torch.save"
        ) from exc
    state_dict = _unwrap_checkpoint(checkpoint, checkpoint_key, f"{flag} {path}")
    return {_strip_prefixes(key): value for key, value in state_dict.items()}


def _admitting_training_arguments() -> contextlib.AbstractContextManager:
    """Let ``weights_only`` loading accept the ``argparse.Namespace`` that DINO's full training
    checkpoints store under ``args`` (torch >= 2.5; older torch refuses those files)."""
    if hasattr(torch.serialization, "safe_globals"):
        return torch.serialization.safe_globals([argparse.Namespace])
    return contextlib.nullcontext()


def _unwrap_checkpoint(checkpoint: object, checkpoint_key: str, source: str) -> dict[str, Tensor]:
    if isinstance(checkpoint, dict) and not _is_state_dict(checkpoint):
        for key in (checkpoint_key, "model", "state_dict", "network"):
            if key in checkpoint:
                checkpoint = checkpoint[key]
                break
    if not (isinstance(checkpoint, dict) and checkpoint and _is_state_dict(checkpoint)):
        keys = list(checkpoint)[:MAX_LISTED] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise LostError(
            f"{source}: no state dict found (top level: {keys}); pass "
            "--checkpoint_key KEY naming the entry that holds the weights"
        )
    return checkpoint


def _is_state_dict(obj: dict) -> bool:
    return all(isinstance(key, str) and isinstance(value, Tensor) for key, value in obj.items())


def _strip_prefixes(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
    return key


def load_weights(model: nn.Module, state_dict: dict[str, Tensor], source: str, name: str) -> None:
    """Copy `state_dict` into `model`, or raise LostError listing every mismatched parameter.

    Head and classifier keys are ignored; BatchNorm's ``num_batches_tracked`` may be absent.
    """
    ignored = CONV_IGNORED_PREFIXES if isinstance(model, ConvFeatures) else VIT_IGNORED_PREFIXES
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignored)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        _listing(what, names)
        for what, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped))
        if names
    ]
    if problems:
        raise LostError(
            f"{source}: these weights do not fit {name}: {'; '.join(problems)}; pass weights of "
            "this --arch and --patch_size, or the --arch and --patch_size of these weights"
        )
    model.load_state_dict(state_dict)


def _listing(what: str, names: list[str]) -> str:
    more = f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return f"{len(names)} {what} ({', '.join(names[:MAX_LISTED])}{more})"


def one_line(exc: BaseException) -> str:
    """The informative line of an exception message (PyTorch's are paragraphs)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------


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
