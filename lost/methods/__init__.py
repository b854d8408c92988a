"""The method table: every discovery method the toolkit runs, as one entry each.

An entry (:class:`Method`) says what the method needs from the backbone (``feats``, the
patch features, and/or ``cls_attention``, the CLS attention over the patches), how to run it on
a batch of same-size images, which parameters it takes (one frozen dataclass whose fields carry
their command-line flag), how its experiment folder is named, and which pictures it draws.
Adding a method is: its function (in ``object_discovery.py`` or its own module), its parameter
dataclass, and one entry in :data:`METHODS`. The engine, the command line, the journal's resume
check and the experiment names all read the table.

Every method result has a ``box`` attribute: ``[x1, y1, x2, y2]`` in pixels of the image as the
method saw it (decoded, unpadded), x2/y2 exclusive. A method that finds several objects also gives
``boxes: (K, 4)`` (best first, ``box`` = ``boxes[0]``) and ``scores: (K,)`` (non-increasing). The
engine scales the boxes to the original image.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lost.backbones import BackboneSpec, Features
from lost.data.images import load_rgb
from lost.errors import LostError
from lost.methods.found import FOUND_WEIGHTS_URL, FoundResult, found_background_batch, found_batch, load_found_head
from lost.methods.lost import LostResult, dino_seg, lost_batch, seed_component_box
from lost.methods.maskcut import MAX_OBJECTS, MaskCutResult, maskcut_batch
from lost.methods.maskcut import TAU as MASKCUT_TAU
from lost.methods.tokencut import EIGENSOLVERS, EPS, TAU, TokenCutResult, tokencut_batch
from lost.viz import pictures as visualizations

PictureFn = Callable[[Path, Any, int | None], Image.Image]
"""``picture(image_path, discovery, max_size) -> PIL image``; ``discovery`` is an
``engine.Discovery`` (its ``result``, ``box`` in original pixels, ``grid`` and ``scales``)."""


def flag(name: str, help_text: str, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata declaring a method parameter's command-line flag (``argparse`` options
    such as ``action="store_false"`` or ``choices`` pass through)."""
    return {"flag": name, "help": help_text, **argparse_options}


@dataclass(frozen=True)
class Method:
    """One entry of the method table.

    name: the ``--method`` value; title: how runs are announced ("LOST").
    params: the frozen dataclass of the method's parameters (fields declared with :func:`flag`).
    needs: what it reads from the backbone, a subset of ``networks.FEATURE_NEEDS``.
    discover: ``discover(features, image_sizes, params) -> results``, one result (with a
        ``box``) per image of the batch; ``image_sizes`` are the unpadded (H, W).
    folder: ``folder(backbone, params) -> experiment folder name``.
    pictures: ``--visualize`` kind -> picture function; every method draws ``pred``, and a kind
        it lacks falls back to ``pred``.
    vit_only: whether a ConvNet backbone is refused.
    prepare: ``prepare(params, num_heads)`` run once before any image (``num_heads``: the
        backbone's attention heads), to fail early on a bad parameter or on what the method
        itself loads (FOUND's head); None when it loads nothing.
    multi_box: whether its results also carry ``boxes: (K, 4)`` and ``scores: (K,)``, best
        first (several objects per image), besides ``box`` = ``boxes[0]``.
    """

    name: str
    title: str
    params: type
    needs: frozenset[str]
    discover: Callable[[Features, list[tuple[int, int]], Any], list[Any]]
    folder: Callable[[BackboneSpec, Any], str]
    pictures: Mapping[str, PictureFn]
    vit_only: bool = False
    prepare: Callable[[Any, int], None] | None = None
    multi_box: bool = False

    def check_backbone(self, backbone: BackboneSpec) -> None:
        """LostError when the method cannot run on this backbone."""
        if self.vit_only and not backbone.entry.is_vit:
            raise LostError(f"--method {self.name} needs a ViT --arch, not {backbone.arch}")

    def picture(self, kind: str) -> PictureFn:
        """The picture function drawn for ``--visualize kind`` (``pred`` when it has no such kind)."""
        return self.pictures.get(kind, self.pictures["pred"])


