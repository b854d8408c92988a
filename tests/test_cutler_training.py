"""CutLER's detector on detectron2 end to end: the configs as published, reading our and CutLER's
COCO files, the bad-input matrix, and a tiny CPU training (random weights) that checkpoints,
resumes after a simulated kill and predicts RLE masks pycocotools reads."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed: run bash tools/install_detectron2.sh")

from cutler_fixtures import PLANTED, cutler_style, write_json, write_planted_images
from detection_fixtures import load_tool
from pycocotools.coco import COCO

from lost.detection.cutler import coco_input
from lost.detection.cutler import training as cutler_training
from lost.detection.cutler.roi_heads import DropLossOutputLayers
from lost.errors import LostError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tools" / "configs" / "CutLER"

# CutLER's configs shrunk for a CPU: ResNet-18 with BN, narrow FPN and heads, 64-128 px images,
# few proposals, batch 2, 10 iterations, a checkpoint every 4.
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.ROI_MASK_HEAD.CONV_DIM", "8", "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "4", "TEST.PRECISE_BN.NUM_ITER", "1", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
]  # fmt: skip


def run_script(*argv, cwd):
    """tools/train_net_cutler.py in a subprocess, on one thread (a tiny model runs several times
    faster so on a shared CPU)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_net_cutler.py"), *[str(a) for a in argv]],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# ----------------------------------------------------------------------------------------------
# Configs


def config(name, *opts):
    return cutler_training.load_config(str(CONFIGS / f"{name}.yaml"), list(opts))


def test_the_cascade_config_is_cutlers():
    cfg = config("cascade_mask_rcnn_R_50_FPN")
    assert cfg.MODEL.ROI_HEADS.NAME == "CustomCascadeROIHeads" and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG and cfg.MODEL.MASK_ON
    assert (cfg.MODEL.ROI_HEADS.USE_DROPLOSS, cfg.MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH) == (True, 0.01)
    assert (cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN, cfg.MODEL.RPN.NMS_THRESH) == (4000, 0.65)
    assert (cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM) == (0, "SyncBN", "SyncBN")
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.GAMMA) == (0.01, 0.00005, 0.02)
    assert (cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH) == ((80000,), 160000, 16)
    clip = cfg.SOLVER.CLIP_GRADIENTS
    assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE) == (True, "norm", 1.0, 2.0)
    assert cfg.SOLVER.AMP.ENABLED
    assert cfg.INPUT.MIN_SIZE_TRAIN == (240, 320, 480, 640, 672, 704, 736, 768, 800, 1024)
    assert (cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MASK_FORMAT, cfg.INPUT.FORMAT) == (1333, "bitmask", "RGB")
    loader = cfg.DATALOADER
    assert (loader.COPY_PASTE, loader.COPY_PASTE_RATE, loader.COPY_PASTE_RANDOM_NUM) == (True, 1.0, True)
    assert (loader.COPY_PASTE_MIN_RATIO, loader.COPY_PASTE_MAX_RATIO) == (0.3, 1.0)
    assert (cfg.TEST.PRECISE_BN.NUM_ITER, cfg.TEST.DETECTIONS_PER_IMAGE) == (200, 100)


def test_the_self_training_config_turns_droploss_off_and_starts_from_round_one():
    cfg = config("cascade_mask_rcnn_R_50_FPN_self_train")
    assert cfg.MODEL.ROI_HEADS.NAME == "CustomCascadeROIHeads" and not cfg.MODEL.ROI_HEADS.USE_DROPLOSS
    assert cfg.MODEL.WEIGHTS == "outputs/CutLER_cascade_mask_rcnn_R_50_FPN/model_final.pth"
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, cfg.SOLVER.GAMMA) == (
        0.005,
        (79999,),
        80000,
        1.0,
    )
    assert cfg.DATALOADER.COPY_PASTE_MIN_RATIO == 0.5 and cfg.SOLVER.AMP.ENABLED


def test_the_mask_rcnn_variant_has_standard_heads_without_amp():
    cfg = config("mask_rcnn_R_50_FPN")
    assert cfg.MODEL.ROI_HEADS.NAME == "CustomStandardROIHeads" and cfg.MODEL.ROI_HEADS.USE_DROPLOSS
    assert not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG and not cfg.SOLVER.AMP.ENABLED


def test_amp_is_turned_off_on_a_cpu():
    assert not config("cascade_mask_rcnn_R_50_FPN", "MODEL.DEVICE", "cpu").SOLVER.AMP.ENABLED


