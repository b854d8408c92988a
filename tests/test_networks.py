"""Tests of lost.backbones: DINO's ViT, position-embedding resizing, features, weight loading.

Models and images are on TEST_DEVICE (``LOST_TEST_DEVICE``), except in the tests of CPU-only code."""

import argparse
import itertools
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import TEST_DEVICE

from lost import backbones
from lost.backbones import DinoVisionTransformer, FeatureExtractor, vit
from lost.errors import LostError


def tiny_vit(
    seed: int = 0, patch_size: int = 8, embed_dim: int = 16, depth: int = 2, device: torch.device = TEST_DEVICE
) -> DinoVisionTransformer:
    """A 2-block ViT trained (nominally) on a 4x4 patch grid, with weights large enough that its
    attention is far from uniform, drawn on the CPU and moved to `device`."""
    torch.manual_seed(seed)
    model = DinoVisionTransformer(patch_size, embed_dim, depth, num_heads=2, img_size=4 * patch_size)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model.eval().to(device)


def images(batch: int, height: int, width: int, seed: int = 1, device: torch.device = TEST_DEVICE) -> torch.Tensor:
    """(batch, 3, height, width) standard normal values, drawn on the CPU, on `device`."""
    torch.manual_seed(seed)
    return torch.randn(batch, 3, height, width).to(device)


def hooked_last_qkv(model: DinoVisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The last qkv output as the published code reads it: a hook during a forward pass (timm's
    ``forward_features``, all blocks)."""
    seen = []
    handle = model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    return seen[0]


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --- position embeddings ------------------------------------------------------------------------


def dino_resized_pos_embed(pos_embed: torch.Tensor, side: int, rows: int, cols: int) -> torch.Tensor:
    """DINO's formula written out: bicubic, scale factors (rows + 0.1)/side and (cols + 0.1)/side."""
    d = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, side, side, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    return torch.cat((pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, d)), dim=1)


@pytest.mark.parametrize("patch_size", [8, 16])
@pytest.mark.parametrize("rows, cols", [(5, 7), (7, 5), (3, 3), (6, 6), (1, 9)])
def test_tokens_of_an_image_carry_dinos_resized_position_embeddings(patch_size, rows, cols):
    model = tiny_vit(patch_size=patch_size)
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.cls_token.zero_()
        tokens, rope = backbones.embedded_tokens(model, images(1, rows * patch_size, cols * patch_size))
    assert rope is None
    expected = dino_resized_pos_embed(model.pos_embed.detach(), 4, rows, cols)
    assert tokens.shape == (1, 1 + rows * cols, 16)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)


def test_position_embeddings_of_the_trained_square_grid_are_unchanged():
    model = tiny_vit()
    assert backbones.dino_position_embeddings(model.pos_embed, 4, 4) is model.pos_embed


@pytest.mark.parametrize("side", [14, 28])
def test_resized_position_embeddings_have_one_token_per_cell_of_any_grid(side):
    pos_embed = torch.randn(1, 1 + side * side, 2)
    for rows, cols in itertools.product(range(1, 41), repeat=2):
        assert backbones.dino_position_embeddings(pos_embed, rows, cols).shape == (1, 1 + rows * cols, 2)


# --- last block ---------------------------------------------------------------------------------


def test_last_attention_inputs_are_the_heads_of_the_last_qkv_output_of_a_forward_pass():
    model, x = tiny_vit(), images(2, 48, 64)
    with torch.no_grad():
        q, k, v, rope = backbones.last_attention_inputs(model, x)
    assert rope is None and q.shape == k.shape == v.shape == (2, 2, 1 + 6 * 8, 8)
    qkv = hooked_last_qkv(model, x).reshape(2, 1 + 6 * 8, 3, 2, 8).permute(2, 0, 3, 1, 4)
    for part, expected in zip((q, k, v), qkv, strict=True):
        torch.testing.assert_close(part, expected, rtol=1e-5, atol=1e-5)


