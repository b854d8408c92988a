"""A transcription of CutLER's COCO writer (``maskcut/maskcut.py``: ``create_image_info`` and
``create_annotation_info`` as its main loop calls them), for comparison with ours."""

import numpy as np
from pycocotools import mask as mask_utils


def cutler_image_info(image_id: int, file_name: str, height: int, width: int) -> dict:
    """The main loop passes ``(height, width, 3)`` as the ``image_size`` that the function reads as
    ``(width, height)``: the entry's width is H and its height W."""
    image_size = (height, width, 3)
    return {"id": image_id, "file_name": file_name, "width": image_size[0], "height": image_size[1]}


def cutler_annotation_info(annotation_id: int, image_id: int, binary_mask: np.ndarray) -> dict | None:
    """None for an empty mask; else the annotation, ``bbox`` from ``toBbox``, ``counts`` as str."""
    binary_mask = binary_mask.astype(np.uint8)
    upper, lower = np.max(binary_mask), np.min(binary_mask)
    thresh = upper / 2.0
    binary_mask[binary_mask > thresh] = upper
    binary_mask[binary_mask <= thresh] = lower
    encoded = mask_utils.encode(np.asfortranarray(binary_mask.astype(np.uint8)))
    area = mask_utils.area(encoded)
    if area < 1:
        return None
    bounding_box = mask_utils.toBbox(encoded)
    rle = mask_utils.encode(np.array(binary_mask[..., None], order="F", dtype="uint8"))[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": area.tolist(),
        "bbox": bounding_box.tolist(), "segmentation": rle, "width": binary_mask.shape[1], "height": binary_mask.shape[0],
    }  # fmt: skip
