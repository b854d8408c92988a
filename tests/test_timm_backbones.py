"""Backbones named by timm: DINOv2 (with and without registers), DINOv3 (RoPE, with and without
qkv biases), DINO v1 under its timm name; their prefix tokens, patch grid, weights and errors.

Models are timm's with random weights (``pretrained=False``), shrunk to 2 blocks of width 48 where
the test does not need the real architecture; nothing is downloaded.
"""

import argparse

import huggingface_hub
import huggingface_hub.constants
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import DEVICE_FLAGS, TEST_DEVICE, write_noise_images
from run_names import input_folder, weights_tag

import main_lost
from lost import backbones
from lost.backbones import BackboneSpec, FeatureExtractor, vit
from lost.data.datasets import single_image_records
from lost.engine.discovery import DiscoveryConfig, discover
from lost.errors import LostError
from lost.io.safe_files import read_predictions
from lost.methods.dinoseg import DinoSegParams, dinoseg_folder
from lost.methods.lost import LostParams, discover_lost, lost_folder

DINOV2 = "vit_small_patch14_dinov2.lvd142m"
DINOV2_REG = "vit_small_patch14_reg4_dinov2.lvd142m"
DINOV3 = "vit_small_patch16_dinov3.lvd1689m"
DINOV3_QKVB = "vit_small_patch16_dinov3_qkvb.lvd1689m"
DINO_V1 = "vit_small_patch16_224.dino"
SHRUNK = {"depth": 2, "embed_dim": 48, "num_heads": 3}


def shrunk(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """The timm model ``name`` with 2 blocks of width 48 and random weights spread enough that
    attention is far from uniform (layer scales, biases and registers included)."""
    torch.manual_seed(seed)
    model = backbones.timm_vit(name, **{**SHRUNK, **overrides})
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


def timms_own(name: str, model: torch.nn.Module, **overrides) -> torch.nn.Module:
    """The same model as timm builds it, with timm's own attention forward, holding ``model``'s weights."""
    own = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, **{**SHRUNK, **overrides})
    own.load_state_dict(model.state_dict())
    return own.eval().to(next(model.parameters()).device)


def images(batch: int, height: int, width: int, seed: int = 1, device: torch.device = TEST_DEVICE) -> torch.Tensor:
    """(batch, 3, height, width) standard normal values, drawn on the CPU, on `device`."""
    torch.manual_seed(seed)
    return torch.randn(batch, 3, height, width).to(device)


def last_attention_matrix_of_timm(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's softmax attention (B, heads, T, T) as timm computes it in its explicit
    path (caught on its way through ``attn_drop``)."""
    attn = model.blocks[-1].attn
    attn.fused_attn = False
    seen = []
    handle = attn.attn_drop.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    return seen[0]


def last_attention_input_of_timm(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the last attention module receives in timm's forward pass: (B, T, d)."""
    seen = []
    handle = model.blocks[-1].attn.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model.forward_features(x)
    handle.remove()
    return seen[0]


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, patch, prefix",
    [(DINOV2, 14, 1), (DINOV2_REG, 14, 5), (DINOV3, 16, 5), (DINOV3_QKVB, 16, 5), (DINO_V1, 16, 1), ("vit_base_patch14_reg4_dinov2", 14, 5)],
)
def test_timm_names_are_backbones_with_the_models_patch_size_and_prefix_tokens(name, patch, prefix):
    entry = backbones.backbone_entry(name)
    assert entry.is_vit and entry.from_timm
    assert entry.patch_sizes == (patch,) and entry.prefix_tokens == prefix
    assert entry.label(16, 2) == name


@pytest.mark.parametrize("name", ["vit_small_patch16_224.nosuchtag", "resnet18", "vit_nonexistent_patch16"])
def test_names_timm_does_not_build_as_a_vit_are_one_line_errors(name):
    with pytest.raises(LostError) as error:
        backbones.backbone_entry(name)
    message = str(error.value)
    assert message.startswith(f"--arch {name}: unknown architecture; choose one of vit_tiny, vit_small")
    assert "timm ViT name" in message and "\n" not in message