@pytest.mark.parametrize("name, stages", [("cascade_mask_rcnn_R_50_FPN", 3), ("mask_rcnn_R_50_FPN", 1)])
def test_every_box_predictor_applies_droploss(name, stages):
    from detectron2.modeling import build_model

    model = build_model(config(name, *TINY))
    predictors = model.roi_heads.box_predictor
    predictors = list(predictors) if stages > 1 else [predictors]
    assert len(predictors) == stages
    assert all(
        isinstance(p, DropLossOutputLayers) and p.use_droploss and p.droploss_iou_thresh == 0.01 for p in predictors
    )
    if stages > 1:  # each stage moves boxes with its own weights
        expected = [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
        assert [tuple(p.box2box_transform.weights) for p in predictors] == expected


def test_settings_that_change_nothing_here_are_refused():
    with pytest.raises(LostError, match=r"TEST.NO_SEGM True: not supported here"):
        cutler_training.check_config(config("cascade_mask_rcnn_R_50_FPN", "TEST.NO_SEGM", "True"))
    with pytest.raises(LostError, match=r"COPY_PASTE True needs masks"):
        cutler_training.check_config(config("cascade_mask_rcnn_R_50_FPN", "MODEL.MASK_ON", "False"))


# ----------------------------------------------------------------------------------------------
# COCO input files


@pytest.fixture
def planted(tmp_path):
    images = tmp_path / "images"
    content = write_planted_images(images)
    return images, content


def test_our_file_and_cutlers_swapped_file_give_the_same_records(planted, tmp_path):
    images, content = planted
    ours = coco_input.read_coco_input(write_json(tmp_path / "ours.json", content), images)
    theirs = coco_input.read_coco_input(write_json(tmp_path / "cutler.json", cutler_style(content)), images)
    assert not ours.sizes_swapped and theirs.sizes_swapped
    records = coco_input.detectron2_records(ours)
    assert records == coco_input.detectron2_records(theirs)
    assert [(r["width"], r["height"]) for r in records] == [size for size, _ in PLANTED.values()]
    assert records[0]["file_name"] == str(images / "a/0.jpg") and records[0]["annotations"][0]["category_id"] == 0
    assert records[0]["annotations"][0]["bbox_mode"] == 1 and len(records[0]["annotations"]) == 2


def test_a_file_without_masks_is_refused_naming_the_fix(planted, tmp_path):
    images, content = planted
    del content["annotations"][2]["segmentation"]
    path = write_json(tmp_path / "boxes.json", content)
    with pytest.raises(
        LostError, match=r"boxes\.json: annotation 3 \(image 2\) has no segmentation mask; train on a file with masks"
    ):
        coco_input.read_coco_input(path, images)
    assert coco_input.read_coco_input(path, images, require_masks=False).images


def test_images_missing_from_the_root_are_refused(planted, tmp_path):
    images, content = planted
    path = write_json(tmp_path / "ours.json", content)
    shutil.rmtree(images / "b")
    with pytest.raises(
        LostError, match=r"ours\.json: 2 of 4 images are not in .*images \(b/2\.jpg, b/3\.jpg\); pass --image_root"
    ):
        coco_input.read_coco_input(path, images)


def test_a_mask_of_the_wrong_size_is_refused(planted, tmp_path):
    images, content = planted
    content["annotations"][0]["segmentation"]["size"] = [60, 96]
    path = write_json(tmp_path / "ours.json", content)
    with pytest.raises(
        LostError, match=r"annotation 1 of image 1 \(a/0\.jpg\) has a 60 x 96 mask but the image is 64 x 96"
    ):
        coco_input.read_coco_input(path, images)


def test_a_file_mixing_true_and_swapped_sizes_is_a_mask_of_the_wrong_size(planted, tmp_path):
    images, content = planted
    image = content["images"][1]
    image["width"], image["height"] = image["height"], image["width"]  # only a/1.jpg swapped
    path = write_json(tmp_path / "mixed.json", content)
    with pytest.raises(
        LostError, match=r"annotation 3 of image 2 \(a/1\.jpg\) has a 96 x 64 mask but the image is 64 x 96"
    ):
        coco_input.read_coco_input(path, images)


def test_a_test_file_with_several_categories_is_evaluated_through_a_one_category_copy(planted, tmp_path):
    images, content = planted
    swapped = cutler_style(content)
    content["categories"].append({"id": 7, "name": "dog"})
    content["annotations"][0]["category_id"] = 7
    test = coco_input.read_coco_input(write_json(tmp_path / "gt.json", content), images, require_masks=False)
    path, category = cutler_training.evaluation_gt(test, tmp_path / "out")
    copied = json.loads(path.read_text())
    assert (path.parent, category) == (tmp_path / "out" / "inference", 1)
    assert copied["categories"] == [{"id": 1, "name": "fg", "supercategory": "fg"}]
    assert {a["category_id"] for a in copied["annotations"]} == {1} and copied["images"] == content["images"]
    single = coco_input.read_coco_input(write_json(tmp_path / "one.json", swapped), images)  # one category, swapped
    assert cutler_training.evaluation_gt(single, tmp_path / "out2")[1] == 1
    assert (
        json.loads((tmp_path / "out2" / "inference" / "cutler_test_class_agnostic_gt.json").read_text())["images"]
        == (content["images"])
    )
    ours = coco_input.read_coco_input(write_json(tmp_path / "ours.json", cutler_style(swapped)), images)
    assert cutler_training.evaluation_gt(ours, tmp_path / "out3") == (tmp_path / "ours.json", 1)


def test_the_script_reports_bad_inputs_in_one_line(planted, tmp_path, capsys):
    images, _ = planted
    assert cutler_training.main(["--train_json", str(tmp_path / "none.json"), "--image_root", str(images), *TINY]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'none.json'}: COCO file not found; pass --train_json / --test_json a COCO instances file"
    ]


