"""Mask AP (main_corloc_evaluation.py --metric ap --iou_type segm) against AP worked out by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_datasets import make_coco_tree

import main_corloc_evaluation
from lost.io.instances import InstanceImage, encode_masks, write_instances

HEIGHT, WIDTH = 20, 30


def box_mask(rows: slice, cols: slice, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[rows, cols] = True
    return mask


# ground truth of photo.jpg: A (100 pixels) and B (80 pixels), of two categories that count as one
GT_A = box_mask(slice(0, 10), slice(0, 10))
GT_B = box_mask(slice(10, 18), slice(20, 30))
# predictions, best first: A exactly; half of B's rows (IoU 50 / 80 = 0.625); a miss
PREDICTIONS = [(GT_A, 0.9), (box_mask(slice(10, 15), slice(20, 30)), 0.8), (box_mask(slice(15, 20), slice(0, 10)), 0.7)]

# By hand: at IoU 0.50, 0.55, 0.60 the detections are TP, TP, FP: precision 1 up to recall 1, AP 1.
# At the 7 thresholds 0.65 to 0.95: TP, FP, FP, precision 1 up to recall 0.5 and nothing beyond, so
# the 101-point AP is 51 / 101. AR@100: recall 1 at 3 thresholds and 0.5 at 7; AR@1: 0.5 throughout.
AP50, AP75 = 1.0, 51 / 101
AP = (3 * 1.0 + 7 * 51 / 101) / 10
AR100, AR1 = (3 * 1.0 + 7 * 0.5) / 10, 0.5


def write_ground_truth(path: Path, with_masks: bool = True) -> None:
    images = [
        {"id": 10, "file_name": "photo.jpg", "height": HEIGHT, "width": WIDTH},
        {"id": 11, "file_name": "empty.jpg", "height": 8, "width": 9},
    ]
    annotations = []
    for number, (mask, category) in enumerate(((GT_A, 3), (GT_B, 7)), start=1):
        rows, cols = np.nonzero(mask)
        annotation = {
            "id": number,
            "image_id": 10,
            "category_id": category,
            "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": [
                float(cols.min()),
                float(rows.min()),
                float(cols.max() + 1 - cols.min()),
                float(rows.max() + 1 - rows.min()),
            ],
        }
        if with_masks:
            annotation["segmentation"] = encode_masks(mask[None])[0]
        annotations.append(annotation)
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def write_predictions(path: Path, file_name: str = "sub/photo.jpg", size: tuple[int, int] = (HEIGHT, WIDTH)) -> None:
    masks = np.stack([np.resize(mask, size) if size != mask.shape else mask for mask, _ in PREDICTIONS])
    image = InstanceImage(1, file_name, *size, encode_masks(masks), [score for _, score in PREDICTIONS])
    write_instances(path, lambda: iter([image]), {})


def evaluate(*args: str) -> int:
    return main_corloc_evaluation.main(["--metric", "ap", "--iou_type", "segm", *args])


def printed_metrics(out: str) -> dict[str, float]:
    return {
        line.split(": ")[0]: float(line.split(": ")[1]) for line in out.splitlines() if line.startswith(("AP", "AR"))
    }


def assert_hand_ap(out: str) -> None:
    values = printed_metrics(out)
    expected = {"AP50": AP50, "AP75": AP75, "AP": AP, "AR@1": AR1, "AR@100": AR100}
    assert {name: values[name] for name in expected} == {
        name: round(100 * value, 2) for name, value in expected.items()
    }
    assert "images: 2, objects: 2" in out


def test_mask_ap_of_an_instance_file_is_the_hand_computed_one(tmp_path, capsys):
    write_ground_truth(tmp_path / "gt.json")
    write_predictions(tmp_path / "instances.json")
    assert evaluate("--gt_json", str(tmp_path / "gt.json"), "--pred_file", str(tmp_path / "instances.json")) == 0
    out = capsys.readouterr().out
    assert out.startswith("mask AP (class-agnostic, COCOeval segm)")
    assert_hand_ap(out)


def test_a_detectors_results_with_masks_give_the_same_ap(tmp_path, capsys):
    write_ground_truth(tmp_path / "gt.json")
    results = [
        {
            "image_id": 10,
            "category_id": 5,
            "segmentation": encode_masks(mask[None])[0],
            "score": score,
            "bbox": [0, 0, 1, 1],
        }
        for mask, score in PREDICTIONS
    ]
    (tmp_path / "coco_instances_results.json").write_text(json.dumps(results))
    args = (
        "--gt_json",
        str(tmp_path / "gt.json"),
        "--type_pred",
        "detectron",
        "--pred_file",
        str(tmp_path / "coco_instances_results.json"),
    )
    assert evaluate(*args) == 0
    assert_hand_ap(capsys.readouterr().out)


def test_cutlers_file_with_swapped_sizes_and_no_scores_is_scored_in_file_order(tmp_path, capsys):
    write_ground_truth(tmp_path / "gt.json")
    annotations = [
        {"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": encode_masks(mask[None])[0]}
        for k, (mask, _) in enumerate(PREDICTIONS)
    ]
    images = [{"id": 1, "file_name": "n0/photo.jpg", "width": HEIGHT, "height": WIDTH}]
    (tmp_path / "cutler.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    assert evaluate("--gt_json", str(tmp_path / "gt.json"), "--pred_file", str(tmp_path / "cutler.json")) == 0
    assert_hand_ap(capsys.readouterr().out)  # every score 1: ties keep the file order, best first


def assert_one_error_line(capsys, *parts: str) -> None:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1, captured.err
    for part in parts:
        assert part in captured.err


def test_ground_truth_without_masks_is_one_line(tmp_path, capsys):
    write_ground_truth(tmp_path / "gt.json", with_masks=False)
    write_predictions(tmp_path / "instances.json")
    assert evaluate("--gt_json", str(tmp_path / "gt.json"), "--pred_file", str(tmp_path / "instances.json")) == 2
    assert_one_error_line(capsys, f"{tmp_path / 'gt.json'}: ground truth without masks")


def test_coco20k_annotations_without_masks_are_one_line(tmp_path, capsys):
    make_coco_tree(tmp_path / "datasets")
    write_predictions(tmp_path / "instances.json")
    args = (
        "--dataset",
        "COCO20k",
        "--datasets_root",
        str(tmp_path / "datasets"),
        "--pred_file",
        str(tmp_path / "instances.json"),
    )
    assert evaluate(*args) == 2
    assert_one_error_line(capsys, "instances_train2014.json: ground truth without masks")


def test_an_rle_of_the_wrong_size_is_one_line(tmp_path, capsys):
    write_ground_truth(tmp_path / "gt.json")
    write_predictions(tmp_path / "instances.json", size=(HEIGHT, WIDTH + 1))
    assert evaluate("--gt_json", str(tmp_path / "gt.json"), "--pred_file", str(tmp_path / "instances.json")) == 2
    assert_one_error_line(capsys, f"{tmp_path / 'instances.json'}: annotation 1 has an RLE of the wrong size [20, 31]")


def test_a_mask_file_of_another_data_set_is_one_line(tmp_path, capsys):
    write_ground_truth(tmp_path / "gt.json")
    write_predictions(tmp_path / "instances.json", file_name="elsewhere.jpg")
    assert evaluate("--gt_json", str(tmp_path / "gt.json"), "--pred_file", str(tmp_path / "instances.json")) == 2
    assert_one_error_line(
        capsys, "none of its 1 images is in the ground truth", "a mask file from another run or data set"
    )


@pytest.mark.parametrize(
    "args, problem",
    [(("--metric", "corloc"), "add --metric ap"), (("--dataset", "VOC07"), "ground truth without masks")],
)
def test_segm_needs_ap_and_masks_in_the_ground_truth(tmp_path, capsys, args, problem):
    write_predictions(tmp_path / "instances.json")
    code = main_corloc_evaluation.main(
        ["--metric", "ap", "--iou_type", "segm", *args, "--pred_file", str(tmp_path / "instances.json")]
    )
    assert code == 2
    assert_one_error_line(capsys, problem)
