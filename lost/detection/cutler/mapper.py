"""The copy-paste step of CutLER's training loop on detectron2 batches.

CutLER applies ``copy_and_paste`` in the trainer's ``run_step``, to each batch the data loader
yields (images already resized and flipped by detectron2's ``DatasetMapper``) and before the
model; :class:`CopyPasteBatches` wraps the training loader to do the same, and leaves the loader
of PreciseBN untouched, as CutLER does.

Seeding: the draws of one step come from ``random.Random`` and ``numpy.random.RandomState``
seeded with (seed, process rank, iteration), so a run resumed after a kill pastes at iteration i
what an uninterrupted run with the same batch would (CutLER draws from the global generators).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances

from lost.detection.cutler.copy_paste import AnnotatedImage, CopyPasteParams, copy_paste_batch


def annotated_image(item: dict) -> AnnotatedImage:
    """The tensors of one detectron2 training input (``image`` (3, H, W) uint8, ``instances``
    with ``gt_boxes``, ``gt_classes`` and, when it has objects, ``gt_masks`` BitMasks)."""
    image, instances = item["image"], item["instances"]
    _, height, width = image.shape
    masks = instances.gt_masks.tensor if instances.has("gt_masks") else torch.zeros(0, height, width, dtype=torch.bool)
    return AnnotatedImage(image, masks.bool(), instances.gt_boxes.tensor, instances.gt_classes)


def with_pasted(item: dict, original: AnnotatedImage, pasted: AnnotatedImage) -> dict:
    """`item` (itself when nothing was pasted) with the image and instances of `pasted`."""
    if pasted is original:
        return item
    instances = Instances(tuple(pasted.image.shape[1:]))
    instances.gt_boxes = Boxes(pasted.boxes)
    instances.gt_classes = pasted.classes
    instances.gt_masks = BitMasks(pasted.masks)
    return {**item, "image": pasted.image, "instances": instances}


def copy_paste_inputs(
    batch: list[dict], params: CopyPasteParams, rng: random.Random, np_rng: np.random.RandomState
) -> list[dict]:
    """A detectron2 training batch with CutLER's copy-paste applied (see ``copy_paste``)."""
    originals = [annotated_image(item) for item in batch]
    pasted = copy_paste_batch(originals, params, rng, np_rng)
    return [with_pasted(item, o, p) for item, o, p in zip(batch, originals, pasted, strict=True)]


def step_generators(seed: int, rank: int, iteration: int) -> tuple[random.Random, np.random.RandomState]:
    """The (Python, numpy) generators of one training step."""
    state = np.random.SeedSequence([seed, rank, iteration]).generate_state(2)
    return random.Random(int(state[0])), np.random.RandomState(int(state[1]))


class CopyPasteBatches:
    """An iterable over the batches of `loader` with copy-paste applied; `iteration` gives the
    trainer's current iteration (for the seeds)."""

    def __init__(
        self, loader: Iterable[list[dict]], params: CopyPasteParams, seed: int, rank: int, iteration: Callable[[], int]
    ) -> None:
        self.loader, self.params, self.seed, self.rank, self.iteration = loader, params, seed, rank, iteration

    def __iter__(self) -> Iterator[list[dict]]:
        for batch in self.loader:
            rng, np_rng = step_generators(self.seed, self.rank, self.iteration())
            yield copy_paste_inputs(batch, self.params, rng, np_rng)
