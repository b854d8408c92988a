"""Bright squares on a dark background, and a ViT-Tiny/8 crafted so that its keys tell them
apart: the planted objects the training tests of FOUND's and PEEKABOO's heads must learn."""

import numpy as np
import torch
from PIL import Image

from lost.backbones import FeatureExtractor, build_model, last_attention_inputs
from lost.data.images import image_to_tensor
from lost.methods.found import found_batch

SIDE = 48


def crafted_vit_tiny() -> torch.nn.Module:
    """ViT-Tiny/8 whose features separate bright from dark patches: blocks 0-10 are identities
    (zero output projections), no position embedding, no patch bias; each head's query is
    oriented so that the CLS token attends bright patches more than dark ones. Random
    otherwise (seed 0)."""
    torch.manual_seed(0)
    model = build_model("vit_tiny", 8)
    with torch.no_grad():
        for block in model.blocks[:-1]:
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
        model.pos_embed.zero_()
        model.patch_embed.proj.bias.zero_()
        attention = model.blocks[-1].attn
        two_patches = torch.cat([flat_patch(230), flat_patch(40)], dim=3)
        q, k, _, _ = last_attention_inputs(model, two_patches)
        logits = (q[:, :, :1] @ k.transpose(-2, -1))[0, :, 0]
        per_head = model.embed_dim // model.num_heads
        for head in range(model.num_heads):
            if logits[head, 1] < logits[head, 2]:
                attention.qkv.weight[head * per_head : (head + 1) * per_head] *= -1
    return model


def flat_patch(level: int) -> torch.Tensor:
    return image_to_tensor(Image.new("RGB", (8, 8), (level, level, level)))[None]


def planted_square(rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A bright square (side 21-32) on a dark noisy background, and its box [x1, y1, x2, y2)."""
    pixels = 40 + rng.normal(0, 6, (SIDE, SIDE, 3))
    side = int(rng.integers(SIDE // 3, SIDE // 2 + 1))
    y, x = (int(v) for v in rng.integers(0, SIDE - side, 2))
    pixels[y : y + side, x : x + side] = 220 + rng.normal(0, 6, (side, side, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), (x, y, x + side, y + side)


def cells_inside_and_outside(box: tuple[int, int, int, int], grid: tuple[int, int], patch: int = 8):
    """(N,) bool masks of the cells wholly inside the box and of those not touching it."""
    x1, y1, x2, y2 = box
    rows, cols = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    left, top, right, bottom = cols * patch, rows * patch, (cols + 1) * patch, (rows + 1) * patch
    inside = (left >= x1) & (right <= x2) & (top >= y1) & (bottom <= y2)
    outside = (right <= x1) | (left >= x2) | (bottom <= y1) | (top >= y2)
    return inside, outside


def head_finds_the_squares(head: torch.nn.Conv2d, model: torch.nn.Module) -> list[bool]:
    """For 4 new images: is every cell inside the square foreground and every cell away from it
    background?"""
    rng = np.random.default_rng(5)
    images, boxes = zip(*[planted_square(rng) for _ in range(4)], strict=True)
    features = FeatureExtractor(model, "vit_tiny", 8)(torch.stack([image_to_tensor(image) for image in images]))
    keys, grid = features.feats, features.grid
    results = found_batch(keys, head, grid, (8, 8), [(SIDE, SIDE)] * 4)
    verdicts = []
    for result, box in zip(results, boxes, strict=True):
        inside, outside = cells_inside_and_outside(box, grid)
        mask = result.mask.numpy()
        verdicts.append(bool(mask[inside].all() and not mask[outside].any()))
    return verdicts
