"""One entry of the method table (:class:`Method`), the declaration of a parameter's flag, and the
description of a released trained head (:class:`ReleasedHead`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lost.backbones import BackboneSpec, Features
from lost.errors import LostError
from lost.viz.method_pictures import PictureFn


def flag(name: str, help_text: str, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata declaring a method parameter's command-line flag (``argparse`` options
    such as ``action="store_false"`` or ``choices`` pass through)."""
    return {"flag": name, "help": help_text, **argparse_options}


@dataclass(frozen=True)
class ReleasedHead:
    """A trained head whose authors released its weights, and the backbone it was trained on.

    title: the method's name in messages. trained_on: the backbone whose features it was trained
    on (its arch, patch size and features count; weights files are not compared, since a local
    copy of the official ones is common), trained_width: their channels. weights_field: the
    method parameter naming another head file (empty: the released one), whose flag is ``flag``.
    """

    title: str
    trained_on: BackboneSpec
    trained_width: int
    weights_field: str
    flag: str

    def is_trained_on(self, backbone: BackboneSpec) -> bool:
        """Whether the released head was trained on this backbone's features."""
        keys = ("arch", "patch_size", "which_features")
        return all(getattr(backbone, key) == getattr(self.trained_on, key) for key in keys)

    def check_backbone(self, backbone: BackboneSpec, params: Any) -> None:
        """LostError when the released head (no file in ``params``) would run on another backbone."""
        if getattr(params, self.weights_field) or self.is_trained_on(backbone):
            return
        trained = self.trained_on
        raise LostError(
            f"{self.title}'s released head was trained on --arch {trained.arch} --patch_size {trained.patch_size} "
            f"({trained.which_features} features), not on {backbone.label()}_{backbone.which_features}: run on that "
            f"backbone, or pass {self.flag} FILE with a head trained on this one"
        )

    def warning(self, backbone: BackboneSpec, params: Any, backbone_width: int) -> str | None:
        """The one-line warning for an explicit head file of the released head's width on another
        backbone (None otherwise): it may be the released head, which was not trained there."""
        weights = getattr(params, self.weights_field)
        if not weights or self.is_trained_on(backbone) or backbone_width != self.trained_width:
            return None
        return (
            f"{self.flag} {Path(weights).name} is not known to be trained on {backbone.label()} ({self.title}'s "
            f"released head, of the same width, was trained on {self.trained_on.label()}); its boxes mean "
            "something only if it was"
        )


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
    released_head: the released trained head it runs unless given another file; it is refused
        on a backbone it was not trained on.
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
    released_head: ReleasedHead | None = None

    def check_backbone(self, backbone: BackboneSpec) -> None:
        """LostError when the method cannot run on this backbone."""
        if self.vit_only and not backbone.entry.is_vit:
            raise LostError(f"--method {self.name} needs a ViT --arch, not {backbone.arch}")

    def picture(self, kind: str) -> PictureFn:
        """The picture function drawn for ``--visualize kind`` (``pred`` when it has no such kind)."""
        return self.pictures.get(kind, self.pictures["pred"])
