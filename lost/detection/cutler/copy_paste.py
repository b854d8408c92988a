"""Copy-paste augmentation as CutLER's ``copy_and_paste`` (``cutler/engine/train_loop.py``), on
plain tensors.

Image i of a batch of B receives objects of image B - 1 - i (the batch reversed; the middle image
of an odd batch is its own donor), taken from the batch as it came from the loader:

1. with probability ``rate`` and when the donor has objects, ``k`` of them are chosen without
   replacement: ``k = 1`` for one object, else uniform in ``[1, n - 1]`` (numpy's
   ``randint(1, n)``: never all of them) with ``random_num``, else all ``n``;
2. the whole donor image and the chosen masks are resized (bilinear, ``align_corners=False``; the
   image truncated to uint8, a mask pixel set where the resized value is non-zero) to
   ``int(r * W) x int(r * H)``, with ``r`` uniform in ``[min_ratio, max_ratio]`` and ``W x H`` the
   *recipient's* size, and placed at a uniform offset inside the recipient;
3. a recipient without objects takes the pasted pixels and the pasted objects, whose boxes are
   the donor boxes scaled as the image was and moved by the offset;
4. otherwise a pasted object that covers half or more of a recipient object (its intersection
   over the recipient object's area, the largest over them) is left out; when none is left the
   recipient is unchanged; else the kept objects' pixels replace the recipient's, recipient
   objects lose the covered pixels and those left empty are removed, and every box is the tight
   box of its mask.

The random draws, in CutLER's order per image: ``rng.random()`` (always), then, when pasting,
``np_rng.randint`` (only with ``random_num`` and n > 1), ``np_rng.choice``, ``rng.uniform``,
``rng.randint`` for the x offset, ``rng.randint`` for the y offset. ``rng`` plays Python's
``random`` module and ``np_rng`` numpy's global ``RandomState`` of the published code, so that a
seeded pair reproduces it draw for draw.

Difference from the published code: in step 3 CutLER adds the y offset to x1, x2 and the x offset
to y1, y2 (its boxes are only right for a square offset); here x moves by the x offset.

Conventions: image ``(3, H, W) uint8``; masks ``(N, H, W) bool``; boxes ``(N, 4) float32``
``[x1, y1, x2, y2]`` in pixels of the (resized) network input, x2/y2 exclusive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

OCCLUSION_LIMIT = 0.5
"""A pasted object covering this fraction of a recipient object or more is left out."""


@dataclass(frozen=True)
class CopyPasteParams:
    """CutLER's ``DATALOADER.COPY_PASTE_*`` settings."""

    rate: float = 1.0
    min_ratio: float = 0.3
    max_ratio: float = 1.0
    random_num: bool = True


@dataclass(frozen=True)
class AnnotatedImage:
    """image: (3, H, W) uint8; masks: (N, H, W) bool; boxes: (N, 4) float32 [x1, y1, x2, y2];
    classes: (N,) int64."""

    image: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return len(self.classes)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``[x1, y1, x2, y2]`` (x2/y2 exclusive) of (N, H, W) bool masks, (N, 4) float32;
    an empty mask gets ``[0, 0, 0, 0]`` (as detectron2's ``BitMasks.get_bounding_boxes``)."""
    boxes = torch.zeros(len(masks), 4, dtype=torch.float32)
    columns, rows = masks.any(dim=1), masks.any(dim=2)
    for index in range(len(masks)):
        xs, ys = torch.where(columns[index])[0], torch.where(rows[index])[0]
        if len(xs) and len(ys):
            boxes[index] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def covered_fraction(pasted: torch.Tensor, existing: torch.Tensor) -> torch.Tensor:
    """(n, N) intersection of each pasted mask with each existing one over the existing mask's
    area (NaN for an empty existing mask, as published). pasted: (n, H, W), existing: (N, H, W)."""
    x = pasted.reshape(len(pasted), -1).float()
    y = existing.reshape(len(existing), -1).float()
    return (x @ y.T) / y.sum(1)[None, :]


def _copy_count(num_donor: int, params: CopyPasteParams, rng: random.Random, np_rng: np.random.RandomState) -> int:
    """How many donor objects to paste (0: none); draws ``rng.random()`` always."""
    draw = rng.random()
    if num_donor == 0 or params.rate < draw:
        return 0
    if not params.random_num:
        return num_donor
    return 1 if num_donor == 1 else int(np_rng.randint(1, max(1, num_donor)))


def _resized(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, h, w) -> (C, height, width) float, bilinear, align_corners=False."""
    return F.interpolate(tensor[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]


def paste(
    recipient: AnnotatedImage,
    donor: AnnotatedImage,
    params: CopyPasteParams,
    rng: random.Random,
    np_rng: np.random.RandomState,
) -> AnnotatedImage:
    """`recipient` with objects of `donor` pasted in (steps 1-4 of the module docstring); the
    recipient object itself when nothing is pasted."""
    count = _copy_count(len(donor), params, rng, np_rng)
    if count == 0:
        return recipient
    chosen = torch.as_tensor(np_rng.choice(len(donor), count, replace=False))
    _, height, width = recipient.image.shape
    _, donor_height, donor_width = donor.image.shape
    ratio = rng.uniform(params.min_ratio, params.max_ratio)
    new_width, new_height = int(ratio * width), int(ratio * height)
    x_shift = rng.randint(0, width - new_width)
    y_shift = rng.randint(0, height - new_height)
    window = (slice(None), slice(y_shift, y_shift + new_height), slice(x_shift, x_shift + new_width))

    canvas = torch.zeros_like(recipient.image)
    canvas[window] = _resized(donor.image, new_height, new_width).to(torch.uint8)
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    masks[window] = _resized(donor.masks[chosen], new_height, new_width).bool()
    classes = donor.classes[chosen]
    if len(recipient) == 0:
        scale = torch.tensor([width / donor_width * ratio, height / donor_height * ratio] * 2)
        shift = torch.tensor([x_shift, y_shift] * 2, dtype=torch.float32)
        boxes = donor.boxes[chosen] * scale + shift
        return AnnotatedImage(torch.where(masks.any(0), canvas, recipient.image), masks, boxes.float(), classes)

    keep = covered_fraction(masks, recipient.masks).max(dim=1).values < OCCLUSION_LIMIT
    if not keep.any():
        return recipient
    masks, classes = masks[keep], classes[keep]
    alpha = masks.any(0)
    remaining = recipient.masks & ~alpha
    visible = remaining.sum((1, 2)) > 0
    merged_masks = torch.cat([remaining[visible], masks])
    return AnnotatedImage(
        torch.where(alpha, canvas, recipient.image),
        merged_masks,
        mask_boxes(merged_masks),
        torch.cat([recipient.classes[visible], classes]),
    )


def copy_paste_batch(
    batch: list[AnnotatedImage], params: CopyPasteParams, rng: random.Random, np_rng: np.random.RandomState
) -> list[AnnotatedImage]:
    """Each image of `batch` with objects pasted from its mirror image (index B - 1 - i)."""
    donors = batch[::-1]
    return [paste(recipient, donor, params, rng, np_rng) for recipient, donor in zip(batch, donors, strict=True)]
