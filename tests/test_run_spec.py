"""The run specification and the method table: names, resume settings and flags derived, never copied."""

import dataclasses
import hashlib

import pytest

import main_lost
from lost.backbones import BackboneSpec
from lost.cli import params_from_args
from lost.errors import LostError
from lost.io.journal import Journal
from lost.methods import METHODS, DinoSegParams, LostParams, MaskCutParams, TokenCutParams, flag
from lost.run_spec import RunSpec, input_folder_name


def spec(method: str = "lost", params=None, **backbone) -> RunSpec:
    params = params if params is not None else METHODS[method].params()
    return RunSpec("VOC07_trainval", BackboneSpec(**backbone), method, params)


@pytest.mark.parametrize(
    "method, params, backbone, expected",
    [
        ("lost", LostParams(), {}, "LOST-vit_small16_k"),
        ("lost", LostParams(), {"arch": "vit_base", "patch_size": 8, "which_features": "q"}, "LOST-vit_base8_q"),
        ("lost", LostParams(), {"arch": "resnet50"}, "LOST-resnet50dilate2"),
        ("lost", LostParams(), {"arch": "resnet50_imagenet", "resnet_dilate": 4}, "LOST-resnet50_imagenetdilate4"),
        ("lost", LostParams(), {"arch": "vgg16_imagenet"}, "LOST-vgg16_imagenet"),
        ("dinoseg", DinoSegParams(), {}, "vit_small-16_dinoseg-head4"),
        ("dinoseg", DinoSegParams(head=2), {"arch": "vit_tiny"}, "vit_tiny-16_dinoseg-head2"),
    ],
)
def test_experiment_names_are_the_published_ones(method, params, backbone, expected):
    assert spec(method, params, **backbone).experiment_name() == expected


def test_a_vit_only_method_refuses_a_convnet_before_any_model_loads():
    with pytest.raises(LostError, match="--method dinoseg needs a ViT --arch, not resnet50"):
        spec("dinoseg", arch="resnet50").experiment_name()


def test_settings_hold_every_field_of_the_spec_and_its_parts_that_apply():
    settings = spec("lost", LostParams(k_patches=7), weights="w.pth").settings()
    assert settings == {
        "input": "VOC07_trainval",
        "backbone": {"arch": "vit_small", "patch_size": 16, "weights": "w.pth",
                     "checkpoint_key": "teacher", "which_features": "k", "rope_keys": "pre"},
        "method": "lost",
        "params": {"k_patches": 7},
        "precision": "fp32",
        "max_size": 1024,
        "refine": None,
        "preset": None,
        "fixed_size": None,
    }
    assert spec("lost", arch="resnet50").settings()["backbone"] == {
        "arch": "resnet50", "resnet_dilate": 2, "weights": None, "checkpoint_key": "teacher"}
    assert spec("dinoseg", arch="vit_tiny").settings()["backbone"] == {
        "arch": "vit_tiny", "patch_size": 16, "weights": None, "checkpoint_key": "teacher", "rope_keys": "pre"}


def test_a_new_field_makes_resume_refuse_a_journal_written_without_it(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, spec().settings()).close()
    Journal(path, spec().settings()).close()
    extended = dataclasses.make_dataclass("ExtendedRunSpec", [("crop", str, "none")], bases=(RunSpec,), frozen=True)
    with pytest.raises(LostError, match="other settings"):
        Journal(path, extended("VOC07_trainval", BackboneSpec(), "lost", LostParams()).settings())


def test_a_changed_method_parameter_makes_resume_refuse(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, spec().settings()).close()
    with pytest.raises(LostError, match="other settings"):
        Journal(path, spec("lost", LostParams(k_patches=99)).settings())


def test_every_method_draws_pred_and_declares_a_flag_for_each_parameter():
    for method in METHODS.values():
        assert "pred" in method.pictures
        for param in dataclasses.fields(method.params):
            assert param.metadata["flag"].startswith("--") and param.metadata["help"]


def test_method_flags_fill_the_chosen_methods_parameters():
    assert params_from_args(METHODS["lost"], main_lost.parse_args(["--k_patches", "30"])) == LostParams(k_patches=30)
    assert params_from_args(METHODS["dinoseg"], main_lost.parse_args([])) == DinoSegParams(head=4), "unset flags keep the default"