def test_last_attention_inputs_skip_the_rest_of_the_last_block_and_the_final_norm():
    model = tiny_vit()
    fired = []
    for module in (model.blocks[-1].attn.proj, model.blocks[-1].mlp, model.norm):
        module.register_forward_hook(lambda m, i, out: fired.append(m))
    with torch.no_grad():
        backbones.last_attention_inputs(model, images(1, 32, 32))
    assert fired == []


def test_cls_attention_is_the_cls_row_of_the_last_selfattention_without_cls_column():
    model, x = tiny_vit(), images(2, 40, 56)
    with torch.no_grad():
        cls_attention, _ = FeatureExtractor(model, "vit_tiny", 8).cls_attention(x)
        full = backbones.last_selfattention(model, x)
    assert full.shape == (2, 2, 1 + 5 * 7, 1 + 5 * 7)
    assert cls_attention.shape == (2, 2, 5 * 7)
    torch.testing.assert_close(cls_attention, full[:, :, 0, 1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_elements", [2**20, 2 * 37 * 37, 37 * 5, 1])
def test_blocked_attention_equals_the_fused_kernel_for_any_block_size(block_elements):
    # 2 images x 3 heads of 37 tokens: all at once, two heads a block, five query rows a block, one row
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8) * 2 for _ in range(3))
    out = backbones.blocked_attention(q, k, v, 8**-0.5, block_elements)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_blocked_attention_in_bfloat16_stays_bfloat16_and_close_to_float32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 50, 16) for _ in range(3))
    out = backbones.blocked_attention(*(t.bfloat16() for t in (q, k, v)), 16**-0.5, block_elements=200)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=3e-2)


@pytest.mark.parametrize("precision, blocked", [(torch.bfloat16, True), (None, False)])
def test_vit_blocks_use_blocked_attention_only_in_bfloat16_on_the_cpu(monkeypatch, precision, blocked):
    calls = []
    original = backbones.blocked_attention
    monkeypatch.setattr(vit, "blocked_attention", lambda *args: calls.append(1) or original(*args))
    model = tiny_vit(device=torch.device("cpu"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision is not None):
        backbones.last_attention_inputs(model, images(1, 32, 32, device=torch.device("cpu")))
    assert len(calls) == (len(model.blocks) - 1 if blocked else 0)


def test_forward_returns_the_normalized_cls_token():
    model = tiny_vit()
    with torch.no_grad():
        out = model(images(3, 32, 48))
    assert out.shape == (3, 16)


# --- features -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_vit_features_are_the_chosen_qkv_part_with_heads_in_order_and_no_cls(which):
    model, x = tiny_vit(), images(2, 48, 64)
    features = FeatureExtractor(model, "vit_tiny", 8, which)(x)
    qkv = hooked_last_qkv(model, x)
    b, t, _ = qkv.shape
    parts = qkv.reshape(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, d/heads)
    part = parts["qkv".index(which)]
    expected = part.transpose(1, 2).reshape(b, t, 16)[:, 1:]
    assert features.grid == (6, 8)
    assert features.scales == (8.0, 8.0)
    assert features.feats.shape == (2, 48, 16)
    torch.testing.assert_close(features.feats, expected, rtol=1e-5, atol=1e-5)


def test_cls_attention_of_the_extractor_gives_the_grid():
    model, x = tiny_vit(), images(1, 24, 40)
    attention, grid = FeatureExtractor(model, "vit_tiny", 8).cls_attention(x)
    assert grid == (3, 5)
    assert attention.shape == (1, 2, 15)
    torch.testing.assert_close(
        attention.sum(-1), torch.ones(1, 2, device=TEST_DEVICE) - backbones.last_selfattention(model, x)[:, :, 0, 0]
    )


def test_a_batch_of_three_gives_the_features_of_three_single_images():
    model, x = tiny_vit(), images(3, 32, 48)
    extractor = FeatureExtractor(model, "vit_tiny", 8)
    batch = extractor(x).feats
    attention, _ = extractor.cls_attention(x)
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], extractor(x[i : i + 1]).feats, rtol=1e-5, atol=1e-5)
        single, _ = extractor.cls_attention(x[i : i + 1])
        torch.testing.assert_close(attention[i : i + 1], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "dilate, grid, scales",
    [(1, (2, 2), (32.0, 24.0)), (2, (4, 3), (16.0, 16.0)), (4, (8, 6), (8.0, 8.0))],
)
def test_resnet_grid_and_scales_follow_the_dilation(dilate, grid, scales):
    torch.manual_seed(0)
    model = backbones.build_model("resnet50", resnet_dilate=dilate).to(TEST_DEVICE)
    features = FeatureExtractor(model, "resnet50", 16)(images(1, 64, 48))
    assert features.grid == grid
    assert features.scales == scales
    assert features.feats.shape == (1, grid[0] * grid[1], 2048)


