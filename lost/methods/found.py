"""FOUND (Siméoni et al., CVPR 2023): objects as what is not background, on ViT patch features.

Two methods, each a pure function on a batch of same-size images:

* ``found`` (:func:`found_batch`): a trained 1x1 convolution scores every patch from the last
  block's keys (heads concatenated, CLS dropped: ``networks.FeatureExtractor``'s ``k``); the
  foreground is ``sigmoid(score) > 0.5``, the box that of its largest 4-connected component.
  The head is the authors' released one (:func:`load_found_head`) or one trained by
  ``train_found.py``.
* ``found_bkg`` (:func:`found_background_batch`): the paper's training-free first stage. Each
  head's CLS attention is weighted by how sparse it is, the least attended patch is the
  background seed, and every patch whose weighted key is cosine-similar to the seed's by more
  than 0.3 is background; the object is the rest, boxed as above.

Both return :class:`FoundResult`. Conventions as in ``object_discovery``: ``keys: (B, N, d)``
float32 in raster order over the grid ``(h, w)`` (patch ``row * w + col``); ``scales = (sy, sx)``
pixels per cell; ``image_sizes``: unpadded (H, W); boxes ``[x1, y1, x2, y2]`` in pixels of the
unpadded image, x2/y2 exclusive, clipped to it.

The training targets (:func:`refined_masks`) snap coarse patch masks to the image's edges with
the bilateral solver, with the published settings and selection rules.

Where this differs from the published code (valeoai/FOUND), on purpose:

* An empty foreground gives the whole image; the published box extraction raises there
  (``np.bincount`` of no label has no ``argmax``).
* Equally large components: the first met in raster order (the published ``argmax`` over label
  counts picks the smallest label, which is the same component).
* The bilateral solver's reference image is the uint8 image itself; the published code
  rebuilds it from the normalized tensor and truncates, which can lose one grey level.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import nn

from lost.backbones import BackboneSpec, Features
from lost.errors import LostError, one_line
from lost.geometry import drop_largest_region, largest_component, mask_iou
from lost.geometry import mask_box as cells_mask_box
from lost.io.safe_files import atomic_write
from lost.methods.entry import ReleasedHead, flag
from lost.methods.results import OneObject
from lost.refine.bilateral_solver import (
    REFINED_MIN_IOU,
    SOLVER_CONFIDENCE,
    BilateralSolver,
    image_solver,
)

FOREGROUND_PROBABILITY = 0.5
"""A patch is foreground when ``sigmoid(score) > 0.5``, computed in float32 as published."""

BACKGROUND_SIMILARITY = 0.3
"""found_bkg: a patch is background when its cosine similarity to the seed exceeds this."""

SPARSITY_EPSILON = 1e-10
"""ε of the head weights ``log(Σ_j (Q_j + ε) / (Q_i + ε))``."""

FOUND_WEIGHTS_URL = "https://raw.githubusercontent.com/valeoai/FOUND/main/data/weights/decoder_weights.pt"
FOUND_WEIGHTS_SHA256 = "47ff2a4af3dbc6c80cb832cc81f8ed8ae81809e52576d0de5f9c754cf46ef9b5"
FOUND_WEIGHTS_FILE = "found_decoder_weights.pt"
"""The released head (ViT-S/8 keys, 384 -> 1), cached under ``<torch hub dir>/checkpoints``
(:data:`FOUND_HEAD`)."""
FOUND_TRAINED_ON = ReleasedHead("FOUND", BackboneSpec("vit_small", 8, which_features="k"), 384, "weights", "--found_weights")
"""The released head's description: trained on DINO ViT-S/8's keys (384 channels), replaced by
the file of ``--found_weights``."""


@dataclass(frozen=True)
class FoundResult(OneObject):
    """What FOUND found in one image (one object, see ``results.OneObject``).

    box: (4,) ``[x1, y1, x2, y2]`` in unpadded-image pixels, x2/y2 exclusive; int64 for int
        scales, float64 for float ones (as ``geometry.cells_to_box``): the box of ``patch_mask``.
    patch_mask: (h, w) bool, the kept foreground component (:func:`kept_component` of ``mask``).
    mask: (N,) bool, the foreground patches (found: ``sigmoid(score) > 0.5``; found_bkg: the
        patches that are not background).
    patch_scores: (N,) float32; found: the head's logits; found_bkg: cosine similarity to the seed.
    seed: found_bkg's background seed patch (raster index); None for found.
    """

    box: np.ndarray
    patch_mask: np.ndarray
    mask: torch.Tensor
    patch_scores: torch.Tensor
    seed: int | None = None


# ----------------------------------------------------------------------------------------------
# found: the trained head


def head_scores(keys: torch.Tensor, head: nn.Conv2d, grid: tuple[int, int]) -> torch.Tensor:
    """keys: (B, N, d) -> (B, N) float32 logits of the 1x1 convolution ``head`` (d -> 1).

    The keys are laid out as the published (B, d, h, w) map and convolved there.
    """
    batch, num_patches, dim = keys.shape
    if num_patches != grid[0] * grid[1]:
        raise ValueError(f"keys hold {num_patches} patches but the grid {grid} has {grid[0] * grid[1]}")
    maps = keys.float().transpose(1, 2).reshape(batch, dim, *grid)
    weight = head.weight.to(maps.device, torch.float32)
    bias = None if head.bias is None else head.bias.to(maps.device, torch.float32)
    return F.conv2d(maps, weight, bias).reshape(batch, num_patches)


def foreground_masks(scores: torch.Tensor) -> torch.Tensor:
    """(..., N) logits -> (..., N) bool, ``sigmoid(score) > 0.5`` in float32.

    Not the same as ``score > 0``: float32 rounds ``sigmoid`` of a positive logit below about
    1e-7 to exactly 0.5, so such a patch is background, as in the published code.
    """
    return torch.sigmoid(scores.float()) > FOREGROUND_PROBABILITY


def kept_component(mask: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The object FOUND keeps of a (N,) bool foreground: its largest 4-connected component as a
    (h, w) bool mask; ties: the first met in raster order; an empty foreground gives the whole grid."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    return largest_component(np.asarray(mask, dtype=bool).reshape(grid))


def mask_box(
    mask: torch.Tensor | np.ndarray, grid: tuple[int, int], scales: tuple[float, float], image_size: tuple[int, int]
) -> np.ndarray:
    """Box of the largest 4-connected component of a (N,) bool patch mask (:func:`kept_component`).

    Returns ``[x1, y1, x2, y2]`` in pixels of the unpadded (H, W) image, x2/y2 exclusive:
    ``x1 = sx * col_min``, ``x2 = min(sx * (col_max + 1), W)``, y likewise.
    """
    return cells_mask_box(kept_component(mask, grid), scales, image_size)


def found_result(
    mask: torch.Tensor,
    patch_scores: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
    seed: int | None = None,
) -> FoundResult:
    """The :class:`FoundResult` of a (N,) bool foreground: its kept component and that box."""
    kept = kept_component(mask, grid)
    return FoundResult(cells_mask_box(kept, scales, image_size), kept, mask, patch_scores, seed)


def found_batch(
    keys: torch.Tensor,
    head: nn.Conv2d,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_sizes: list[tuple[int, int]],
) -> list[FoundResult]:
    """FOUND with a trained head on a batch of same-size images.

    keys: (B, N, d) last-block keys (CLS dropped, heads concatenated) on any device; head: a
    1x1 convolution d -> 1; grid: (h, w); scales: (sy, sx); image_sizes: B unpadded (H, W).
    Returns one :class:`FoundResult` per image, box ``[x1, y1, x2, y2]`` (x2/y2 exclusive).
    """
    scores = head_scores(keys, head, grid)
    masks = foreground_masks(scores)
    return [
        found_result(mask, score, grid, scales, size)
        for mask, score, size in zip(masks, scores, image_sizes, strict=True)
    ]


def found(
    keys: torch.Tensor,
    head: nn.Conv2d,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_size: tuple[int, int],
) -> FoundResult:
    """:func:`found_batch` on one image: keys (N, d), image_size (H, W)."""
    return found_batch(keys[None], head, grid, scales, [image_size])[0]


# ----------------------------------------------------------------------------------------------
# found_bkg: the training-free background mask


def head_sparsity(cls_attention: torch.Tensor) -> torch.Tensor:
    """(B, heads, N) CLS attention -> (B, heads) float32 share Q_i of each head's patches whose
    attention exceeds (strictly) the image's mean attention over all heads and patches."""
    attention = cls_attention.float()
    threshold = attention.flatten(1).mean(dim=1)
    return (attention > threshold[:, None, None]).sum(dim=2) / attention.shape[2]


