"""``--refine``: snap any method's object masks to the image's edges, at full resolution.

Two refinements of masks ``(K, H, W) bool`` in pixels of an image ``(H, W, 3)`` uint8 RGB:

* ``"bilateral"``: the bilateral solver (``lost.refine.bilateral_solver``) with TokenCut's and
  FOUND's parameters (bandwidths 16 / 16 / 8, lambda 256, confidence 0.999), thresholded at 0.5,
  holes filled, the largest region of the label map dropped (FOUND's rule: usually the
  background; TokenCut keeps only the largest of the other regions instead). The refined mask
  replaces the coarse one only when their IoU exceeds 0.5, as published; else the coarse mask
  stays.
* ``"crf"``: CutLER's dense CRF (``lost.refine.crf``), then ``binary_fill_holes``. CutLER's
  MaskCut empties a mask whose refined version has an IoU below 0.5 with it; a refinement of
  another method's masks keeps the coarse mask there instead, like the bilateral rule. (The
  CutLER preset, ``lost.methods.cutler_preset``, empties it, as published.)

An empty mask stays empty. :func:`refine_masks` is a plain top-level function of arrays, so
it pickles into worker processes (``functools.partial(refine_masks, kind="crf")``);
:func:`refine_file_masks` decodes the image itself, for a worker given only the file's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage

from lost.data.images import load_rgb
from lost.geometry import drop_largest_region, mask_iou
from lost.refine import crf
from lost.refine.bilateral_solver import REFINED_MIN_IOU, SOLVER_CONFIDENCE, BilateralSolver, image_solver

REFINEMENTS = ("bilateral", "crf")

CRF_MIN_IOU = 0.5
"""A CRF-refined mask whose IoU with the coarse one is below this is not used."""


def check_refinement(kind: str) -> None:
    """Raise ValueError for an unknown kind and LostError when ``"crf"`` lacks pydensecrf (at start-up)."""
    if kind not in REFINEMENTS:
        raise ValueError(f"refinement {kind!r} is not one of {REFINEMENTS}")
    if kind == "crf":
        crf.check_available()


def bilateral_refined(solver: BilateralSolver, mask: np.ndarray) -> np.ndarray:
    """One (H, W) bool mask through the image's bilateral solver (see the module docstring)."""
    target = mask.reshape(-1).astype(np.float64)
    smoothed = solver.solve(target, np.full_like(target, SOLVER_CONFIDENCE)).reshape(mask.shape)
    refined = drop_largest_region(scipy.ndimage.binary_fill_holes(smoothed > 0.5))
    return refined if mask_iou(mask, refined) > REFINED_MIN_IOU else mask


def crf_refined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One (H, W) bool mask through CutLER's CRF and hole filling (see the module docstring)."""
    refined = scipy.ndimage.binary_fill_holes(crf.dense_crf(image, mask))
    return refined if mask_iou(mask, refined) >= CRF_MIN_IOU else mask


def refine_masks(image: np.ndarray, masks: np.ndarray, kind: str) -> np.ndarray:
    """Refine every mask of one image.

    image: (H, W, 3) uint8 RGB; masks: (K, H, W) bool in that image's pixels; kind: "bilateral"
    or "crf". Returns (K, H, W) bool. Raises ValueError for an unknown kind or masks of
    another size, LostError when the CRF's package is missing.
    """
    check_refinement(kind)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks {masks.shape} do not match the image {image.shape[:2]}: expected (K, H, W)")
    if not masks.any():
        return masks.copy()
    solver = image_solver(image) if kind == "bilateral" else None
    refined = [
        mask if not mask.any() else bilateral_refined(solver, mask) if solver else crf_refined(image, mask)
        for mask in masks
    ]
    return np.stack(refined)


def refine_file_masks(path: Path | str, masks: np.ndarray, kind: str) -> np.ndarray:
    """:func:`refine_masks` of the masks (K, H, W) bool of an image file, decoded at its own
    size (H, W) by ``lost.data.images.load_rgb``. Raises LostError for an unreadable file."""
    return refine_masks(np.array(load_rgb(path)), masks, kind)
