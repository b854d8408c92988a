"""The discovery engine: images in, boxes and masks out (one object per image, or several for a
multi-object method), as fast as the device allows.

Data flow: image records → worker processes decode, normalize and pad (``ImageFileDataset``) →
batches of images that share one padded size (``SizeBucketBatchSampler``; padding an image
further would change its features and so its box) → the backbone up to the features LOST needs
(``FeatureExtractor``, which computes only what the method needs) → the method of the method
table on the device (``methods``) → boxes, and when asked masks, in the original image's pixels
(:func:`in_original_pixels`, with the one call of a mask post-processing, :func:`postprocess`) →
``Discovery`` records streamed to the caller, which owns progress, evaluation and output files.

Masks and boxes agree: a method's patch masks ``(K, h, w)`` become pixel masks of the decoded
image (``geometry.patch_masks_to_pixels``), then of the original one (``geometry.resize_masks``),
and its boxes follow the same rule (``data.images.rescale_box``), so that each box is its mask's
bounding box (x2/y2 exclusive; exactly for a ViT, and for a CNN once ``--max_size`` rescaled the
image). A post-processed mask gives its own box; one left empty keeps the method's box.

Nothing per image is kept here: the caller consumes the stream, so memory stays flat over a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from lost.backbones import FeatureExtractor
from lost.data.datasets import ImageRecord
from lost.data.images import DecodedImage, ImageFileDataset, padded_size, rescale_box
from lost.errors import LostError
from lost.geometry import masks_boxes, patch_masks_to_pixels, resize_masks
from lost.methods import Method, method_entry

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

DEFAULT_MEMORY_BUDGET = 2 << 30
"""Bytes one forward pass may spend on its largest per-layer tensors (attention maps)."""

MaskPostprocess = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``postprocess(image (H, W, 3) uint8 RGB, masks (K, H, W) bool) -> (K, H, W) bool``: a per-image
refinement of the masks, in pixels of the decoded image (scaled to ``max_size``, unpadded)."""


@dataclass(frozen=True)
class DiscoveryConfig:
    """How to run discovery over a set of images.

    method: name of the method in the method table (``methods.METHODS``).
    params: the method's parameter dataclass (None: its defaults).
    batch_size: images per forward pass (only images of one padded size are batched).
    num_workers: decoding processes (0 decodes in the main process).
    precision: "fp32", "bf16" or "fp16" for the backbone; similarity signs stay float32.
    memory_budget: bytes a forward pass may use for its attention maps; larger batches are split.
    max_size: images whose longer side exceeds it are scaled down to it before discovery, and
        their boxes scaled back to the original pixels (None: never).
    preprocess: how images are fitted to the patch grid, ``pad`` or ``resize``
        (``images.PREPROCESSING``); boxes come back in original pixels either way.
    masks: whether each Discovery carries its objects' masks in original pixels.
    mask_postprocess: applied to each image's masks before they are scaled to the original
        pixels (implies ``masks``); None: the masks are the method's patch masks.
    """

    method: str = "lost"
    params: Any = None
    batch_size: int = 1
    num_workers: int = 0
    precision: str = "fp32"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    max_size: int | None = None
    preprocess: str = "pad"
    masks: bool = False
    mask_postprocess: MaskPostprocess | None = None

    @property
    def with_masks(self) -> bool:
        return self.masks or self.mask_postprocess is not None

    @property
    def entry(self) -> Method:
        return method_entry(self.method)

    @property
    def method_params(self) -> Any:
        """The parameters the method runs with."""
        return self.entry.params() if self.params is None else self.params


@dataclass(frozen=True)
class Discovery:
    """The outcome for one image.

    index: position of the image in the record list given to :func:`discover`.
    box: (4,) ``[x1, y1, x2, y2]`` in original-image pixels, x2/y2 exclusive; None on error.
    error: why the image was skipped (unreadable file, ...), else None.
    boxes: (K, 4) every object's box, best first, in original-image pixels like ``box``
        (= ``boxes[0]``); K = 1 for a one-object method; None on error.
    scores: (K,) float64, the objects' scores, non-increasing (1 for a one-object method).
    ranked: whether the scores are the method's ranking of several objects
        (``results.MethodResult.ranked``), written to the scored prediction files.
    masks: (K, H, W) bool in original-image pixels, object k's mask, whose box is ``boxes[k]``
        (unless post-processing emptied it); None unless ``DiscoveryConfig.with_masks``.
    result: the method's full result (seed, maps, ...; boxes in decoded pixels) for pictures.
    grid: (h, w) feature grid; scales: (sy, sx) image pixels per feature cell.
    """

    index: int
    box: np.ndarray | None
    error: str | None = None
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    ranked: bool = False
    masks: np.ndarray | None = None
    result: Any = None
    grid: tuple[int, int] | None = None
    scales: tuple[float, float] | None = None