def test_resnet_features_are_layer_normalized_over_each_whole_map_and_batch_independent():
    torch.manual_seed(0)
    model = backbones.build_model("resnet50", resnet_dilate=2).to(TEST_DEVICE)
    x = images(3, 64, 48)
    feats = FeatureExtractor(model, "resnet50", 16)(x).feats
    with torch.no_grad():
        maps = model(x).flatten(2).transpose(1, 2)  # (3, 12, 2048)
    mean = maps.mean(dim=(1, 2), keepdim=True)
    var = maps.var(dim=(1, 2), unbiased=False, keepdim=True)
    torch.testing.assert_close(feats, (maps - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats.mean(dim=(1, 2)), torch.zeros(3, device=TEST_DEVICE), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        feats.var(dim=(1, 2), unbiased=False), torch.ones(3, device=TEST_DEVICE), rtol=0, atol=1e-3
    )
    extractor = FeatureExtractor(model, "resnet50", 16)
    for i in range(3):
        torch.testing.assert_close(feats[i : i + 1], extractor(x[i : i + 1]).feats, rtol=1e-4, atol=1e-4)


def test_vgg16_is_torchvision_features_without_the_last_max_pool():
    torch.manual_seed(0)
    model = backbones.build_model("vgg16_imagenet").to(TEST_DEVICE)
    assert not isinstance(model.features[-1], torch.nn.MaxPool2d)
    assert len(model.features) == 30
    features = FeatureExtractor(model, "vgg16_imagenet", 16)(images(1, 64, 48))
    assert features.grid == (4, 3)
    assert features.scales == (16.0, 16.0)
    assert features.feats.shape == (1, 12, 512)


def test_vit_small16_is_dinos_architecture_at_real_size():
    torch.manual_seed(0)
    model = backbones.build_model("vit_small", patch_size=16).to(TEST_DEVICE)
    # patch embed 3*16*16*384 + 384, cls 384, pos 197*384, 12 blocks of 1,774,464, final norm 768.
    assert sum(p.numel() for p in model.parameters()) == 21_665_664
    assert isinstance(model.head, torch.nn.Identity)
    assert model.state_dict()["blocks.11.attn.qkv.weight"].shape == (1152, 384)
    padded = images(1, 384, 512)  # a 375 x 500 image padded to multiples of 16
    features = FeatureExtractor(model, "vit_small", 16)(padded)
    assert features.grid == (24, 32)
    assert features.feats.shape == (1, 24 * 32, 384)
    assert features.feats.dtype == torch.float32


def test_unpadded_images_are_refused_by_the_vit_extractor():
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        FeatureExtractor(tiny_vit(), "vit_tiny", 8)(images(1, 30, 32))


def test_cls_attention_needs_a_vit():
    model = backbones.ConvFeatures(torch.nn.Conv2d(3, 4, kernel_size=16, stride=16)).to(TEST_DEVICE)
    with pytest.raises(LostError, match="needs a ViT --arch"):
        FeatureExtractor(model, "vgg16_imagenet", 16).cls_attention(images(1, 32, 32))


def test_one_pass_gives_the_features_and_the_cls_attention_of_separate_passes():
    extractor = FeatureExtractor(tiny_vit(), "vit_tiny", 8)
    batch = images(2, 32, 40)
    both = extractor.extract(batch, frozenset({"feats", "cls_attention"}))
    assert torch.equal(both.feats, extractor(batch).feats)
    assert torch.equal(both.cls_attention, extractor.cls_attention(batch)[0])
    assert both.cls_attention.shape == (2, extractor.num_heads, 4 * 5) and both.grid == (4, 5)
    only_attention = extractor.extract(batch, frozenset({"cls_attention"}))
    assert only_attention.feats is None


def test_unknown_architecture_lists_the_table():
    with pytest.raises(LostError, match="--arch vit_huge: unknown architecture; choose one of vit_tiny, vit_small"):
        backbones.build_model("vit_huge")


def test_patch_size_outside_the_entry_is_refused():
    with pytest.raises(LostError, match="--patch_size 14"):
        backbones.build_model("vit_small", 14)


# --- checkpoints --------------------------------------------------------------------------------


def load_into_fresh_tiny_vit(path, **kwargs) -> DinoVisionTransformer:
    model = tiny_vit(seed=99)
    state_dict = backbones.load_checkpoint_state_dict(path, **kwargs)
    backbones.load_weights(model, state_dict, str(path), "tiny")
    return model


def test_plain_state_dict_loads(tmp_path):
    source = tiny_vit(seed=1)
    torch.save(source.state_dict(), tmp_path / "plain.pth")
    assert_same_parameters(load_into_fresh_tiny_vit(tmp_path / "plain.pth"), source)


def dino_full_checkpoint(teacher: DinoVisionTransformer, student: DinoVisionTransformer) -> dict:
    head = {"head.mlp.0.weight": torch.randn(32, 16), "head.last_layer.weight_g": torch.ones(64, 1)}
    return {
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()}, **head},
        "student": {
            **{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
            **{f"module.{k}": v for k, v in head.items()},
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=8, out_dim=64),
        "dino_loss": {"center": torch.zeros(1, 64)},
    }


