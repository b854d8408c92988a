"""One entry of the method table (:class:`Method`) and the declaration of a parameter's flag."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lost.backbones import BackboneSpec, Features
from lost.errors import LostError
from lost.viz.method_pictures import PictureFn


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
    discover: ``discover(features, image_sizes, params) -> results``, one result per image of
        the batch, each a ``results.MethodResult`` (boxes, scores, patch masks); ``image_sizes``
        are the unpadded (H, W).
    folder: ``folder(backbone, params) -> experiment folder name``.
    pictures: ``--visualize`` kind -> picture function; every method draws ``pred``, and a kind
        it lacks falls back to ``pred``.
    vit_only: whether a ConvNet backbone is refused.
    prepare: ``prepare(params, num_heads)`` run once before any image (``num_heads``: the
        backbone's attention heads), to fail early on a bad parameter or on what the method
        itself loads (FOUND's head); None when it loads nothing.
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

    def check_backbone(self, backbone: BackboneSpec) -> None:
        """LostError when the method cannot run on this backbone."""
        if self.vit_only and not backbone.entry.is_vit:
            raise LostError(f"--method {self.name} needs a ViT --arch, not {backbone.arch}")

    def picture(self, kind: str) -> PictureFn:
        """The picture function drawn for ``--visualize kind`` (``pred`` when it has no such kind)."""
        return self.pictures.get(kind, self.pictures["pred"])