def test_dinoseg_flag_is_an_alias_of_the_method():
    alias = main_lost.run_spec(main_lost.parse_args(["--dinoseg", "--dinoseg_head", "1"]), "x")
    named = main_lost.run_spec(main_lost.parse_args(["--method", "dinoseg", "--dinoseg_head", "1"]), "x")
    assert alias == named and alias.params == DinoSegParams(head=1)


def test_dinoseg_flag_and_another_method_disagree():
    with pytest.raises(LostError, match="--dinoseg and --method lost disagree"):
        main_lost.run_spec(main_lost.parse_args(["--dinoseg", "--method", "lost"]), "x")


@pytest.mark.parametrize(
    "method, params, run, expected",
    [
        ("lost", LostParams(k_patches=50), {}, "LOST-vit_small16_k_k_patches-50"),
        ("lost", LostParams(), {"precision": "bf16", "max_size": 512}, "LOST-vit_small16_k_precision-bf16_max_size-512"),
        ("lost", LostParams(), {"max_size": None}, "LOST-vit_small16_k_max_size-none"),
        ("tokencut", TokenCutParams(tau=0.1), {}, "TokenCut-vit_small16_k_tau-0.1"),
        ("tokencut", TokenCutParams(binary_graph=False, eps=1e-3), {}, "TokenCut-vit_small16_k_eps-0.001_no_binary_graph"),
        ("maskcut", MaskCutParams(max_objects=5, tau=0.3), {}, "MaskCut-vit_small16_k_max_objects-5_tau-0.3"),
        ("dinoseg", DinoSegParams(head=2), {}, "vit_small-16_dinoseg-head2"),
    ],
)
def test_every_setting_off_its_default_is_named_once(method, params, run, expected):
    assert RunSpec("VOC07_trainval", BackboneSpec(), method, params, **run).experiment_name() == expected


def test_a_weights_file_is_named_by_the_sha256_of_its_bytes(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"abc")
    # sha256(b"abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
    assert spec(weights=str(weights)).experiment_name() == "LOST-vit_small16_k_weights-ba7816bf"
    assert spec(weights=str(weights), checkpoint_key="student").experiment_name() == (
        "LOST-vit_small16_k_weights-ba7816bf_checkpoint_key-student"
    )


def test_a_new_method_and_its_parameters_are_named_with_no_code_of_their_own(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class ToyParams:
        alpha: float = dataclasses.field(default=1.0, metadata=flag("--alpha", "a weight"))
        sharp: bool = dataclasses.field(default=False, metadata=flag("--sharp", "a switch", action="store_true"))

    toy = dataclasses.replace(METHODS["lost"], name="toy", params=ToyParams, folder=lambda backbone, _p: f"Toy-{backbone.label()}")
    monkeypatch.setitem(METHODS, "toy", toy)
    assert RunSpec("x", BackboneSpec(), "toy", ToyParams()).experiment_name() == "Toy-vit_small16"
    assert RunSpec("x", BackboneSpec(), "toy", ToyParams(alpha=0.5, sharp=True)).experiment_name() == "Toy-vit_small16_alpha-0.5_sharp"
    assert RunSpec("x", BackboneSpec(which_features="q"), "toy", ToyParams(alpha=0.5, sharp=True)).experiment_name() == (
        "Toy-vit_small16_which_features-q_alpha-0.5_sharp"
    )


def test_a_folder_input_lives_under_its_name_and_the_hash_of_its_resolved_path():
    assert input_folder_name("/data/photos") == "photos-" + hashlib.sha256(b"/data/photos").hexdigest()[:8]
    assert input_folder_name("/elsewhere/photos") != input_folder_name("/data/photos")
    assert input_folder_name("VOC07_trainval") == "VOC07_trainval"


def test_a_journal_of_other_settings_names_each_difference_there_and_here(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, RunSpec("/a/photos", BackboneSpec(), "lost", LostParams()).settings()).close()
    with pytest.raises(LostError) as refused:
        Journal(path, RunSpec("/b/photos", BackboneSpec(), "lost", LostParams(k_patches=7)).settings())
    assert "(input: /a/photos there, /b/photos here; params.k_patches: 100 there, 7 here)" in str(refused.value)