@pytest.mark.parametrize("key", ["teacher", "student"])
def test_dino_full_checkpoint_loads_the_chosen_network(tmp_path, key):
    networks_by_key = {"teacher": tiny_vit(seed=1), "student": tiny_vit(seed=2)}
    torch.save(dino_full_checkpoint(**networks_by_key), tmp_path / "checkpoint.pth")
    loaded = load_into_fresh_tiny_vit(tmp_path / "checkpoint.pth", checkpoint_key=key)
    assert_same_parameters(loaded, networks_by_key[key])


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_timm_format_file_loads_without_its_classifier(tmp_path, wrapper):
    source = tiny_vit(seed=3)
    timm_state = {**source.state_dict(), "head.weight": torch.randn(1000, 16), "head.bias": torch.randn(1000)}
    content = timm_state if wrapper is None else {wrapper: timm_state, "epoch": 3, "arch": "vit_tiny"}
    torch.save(content, tmp_path / "timm.pth")
    assert_same_parameters(load_into_fresh_tiny_vit(tmp_path / "timm.pth"), source)


def test_checkpoint_of_another_depth_lists_the_missing_parameters(tmp_path):
    torch.save(tiny_vit(depth=1).state_dict(), tmp_path / "shallow.pth")
    with pytest.raises(LostError) as error:
        load_into_fresh_tiny_vit(tmp_path / "shallow.pth")
    message = str(error.value)
    # block 1 of the fresh model has 12 tensors: 2 norms, qkv, proj, fc1, fc2, each weight and bias.
    assert "12 missing (blocks.1.norm1.weight, blocks.1.norm1.bias" in message
    assert "(7 more)" in message
    assert "unexpected" not in message and "\n" not in message


def test_checkpoint_of_another_width_lists_the_shape_mismatches(tmp_path):
    torch.save(tiny_vit(embed_dim=8).state_dict(), tmp_path / "narrow.pth")
    with pytest.raises(LostError) as error:
        load_into_fresh_tiny_vit(tmp_path / "narrow.pth")
    # every tensor differs: cls, pos, patch weight and bias, 2 blocks of 12, final norm weight and bias.
    assert "30 shape mismatch (cls_token (1, 1, 8) vs (1, 1, 16)" in str(error.value)
    assert "narrow.pth" in str(error.value)


