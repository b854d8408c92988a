"""The run specification: every setting that changes a run's results, in one frozen dataclass.

From a :class:`RunSpec` the code derives the experiment folder name, the settings a journal must
match to be resumed, and the model id of feature caches; none of them is written by hand, so a
new setting cannot be forgotten in one of them.

Experiment names. The method's published name (``LOST-vit_small16_k``,
``vit_small-16_dinoseg-head4``, ...) is followed by every setting that is not at its default and
that the published name does not already show, in field order: backbone settings, then method
parameters, then the run's own (``precision``, ``max_size``), each as ``_<key>-<value>``
(``TokenCut-vit_small16_k_tau-0.1``, ``LOST-vit_small16_k_weights-1a2b3c4d_max_size-512``). The
key of a method parameter is its flag (``--k_patches`` -> ``k_patches``; a switch such as
``--no_binary_graph`` stands alone), that of any other setting its field name. A value naming an
existing file (weights) is the first 8 hex digits of the SHA-256 of its bytes; a value with a
character unfit for a folder name, those of its text's. Whether the published name shows a
setting is found by resetting it to its default and comparing the names, so a new setting or a
new method parameter is named without any code here.

Input identity. A data set is named as such (``VOC07_trainval``); a folder or an image is its
resolved path, and a folder's runs live under ``<last name>-<8 hex digits of the path's SHA-256>``
(``photos-1a2b3c4d``): two different folders named ``photos`` never share a run.

Settings that do not apply. :data:`BACKBONE_OPTIONS` says when each backbone option applies
(``patch_size`` to DINO's ViTs, ``resnet_dilate`` to dilated ResNets, ``which_features`` to a
ViT's patch features); the command line refuses an option given where it does not, and the
journal's settings hold only the options that apply.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lost.backbones import BACKBONES, Backbone, BackboneSpec
from lost.methods import Method, method_entry

DEFAULT_MAX_SIZE = 1024
"""Longer side images are scaled down to by default (``--max_size``)."""

SHORT_HASH_DIGITS = 8
SAFE_NAME_VALUE = re.compile(r"[A-Za-z0-9._+-]+")
"""A value written as it is in a folder name; any other is written by its short hash."""


@dataclass(frozen=True)
class BackboneOption:
    """When a backbone option applies: to the backbones ``backbone(entry)`` accepts (named by
    ``applies_to``), and, with ``needs``, only to methods reading that feature."""

    flag: str
    backbone: Callable[[Backbone], bool]
    applies_to: str
    needs: str | None = None

    def applies(self, backbone: Backbone, method: Method) -> bool:
        return self.backbone(backbone) and (self.needs is None or self.needs in method.needs)


BACKBONE_OPTIONS: dict[str, BackboneOption] = {
    "patch_size": BackboneOption(
        "--patch_size",
        lambda backbone: backbone.is_vit and not backbone.from_timm,
        "DINO's ViTs (" + ", ".join(name for name, entry in BACKBONES.items() if entry.is_vit) + ")",
    ),
    "resnet_dilate": BackboneOption(
        "--resnet_dilate", lambda backbone: backbone.dilated,
        ", ".join(name for name, entry in BACKBONES.items() if entry.dilated),
    ),
    "which_features": BackboneOption(
        "--which_features", lambda backbone: backbone.is_vit, "a ViT's patch features", needs="feats"
    ),
    "rope_keys": BackboneOption("--rope_keys", lambda backbone: backbone.is_vit, "ViTs with RoPE (DINOv3)"),
}
"""BackboneSpec field -> when it applies; the fields not listed (arch, weights, checkpoint_key)
always do."""


def short_hash(data: bytes) -> str:
    """The first 8 hex digits of the SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:SHORT_HASH_DIGITS]


@functools.lru_cache(maxsize=16)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:SHORT_HASH_DIGITS]


def file_hash(path: str | Path) -> str:
    """The short hash of a file's bytes (computed once per file version)."""
    stat = os.stat(path)
    return _file_hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def input_identity(path: str | Path) -> str:
    """What identifies a folder or image input: its resolved path."""
    return str(Path(path).resolve())