# ----------------------------------------------------------------------------------------------
# LOST
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LostParams:
    k_patches: int = field(default=100, metadata=flag("--k_patches", "lowest-degree patches considered for the expansion"))


def discover_lost(features: Features, image_sizes: list[tuple[int, int]], params: LostParams) -> list[LostResult]:
    """LOST on a batch: features.feats (B, N, d) -> one :class:`LostResult` per image."""
    return lost_batch(features.feats, features.grid, features.scales, image_sizes, params.k_patches)


def lost_folder(backbone: BackboneSpec, _params: LostParams) -> str:
    """``LOST-vit_small16_k``, ``LOST-resnet50dilate2``, ``LOST-vgg16_imagenet`` (published names)."""
    suffix = f"_{backbone.which_features}" if backbone.entry.is_vit else ""
    return f"LOST-{backbone.label()}{suffix}"


def lost_feature_maps_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The paper's Figure 2 (seed, its binarized correlation, inverse degrees)."""
    result = found.result
    image = load_rgb(image_path, max_size)
    return visualizations.feature_maps_picture(
        image, result.seed_similarity, result.degrees, result.seed, found.grid, found.scales
    )


def lost_seed_expansion_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The paper's Figure 3 (seed, box before the expansion, final box)."""
    result = found.result
    image = load_rgb(image_path, max_size)
    image_size = (image.height, image.width)
    seed_box = seed_component_box(result.seed_similarity, result.seed, found.grid, found.scales, image_size)
    return visualizations.seed_expansion_picture(image, result.seed, seed_box, result.box, found.grid, found.scales)


# ----------------------------------------------------------------------------------------------
# DINO-seg
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DinoSegParams:
    head: int = field(default=4, metadata=flag("--dinoseg_head", "attention head used by DINO-seg"))


@dataclass(frozen=True)
class BoxResult:
    """A method result that is only a box ``[x1, y1, x2, y2]`` (decoded pixels, x2/y2 exclusive)."""

    box: np.ndarray


def discover_dinoseg(features: Features, image_sizes: list[tuple[int, int]], params: DinoSegParams) -> list[BoxResult]:
    """DINO-seg on a batch: features.cls_attention (B, heads, N) -> one box per image."""
    patch_size = int(features.scales[0])
    return [
        BoxResult(dino_seg(heads, features.grid, patch_size, size, params.head))
        for heads, size in zip(features.cls_attention, image_sizes, strict=True)
    ]


def check_dinoseg_head(params: DinoSegParams, num_heads: int) -> None:
    """LostError when DINO-seg is asked for a head the model does not have."""
    if not 0 <= params.head < num_heads:
        raise LostError(f"--dinoseg_head {params.head}: the backbone has heads 0 to {num_heads - 1}")


def dinoseg_folder(backbone: BackboneSpec, params: DinoSegParams) -> str:
    """``vit_small-16_dinoseg-head4`` (the published name); a timm name stands as it is."""
    return f"{backbone.label('-')}_dinoseg-head{params.head}"


def box_picture(image_path: Path, found: Any, _max_size: int | None) -> Image.Image:
    """The box (red) on the original image."""
    return visualizations.prediction_picture(load_rgb(image_path), found.box)


# ----------------------------------------------------------------------------------------------
# TokenCut
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCutParams:
    tau: float = field(default=TAU, metadata=flag("--tau", "similarity threshold of the patch graph"))
    eps: float = field(default=EPS, metadata=flag("--eps", "weight of the pairs below --tau"))
    binary_graph: bool = field(
        default=True,
        metadata=flag("--no_binary_graph", "weight the edges by their similarity instead of 1", action="store_const", const=False),
    )
    eigensolver: str = field(
        default="auto",
        metadata=flag("--eigensolver", "auto: Lanczos, same partition, fast; dense: the published solve", choices=EIGENSOLVERS),
    )

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise LostError(f"--eps {self.eps}: must be positive (it keeps every patch's degree above zero)")
        if not self.binary_graph and not self.tau > 0:
            raise LostError(f"--tau {self.tau}: the weighted graph (--no_binary_graph) needs a positive --tau")


