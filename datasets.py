"""The published code's ``datasets`` module: VOC07 / VOC12 / COCO20k records and ground truth.

    from datasets import load_dataset
    spec = load_dataset("VOC07", "trainval", "datasets")

The implementation lives in :mod:`lost.data`.
"""

from lost.data.datasets import (  # noqa: F401
    DATASETS,
    DatasetSpec,
    ImageRecord,
    load_dataset,
    single_image_records,
)
from lost.data.images import ImageFileDataset  # noqa: F401
