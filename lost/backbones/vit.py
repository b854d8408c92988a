"""timm's Vision Transformers as LOST reads them: DINO's ViT with DINO's position embeddings,
the attention forward that picks the kernel, and the last block's queries, keys and values.

Every attention module runs through :func:`attention_forward`, a forward over the module's own
parameters that picks the kernel: ``F.scaled_dot_product_attention``, or in bfloat16 on a CPU
:func:`blocked_attention`, which is faster there; neither changes a result beyond float rounding.
The features are read by running the model's parts here (:func:`last_attention_inputs`): its patch
and position embeddings, the blocks before the last, then the last block's first norm and its
attention's queries, keys and values; nothing after them runs. :func:`last_selfattention` gives the
last block's whole attention matrix, as DINO's ``get_last_selfattention`` does.

Tokens: prefix tokens (CLS, registers) first, then the patches row-major (index ``row * w + col``).
"""

import functools
import math

import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat
from timm.models import eva as timm_eva
from timm.models import vision_transformer as timm_vision_transformer
from torch import Tensor, nn

from lost.errors import LostError


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
