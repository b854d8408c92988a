"""The fully connected CRF (Krähenbühl & Koltun, NeurIPS 2011) with CutLER's parameters.

CutLER refines every MaskCut mask with a dense CRF (``maskcut/crf.py``), through ``pydensecrf``
(the registry package ``pydensecrf2``, same sources). For an image ``(H, W, 3)`` uint8 RGB and a
0/1 mask ``(h, w)``:

1. logits ``(2, h, w)`` float64: background ``1 - mask``, foreground ``mask``;
2. bilinearly upsampled to ``(H, W)`` (half-pixel centres, no antialiasing; the identity when
   the mask is already at the image's size, as in CutLER's MaskCut);
3. softmax over the two labels, clipped at 1e-5, and ``-log`` as float32 unaries
   (``pydensecrf.utils.unary_from_softmax``): a 0/1 mask gives the probabilities 0.269 / 0.731;
4. a Gaussian kernel (``sxy`` 3, compat 7) and a bilateral one (``sxy`` 50, ``srgb`` 5, compat
   10) over the image, 10 mean-field iterations;
5. each pixel takes the label of highest marginal (background on ties).

The result is ``(H, W) bool``, the pixels labelled foreground. :func:`check_available` tells a
run before it starts that the package is missing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lost.errors import LostError

ITERATIONS = 10
GAUSSIAN_SXY = 3
GAUSSIAN_COMPAT = 7
BILATERAL_SXY = 50
BILATERAL_SRGB = 5
BILATERAL_COMPAT = 10
"""CutLER's ``MAX_ITER``, ``POS_XY_STD``, ``POS_W``, ``Bi_XY_STD``, ``Bi_RGB_STD``, ``Bi_W``."""

MISSING_PACKAGE = "the dense CRF needs the package pydensecrf2, which is not installed: pip install pydensecrf2"


def check_available() -> None:
    """Raise LostError naming the package when pydensecrf cannot be imported (run at start-up)."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError as exc:
        raise LostError(MISSING_PACKAGE) from exc


def crf_unaries(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Steps 1-3: ``mask: (h, w)`` 0/1 (bool or float) -> (2, H * W) float32 unaries for (H, W) ``size``."""
    from pydensecrf.utils import unary_from_softmax

    foreground = torch.from_numpy(np.asarray(mask, dtype=np.float64))[None]
    logits = torch.cat([1 - foreground, foreground])[None]
    upsampled = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]
    return np.ascontiguousarray(unary_from_softmax(F.softmax(upsampled, dim=0).numpy()))


def dense_crf(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CutLER's CRF of one mask: image (H, W, 3) uint8 RGB, mask (h, w) 0/1 -> (H, W) bool.

    Raises LostError when pydensecrf is missing, ValueError for an image that is not (H, W, 3) uint8.
    """
    check_available()
    import pydensecrf.densecrf as dcrf

    image = np.array(image, order="C")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the CRF needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(crf_unaries(mask, (height, width)))
    crf.addPairwiseGaussian(sxy=GAUSSIAN_SXY, compat=GAUSSIAN_COMPAT)
    crf.addPairwiseBilateral(sxy=BILATERAL_SXY, srgb=BILATERAL_SRGB, rgbim=image, compat=BILATERAL_COMPAT)
    marginals = np.array(crf.inference(ITERATIONS)).reshape(2, height, width)
    return np.argmax(marginals, axis=0) == 1