def input_folder_name(identity: str) -> str:
    """Where runs on an input live: a data set's name as it is, a path's last name and the
    short hash of the path (``photos-1a2b3c4d``)."""
    if not os.path.isabs(identity):
        return identity
    return f"{Path(identity).name}-{short_hash(identity.encode('utf-8'))}"


def name_value(value: Any) -> str:
    """A setting's value as written in a folder name (see the module docstring)."""
    if value is None:
        return "none"
    if isinstance(value, str) and value and os.path.isfile(value):
        return file_hash(value)
    text = repr(value) if isinstance(value, float) else str(value)
    return text if SAFE_NAME_VALUE.fullmatch(text) else short_hash(text.encode("utf-8"))


def _is_switch(field: dataclasses.Field) -> bool:
    """Whether the field's flag takes no value (``--no_binary_graph``)."""
    return field.metadata.get("action") in ("store_true", "store_false", "store_const")


@dataclass(frozen=True)
class RunSpec:
    """input: the data set (``VOC07_trainval``) or the resolved path of the folder or image the
    records come from; backbone: architecture, weights and features; method: the method table's
    name, with its parameter dataclass ``params``; precision: of the backbone; max_size: longer
    side images are scaled down to (None: never); refine: the mask refinement (``crf``,
    ``bilateral``; None: the method's masks); preset: a published pipeline run as published
    (``cutler``: CutLER's MaskCut, which resizes every image to ``fixed_size``, None: 480, itself,
    so that ``max_size`` does not apply)."""

    input: str
    backbone: BackboneSpec
    method: str
    params: Any
    precision: str = "fp32"
    max_size: int | None = DEFAULT_MAX_SIZE
    refine: str | None = None
    preset: str | None = None
    fixed_size: int | None = None

    @property
    def entry(self) -> Method:
        return method_entry(self.method)

    def experiment_name(self) -> str:
        """The experiment folder name: the published one (``LOST-vit_small16_k``,
        ``vit_small-16_dinoseg-head4``, ...) and every other setting off its default
        (``TokenCut-vit_small16_k_tau-0.1``); LostError when the method cannot run on the
        backbone, or its released head was not trained on it."""
        self.entry.check_backbone(self.backbone)
        if self.entry.released_head is not None:
            self.entry.released_head.check_backbone(self.backbone, self.params)
        published = self.entry.folder(self.backbone, self.params)
        return published + "".join(f"_{part}" for part in self._unnamed_settings(published))

    def _unnamed_settings(self, published: str) -> list[str]:
        """``key-value`` of every setting off its default that the published name does not show."""
        parts = []
        for field in dataclasses.fields(self.backbone):
            value = getattr(self.backbone, field.name)
            reset = dataclasses.replace(self.backbone, **{field.name: field.default})
            if self._applies(field.name) and value != field.default and self.entry.folder(reset, self.params) == published:
                parts.append(f"{field.name}-{name_value(value)}")
        for field in dataclasses.fields(self.params):
            value = getattr(self.params, field.name)
            reset = dataclasses.replace(self.params, **{field.name: field.default})
            if value != field.default and self.entry.folder(self.backbone, reset) == published:
                key = field.metadata["flag"].lstrip("-")
                parts.append(key if _is_switch(field) else f"{key}-{name_value(value)}")
        for field in dataclasses.fields(self):
            if field.name in ("input", "backbone", "method", "params") or getattr(self, field.name) == field.default:
                continue
            if field.name == "max_size" and self.preset is not None:  # a preset sizes the images itself
                continue
            parts.append(f"{field.name}-{name_value(getattr(self, field.name))}")
        return parts

    def _applies(self, backbone_field: str) -> bool:
        option = BACKBONE_OPTIONS.get(backbone_field)
        return option is None or option.applies(self.backbone.entry, self.entry)

    def input_folder(self) -> str:
        """The folder of the runs on this input (``VOC07_trainval``, ``photos-1a2b3c4d``)."""
        return input_folder_name(self.input)

    def settings(self) -> dict[str, Any]:
        """Every field, nested dataclasses flattened to dicts of JSON values, the backbone's
        options only where they apply: what a journal stores and what a resumed run must match."""
        settings = dataclasses.asdict(self)
        settings["backbone"] = {key: value for key, value in settings["backbone"].items() if self._applies(key)}
        return settings


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
        return {**dataclasses.asdict(self), "run": self.run.settings()}