def discover_tokencut(features: Features, image_sizes: list[tuple[int, int]], params: TokenCutParams) -> list[TokenCutResult]:
    """TokenCut on a batch: features.feats (B, N, d) -> one :class:`TokenCutResult` per image."""
    return tokencut_batch(
        features.feats, features.grid, features.scales, image_sizes,
        params.tau, params.eps, params.binary_graph, params.eigensolver,
    )


def tokencut_folder(backbone: BackboneSpec, _params: TokenCutParams) -> str:
    """``TokenCut-vit_small16_k`` (the published name)."""
    return f"TokenCut-{backbone.label()}_{backbone.which_features}"


def seed_pred_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The box (red) and the seed patch (yellow), on the image as the method saw it."""
    result = found.result
    image = load_rgb(image_path, max_size)
    return visualizations.prediction_picture(image, result.box, result.seed, found.grid, found.scales)


def tokencut_cut_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """Image with box and seed | second eigenvector | bipartition."""
    image = load_rgb(image_path, max_size)
    return visualizations.tokencut_picture(image, found.result, found.grid, found.scales)


# ----------------------------------------------------------------------------------------------
# MaskCut
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskCutParams:
    max_objects: int = field(default=MAX_OBJECTS, metadata=flag("--max_objects", "most objects cut out of one image"))
    tau: float = field(default=MASKCUT_TAU, metadata=flag("--tau", "similarity threshold of the patch graph"))
    eps: float = field(default=EPS, metadata=flag("--eps", "weight of the pairs below --tau"))
    eigensolver: str = field(
        default="auto",
        metadata=flag("--eigensolver", "auto: Lanczos, same partition, fast; dense: the published solve", choices=EIGENSOLVERS),
    )

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise LostError(f"--eps {self.eps}: must be positive (it keeps every patch's degree above zero)")
        if self.max_objects < 1:
            raise LostError(f"--max_objects {self.max_objects}: must be at least 1")


def discover_maskcut(
    features: Features, image_sizes: list[tuple[int, int]], params: MaskCutParams
) -> list[MaskCutResult]:
    """MaskCut on a batch: features.feats (B, N, d) -> one :class:`MaskCutResult` (boxes, scores) per image."""
    return maskcut_batch(
        features.feats, features.grid, features.scales, image_sizes,
        params.tau, params.eps, params.max_objects, params.eigensolver,
    )


def maskcut_folder(backbone: BackboneSpec, _params: MaskCutParams) -> str:
    """``MaskCut-vit_small16_k``."""
    return f"MaskCut-{backbone.label()}_{backbone.which_features}"


def ranked_boxes_picture(image_path: Path, found: Any, _max_size: int | None) -> Image.Image:
    """Every box on the original image, each in its own colour with its rank and score."""
    return visualizations.ranked_boxes_picture(load_rgb(image_path), found.boxes, found.scores)


# ----------------------------------------------------------------------------------------------
# FOUND
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundParams:
    weights: str = field(default="", metadata=flag("--found_weights", "FOUND head file (empty: the authors' released head, downloaded once)"))


@functools.lru_cache(maxsize=4)
def cached_found_head(weights: str) -> torch.nn.Conv2d:
    """FOUND's head from ``weights`` (empty: the released one), loaded once per process."""
    return load_found_head(weights or None)


def prepare_found(params: FoundParams, _num_heads: int) -> None:
    """Load the head before any image, so that a missing file or download fails at start-up."""
    cached_found_head(params.weights)


def discover_found(features: Features, image_sizes: list[tuple[int, int]], params: FoundParams) -> list[FoundResult]:
    """FOUND on a batch: features.feats (B, N, d) keys scored by the head -> one result per image."""
    head = cached_found_head(params.weights)
    if head.weight.shape[1] != features.feats.shape[-1]:
        raise LostError(
            f"--found_weights {params.weights or FOUND_WEIGHTS_URL}: the head takes {head.weight.shape[1]} channels but "
            f"this backbone's keys have {features.feats.shape[-1]}; pass a head trained on this backbone (train_found.py)"
        )
    return found_batch(features.feats, head, features.grid, features.scales, image_sizes)


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