def test_vits_of_other_blocks_or_attention_are_refused_by_name():
    with pytest.raises(LostError, match="--arch vit_small_patch16_18x2_224: timm builds it with ParallelThingsBlock blocks"):
        backbones.backbone_entry("vit_small_patch16_18x2_224")
    with pytest.raises(LostError, match="--arch vit_small_patch16_rope_224: timm builds it with EvaBlock blocks and AttentionRope attention"):
        backbones.backbone_entry("vit_small_patch16_rope_224")


@pytest.mark.parametrize(
    "spec, lost, dinoseg",
    [
        (BackboneSpec(arch=DINOV2_REG), f"LOST-{DINOV2_REG}_k", f"{DINOV2_REG}_dinoseg-head4"),
        (BackboneSpec(arch=DINOV3, rope_keys="post"), f"LOST-{DINOV3}_postrope_k", f"{DINOV3}_postrope_dinoseg-head4"),
        (BackboneSpec(arch=DINOV3, which_features="q"), f"LOST-{DINOV3}_q", f"{DINOV3}_dinoseg-head4"),
        (BackboneSpec(arch="vit_small", patch_size=8), "LOST-vit_small8_k", "vit_small-8_dinoseg-head4"),
    ],
)
def test_experiment_folders_name_timm_models_as_they_are_and_keep_the_published_names(spec, lost, dinoseg):
    assert lost_folder(spec, LostParams()) == lost
    assert dinoseg_folder(spec, DinoSegParams()) == dinoseg


def test_vit_arch_accepts_timm_vits_and_refuses_convnets():
    assert backbones.vit_arch(DINOV2_REG) == DINOV2_REG
    with pytest.raises(argparse.ArgumentTypeError, match="resnet50 is not a ViT"):
        backbones.vit_arch("resnet50")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown architecture"):
        backbones.vit_arch("vit_huge")


# --- the model and its features -----------------------------------------------------------------


@pytest.mark.parametrize("name", [DINOV2, DINOV2_REG, DINOV3, DINOV3_QKVB])
def test_attention_forward_gives_timms_outputs(name):
    model = shrunk(name).to(TEST_DEVICE)
    x = images(2, 3 * 16, 5 * 16) if "dinov3" in name else images(2, 3 * 14, 5 * 14)
    with torch.no_grad():
        ours = model.forward_features(x)
        theirs = timms_own(name, model).forward_features(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [DINOV2_REG, DINOV3_QKVB])
def test_masked_attention_is_timms_own(name):
    model = shrunk(name).to(TEST_DEVICE)
    x = images(1, 2 * 16, 2 * 16) if "dinov3" in name else images(1, 2 * 14, 2 * 14)
    mask = torch.ones(9, 9, dtype=torch.bool, device=TEST_DEVICE).tril()
    with torch.no_grad():
        ours = model.forward_features(x, attn_mask=mask)
        theirs = timms_own(name, model).forward_features(x, attn_mask=mask)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("name", [DINOV2_REG, DINOV3, DINOV3_QKVB])
def test_bfloat16_on_a_cpu_runs_the_blocked_attention_in_the_blocks_before_the_last(monkeypatch, name):
    calls = []
    original = backbones.blocked_attention
    monkeypatch.setattr(vit, "blocked_attention", lambda *args: calls.append(1) or original(*args))
    model = shrunk(name, depth=3)
    cpu = torch.device("cpu")
    x = images(1, 3 * 16, 4 * 16, device=cpu) if "dinov3" in name else images(1, 3 * 14, 4 * 14, device=cpu)
    extractor = FeatureExtractor(model, name)
    reference = extractor(x).feats
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = extractor(x).feats
    assert len(calls) == 2
    assert F.cosine_similarity(low, reference, dim=-1).min() > 0.99