def test_missing_checkpoint_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(LostError, match=f"--pretrained_weights {path}: no such file"):
        backbones.load_checkpoint_state_dict(path)


def test_garbage_checkpoint_file_names_the_path(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(LostError, match=f"--pretrained_weights {path}: not a readable PyTorch checkpoint"):
        backbones.load_checkpoint_state_dict(path)


class Payload:
    """An arbitrary class: unpickling it would run code from the file."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": Payload()}, path)
    with pytest.raises(LostError, match="not a readable PyTorch checkpoint .*Payload"):
        backbones.load_checkpoint_state_dict(path)


def test_checkpoint_without_weights_asks_for_the_checkpoint_key(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "ema": {"a.weight": torch.ones(1)}}, path)
    with pytest.raises(
        LostError, match=r"no state dict found \(top level: \['epoch', 'ema'\]\).*--checkpoint_key"
    ):
        backbones.load_checkpoint_state_dict(path)
    assert list(backbones.load_checkpoint_state_dict(path, checkpoint_key="ema")) == ["a.weight"]


def test_get_model_loads_a_pretrained_weights_file(tmp_path):
    torch.manual_seed(5)
    source = backbones.build_model("vit_tiny", patch_size=16)
    torch.save(source.state_dict(), tmp_path / "vit_tiny16.pth")
    model = backbones.get_model("vit_tiny", 16, pretrained_weights=tmp_path / "vit_tiny16.pth")
    assert_same_parameters(model, source)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_vit_tiny_without_weights_asks_for_pretrained_weights():
    with pytest.raises(
        LostError, match="--arch vit_tiny --patch_size 16 has no official DINO weights.*--pretrained_weights"
    ):
        backbones.get_model("vit_tiny", 16)


def test_failed_official_download_names_url_cache_and_flag(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(LostError) as error:
        backbones.get_model("vit_small", 8)
    message = str(error.value)
    url = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/dino_deitsmall8_300ep_pretrain.pth"
    assert url in message
    assert str(tmp_path / "hub" / "checkpoints" / "dino_deitsmall8_300ep_pretrain.pth") in message
    assert "--pretrained_weights" in message
    assert "Temporary failure in name resolution" in message


def torchvision_resnet50_state_dict(with_fc: bool) -> dict:
    torch.manual_seed(6)
    state = torchvision.models.resnet50(weights=None).state_dict()
    return {
        k: v for k, v in state.items() if with_fc or not (k.startswith("fc.") or "num_batches_tracked" in k)
    }


@pytest.mark.parametrize(
    "arch, url, with_fc",
    [
        (
            "resnet50",
            "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
            False,
        ),
        ("resnet50_imagenet", torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url, True),
    ],
)
def test_official_resnet_weights_load_with_or_without_fc(monkeypatch, arch, url, with_fc):
    state = torchvision_resnet50_state_dict(with_fc)
    asked = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda u, **kwargs: asked.append(u) or state)
    model = backbones.get_model(arch, 16, resnet_dilate=2)
    assert asked == [url]
    torch.testing.assert_close(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"], rtol=0, atol=0)


def test_unavailable_cuda_device_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(LostError, match="--device cuda: CUDA is not available"):
        backbones.get_model("vit_tiny", 16, device="cuda")


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, dilate, label",
    [
        ("vit_small", 2, "vit_small16"),
        ("resnet50", 2, "resnet50dilate2"),
        ("resnet50_imagenet", 4, "resnet50_imagenetdilate4"),
        ("vgg16_imagenet", 2, "vgg16_imagenet"),
    ],
)
def test_backbone_labels_name_the_architecture_and_its_options(arch, dilate, label):
    assert backbones.BackboneSpec(arch=arch, patch_size=16, resnet_dilate=dilate).label() == label


def test_official_weights_are_dinos_urls():
    assert backbones.BACKBONES["vit_small"].official_weights(16) == (
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
    )
