"""The detectron2 side: configs, the extra-norm RoI head, data set registration, and a real (tiny)
CAD and OD training run through the scripts users call, followed by CorLoc and the Hungarian AP."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

pytest.importorskip(
    "detectron2.engine", reason="detectron2 is not installed: run bash tools/install_detectron2.sh first"
)

from detection_fixtures import load_tool, make_voc_detection_tree

from lost.data import images
from lost.detection import data as detection_data
from lost.detection import training as detector_training
from lost.errors import LostError
from lost.io import safe_files

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tools" / "configs"

# The paper's configs, shrunk for a CPU: BN instead of SyncBN, 64 x 96 images, a few RoIs of small
# pooled size, batch 2, 3 iterations, one loader worker, every detection kept.
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "10",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "10",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "4", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "6",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
    "TEST.PRECISE_BN.NUM_ITER", "1", "DATALOADER.NUM_WORKERS", "1",
]  # fmt: skip


def run(script, *argv, cwd):
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *[str(a) for a in argv]], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# ----------------------------------------------------------------------------------------------
# Configs and model


@pytest.mark.parametrize(
    "name, num_classes, train, test, max_iter",
    [
        ("RN50_DINO_FRCNN_VOC07_CAD", 1, "voc_2007_trainval_LOST_CAD", "voc_2007_test_CAD_coco_style", 10000),
        ("RN50_DINO_FRCNN_VOC12_CAD", 1, "voc_2012_trainval_LOST_CAD", "voc_2007_test_CAD_coco_style", 24000),
        ("RN50_DINO_FRCNN_COCO20k_CAD", 1, "coco20k_train_LOST_CAD", "coco20k_train_CAD_gt", 24000),
        ("RN50_DINO_FRCNN_VOC07_OD", 20, "voc_2007_trainval_LOST_OD_clu20", "voc_2007_test_coco_style", 24000),
        ("RN50_DINO_FRCNN_VOC12_OD", 20, "voc_2012_trainval_LOST_OD_clu20", "voc_2007_test_coco_style", 24000),
    ],
)
def test_configs_follow_the_paper(name, num_classes, train, test, max_iter):
    cfg = detector_training.load_config(str(CONFIGS / f"{name}.yaml"), [])
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm" and cfg.MODEL.ROI_HEADS.NUM_CLASSES == num_classes
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.RESNETS.OUT_FEATURES == ["res4"]
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([255 * m for m in images.IMAGENET_MEAN])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([255 * s for s in images.IMAGENET_STD])
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(range(480, 801, 32)) and cfg.INPUT.MIN_SIZE_TEST == 800
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.IMS_PER_BATCH) == (0.02, 100, 16)
    assert cfg.SOLVER.STEPS == (18000, 22000) and cfg.SOLVER.MAX_ITER == max_iter
    assert cfg.DATASETS.TRAIN == (train,) and cfg.DATASETS.TEST == (test,)
    assert cfg.TEST.PRECISE_BN.ENABLED
    for dataset in (train, test):
        assert detection_data.prepared_dataset(dataset) is not None


def test_roi_head_has_a_norm_after_res5():
    from detectron2.modeling import build_model

    cfg = detector_training.load_config(str(CONFIGS / "RN50_DINO_FRCNN_VOC07_CAD.yaml"), TINY)
    model = build_model(cfg)
    norm = model.roi_heads.res5.norm
    assert isinstance(norm, torch.nn.BatchNorm2d) and norm.num_features == 2048
    assert list(model.roi_heads.res5.children())[-1] is norm


# ----------------------------------------------------------------------------------------------
# Registration and input checks


def test_prepared_files_register_as_detectron2_data_sets(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    voc_dir = make_voc_detection_tree(tmp_path / "datasets")
    prepared = tmp_path / "prepared"
    safe_files.write_json(
        prepared / "voc_2007_test_coco_style.json", detection_data.voc_coco_style(voc_dir, "2007", "test", False)
    )
    records = detection_data.voc_pseudo_box_records(
        voc_dir, "2007", {"000001.jpg": np.array([8, 8, 40, 32])}, {"000001.jpg": 4}
    )
    od = detection_data.od_dataset("2007", 5)
    safe_files.write_json(od.path(prepared), detection_data.dataset_dicts_file(records, od, "test"))
    names = detector_training.register_prepared_datasets(prepared)
    assert {"voc_2007_trainval_LOST_CAD", "coco20k_train_CAD_gt", "voc_2007_trainval_LOST_OD_clu5"} <= set(names)
    test = DatasetCatalog.get("voc_2007_test_coco_style")
    assert [r["image_id"] for r in test] == ["000003", "000004"]
    assert [(a["category_id"], a["bbox"]) for a in test[0]["annotations"]] == [
        (11, [4.0, 4.0, 16.0, 16.0]),
        (14, [30.0, 4.0, 30.0, 40.0]),
    ]
    assert MetadataCatalog.get("voc_2007_test_coco_style").thing_classes[11] == "dog"
    (pseudo,) = DatasetCatalog.get("voc_2007_trainval_LOST_OD_clu5")
    assert pseudo["annotations"][0]["bbox_mode"] is BoxMode.XYXY_ABS and pseudo["annotations"][0]["category_id"] == 4
    with pytest.raises(LostError, match="prepare_voc_LOST_CAD_pseudo_boxes"):
        DatasetCatalog.get("voc_2007_trainval_LOST_CAD")


def test_missing_inputs_are_reported_before_launching(tmp_path):
    cfg = detector_training.load_config(
        str(CONFIGS / "RN50_DINO_FRCNN_VOC07_CAD.yaml"), ["MODEL.WEIGHTS", str(tmp_path / "w.pkl")]
    )
    with pytest.raises(
        LostError, match=r"voc_2007_trainval_LOST_CAD\.json: prepared file .* python tools/prepare_voc_LOST_CAD"
    ):
        detector_training.check_inputs(cfg, tmp_path, resume=False)
    for name in ("voc_2007_trainval_LOST_CAD", "voc_2007_test_CAD_coco_style"):
        (tmp_path / f"{name}.json").write_text("{}")
    with pytest.raises(LostError, match=r"MODEL\.WEIGHTS .*w\.pkl: no such file; convert"):
        detector_training.check_inputs(cfg, tmp_path, resume=False)
    cfg.DATASETS.TEST = ("voc_2099_test",)
    with pytest.raises(LostError, match="'voc_2099_test' of the config is unknown"):
        detector_training.check_inputs(cfg, tmp_path, resume=False)


def test_cli_errors_areone_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "train_net_for_LOST_CAD.py"),
            "--config-file",
            str(tmp_path / "none.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --config-file '{tmp_path / 'none.yaml'}': no such file; pass one of tools/configs/*.yaml"
    ]


# ----------------------------------------------------------------------------------------------
# Smoke run: LOST boxes -> prepared data -> CAD / OD training -> CorLoc / Hungarian AP


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny VOC07 tree, LOST boxes of its trainval images, DINO-like ResNet-50 weights converted
    to detectron2's format, and the prepared CAD data."""
    work = tmp_path_factory.mktemp("pipeline")
    voc_dir = make_voc_detection_tree(work / "datasets")
    safe_files.write_predictions(
        work / "lost", {"000001.jpg": np.array([8, 8, 40, 32]), "000002.jpg": np.array([32, 16, 56, 40])}
    )
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), work / "dino_resnet50_pretrain.pth")
    prepared = work / "prepared"
    run(
        "tools/convert_pretrained_to_detectron_format.py",
        "--input",
        work / "dino_resnet50_pretrain.pth",
        "--output",
        work / "d2.pkl",
        cwd=work,
    )
    prepare = load_tool("prepare_voc_LOST_CAD_pseudo_boxes_in_detectron2_format")
    assert (
        prepare.main([f"--pboxes={work / 'lost' / 'preds.pkl'}", f"--voc_dir={voc_dir}", f"--output_dir={prepared}"])
        == 0
    )
    for cad in (["--is_CAD"], []):
        prepare = load_tool("prepare_voc_data_in_coco_style")
        assert prepare.main([*cad, f"--voc07_dir={voc_dir}", f"--output_dir={prepared}"]) == 0
    return work