def found_mask_picture(image_path: Path, found: Any, max_size: int | None) -> Image.Image:
    """The box beside the foreground patches, on the image as the method saw it."""
    image = load_rgb(image_path, max_size)
    return visualizations.found_picture(image, found.result, found.grid, found.scales)


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            name="lost",
            title="LOST",
            params=LostParams,
            needs=frozenset({"feats"}),
            discover=discover_lost,
            folder=lost_folder,
            pictures={
                "pred": seed_pred_picture,
                "fms": lost_feature_maps_picture,
                "seed_expansion": lost_seed_expansion_picture,
            },
        ),
        Method(
            name="dinoseg",
            title="DINO-seg",
            params=DinoSegParams,
            needs=frozenset({"cls_attention"}),
            discover=discover_dinoseg,
            folder=dinoseg_folder,
            pictures={"pred": box_picture},
            vit_only=True,
            prepare=check_dinoseg_head,
        ),
        Method(
            name="tokencut",
            title="TokenCut",
            params=TokenCutParams,
            needs=frozenset({"feats"}),
            discover=discover_tokencut,
            folder=tokencut_folder,
            pictures={"pred": seed_pred_picture, "cut": tokencut_cut_picture},
        ),
        Method(
            name="maskcut",
            title="MaskCut",
            params=MaskCutParams,
            needs=frozenset({"feats"}),
            discover=discover_maskcut,
            folder=maskcut_folder,
            pictures={"pred": ranked_boxes_picture},
            multi_box=True,
        ),
        Method(
            name="found",
            title="FOUND",
            params=FoundParams,
            needs=frozenset({"feats"}),
            discover=discover_found,
            folder=found_folder,
            pictures={"pred": box_picture, "mask": found_mask_picture},
            vit_only=True,
            prepare=prepare_found,
        ),
        Method(
            name="found_bkg",
            title="FOUND background discovery",
            params=FoundBackgroundParams,
            needs=frozenset({"feats", "cls_attention"}),
            discover=discover_found_background,
            folder=found_background_folder,
            pictures={"pred": box_picture, "mask": found_mask_picture},
            vit_only=True,
        ),
    )
}
"""The method table: ``--method`` name -> :class:`Method`."""

PICTURE_KINDS = tuple(dict.fromkeys(kind for method in METHODS.values() for kind in method.pictures))
"""Every ``--visualize`` kind some method draws."""


def method_entry(name: str) -> Method:
    """The table entry of ``name``, or LostError listing the known methods."""
    if name not in METHODS:
        raise LostError(f"--method {name}: unknown method; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One argparse flag per method parameter, from the fields' :func:`flag` metadata.

    Methods may share a flag (``--tau``) with defaults of their own: the flags default to None
    and :func:`params_from_args` fills in the chosen method's default.
    """
    group = parser.add_argument_group("method parameters (each applies to the methods named)")
    for name, (param, defaults) in _flag_declarations().items():
        options = {key: value for key, value in param.metadata.items() if key not in ("flag", "help")}
        if "action" not in options:
            options["type"] = type(param.default)
        help_text = f"{param.metadata['help']} (default: {', '.join(defaults)})"
        group.add_argument(name, dest=_dest(name), default=None, help=help_text, **options)


def _flag_declarations() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Flag -> (its first declaring field, ``"<default> for <method>"`` of every method using it)."""
    declared: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for method in METHODS.values():
        for param in dataclasses.fields(method.params):
            entry = declared.setdefault(param.metadata["flag"], (param, []))
            entry[1].append(f"{param.name}={param.default} for {method.name}")
    return declared


def params_from_args(method: Method, args: argparse.Namespace) -> Any:
    """The method's parameter dataclass filled from the parsed flags (None: the method's default)."""
    values = {}
    for param in dataclasses.fields(method.params):
        given = getattr(args, _dest(param.metadata["flag"]))
        values[param.name] = param.default if given is None else given
    return method.params(**values)


def _dest(flag_name: str) -> str:
    return flag_name.lstrip("-")