def head_weights(sparsity: torch.Tensor, epsilon: float = SPARSITY_EPSILON) -> torch.Tensor:
    """(B, heads) Q -> (B, heads) weights ``w_i = log(Σ_j (Q_j + ε) / (Q_i + ε))`` (float32);
    the sparser a head's attention, the larger its weight."""
    shifted = sparsity + epsilon
    return torch.log(shifted.sum(dim=1, keepdim=True) / shifted)


def background_seeds(cls_attention: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) int64 patch of least weighted attention ``argmin_p Σ_i w_i att_i(p)``; ties: the
    first in raster order."""
    return (cls_attention.float() * weights[:, :, None]).sum(dim=1).argmin(dim=1)


def weighted_keys(keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, N, d) keys, head i's d/heads channels scaled by w_i, then L2-normalized per patch.

    The heads are the consecutive blocks of d/heads channels (the ``qkv`` layout). A patch
    whose weighted key is zero stays zero.
    """
    batch, num_patches, dim = keys.shape
    heads = weights.shape[1]
    scaled = keys.float().reshape(batch, num_patches, heads, dim // heads) * weights[:, None, :, None]
    return F.normalize(scaled.reshape(batch, num_patches, dim), p=2, dim=-1)


def seed_similarities(descriptors: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """(B, N, d) normalized descriptors, (B,) seeds -> (B, N) cosine similarity to each seed."""
    seed_rows = descriptors[torch.arange(descriptors.shape[0], device=descriptors.device), seeds]
    return torch.bmm(descriptors, seed_rows[:, :, None])[:, :, 0]


def coarse_object_masks(
    keys: torch.Tensor, cls_attention: torch.Tensor, threshold: float = BACKGROUND_SIMILARITY
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """found_bkg's coarse masks for a batch.

    keys: (B, N, d) last-block keys; cls_attention: (B, heads, N) the last block's attention of
    the CLS query on the patches. Returns ``(objects (B, N) bool, similarity (B, N) float32,
    seeds (B,) int64)``: a patch is object when its similarity to the seed is at most
    ``threshold`` (background: strictly above). One seed per image, as published.
    """
    if keys.shape[2] % cls_attention.shape[1]:
        raise ValueError(f"{keys.shape[2]} key channels do not split into {cls_attention.shape[1]} heads")
    weights = head_weights(head_sparsity(cls_attention))
    seeds = background_seeds(cls_attention, weights)
    similarity = seed_similarities(weighted_keys(keys, weights), seeds)
    return ~(similarity > threshold), similarity, seeds


def found_background_batch(
    keys: torch.Tensor,
    cls_attention: torch.Tensor,
    grid: tuple[int, int],
    scales: tuple[float, float],
    image_sizes: list[tuple[int, int]],
    threshold: float = BACKGROUND_SIMILARITY,
) -> list[FoundResult]:
    """found_bkg on a batch of same-size images: box of the largest component of the object mask.

    keys: (B, N, d); cls_attention: (B, heads, N); grid (h, w); scales (sy, sx); image_sizes:
    B unpadded (H, W). Boxes ``[x1, y1, x2, y2]``, x2/y2 exclusive.
    """
    if keys.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"keys hold {keys.shape[1]} patches but the grid {grid} has {grid[0] * grid[1]}")
    objects, similarity, seeds = coarse_object_masks(keys, cls_attention, threshold)
    return [
        found_result(mask, score, grid, scales, size, int(seed))
        for mask, score, seed, size in zip(objects, similarity, seeds, image_sizes, strict=True)
    ]


# ----------------------------------------------------------------------------------------------
# Refinement of patch masks by the bilateral solver (the training targets)


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) 0/1 mask -> (H, W) float32 bilinear upsampling with half-pixel centres (OpenCV's
    ``INTER_LINEAR``, as ``cv2.resize`` in the published code)."""
    tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def downsample_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) bool pixel mask -> (h, w) bool patch mask, as published: bilinear without
    antialiasing (each cell reads the 2x2 pixels around its sampling point), then any non-zero
    value is foreground."""
    tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return (F.interpolate(tensor, size=grid, mode="bilinear", align_corners=False)[0, 0] != 0).numpy()


def refine_mask(solver: BilateralSolver, image_size: tuple[int, int], mask: np.ndarray) -> np.ndarray:
    """FOUND's refinement of one (h, w) bool patch mask of an image of (H, W) pixels.

    The mask is upsampled to the pixels, smoothed by the bilateral solver (confidence 0.999),
    thresholded at 0.5, its holes filled, and the largest region dropped
    (:func:`drop_largest_region`). When that agrees with the upsampled mask (IoU > 0.5), it is
    downsampled back to the grid (:func:`downsample_mask`); otherwise the mask is kept as is.
    Returns (h, w) bool.
    """
    coarse = upsample_mask(mask, image_size)
    target = coarse.reshape(-1).astype(np.float64)
    smoothed = solver.solve(target, np.full_like(target, SOLVER_CONFIDENCE)).reshape(image_size)
    refined = drop_largest_region(scipy.ndimage.binary_fill_holes(smoothed > 0.5))
    if mask_iou(coarse > 0.5, refined) > REFINED_MIN_IOU:
        return downsample_mask(refined, mask.shape)
    return np.asarray(mask, dtype=bool)


def refined_masks(images: np.ndarray, masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Refine several families of patch masks of the same images, one solver per image.

    images: (B, H, W, 3) uint8 RGB; masks: list of (B, h, w) bool tensors (e.g. the head's own
    prediction and found_bkg's coarse objects). Returns the list of refined (B, h, w) bool
    tensors, on the masks' devices.
    """
    refined = [[] for _ in masks]
    for index, image in enumerate(images):
        solver = image_solver(image)
        for family, batch in zip(refined, masks, strict=True):
            family.append(refine_mask(solver, image.shape[:2], batch[index].cpu().numpy()))
    return [torch.from_numpy(np.stack(family)).to(batch.device) for family, batch in zip(refined, masks, strict=True)]


# ----------------------------------------------------------------------------------------------
# The head's weights


def new_found_head(embed_dim: int) -> nn.Conv2d:
    """A freshly initialized head (PyTorch's default init): 1x1 convolution embed_dim -> 1."""
    return nn.Conv2d(embed_dim, 1, kernel_size=1)


@dataclass(frozen=True)
class HeadWeights:
    """A released head in FOUND's format: whose it is (``title``), the raw file's ``url`` and
    ``sha256``, the ``file`` name it is cached under (``<torch hub dir>/checkpoints``), the
    ``flag`` that passes a local head instead, and the command (``trainer``) that trains one."""

    title: str
    url: str
    sha256: str
    file: str
    flag: str
    trainer: str


FOUND_HEAD = HeadWeights(
    "FOUND", FOUND_WEIGHTS_URL, FOUND_WEIGHTS_SHA256, FOUND_WEIGHTS_FILE, "--found_weights", "train_found.py"
)


def weights_cache_path(release: HeadWeights = FOUND_HEAD) -> Path:
    """Where a released head is cached: ``<torch hub dir>/checkpoints/<release.file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / release.file


def download_head_weights(release: HeadWeights = FOUND_HEAD) -> Path:
    """The released head's file, downloaded once (SHA-256 checked) into the torch hub cache."""
    cached = weights_cache_path(release)
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(release.url, str(cached), hash_prefix=release.sha256, progress=False)
    except Exception as exc:  # no network, HTTP errors, a changed file, an unwritable cache
        raise LostError(
            f"cannot download {release.title}'s head {release.url} ({one_line(exc)}); connect to the network, "
            f"or put that file at {cached}, or pass {release.flag} PATH to a local copy"
        ) from exc
    return cached


def load_found_head(
    path: str | Path | None = None, embed_dim: int | None = None, release: HeadWeights = FOUND_HEAD
) -> nn.Conv2d:
    """A head from a file in FOUND's released format ``{"decoder": {"weight": (1, d, 1, 1),
    "bias": (1,)}}``; without `path`, the head `release` describes (downloaded once).

    embed_dim: when given, the head must take that many channels (the backbone's key size).
    Returns the 1x1 convolution d -> 1 on the CPU, in eval mode, gradients off. Raises
    LostError naming the file (or the cache) for a missing, unreadable or wrong-shaped file.
    """
    if path is None:
        path = download_head_weights(release)
        source = f"{path} (the cached {release.url}; delete it to download it again)"
    else:
        path = Path(path)
        source = f"{release.flag} {path}"
        if not path.is_file():
            raise LostError(
                f"{source}: no such file; pass a head saved by {release.trainer} or the released {Path(release.url).name}"
            )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # arbitrary bytes make the unpickler fail in arbitrary ways
        raise LostError(
            f"{source}: not a readable PyTorch file ({one_line(exc)}); pass a file written by torch.save"
        ) from exc
    return head_from_checkpoint(checkpoint, source, embed_dim, release)


def head_from_checkpoint(
    checkpoint: object, source: str, embed_dim: int | None = None, release: HeadWeights = FOUND_HEAD
) -> nn.Conv2d:
    """The head held by a loaded released-format checkpoint, or LostError naming `source`."""
    expected = "{'decoder': {'weight': (1, d, 1, 1), 'bias': (1,)}}"
    state = checkpoint.get("decoder") if isinstance(checkpoint, dict) else None
    weight = state.get("weight") if isinstance(state, dict) else None
    bias = state.get("bias") if isinstance(state, dict) else None
    if not (
        isinstance(weight, torch.Tensor)
        and isinstance(bias, torch.Tensor)
        and weight.dim() == 4
        and weight.shape[0] == 1
        and weight.shape[2:] == (1, 1)
        and bias.shape == (1,)
        and set(state) == {"weight", "bias"}
    ):
        raise LostError(
            f"{source}: not a {release.title} head (expected {expected}); pass the head saved by {release.trainer}"
        )
    if embed_dim is not None and weight.shape[1] != embed_dim:
        raise LostError(
            f"{source}: this head takes {weight.shape[1]} key channels but the backbone gives {embed_dim}; "
            "pass the --arch the head was trained on (vit_small: 384), or a head trained on this one"
        )
    head = new_found_head(weight.shape[1])
    head.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return head.eval().requires_grad_(False)


def found_head_bytes(head: nn.Conv2d) -> bytes:
    """The head serialized in the released format ``{"decoder": state_dict}``."""
    buffer = io.BytesIO()
    torch.save({"decoder": {key: value.detach().cpu() for key, value in head.state_dict().items()}}, buffer)
    return buffer.getvalue()


def save_found_head(head: nn.Conv2d, path: str | Path) -> None:
    """Write the head to `path` in the released format, atomically."""
    atomic_write(path, found_head_bytes(head))


# ----------------------------------------------------------------------------------------------
# The method's entry: parameters, batch adapter, experiment folder


@dataclass(frozen=True)
class FoundParams:
    weights: str = field(default="", metadata=flag("--found_weights", "FOUND head file (empty: the authors' released head, downloaded once)"))


@functools.lru_cache(maxsize=8)
def cached_found_head(weights: str, release: HeadWeights = FOUND_HEAD) -> torch.nn.Conv2d:
    """The head in ``weights`` (empty: the one `release` describes), loaded once per process."""
    return load_found_head(weights or None, release=release)


def prepare_found(params: FoundParams, _num_heads: int) -> None:
    """Load the head before any image, so that a missing file or download fails at start-up."""
    cached_found_head(params.weights)


def discover_with_head(
    features: Features, image_sizes: list[tuple[int, int]], weights: str, release: HeadWeights
) -> list[FoundResult]:
    """:func:`found_batch` with the head in ``weights`` (empty: `release`'s): features.feats
    (B, N, d) keys -> one result per image, box ``[x1, y1, x2, y2]`` (x2/y2 exclusive)."""
    head = cached_found_head(weights, release)
    if head.weight.shape[1] != features.feats.shape[-1]:
        raise LostError(
            f"{release.flag} {weights or release.url}: the head takes {head.weight.shape[1]} channels but "
            f"this backbone's keys have {features.feats.shape[-1]}; "
            f"pass a head trained on this backbone ({release.trainer})"
        )
    return found_batch(features.feats, head, features.grid, features.scales, image_sizes)


def discover_found(features: Features, image_sizes: list[tuple[int, int]], params: FoundParams) -> list[FoundResult]:
    """FOUND on a batch: features.feats (B, N, d) keys scored by the head -> one result per image."""
    return discover_with_head(features, image_sizes, params.weights, FOUND_HEAD)


@dataclass(frozen=True)
class FoundBackgroundParams:
    pass


def discover_found_background(
    features: Features, image_sizes: list[tuple[int, int]], _params: FoundBackgroundParams
) -> list[FoundResult]:
    """FOUND's training-free background discovery on a batch: keys and CLS attention -> results."""
    return found_background_batch(features.feats, features.cls_attention.float(), features.grid, features.scales, image_sizes)


def found_folder(backbone: BackboneSpec, _params: Any) -> str:
    """``FOUND-vit_small8_k``."""
    return f"FOUND-{backbone.label()}_{backbone.which_features}"


def found_background_folder(backbone: BackboneSpec, _params: Any) -> str:
    """``FOUND-bkg-vit_small8_k``."""
    return f"FOUND-bkg-{backbone.label()}_{backbone.which_features}"