def test_registers_are_dropped_from_the_patch_features():
    model = shrunk(DINOV2_REG).to(TEST_DEVICE)
    x = images(2, 3 * 14, 5 * 14)
    features = FeatureExtractor(model, DINOV2_REG).extract(x, frozenset({"feats", "cls_attention"}))
    own = timms_own(DINOV2_REG, model)
    seen = []
    own.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        own.forward_features(x)
    qkv = seen[0]  # (2, 1 + 4 + 15, 3 * 48): CLS, 4 registers, 3 x 5 patches
    assert qkv.shape == (2, 20, 144)
    assert features.grid == (3, 5) and features.feats.shape == (2, 15, 48)
    torch.testing.assert_close(features.feats, qkv[:, 5:, 48:96], rtol=1e-5, atol=1e-5)
    attention = last_attention_matrix_of_timm(own, x)
    assert features.cls_attention.shape == (2, 3, 15)
    torch.testing.assert_close(features.cls_attention, attention[:, :, 0, 5:], rtol=1e-4, atol=1e-6)


def test_dinov3_qkvb_keys_come_from_the_separate_biases_without_the_qkv_module():
    model = shrunk(DINOV3_QKVB).to(TEST_DEVICE)
    attn = model.blocks[-1].attn
    assert attn.q_bias is not None and torch.equal(attn.k_bias, torch.zeros(48, device=TEST_DEVICE))
    x = images(1, 2 * 16, 3 * 16)
    called = []
    attn.qkv.register_forward_hook(lambda m, i, out: called.append(out))
    features = FeatureExtractor(model, DINOV3_QKVB).extract(x, frozenset({"feats"}))
    assert called == [], "the qkvb attention projects with F.linear, not its qkv module"
    inputs = last_attention_input_of_timm(timms_own(DINOV3_QKVB, model), x)
    keys = F.linear(inputs, attn.qkv.weight[48:96])  # the key bias is zero
    torch.testing.assert_close(features.feats, keys[:, 5:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [DINOV3, DINOV3_QKVB])
def test_dinov3_keys_before_and_after_rope_differ_by_a_rotation_and_both_run_lost(name):
    model = shrunk(name).to(TEST_DEVICE)
    x = images(1, 3 * 16, 4 * 16)
    pre = FeatureExtractor(model, name, rope_keys="pre").extract(x, frozenset({"feats", "cls_attention"}))
    post = FeatureExtractor(model, name, rope_keys="post").extract(x, frozenset({"feats", "cls_attention"}))
    assert pre.feats.shape == post.feats.shape == (1, 12, 48)
    assert (pre.feats - post.feats).abs().max() > 0.1
    # RoPE rotates pairs of channels of every head: each head's key keeps its norm.
    head_norms = [features.feats.reshape(1, 12, 3, 16).norm(dim=-1) for features in (pre, post)]
    torch.testing.assert_close(head_norms[0], head_norms[1], rtol=1e-4, atol=1e-4)
    # The CLS attention is the model's own (after RoPE) whatever the keys read.
    torch.testing.assert_close(pre.cls_attention, post.cls_attention, rtol=0, atol=0)
    own_attention = last_attention_matrix_of_timm(timms_own(name, model), x)
    torch.testing.assert_close(pre.cls_attention, own_attention[:, :, 0, 5:], rtol=1e-4, atol=1e-6)
    for features in (pre, post):
        box = discover_lost(features, [(48, 64)], LostParams())[0].box
        assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 48


def test_post_rope_keys_of_a_model_without_rope_are_refused():
    with pytest.raises(LostError, match=f"--rope_keys post: --arch {DINOV2_REG} has no rotary position embedding"):
        FeatureExtractor(shrunk(DINOV2_REG), DINOV2_REG, rope_keys="post")


def test_dino_v1_by_its_timm_name_is_dinos_model_with_dinos_features():
    model = shrunk(DINO_V1).to(TEST_DEVICE)
    assert isinstance(model, backbones.DinoVisionTransformer)
    same = backbones.DinoVisionTransformer(16, 48, 2, 3).eval().to(TEST_DEVICE)
    same.load_state_dict(model.state_dict())
    x = images(2, 3 * 16, 5 * 16)  # not DINO's trained 14 x 14 grid: DINO's resizing applies
    by_name = FeatureExtractor(model, DINO_V1).extract(x, frozenset({"feats"}))
    by_table = FeatureExtractor(same, "vit_tiny", 16).extract(x, frozenset({"feats"}))
    assert torch.equal(by_name.feats, by_table.feats)


def test_a_14_pixel_grid_pads_to_14_and_gives_boxes_in_pixels(tmp_path):
    write_noise_images(tmp_path, [(64, 48)])
    extractor = FeatureExtractor(shrunk(DINOV2_REG).to(TEST_DEVICE), DINOV2_REG)
    assert extractor.pad_multiple == 14
    (found,) = discover(extractor, single_image_records(tmp_path), DiscoveryConfig())
    assert found.grid == (4, 5) and found.scales == (14, 14)  # 48 x 64 padded to 56 x 70
    # Planted on that grid: the object is the 2 x 2 patches of rows 2-3, cols 3-4, whose pixels
    # [42, 28, 70, 56) are cut to the 64 x 48 image.
    feats = torch.zeros(1, 20, 2)
    feats[0, :, 0] = 1.0
    for row, col in [(2, 3), (2, 4), (3, 3), (3, 4)]:
        feats[0, row * 5 + col] = torch.tensor([-1.0, 1.0])
    planted = backbones.Features(feats, found.grid, found.scales)
    assert discover_lost(planted, [(48, 64)], LostParams())[0].box.tolist() == [42, 28, 64, 48]


# --- weights ------------------------------------------------------------------------------------


def official_dinov2_state_dict(model: torch.nn.Module) -> dict:
    """A timm DINOv2 state dict renamed to the official DINOv2 layout: the CLS position in
    ``pos_embed``, ``register_tokens``, a ``mask_token``, layer scales as ``ls1.gamma`` (timm's
    names too)."""
    state = dict(model.state_dict())
    official = {key: value for key, value in state.items() if key not in ("cls_token", "reg_token", "pos_embed")}
    cls_position = torch.randn(1, 1, state["cls_token"].shape[-1])
    official["cls_token"] = state["cls_token"] - cls_position
    official["pos_embed"] = torch.cat((cls_position, state["pos_embed"]), dim=1)
    official["register_tokens"] = state["reg_token"]
    official["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return official


def official_dinov3_state_dict(model: torch.nn.Module) -> dict:
    """A timm DINOv3 state dict renamed to the official DINOv3 layout: ``storage_tokens``,
    ``ls1.gamma``/``ls2.gamma``, one ``qkv.bias`` with its ``bias_mask``, ``rope_embed.periods``,
    a ``mask_token``."""
    official = {}
    for key, value in model.state_dict().items():
        key = key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        if key.endswith("attn.q_bias"):
            v_bias = model.state_dict()[key.replace("q_bias", "v_bias")]
            official[key.replace("q_bias", "qkv.bias")] = torch.cat((value, torch.zeros_like(value), v_bias))
            official[key.replace("q_bias", "qkv.bias_mask")] = torch.ones(3 * value.shape[0])
        elif not key.endswith("attn.v_bias"):
            official[key] = value
    official["rope_embed.periods"] = torch.ones(4)
    official["mask_token"] = torch.zeros(1, 48)
    return official


def load_file_into(name: str, path, **overrides) -> torch.nn.Module:
    model = backbones.timm_vit(name, **{**SHRUNK, **overrides})
    state_dict = backbones.timm_state_dict(model, backbones.load_checkpoint_state_dict(path))
    backbones.load_weights(model, state_dict, str(path), name)
    return model


def test_an_official_dinov2_checkpoint_with_registers_loads(tmp_path):
    source = shrunk(DINOV2_REG, img_size=56)
    official = official_dinov2_state_dict(source)
    assert {"register_tokens", "mask_token", "blocks.0.ls1.gamma"} <= official.keys()
    torch.save(official, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    loaded = load_file_into(DINOV2_REG, tmp_path / "dinov2_vits14_reg4_pretrain.pth", img_size=56)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [DINOV3, DINOV3_QKVB])
def test_an_official_dinov3_checkpoint_loads(tmp_path, name):
    source = shrunk(name)
    torch.save(official_dinov3_state_dict(source), tmp_path / "dinov3.pth")
    loaded = load_file_into(name, tmp_path / "dinov3.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_timm_checkpoint_of_another_depth_lists_the_missing_parameters(tmp_path):
    torch.save(backbones.timm_vit(DINOV2_REG, **{**SHRUNK, "depth": 1}).state_dict(), tmp_path / "shallow.pth")
    with pytest.raises(LostError, match=r"shallow.pth: these weights do not fit .*14 missing \(blocks\.1\.norm1\.weight"):
        load_file_into(DINOV2_REG, tmp_path / "shallow.pth")


def test_a_checkpoint_of_another_patch_size_is_reported_not_resampled(tmp_path):
    torch.save(backbones.timm_vit(DINOV3, **SHRUNK).state_dict(), tmp_path / "patch16.pth")
    with pytest.raises(LostError, match=r"shape mismatch \(patch_embed.proj.weight \(48, 3, 16, 16\) vs \(48, 3, 14, 14\)"):
        load_file_into("vit_small_patch14_dinov2.lvd142m", tmp_path / "patch16.pth")


def test_failed_timm_download_names_the_model_the_cache_folder_and_the_flag(monkeypatch):
    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(LostError) as error:
        backbones.get_model(DINOV2_REG)
    message = str(error.value)
    assert message.startswith(f"--arch {DINOV2_REG}: cannot get timm's pretrained weights")
    assert huggingface_hub.constants.HF_HUB_CACHE in message
    assert "--pretrained_weights" in message and "\n" not in message


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dinov2_reg_checkpoint(tmp_path_factory) -> str:
    """A random-weight ViT-S/14 with 4 registers (the real architecture), in the official DINOv2 layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "dinov2_vits14_reg4_random.pth"
    torch.save(official_dinov2_state_dict(backbones.timm_vit(DINOV2_REG)), path)
    return str(path)


@pytest.mark.parametrize(
    "method_flags, folder",
    [([], f"LOST-{DINOV2_REG}_k"), (["--method", "dinoseg"], f"{DINOV2_REG}_dinoseg-head4")],
)
def test_main_lost_runs_a_dinov2_checkpoint_with_registers(tmp_path, dinov2_reg_checkpoint, method_flags, folder):
    write_noise_images(tmp_path / "images", [(64, 48), (48, 64), (50, 40)])
    code = main_lost.main([
        "--image_path", str(tmp_path / "images"), "--arch", DINOV2_REG, "--pretrained_weights", dinov2_reg_checkpoint,
        "--output_dir", str(tmp_path / "out"), "--num_workers", "0", *DEVICE_FLAGS, *method_flags,
    ])
    assert code == 0
    run = tmp_path / "out" / input_folder(tmp_path / "images") / f"{folder}{weights_tag(dinov2_reg_checkpoint)}"
    preds = read_predictions(run / "preds.pkl")
    sizes = {"000000.jpg": (64, 48), "000001.jpg": (48, 64), "000002.jpg": (50, 40)}
    assert sorted(preds) == sorted(sizes)
    for name, (width, height) in sizes.items():
        x1, y1, x2, y2 = preds[name].tolist()
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x1 % 14 == 0 and y1 % 14 == 0
        assert x2 % 14 == 0 or x2 == width
        assert y2 % 14 == 0 or y2 == height


def test_main_lost_names_an_unknown_arch_in_one_line(capsys):
    code = main_lost.main(["--image_path", "examples/chelsea.jpg", "--arch", "vit_small_patch14_nothing"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --arch vit_small_patch14_nothing: unknown architecture") and err.count("\n") == 1
