"""Saliency maps of method results: one map function per result *type*, in a registry.

A method that finds masks gets a saliency map by registering a function for its result type
(:func:`register_saliency_map`); the saliency script looks the function up from the method
table's ``discover`` return annotation (``-> list[FoundResult]``), so a new method that returns
an existing result type (PEEKABOO returns :class:`FoundResult`) needs no change anywhere, and a
new result type needs one registration. A map is ``(H, W)`` float in [0, 1] (bilateral output:
about [0, 1]) in pixels of the original image, foreground high.

How the patch grid lies on the image (:class:`MapGeometry`): with ``pad`` (FOUND, LOST) cell
``(r, c)`` covers pixels ``[r sy, (r + 1) sy) x [c sx, (c + 1) sx)`` of the image as the method
saw it, and the padding is cropped away; with ``resize`` (TokenCut) the grid covers the whole
image. Grid values reach the pixels through ``torch.nn.functional.interpolate``, as published.

The registered maps, each as its published code computes it:

* :class:`TokenCutResult` (``unsupervised_saliency_detection/object_discovery.py``): the seed's
  4-connected component of the bipartition, ``nearest`` to the pixels (float64, 0/1). With
  ``bilateral``, the bilateral solver's soft output of that map (``get_saliency.py`` scores
  ``output_solver``), bandwidths 16/16/8, confidence 0.999. Default preprocessing ``resize``.
* :class:`FoundResult` (FOUND's ``evaluation/saliency.py``), telling its two producers apart by
  ``seed`` (None: a trained head's logits in ``patch_scores``, as ``found`` and PEEKABOO give; a
  patch: ``found_bkg``'s background seed). The head: logits bilinear ``x patch`` and cropped,
  ``sigmoid``; the binary map ``> 0.5``. found_bkg: the object patches bilinear straight to the
  image size (the published code stretches the padded grid over the unpadded image) ``> 0.5``.
  Mode ``single``: the largest 4-connected component of the binary map (the binary map itself
  when empty); ``multi``: the soft map (found_bkg's is binary). With ``bilateral``: the binary
  map refined by the solver (:func:`refine_pixel_mask`; ``single`` keeps the second-largest
  region of the filled solver mask, ``multi`` all regions but the largest), used when its IoU
  with the binary map is > 0.5, else the binary map. Default preprocessing ``pad``.
* :class:`MaskCutResult`: ``single`` the best object's patches, ``multi`` all objects', nearest
  to the pixels. No bilateral refinement (CutLER refines with a CRF, not this solver).

Deliberate difference: the solver's reference is the uint8 image itself (FOUND rebuilds it from
its float tensor and truncates, which can lose one grey level; see ``methods.found``).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from lost.errors import LostError
from lost.geometry import drop_largest_region, mask_iou, seed_component
from lost.methods import METHODS
from lost.methods.entry import Method
from lost.methods.found import FoundResult
from lost.methods.maskcut import MaskCutResult
from lost.methods.tokencut import TokenCutResult
from lost.refine.bilateral_solver import REFINED_MIN_IOU, SOLVER_CONFIDENCE, image_solver

MODES = ("single", "multi")


@dataclass(frozen=True)
class MapGeometry:
    """Where a result's grid lies on its image.

    grid: (h, w); scales: (sy, sx) pixels of the seen image per cell; seen_size: (H, W) of the
    image as the method saw it (decoded and unpadded, or resized); original_size: (H, W) of the
    image file; preprocess: ``pad`` or ``resize`` (``data.images.PREPROCESSING``).
    """

    grid: tuple[int, int]
    scales: tuple[float, float]
    seen_size: tuple[int, int]
    original_size: tuple[int, int]
    preprocess: str

    def to_pixels(self, values: torch.Tensor | np.ndarray, mode: str) -> torch.Tensor:
        """(h, w) grid values -> (H, W) original pixels by ``interpolate(mode)`` (``nearest`` or
        ``bilinear`` with ``align_corners=False``), in the values' float dtype.

        pad: scaled by the patch size, the padding cropped, then (only when ``max_size`` scaled
        the image down) resized to the original size; resize: straight to the original size.
        """
        grid = as_grid_tensor(values, self.grid)
        if self.preprocess == "resize":
            return interpolate(grid, self.original_size, mode)
        scale = (float(self.scales[0]), float(self.scales[1]))
        options = {"align_corners": False} if mode == "bilinear" else {}
        upsampled = F.interpolate(grid[None, None], scale_factor=scale, mode=mode, **options)[0, 0]
        seen = upsampled[: self.seen_size[0], : self.seen_size[1]]
        return seen if tuple(seen.shape) == tuple(self.original_size) else interpolate(seen, self.original_size, mode)

    def stretch(self, values: torch.Tensor | np.ndarray, mode: str) -> torch.Tensor:
        """(h, w) grid values -> (H, W) by ``interpolate`` straight to the original size."""
        return interpolate(as_grid_tensor(values, self.grid), self.original_size, mode)


def as_grid_tensor(values: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(N,) or (h, w) values as an (h, w) float CPU tensor (float64 stays float64, else float32)."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values).detach().cpu()
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    return tensor.to(dtype).reshape(grid)


def interpolate(values: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(h, w) -> (H, W) by ``F.interpolate`` (``align_corners=False`` for bilinear)."""
    options = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(values[None, None], size=tuple(size), mode=mode, **options)[0, 0]