def check_training_output(output: Path) -> list[dict]:
    """Finite losses, a checkpoint whose backbone came from the converted weights, detections."""
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert (output / "model_final.pth").is_file()
    log = (output / "log.txt").read_text()
    unloaded = log.split("not found in the checkpoint:", 1)[-1].split("[", 1)[0]
    assert "backbone." not in unloaded and "roi_heads.res5.0" not in unloaded
    detections = json.loads((output / "inference" / "coco_instances_results.json").read_text())
    assert detections
    return detections


def test_cad_training_then_corloc(pipeline):
    work = pipeline
    output = work / "out_cad"
    common = ["--prepared-dir", work / "prepared", "--config-file", CONFIGS / "RN50_DINO_FRCNN_VOC07_CAD.yaml"]
    run(
        "tools/train_net_for_LOST_CAD.py",
        *common,
        *TINY,
        "MODEL.WEIGHTS",
        work / "d2.pkl",
        "OUTPUT_DIR",
        output,
        cwd=work,
    )
    detections = check_training_output(output)
    assert {d["image_id"] for d in detections} <= {"000003", "000004"} and {d["category_id"] for d in detections} == {1}
    results = output / "inference" / "coco_instances_results.json"
    corloc = run(
        "main_corloc_evaluation.py", "--dataset", "VOC07", "--set", "test", "--type_pred", "detectron",
        "--pred_file", results, "--datasets_root", work / "datasets", cwd=work,
    )  # fmt: skip
    assert "corloc: " in corloc and "/2)" in corloc

    run(
        "tools/train_net_for_LOST_CAD.py", "--resume", "--eval-only", *common, *TINY, "OUTPUT_DIR", output,
        "MODEL.WEIGHTS", output / "model_final.pth", "DATASETS.TEST", '("voc_2007_trainval_CAD_coco_style",)', cwd=work,
    )  # fmt: skip
    assert {d["image_id"] for d in json.loads(results.read_text())} <= {"000001", "000002"}
    corloc = run(
        "main_corloc_evaluation.py", "--dataset", "VOC07", "--set", "trainval", "--type_pred", "detectron",
        "--pred_file", results, "--datasets_root", work / "datasets", cwd=work,
    )  # fmt: skip
    assert "corloc: " in corloc and "/2)" in corloc