@dataclass
class ImageBatch:
    """Images of one padded size: images (B, 3, Hp, Wp), or None when every image failed;
    the decoded images' indices, decoded sizes (H, W) and original sizes (H, W); the failures
    as (index, reason); and the decoded images' (H, W, 3) uint8 RGB pixels when they were kept
    for a mask post-processing (else None each)."""

    images: torch.Tensor | None
    indices: list[int]
    sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    failures: list[tuple[int, str]]
    pixels: list[np.ndarray | None]

    def pin_memory(self) -> ImageBatch:
        """Called by the DataLoader's pinning thread on CUDA runs: page-locked images, so that
        the copy to the GPU is asynchronous."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


class SizeBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images share one padded size.

    padded_sizes: one ``(Hp, Wp)`` per image, or None when the header could not be read (such
    images are batched together, and fail at decoding with their own reason).
    Buckets are visited in order of first appearance, indices in increasing order within each,
    so every index is yielded exactly once. A bucket is cut into batches of at most
    ``batch_size``, and at most ``max_batch_for_size(size)`` images (the memory splitter).
    """

    def __init__(
        self,
        padded_sizes: Sequence[tuple[int, int] | None],
        batch_size: int,
        max_batch_for_size: Callable[[tuple[int, int]], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.buckets: OrderedDict[tuple[int, int] | None, list[int]] = OrderedDict()
        for index, size in enumerate(padded_sizes):
            self.buckets.setdefault(size, []).append(index)
        self.batch_size = batch_size
        self.max_batch_for_size = max_batch_for_size

    def _batch_size_for(self, size: tuple[int, int] | None) -> int:
        if size is None or self.max_batch_for_size is None:
            return self.batch_size
        return max(1, min(self.batch_size, self.max_batch_for_size(size)))

    def __iter__(self) -> Iterator[list[int]]:
        for size, indices in self.buckets.items():
            step = self._batch_size_for(size)
            for start in range(0, len(indices), step):
                yield indices[start : start + step]

    def __len__(self) -> int:
        return sum(-(-len(indices) // self._batch_size_for(size)) for size, indices in self.buckets.items())


def attention_images_per_pass(
    padded: tuple[int, int], patch_size: int, num_heads: int, budget: int, prefix_tokens: int = 1
) -> int:
    """Images whose (heads, T, T) float32 attention maps fit ``budget`` bytes (at least 1).

    padded: (Hp, Wp); T = Hp * Wp / p² patches + the prefix tokens (1: CLS; 5 with 4 registers).
    With fused attention the maps are not always materialized, but the bound keeps the fallback
    paths and the Gram rows in budget.
    """
    tokens = (padded[0] // patch_size) * (padded[1] // patch_size) + prefix_tokens
    return max(1, budget // (num_heads * tokens * tokens * 4))


def collate_same_size(samples: list[DecodedImage]) -> ImageBatch:
    """Stack the decoded images (all of one padded size); keep the failures apart."""
    decoded = [sample for sample in samples if sample.image is not None]
    return ImageBatch(
        images=torch.stack([sample.image for sample in decoded]) if decoded else None,
        indices=[sample.index for sample in decoded],
        sizes=[sample.size for sample in decoded],
        original_sizes=[sample.original_size for sample in decoded],
        failures=[(sample.index, sample.error) for sample in samples if sample.image is None],
        pixels=[sample.pixels for sample in decoded],
    )


def read_padded_sizes(
    records: Sequence[ImageRecord], multiple: int, max_size: int | None = None, preprocess: str = "pad"
) -> list[tuple[int, int] | None]:
    """Padded (or resized) (Hp, Wp) of every image from its header alone; None where it cannot be read."""
    sizes = []
    for record in records:
        try:
            sizes.append(padded_size(record, multiple, max_size, preprocess))
        except LostError:
            sizes.append(None)
    return sizes


def make_loader(
    records: Sequence[ImageRecord], extractor: FeatureExtractor, config: DiscoveryConfig, device: torch.device
) -> DataLoader:
    """A DataLoader of :class:`ImageBatch`, bucketed by padded size and split to the memory budget."""
    patch_size = extractor.pad_multiple
    num_heads = extractor.num_heads
    prefix_tokens = extractor.backbone.prefix_tokens
    sampler = SizeBucketBatchSampler(
        read_padded_sizes(records, patch_size, config.max_size, config.preprocess),
        config.batch_size,
        lambda size: attention_images_per_pass(size, patch_size, num_heads, config.memory_budget, prefix_tokens),
    )
    return DataLoader(
        ImageFileDataset(
            records, patch_size, config.max_size, config.preprocess, keep_pixels=config.mask_postprocess is not None
        ),
        batch_sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate_same_size,
        pin_memory=device.type == "cuda",
    )


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise LostError(f"--precision {precision} is unknown: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def discover_batch(
    extractor: FeatureExtractor, batch: ImageBatch, config: DiscoveryConfig, device: torch.device
) -> list[Discovery]:
    """Boxes (and masks, when asked) for one batch of same-size images, plus a Discovery per
    failed image. They are found in the decoded images and returned in the original images' pixels.
    """
    results = [Discovery(index=index, box=None, error=reason) for index, reason in batch.failures]
    if batch.images is None:
        return results
    images = batch.images.to(device, non_blocking=True)
    found = method_discoveries(extractor, images, batch, config)
    return results + [
        in_original_pixels(item, size, original, config, pixels)
        for item, size, original, pixels in zip(found, batch.sizes, batch.original_sizes, batch.pixels, strict=True)
    ]


def in_original_pixels(
    item: Discovery,
    size: tuple[int, int],
    original: tuple[int, int],
    config: DiscoveryConfig,
    pixels: np.ndarray | None = None,
) -> Discovery:
    """``item`` with its boxes moved from the decoded (H, W) ``size`` to the ``original`` one and,
    when ``config.with_masks``, its masks: the method's patch masks in pixels of the decoded image,
    post-processed there (``pixels``: that image, (H, W, 3) uint8), then resized to ``original``."""
    boxes = rescale_box(item.boxes, size, original)
    if not config.with_masks:
        return dataclasses.replace(item, box=boxes[0], boxes=boxes)
    masks = patch_masks_to_pixels(item.result.patch_masks, item.scales, size)
    if config.mask_postprocess is None:
        return dataclasses.replace(item, box=boxes[0], boxes=boxes, masks=resize_masks(masks, original))
    masks = resize_masks(postprocess(config.mask_postprocess, pixels, masks), original)
    mask_boxes, empty = masks_boxes(masks)
    boxes = np.where(empty[:, None], boxes, mask_boxes)
    return dataclasses.replace(item, box=boxes[0], boxes=boxes, masks=masks)


def postprocess(function: MaskPostprocess, pixels: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The one place a mask post-processing runs: ``function(pixels (H, W, 3) uint8, masks (K, H,
    W) bool) -> (K, H, W) bool``, in the decoded image's pixels; ValueError for another shape."""
    refined = np.asarray(function(pixels, masks), dtype=bool)
    if refined.shape != masks.shape:
        raise ValueError(f"mask post-processing returned shape {refined.shape} for masks of shape {masks.shape}")
    return refined


def method_discoveries(
    extractor: FeatureExtractor, images: torch.Tensor, batch: ImageBatch, config: DiscoveryConfig
) -> list[Discovery]:
    """The configured method on the decoded images (B, 3, Hp, Wp) of `batch`, boxes in decoded
    pixels. The backbone runs under the configured precision; the method itself in float32."""
    method = config.entry
    with autocast_for(images.device, config.precision):
        features = extractor.extract(images, method.needs)
    results = method.discover(features, batch.sizes, config.method_params)
    return [
        Discovery(
            index=index,
            box=result.box,
            boxes=result.boxes,
            scores=result.scores,
            ranked=result.ranked,
            result=result,
            grid=features.grid,
            scales=features.scales,
        )
        for index, result in zip(batch.indices, results, strict=True)
    ]


def discover_batches(
    extractor: FeatureExtractor,
    records: Sequence[ImageRecord],
    config: DiscoveryConfig,
    device: torch.device | str = "cpu",
) -> Iterator[list[Discovery]]:
    """Stream the :class:`Discovery` of each batch of same-size images, one list per batch.

    The order follows the batches (grouped by padded size), not the record order; use
    ``Discovery.index`` to find the record. Unreadable images come back with ``error`` set.
    """
    device = torch.device(device)
    for batch in make_loader(records, extractor, config, device):
        yield discover_batch(extractor, batch, config, device)


def discover(
    extractor: FeatureExtractor,
    records: Sequence[ImageRecord],
    config: DiscoveryConfig,
    device: torch.device | str = "cpu",
) -> Iterator[Discovery]:
    """Stream one :class:`Discovery` per record (see :func:`discover_batches`)."""
    for found in discover_batches(extractor, records, config, device):
        yield from found
