"""COCO instance files: RLE, the writer read back by pycocotools and detectron2, CutLER's files, bad files."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from lost.errors import LostError
from lost.io.instances import InstanceImage, decode_rle, encode_masks, read_instances, write_instances


def planted_masks(height: int, width: int) -> np.ndarray:
    """Three masks of an (H, W) image: a rectangle, a ring with a hole, an empty one."""
    masks = np.zeros((3, height, width), dtype=bool)
    masks[0, 1:4, 2:7] = True
    masks[1, 3 : height - 1, 3 : width - 1] = True
    masks[1, 5:7, 5:7] = False
    return masks


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def write_two_images(path: Path) -> dict[str, np.ndarray]:
    """An instance file of a 9 x 13 image (three masks, one empty) and a 13 x 9 one (none but empty)."""
    first, second = planted_masks(9, 13), np.zeros((1, 13, 9), dtype=bool)
    images = [
        InstanceImage(1, "a/x.jpg", 9, 13, encode_masks(first), [0.9, 0.5, 0.2]),
        InstanceImage(2, "b/y.jpg", 13, 9, encode_masks(second), [1.0]),
    ]
    summary = write_instances(path, lambda: iter(images), {"run": {"method": "test"}})
    assert (summary.images, summary.annotations, summary.empty_masks, summary.empty_images) == (2, 2, 2, 1)
    assert summary.line(path) == f"Masks saved at {path} (2 images, 2 masks; 1 images have only empty masks (no annotation))"
    return {"a/x.jpg": first, "b/y.jpg": second}


def test_rle_round_trips_at_odd_and_swapped_sizes_with_str_counts():
    for height, width in ((9, 13), (13, 9), (1, 1)):
        masks = planted_masks(height, width) if height > 1 else np.ones((1, 1, 1), dtype=bool)
        rles = encode_masks(masks)
        assert all(isinstance(rle["counts"], str) and rle["size"] == [height, width] for rle in rles)
        assert np.array_equal(np.stack([decode_rle(rle) for rle in rles]), masks)


def test_the_written_file_loads_in_pycocotools_and_annToMask_gives_back_each_mask(tmp_path):
    masks = write_two_images(tmp_path / "instances.json")
    coco = quiet_coco(tmp_path / "instances.json")
    assert [(image["file_name"], image["height"], image["width"]) for image in coco.dataset["images"]] == [
        ("a/x.jpg", 9, 13),
        ("b/y.jpg", 13, 9),
    ]
    assert coco.dataset["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert coco.getAnnIds(imgIds=[2]) == [], "an image whose masks are all empty has no annotation"
    assert [annotation["id"] for annotation in annotations] == [1, 2]
    for annotation, mask, score in zip(annotations, masks["a/x.jpg"], [0.9, 0.5], strict=False):
        assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
        assert annotation["score"] == score and annotation["iscrowd"] == 0 and annotation["category_id"] == 1
        assert annotation["area"] == int(mask.sum())
    assert annotations[0]["bbox"] == [2.0, 1.0, 5.0, 3.0]  # [x, y, w, h] of rows 1-3, columns 2-6
    assert annotations[1]["bbox"] == [3.0, 3.0, 9.0, 5.0]


def test_the_written_file_loads_in_detectron2_with_its_masks(tmp_path):
    from detectron2.data.datasets import load_coco_json

    masks = write_two_images(tmp_path / "instances.json")
    with contextlib.redirect_stdout(io.StringIO()):
        records = load_coco_json(str(tmp_path / "instances.json"), str(tmp_path / "images"), "lost_test_instances")
    assert [(record["height"], record["width"]) for record in records] == [(9, 13), (13, 9)]
    assert records[0]["file_name"] == str(tmp_path / "images" / "a" / "x.jpg")
    objects = records[0]["annotations"]
    assert len(objects) == 2 and records[1]["annotations"] == []
    assert np.array_equal(decode_rle(objects[1]["segmentation"]), masks["a/x.jpg"][1])
    assert objects[0]["bbox"] == [2.0, 1.0, 5.0, 3.0]


def cutler_style_file(path: Path, masks: np.ndarray) -> None:
    """An instance file as CutLER's maskcut.py writes it: width and height swapped in images, no score."""
    height, width = masks.shape[1:]
    annotations = [
        {
            "id": k + 1,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": rle,
            "width": width,
            "height": height,
        }
        for k, rle in enumerate(encode_masks(masks))
    ]
    images = [{"id": 1, "file_name": "n01/n01_1.JPEG", "width": height, "height": width}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "fg"}]}))


