"""DINO v1 through timm's ViT gives DINO's features and the boxes of LOST and DINO-seg.

The reference is a transcription of the computation of DINO's ``vision_transformer.py``
(``prepare_tokens`` with ``interpolate_pos_encoding``, pre-norm blocks with explicit softmax
attention, the last block's ``qkv``), written here over a state dict. The models are real DINO
architectures (ViT-S/16, ViT-S/8, ViT-B/16) with random weights whose query and key projections
are scaled up, so that attention is peaked like a trained model's, and whose residual branches
are scaled down, so that the patches' keys keep their content (random blocks otherwise make
every key alike) and LOST's boxes differ from image to image.
"""

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import TEST_DEVICE
from PIL import Image
from synthetic_images import draw_scene

from lost import backbones
from lost.backbones import FeatureExtractor
from lost.data.images import image_to_tensor, pad_to_multiple
from lost.methods.dinoseg import DinoSegParams, discover_dinoseg
from lost.methods.lost import LostParams, discover_lost

QK_GAIN = 6.0
BRANCH_GAIN = 0.5
IMAGE_SIZES = [(128, 96), (96, 128), (224, 224), (101, 70)]
"""(width, height): landscape, portrait, DINO's trained square grid, and sides that need padding."""

ARCHITECTURES = [("vit_small", 16, 6), ("vit_small", 8, 6), ("vit_base", 16, 12)]
"""(arch, patch size, heads)."""


# --- DINO's computation, transcribed ----------------------------------------------------------


def reference_tokens(state: dict, images: torch.Tensor, patch: int) -> torch.Tensor:
    """DINO's prepare_tokens: conv patch embedding, CLS first, position embeddings resized by
    bicubic interpolation with scale factors (rows + 0.1)/sqrt(N), (cols + 0.1)/sqrt(N), unless
    the image is square with the trained number of patches."""
    _, _, height, width = images.shape
    patches = F.conv2d(images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    patches = patches.flatten(2).transpose(1, 2)
    cls = state["cls_token"].expand(images.shape[0], -1, -1)
    tokens = torch.cat((cls, patches), dim=1)
    pos = state["pos_embed"]
    n, dim = pos.shape[1] - 1, pos.shape[2]
    if tokens.shape[1] - 1 != n or height != width:
        rows, cols = height // patch + 0.1, width // patch + 0.1
        grid = pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(rows / math.sqrt(n), cols / math.sqrt(n)), mode="bicubic")
        pos = torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)
    return tokens + pos


def reference_attention(state: dict, prefix: str, x: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO's Attention.forward: (output (B, T, d), attention (B, heads, T, T))."""
    b, t, d = x.shape
    qkv = F.linear(x, state[f"{prefix}.qkv.weight"], state[f"{prefix}.qkv.bias"])
    q, k, v = qkv.reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    attention = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
    out = (attention @ v).transpose(1, 2).reshape(b, t, d)
    return F.linear(out, state[f"{prefix}.proj.weight"], state[f"{prefix}.proj.bias"]), attention


def reference_norm(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)


def reference_last_qkv(state: dict, images: torch.Tensor, patch: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last block's qkv output (B, T, 3d) and attention (B, heads, T, T), as the published
    code reads them (a hook on ``qkv`` during ``get_last_selfattention``)."""
    x = reference_tokens(state, images, patch)
    depth = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))
    for i in range(depth - 1):
        y, _ = reference_attention(state, f"blocks.{i}.attn", reference_norm(state, f"blocks.{i}.norm1", x), heads)
        x = x + y
        hidden = F.gelu(F.linear(reference_norm(state, f"blocks.{i}.norm2", x), state[f"blocks.{i}.mlp.fc1.weight"], state[f"blocks.{i}.mlp.fc1.bias"]))
        x = x + F.linear(hidden, state[f"blocks.{i}.mlp.fc2.weight"], state[f"blocks.{i}.mlp.fc2.bias"])
    last = f"blocks.{depth - 1}"
    x = reference_norm(state, f"{last}.norm1", x)
    qkv = F.linear(x, state[f"{last}.attn.qkv.weight"], state[f"{last}.attn.qkv.bias"])
    return qkv, reference_attention(state, f"{last}.attn", x, heads)[1]


# --- fixtures -----------------------------------------------------------------------------------


def peaked_dino_vit(arch: str, patch: int, seed: int) -> torch.nn.Module:
    """The DINO architecture with random weights, the query and key projections scaled by
    QK_GAIN and the output projections of the residual branches by BRANCH_GAIN."""
    torch.manual_seed(seed)
    model = backbones.build_model(arch, patch)
    for name, tensor in model.state_dict().items():
        if name.endswith("attn.qkv.weight"):
            tensor[: 2 * tensor.shape[1]] *= QK_GAIN
        elif name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
            tensor *= BRANCH_GAIN
    return model


def scene(width: int, height: int, seed: int) -> Image.Image:
    """A smooth background with three coloured ellipses."""
    return draw_scene(np.random.default_rng(seed), width, height)


def padded_scenes(patch: int) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """(padded image (1, 3, Hp, Wp), unpadded (H, W)) for every size of IMAGE_SIZES."""
    scenes = []
    for seed, (width, height) in enumerate(IMAGE_SIZES):
        tensor = image_to_tensor(scene(width, height, seed))
        scenes.append((pad_to_multiple(tensor, patch)[None], (height, width)))
    return scenes


def reference_keys_and_attention(state: dict, image: torch.Tensor, patch: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of the patches (1, N, d) and CLS attention over the patches (1, heads, N)."""
    with torch.no_grad():
        qkv, attention = reference_last_qkv(state, image, patch, heads)
    d = qkv.shape[-1] // 3
    return qkv[:, 1:, d : 2 * d], attention[:, :, 0, 1:]


def boxes_of(features: backbones.Features, size: tuple[int, int], heads: int) -> tuple[list, list]:
    """The LOST box and the DINO-seg box of every head."""
    lost_box = discover_lost(features, [size], LostParams())[0].box.tolist()
    dinoseg_boxes = [discover_dinoseg(features, [size], DinoSegParams(head))[0].box.tolist() for head in range(heads)]
    return lost_box, dinoseg_boxes


# --- the comparison -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch, patch, heads", ARCHITECTURES)
def test_timm_dino_vit_gives_dinos_keys_attention_and_boxes(arch, patch, heads):
    model = peaked_dino_vit(arch, patch, seed=patch + heads)
    assert isinstance(model, timm.models.vision_transformer.VisionTransformer)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}  # the reference runs on the CPU
    extractor = FeatureExtractor(model.to(TEST_DEVICE), arch, patch)
    lost_boxes = []
    for image, size in padded_scenes(patch):
        keys, attention = reference_keys_and_attention(state, image, patch, heads)
        features = extractor.extract(image, frozenset({"feats", "cls_attention"}))
        feats, cls_attention = features.feats.cpu(), features.cls_attention.cpu()
        torch.testing.assert_close(feats, keys, rtol=1e-5, atol=1e-5 * keys.abs().max().item())
        torch.testing.assert_close(cls_attention, attention, rtol=1e-3, atol=1e-4)
        reference = backbones.Features(keys.to(TEST_DEVICE), features.grid, features.scales, attention.to(TEST_DEVICE))
        expected = boxes_of(reference, size, heads)
        assert boxes_of(features, size, heads) == expected
        lost_boxes.append(expected[0])
    whole_images = [[0, 0, width, height] for width, height in IMAGE_SIZES]
    assert lost_boxes != whole_images and len({tuple(box) for box in lost_boxes}) == len(lost_boxes)