@dataclass(frozen=True)
class SaliencyOptions:
    """bilateral: refine with the bilateral solver as the method's paper does; mode: ``single``
    or ``multi`` (FOUND's evaluation modes, for the result types that have them)."""

    bilateral: bool = False
    mode: str = "single"


MapFn = Callable[[Any, MapGeometry, SaliencyOptions, np.ndarray], np.ndarray]
"""``map(result, geometry, options, image) -> (H, W) float map``; ``image``: (H, W, 3) uint8
RGB at the original size (the bilateral solver's reference)."""


@dataclass(frozen=True)
class SaliencyMapper:
    """A registered map: its function, the modes it takes, whether ``--bilateral`` applies, and
    the preprocessing of its published pipeline (the default)."""

    compute: MapFn
    modes: tuple[str, ...]
    bilateral: bool
    preprocess: str


SALIENCY_MAPS: dict[type, SaliencyMapper] = {}
"""Result type -> its saliency map."""


def register_saliency_map(
    result_type: type, modes: tuple[str, ...] = ("single",), bilateral: bool = True, preprocess: str = "pad"
) -> Callable[[MapFn], MapFn]:
    """Decorator registering the saliency map of a method result type."""

    def register(compute: MapFn) -> MapFn:
        SALIENCY_MAPS[result_type] = SaliencyMapper(compute, modes, bilateral, preprocess)
        return compute

    return register


def saliency_mapper(result_type: type) -> SaliencyMapper | None:
    """The map registered for ``result_type`` or one of its bases; None when there is none."""
    return next((SALIENCY_MAPS[base] for base in result_type.__mro__ if base in SALIENCY_MAPS), None)


def method_result_type(method: Method) -> type | None:
    """The result type of a method table entry, from its ``discover`` return annotation
    (``list[X]``); None when it is not annotated so."""
    try:
        returned = typing.get_type_hints(method.discover).get("return")
    except (NameError, TypeError):
        return None
    arguments = typing.get_args(returned)
    return arguments[0] if len(arguments) == 1 and isinstance(arguments[0], type) else None


def methods_with_maps() -> list[str]:
    """The names of the method table's methods whose results have a saliency map."""
    return [name for name, method in METHODS.items() if _mapper_of(method) is not None]


def _mapper_of(method: Method) -> SaliencyMapper | None:
    result_type = method_result_type(method)
    return None if result_type is None else saliency_mapper(result_type)


def mapper_for_method(method: Method, options: SaliencyOptions) -> SaliencyMapper:
    """The map of the method's results; LostError when it has none or refuses the options."""
    mapper = _mapper_of(method)
    if mapper is None:
        raise LostError(
            f"--method {method.name} finds boxes, not masks, so it has no saliency map; "
            f"choose one of {', '.join(methods_with_maps())}"
        )
    if options.mode not in mapper.modes:
        raise LostError(f"--mode {options.mode} does not apply to --method {method.name}; it takes {', '.join(mapper.modes)}")
    if options.bilateral and not mapper.bilateral:
        raise LostError(f"--bilateral does not apply to --method {method.name}; run it without")
    return mapper


# ----------------------------------------------------------------------------------------------
# Pixel masks


