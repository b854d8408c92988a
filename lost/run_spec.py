"""The run specification: every setting that changes a run's results, in one frozen dataclass.

From a :class:`RunSpec` the code derives the experiment folder name, the settings a journal must
match to be resumed, and the model id of feature caches; none of them is written by hand, so a
new setting cannot be forgotten in one of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lost.backbones import BackboneSpec
from lost.methods import Method, method_entry


@dataclass(frozen=True)
class RunSpec:
    """input: the data set (``VOC07_trainval``) or folder/image name the records come from;
    backbone: architecture, weights and features; method: the method table's name, with its
    parameter dataclass ``params``; precision: of the backbone; max_size: longer side images are
    scaled down to (None: never)."""

    input: str
    backbone: BackboneSpec
    method: str
    params: Any
    precision: str = "fp32"
    max_size: int | None = None

    @property
    def entry(self) -> Method:
        return method_entry(self.method)

    def experiment_name(self) -> str:
        """The experiment folder name (``LOST-vit_small16_k``, ``vit_small-16_dinoseg-head4``, ...);
        LostError when the method cannot run on the backbone."""
        self.entry.check_backbone(self.backbone)
        return self.entry.folder(self.backbone, self.params)

    def settings(self) -> dict[str, Any]:
        """Every field, nested dataclasses flattened to dicts of JSON values: what a journal stores
        and what a resumed run must match."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SaliencyRunSpec:
    """A saliency evaluation run: the discovery run ``run`` (input = the data set's name), the
    metric ``protocol`` (``lost.eval.saliency.PROTOCOLS``), the image ``preprocess`` (``pad`` or
    ``resize``), the ``bilateral`` refinement, FOUND's ``mode`` (None for a result type with one
    mode), and ``image_dir`` / ``mask_dir``, the resolved folders the images and masks come from
    (so that two inputs of the same name never share a run)."""

    run: RunSpec
    protocol: str
    preprocess: str
    bilateral: bool
    mode: str | None
    image_dir: str
    mask_dir: str

    def experiment_name(self) -> str:
        """``<discovery name>[_<mode>][_bs]_<preprocess>_<protocol>``, e.g.
        ``FOUND-vit_small8_k_single_bs_pad_found``."""
        parts = [self.run.experiment_name()]
        parts += [self.mode] if self.mode is not None else []
        parts += ["bs"] if self.bilateral else []
        return "_".join([*parts, self.preprocess, self.protocol])

    def settings(self) -> dict[str, Any]:
        """Every field, flattened to JSON values (the journal's run line)."""
        return dataclasses.asdict(self)