def test_eval_only_needs_a_test_file(capsys):
    assert cutler_training.main(["--eval-only", *TINY]) == 2
    assert capsys.readouterr().err.startswith("error: --eval-only needs --test_json")


# ----------------------------------------------------------------------------------------------
# Training, resuming, predicting


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("cutler")
    images = work / "images"
    content = write_planted_images(images)
    train_json = write_json(work / "instances.json", content)
    output = work / "out"
    done = run_script("--train_json", train_json, "--image_root", images, *TINY, "OUTPUT_DIR", output, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, images, content, output


def iterations(output):
    lines = (output / "metrics.json").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if "total_loss" in line]


def test_ten_cpu_iterations_write_checkpoints_with_finite_losses(trained):
    _, _, _, output = trained
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    losses = [m for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(m["total_loss"]) for m in losses)
    assert {f"loss_cls_stage{k}" for k in range(3)} | {"loss_mask"} <= set(losses[-1])
    kept = [losses[-1][f"stage{k}/fast_rcnn/droploss_kept_fraction"] for k in range(3)]
    assert all(0 <= fraction <= 1 for fraction in kept)
    assert {"model_0000003.pth", "model_0000007.pth", "model_final.pth"} <= {p.name for p in output.glob("*.pth")}


def test_a_killed_run_resumes_from_its_last_checkpoint(trained, tmp_path):
    work, images, _, output = trained
    resumed = tmp_path / "out"
    shutil.copytree(output, resumed)
    (resumed / "model_final.pth").unlink()
    (resumed / "last_checkpoint").write_text("model_0000007.pth")
    (resumed / "metrics.json").write_text("")
    done = run_script(
        "--resume", "--train_json", work / "instances.json", "--image_root", images, *TINY, "OUTPUT_DIR", resumed,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert min(iterations(resumed)) >= 8 and (resumed / "model_final.pth").is_file()


@pytest.fixture(scope="module")
def predicted(trained):
    """--eval-only of the trained model on CutLER's version of the training file (sizes swapped)."""
    work, images, content, output = trained
    test_json = write_json(work / "cutler.json", cutler_style(content))
    done = run_script(
        "--eval-only", "--test_json", test_json, "--image_root", images, *TINY,
        "MODEL.WEIGHTS", output / "model_final.pth", "OUTPUT_DIR", work / "eval", cwd=work,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return work / "eval" / "inference" / "coco_instances_results.json"


def test_eval_only_writes_rle_masks_pycocotools_reads(trained, predicted, tmp_path):
    _, _, content, _ = trained
    detections = json.loads(predicted.read_text())
    assert detections and {d["category_id"] for d in detections} == {1}
    loaded = COCO(str(write_json(tmp_path / "ours.json", content))).loadRes(str(predicted))
    sizes = {image["id"]: [image["height"], image["width"]] for image in content["images"]}
    for detection in loaded.dataset["annotations"]:
        assert detection["segmentation"]["size"] == sizes[detection["image_id"]]  # true sizes, not CutLER's
        assert isinstance(detection["segmentation"]["counts"], str) and 0 <= detection["score"] <= 1


def test_the_predictions_merge_into_the_next_rounds_training_file(trained, predicted, tmp_path):
    work, images, _, _ = trained
    merge = load_tool("get_self_training_ann")
    argv = [
        "--new-pred",
        str(predicted),
        "--prev-ann",
        str(work / "cutler.json"),
        "--save-path",
        str(tmp_path / "r1.json"),
    ]
    assert merge.main([*argv, "--threshold", "0.0"]) == 0
    merged = json.loads((tmp_path / "r1.json").read_text())
    assert [a["id"] for a in merged["annotations"]] == list(range(1, len(merged["annotations"]) + 1))
    assert merged["images"] == json.loads((work / "cutler.json").read_text())["images"]
    round_one = coco_input.read_coco_input(tmp_path / "r1.json", images)
    assert round_one.sizes_swapped
    assert sum(len(a) for a in round_one.annotations.values()) == len(merged["annotations"])