def test_cutlers_swapped_width_and_height_are_read_by_the_rle_size(tmp_path):
    masks = planted_masks(9, 13)[:2]
    cutler_style_file(tmp_path / "cutler.json", masks)
    read = read_instances(tmp_path / "cutler.json")
    assert (read.images[1]["height"], read.images[1]["width"]) == (9, 13)
    assert np.array_equal(decode_rle(read.annotations[1]["segmentation"]), masks[1])


@pytest.mark.parametrize(
    "content, problem",
    [
        (
            {
                "images": [{"id": 1, "file_name": "x", "height": 9, "width": 13}],
                "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}],
            },
            "has no RLE mask",
        ),
        (
            {
                "images": [{"id": 1, "file_name": "x", "height": 10, "width": 13}],
                "annotations": [{"id": 7, "image_id": 1, "segmentation": {"size": [9, 13], "counts": "a"}}],
            },
            r"annotation 7 has an RLE of size \[9, 13\] but its image x is \[H, W\] = \[10, 13\]",
        ),
        (
            {"images": [], "annotations": [{"id": 1, "image_id": 3, "segmentation": {"size": [9, 13], "counts": "a"}}]},
            "refers to image 3, which is not in its images",
        ),
        ([1, 2], "not a COCO instance file"),
    ],
)
def test_a_bad_instance_file_is_one_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(LostError, match=f"{path}: .*{problem}"):
        read_instances(path)


def test_writing_a_mask_of_another_size_than_its_image_is_an_error_naming_the_image(tmp_path):
    image = InstanceImage(1, "a/x.jpg", 9, 12, encode_masks(planted_masks(9, 13)), [1.0, 1.0, 1.0])
    with pytest.raises(LostError, match=r"a/x.jpg: a mask of size \[9, 13\] for an image of \[H, W\] = \[9, 12\]"):
        write_instances(tmp_path / "instances.json", lambda: iter([image]), {})
    assert not (tmp_path / "instances.json").exists(), "no half-written file is left"


def test_annotations_are_cutlers_but_with_a_score_and_images_have_width_w(tmp_path):
    from published_cutler_json import cutler_annotation_info, cutler_image_info

    masks = planted_masks(9, 13)
    write_instances(
        tmp_path / "instances.json", lambda: iter([InstanceImage(1, "a/x.jpg", 9, 13, encode_masks(masks), [0.9, 0.5, 0.2])]), {}
    )
    ours = json.loads((tmp_path / "instances.json").read_text())
    published = [cutler_annotation_info(k + 1, 1, mask) for k, mask in enumerate(masks)]
    assert published[2] is None, "CutLER skips an empty mask too"
    for annotation, reference in zip(ours["annotations"], published[:2], strict=True):
        assert annotation["segmentation"] == {"size": list(reference["segmentation"]["size"]), "counts": reference["segmentation"]["counts"]}
        assert annotation["bbox"] == reference["bbox"] and annotation["area"] == reference["area"]
        assert {key: annotation[key] for key in ("id", "image_id", "category_id", "iscrowd")} == {
            key: reference[key] for key in ("id", "image_id", "category_id", "iscrowd")
        }
    reference_image = cutler_image_info(1, "a/x.jpg", 9, 13)
    assert (reference_image["width"], reference_image["height"]) == (9, 13), "CutLER's swap"
    assert (ours["images"][0]["width"], ours["images"][0]["height"]) == (13, 9)