def largest_region(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> its largest 4-connected component; the mask itself when it is empty.
    Ties as FOUND's single mode breaks them: the last of numpy's default ``argsort`` of the
    region sizes (the same numpy gives the same choice)."""
    labels, count = scipy.ndimage.label(mask)
    if count == 0:
        return np.asarray(mask, dtype=bool)
    order = np.argsort(np.bincount(labels.ravel(), minlength=count + 1))
    return labels == order[order != 0][-1]


def second_largest_region(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the second-largest region of its label map, the background (label 0)
    counted as one region, as FOUND's solver output in single mode: usually the largest
    component, the background when a component outgrows it, the whole image when the mask is
    empty (the published ``except`` branch). Ties as numpy's default ``argsort`` orders them,
    as published."""
    labels, count = scipy.ndimage.label(mask)
    if count == 0:
        return np.ones(np.shape(mask), dtype=bool)
    return labels == np.argsort(np.bincount(labels.ravel(), minlength=count + 1))[-2]


def refine_pixel_mask(binary: np.ndarray, image: np.ndarray, all_components: bool) -> np.ndarray:
    """FOUND's bilateral refinement of an (H, W) bool pixel mask on its (H, W, 3) uint8 image.

    The solver (bandwidths 16/16/8, confidence 0.999) smooths the mask; ``> 0.5``, holes
    filled; then all regions but the largest (``all_components``, multi mode) or the
    second-largest region (single mode). Returns that when its IoU with ``binary`` is > 0.5,
    else ``binary``.
    """
    smoothed = solve_bilateral(binary.astype(np.float64), image)
    filled = scipy.ndimage.binary_fill_holes(smoothed > 0.5)
    refined = drop_largest_region(filled) if all_components else second_largest_region(filled)
    return refined if mask_iou(binary, refined) > REFINED_MIN_IOU else np.asarray(binary, dtype=bool)


def solve_bilateral(target: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(H, W) float64 target smoothed by the bilateral solver of the (H, W, 3) uint8 image
    (bandwidths 16/16/8, constant confidence 0.999) -> (H, W) float64."""
    flat = target.reshape(-1)
    return image_solver(image).solve(flat, np.full_like(flat, SOLVER_CONFIDENCE)).reshape(target.shape)


# ----------------------------------------------------------------------------------------------
# The registered maps


@register_saliency_map(TokenCutResult, preprocess="resize")
def tokencut_map(result: TokenCutResult, geometry: MapGeometry, options: SaliencyOptions, image: np.ndarray) -> np.ndarray:
    """The seed's component, nearest to the pixels (float64 0/1); with ``bilateral`` the solver's
    soft output of it."""
    component = seed_component(result.partition, result.seed, geometry.grid).astype(np.float64)
    coarse = geometry.to_pixels(component, "nearest").numpy()
    return solve_bilateral(coarse, image) if options.bilateral else coarse


@register_saliency_map(FoundResult, modes=MODES)
def found_map(result: FoundResult, geometry: MapGeometry, options: SaliencyOptions, image: np.ndarray) -> np.ndarray:
    """FOUND's evaluation map of a head's logits or of found_bkg's object patches (float32)."""
    if result.seed is None:
        soft = torch.sigmoid(geometry.to_pixels(result.patch_scores.float(), "bilinear")).numpy()
        binary = soft > 0.5
    else:
        binary = geometry.stretch(result.mask.float(), "bilinear").numpy() > 0.5
        soft = binary.astype(np.float32)
    if options.bilateral:
        return refine_pixel_mask(binary, image, options.mode == "multi").astype(np.float32)
    if options.mode == "single":
        return largest_region(binary).astype(np.float32)
    return soft


@register_saliency_map(MaskCutResult, modes=MODES, bilateral=False)
def maskcut_map(result: MaskCutResult, geometry: MapGeometry, options: SaliencyOptions, _image: np.ndarray) -> np.ndarray:
    """The best object's patches (single) or every object's (multi), nearest to the pixels."""
    objects = result.objects[:1] if options.mode == "single" else result.objects
    patches = np.zeros(geometry.grid[0] * geometry.grid[1], dtype=bool)
    for found in objects:
        patches |= np.asarray(found.mask, dtype=bool)
    return geometry.to_pixels(patches.astype(np.float32), "nearest").numpy()
