"""CutLER's pseudo-masks over a set of images: the preset's two parts, overlapped.

Data flow: image records → DataLoader worker processes decode and resize every image to
``fixed_size`` x ``fixed_size`` (``ImageFileDataset(fixed_size=..., keep_pixels=True)``; every
image has one size, so batches need no bucketing) → the backbone's keys → part (a) of the preset
on the device, a batch at a time (``cutler_preset.cutler_cuts_batch``) → part (b), the CRF and
the resize back, in post-processing worker processes (``postprocess.map_in_workers``) while the
main process runs the next batches → one :class:`CutlerResult` per image, in record order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from lost.backbones import FeatureExtractor
from lost.data.datasets import ImageRecord
from lost.data.images import DecodedImage, ImageFileDataset
from lost.engine.discovery import Discovery
from lost.engine.postprocess import map_in_workers
from lost.geometry import masks_boxes
from lost.methods.cutler_preset import (
    FIXED_SIZE,
    MAX_OBJECTS,
    TAU,
    CutlerItem,
    CutlerMasks,
    cutler_cuts_batch,
    cutler_postprocess,
)


@dataclass(frozen=True)
class CutlerResult:
    """One image: ``index`` in the record list; ``masks`` (K, H, W) bool in original pixels and
    ``scores`` (K,) (``CutlerMasks``), or ``error`` set and both None when it could not be read;
    ``solvers``: the eigensolver of each cut (``CutlerCuts.solvers``)."""

    index: int
    masks: np.ndarray | None
    scores: np.ndarray | None
    solvers: tuple[str, ...] = ()
    error: str | None = None


def keep_samples(samples: list[DecodedImage]) -> list[DecodedImage]:
    """DataLoader collate: the decoded images as they are (they are stacked on the device side)."""
    return samples


def cut_batches(
    extractor: FeatureExtractor,
    loader: DataLoader,
    device: torch.device,
    tau: float,
    max_objects: int,
    eigensolver: str,
) -> Iterator[tuple[int, CutlerItem | str]]:
    """Part (a) batch by batch: ``(index, CutlerItem)`` per decoded image, ``(index, error)`` per failure."""
    for samples in loader:
        decoded = [sample for sample in samples if sample.image is not None]
        yield from ((sample.index, sample.error) for sample in samples if sample.image is None)
        if not decoded:
            continue
        images = torch.stack([sample.image for sample in decoded]).to(device)
        features = extractor.extract(images, frozenset({"feats"}))
        cuts = cutler_cuts_batch(features.feats, features.grid, tau, max_objects, eigensolver)
        for sample, image_cuts in zip(decoded, cuts, strict=True):
            yield sample.index, CutlerItem(pixels=sample.pixels, cuts=image_cuts, original_size=sample.original_size)


def postprocess_or_failure(indexed: tuple[int, CutlerItem | str]) -> CutlerResult:
    """Part (b) of one ``(index, item)`` in a worker process; a failure passes through as its error."""
    index, item = indexed
    if isinstance(item, str):
        return CutlerResult(index=index, masks=None, scores=None, error=item)
    masks: CutlerMasks = cutler_postprocess(item)
    return CutlerResult(index=index, masks=masks.masks, scores=masks.scores, solvers=item.cuts.solvers)


def cutler_pseudo_masks(
    extractor: FeatureExtractor,
    records: Sequence[ImageRecord],
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    num_workers: int = 0,
    postprocess_workers: int = 1,
    fixed_size: int = FIXED_SIZE,
    tau: float = TAU,
    max_objects: int = MAX_OBJECTS,
    eigensolver: str = "auto",
) -> Iterator[CutlerResult]:
    """Stream CutLER's pseudo-masks of ``records``, one :class:`CutlerResult` per record in order.

    num_workers: decoding processes (0: in this process); postprocess_workers: CRF processes
    (0: in this process, after each batch). Failed images come back with ``error`` set.
    """
    dataset = ImageFileDataset(records, extractor.pad_multiple, fixed_size=fixed_size, keep_pixels=True)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=keep_samples)
    items = cut_batches(extractor, loader, torch.device(device), tau, max_objects, eigensolver)
    yield from map_in_workers(postprocess_or_failure, items, postprocess_workers)


def as_discovery(result: CutlerResult) -> Discovery:
    """One preset result as the engine's :class:`Discovery`: the non-empty masks, best first, with
    their boxes (each mask's bounding box, original pixels, x2/y2 exclusive) and scores; an image
    whose masks are all empty keeps one empty mask, the whole image as its box and score 0, so that
    every image has a top box (as MaskCut's), and gets no annotation in ``instances.json``."""
    if result.error is not None:
        return Discovery(index=result.index, box=None, error=result.error)
    boxes, empty = masks_boxes(result.masks)
    kept = ~empty
    if not kept.any():
        height, width = result.masks.shape[1:]
        masks = np.zeros((1, height, width), dtype=bool)
        boxes, scores = np.array([[0, 0, width, height]], dtype=np.int64), np.zeros(1)
    else:
        masks, boxes, scores = result.masks[kept], boxes[kept], np.asarray(result.scores, dtype=np.float64)[kept]
    return Discovery(index=result.index, box=boxes[0], boxes=boxes, scores=scores, ranked=True, masks=masks)


def cutler_discovery_batches(
    extractor: FeatureExtractor,
    records: Sequence[ImageRecord],
    device: torch.device,
    batch_size: int,
    num_workers: int,
    postprocess_workers: int,
    fixed_size: int = FIXED_SIZE,
    tau: float = TAU,
    max_objects: int = MAX_OBJECTS,
    eigensolver: str = "auto",
) -> Iterator[list[Discovery]]:
    """:func:`cutler_pseudo_masks` as lists of ``batch_size`` :class:`Discovery` (the stream
    ``main_lost.py`` journals), in record order."""
    results = cutler_pseudo_masks(
        extractor, records, device, batch_size, num_workers, postprocess_workers, fixed_size, tau, max_objects,
        eigensolver,
    )
    batch: list[Discovery] = []
    for result in results:
        batch.append(as_discovery(result))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
