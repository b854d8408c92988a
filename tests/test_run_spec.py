"""The run specification and the method table: names, resume settings and flags derived, never copied."""

import dataclasses

import pytest

import main_lost
from lost.backbones import BackboneSpec
from lost.cli import params_from_args
from lost.errors import LostError
from lost.io.journal import Journal
from lost.methods import METHODS, DinoSegParams, LostParams
from lost.run_spec import RunSpec


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
