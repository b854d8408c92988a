"""What every method returns for one image: its objects as boxes, scores and patch masks.

A method's per-image result follows :class:`MethodResult`, whatever else it carries for its
pictures (seeds, maps, eigenvectors):

* ``boxes: (K, 4)`` ``[x1, y1, x2, y2]`` in pixels of the image as the method saw it (decoded,
  unpadded), x2/y2 exclusive, best first, K >= 1; ``box`` = ``boxes[0]``;
* ``scores: (K,)`` float64, non-increasing;
* ``patch_masks: (K, h, w)`` bool over the feature grid: object k's cells, whose box (cells
  scaled by the grid's pixels per cell, clipped to the image) is ``boxes[k]``;
* ``ranked`` (a class attribute): whether the scores are the method's own ranking of several
  objects (MaskCut), written to the scored prediction files; one-object methods (LOST, TokenCut,
  DINO-seg, FOUND) have K = 1, score 1 and write the published one-box files.

A one-object result is a frozen dataclass with a ``box`` and a ``patch_mask: (h, w)`` field that
inherits :class:`OneObject`, which gives it the three arrays. The engine reads nothing else, so a
new method (its module plus one table entry) gets masks, instance files and mask pictures by
returning such a result.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np


class MethodResult(Protocol):
    """The objects of one image (see the module docstring for shapes and conventions)."""

    ranked: ClassVar[bool]

    @property
    def box(self) -> np.ndarray: ...

    @property
    def boxes(self) -> np.ndarray: ...

    @property
    def scores(self) -> np.ndarray: ...

    @property
    def patch_masks(self) -> np.ndarray: ...


class OneObject:
    """Base of the results of one-object methods: from the dataclass fields ``box: (4,)`` and
    ``patch_mask: (h, w) bool`` it gives ``boxes: (1, 4)``, ``scores: [1.0]`` and
    ``patch_masks: (1, h, w)``."""

    ranked: ClassVar[bool] = False

    @property
    def boxes(self) -> np.ndarray:
        return np.asarray(self.box)[None]

    @property
    def scores(self) -> np.ndarray:
        return np.ones(1)

    @property
    def patch_masks(self) -> np.ndarray:
        return np.asarray(self.patch_mask, dtype=bool)[None]