def test_od_clustering_training_then_hungarian_ap(pipeline, vit_tiny_checkpoint):
    work = pipeline
    pred_file = work / "lost" / "preds.pkl"
    run(
        "cluster_for_OD.py", "--pred_file", pred_file, "--nb_clusters", "2", "--dataset", "VOC07", "--set", "trainval",
        "--datasets_root", work / "datasets", "--arch", "vit_tiny", "--pretrained_weights", vit_tiny_checkpoint,
        "--num_workers", "0", cwd=work,
    )  # fmt: skip
    prepare = load_tool("prepare_voc_LOST_OD_pseudo_boxes_in_detectron2_format")
    argv = [f"--pboxes={work / 'lost' / 'preds_clustered_2clu.pkl'}", f"--voc_dir={work / 'datasets' / 'VOC2007'}"]
    assert prepare.main([*argv, f"--output_dir={work / 'prepared'}"]) == 0
    output = work / "out_od"
    run(
        "tools/train_net_for_LOST_OD.py", "--prepared-dir", work / "prepared",
        "--config-file", CONFIGS / "RN50_DINO_FRCNN_VOC07_OD.yaml", *TINY,
        "DATASETS.TRAIN", '("voc_2007_trainval_LOST_OD_clu2",)', "MODEL.WEIGHTS", work / "d2.pkl", "OUTPUT_DIR", output,
        cwd=work,
    )  # fmt: skip
    detections = check_training_output(output)
    assert {d["category_id"] for d in detections} <= set(range(1, 21))
    report = work / "hungarian.json"
    results = output / "inference" / "coco_instances_results.json"
    table = run(
        "tools/evaluate_unsupervised_detection_voc.py", "--results", results,
        "--voc_dir", work / "datasets" / "VOC2007", "--output", report, cwd=work,
    )  # fmt: skip
    assert "Hungarian matching of" in table and "mean" in table
    overall = json.loads(report.read_text())["overall"]
    assert all(0.0 <= overall[key] <= 100.0 for key in ("AP50", "AP75", "AP"))
