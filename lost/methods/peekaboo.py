"""PEEKABOO (Zunair & Ben Hamza, BMVC 2024): FOUND's head, trained on images with parts hidden.

At inference PEEKABOO is FOUND's ``found`` (hasibzunair/peekaboo ``model.py`` and
``evaluation/uod.py`` are valeoai/FOUND's, operation by operation): the image normalized with
ImageNet's mean and std and zero-padded on the bottom and right to a multiple of the patch size;
a 1x1 convolution over the last block's keys (heads concatenated, CLS dropped); the foreground
``sigmoid(logit) > 0.5`` in float32; the box of the largest 4-connected component (ties: the
first in raster order), scaled by the patch size and clipped to the unpadded image. Only the
weights differ: the authors' ``data/weights/peekaboo_decoder_weights_niter500.pt``
(:data:`PEEKABOO_HEAD`), in FOUND's format, downloaded once into the torch hub cache and SHA-256
checked, or a head trained by ``train_found.py --recipe peekaboo``
(:mod:`lost.training.masking`). Results are :class:`~lost.methods.found.FoundResult`, so
everything drawn or scored from FOUND's masks works on PEEKABOO's.

Where this differs from the published code, on purpose, as for FOUND: an empty foreground gives
the whole image (the published box extraction raises there: ``np.bincount`` of no label has no
``argmax``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lost.backbones import BackboneSpec, Features
from lost.methods.entry import ReleasedHead, flag
from lost.methods.found import FoundResult, HeadWeights, cached_found_head, discover_with_head

PEEKABOO_WEIGHTS_URL = (
    "https://raw.githubusercontent.com/hasibzunair/peekaboo/main/data/weights/peekaboo_decoder_weights_niter500.pt"
)
PEEKABOO_WEIGHTS_SHA256 = "889f87ee21ea17a828d6065e3e187521989da1e94ebecc0f5988aaacb2a0c40f"
PEEKABOO_HEAD = HeadWeights(
    title="PEEKABOO",
    url=PEEKABOO_WEIGHTS_URL,
    sha256=PEEKABOO_WEIGHTS_SHA256,
    file="peekaboo_decoder_weights_niter500.pt",
    flag="--peekaboo_weights",
    trainer="train_found.py --recipe peekaboo",
)
"""The released head (ViT-S/8 keys, 384 -> 1, 500 iterations on DUTS-TR), cached as
``<torch hub dir>/checkpoints/peekaboo_decoder_weights_niter500.pt``."""
PEEKABOO_TRAINED_ON = ReleasedHead(
    "PEEKABOO", BackboneSpec("vit_small", 8, which_features="k"), 384, "weights", "--peekaboo_weights"
)
"""Like FOUND's, the released head was trained on DINO ViT-S/8's keys (384 channels)."""


@dataclass(frozen=True)
class PeekabooParams:
    weights: str = field(
        default="",
        metadata=flag("--peekaboo_weights", "PEEKABOO head file (empty: the authors' released head, downloaded once)"),
    )


def prepare_peekaboo(params: PeekabooParams, _num_heads: int) -> None:
    """Load the head before any image, so that a missing file or download fails at start-up."""
    cached_found_head(params.weights, PEEKABOO_HEAD)


def discover_peekaboo(
    features: Features, image_sizes: list[tuple[int, int]], params: PeekabooParams
) -> list[FoundResult]:
    """PEEKABOO on a batch: features.feats (B, N, d) keys scored by its head -> one result per
    image, box ``[x1, y1, x2, y2]`` in unpadded-image pixels (x2/y2 exclusive)."""
    return discover_with_head(features, image_sizes, params.weights, PEEKABOO_HEAD)


def peekaboo_folder(backbone: BackboneSpec, _params: Any) -> str:
    """``PEEKABOO-vit_small8_k``."""
    return f"PEEKABOO-{backbone.label()}_{backbone.which_features}"
