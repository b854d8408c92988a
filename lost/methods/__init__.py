"""The method table: every discovery method the toolkit runs, as one entry each.

An entry (:class:`~lost.methods.entry.Method`) says what the method needs from the backbone
(``feats``, the patch features, and/or ``cls_attention``, the CLS attention over the patches), how
to run it on a batch of same-size images, which parameters it takes (one frozen dataclass whose
fields carry their command-line flag), how its experiment folder is named, and which pictures it
draws. Adding a method is its module (the algorithm as pure functions on features, its parameter
dataclass, its batch adapter and folder name) plus one entry in :data:`METHODS`. The engine, the
command line, the journal's resume check and the experiment names all read the table.

Every method result follows ``results.MethodResult``: ``boxes: (K, 4)`` ``[x1, y1, x2, y2]`` in
pixels of the image as the method saw it (decoded, unpadded), x2/y2 exclusive, best first (``box``
= ``boxes[0]``), ``scores: (K,)`` (non-increasing) and ``patch_masks: (K, h, w)``; a one-object
method has K = 1 (``results.OneObject``). The engine scales boxes and masks to the original image.
"""

from __future__ import annotations

from lost.errors import LostError
from lost.methods.dinoseg import DinoSegParams, check_dinoseg_head, dinoseg_folder, discover_dinoseg
from lost.methods.entry import Method, flag
from lost.methods.found import (
    FOUND_TRAINED_ON,
    FoundBackgroundParams,
    FoundParams,
    discover_found,
    discover_found_background,
    found_background_folder,
    found_folder,
    prepare_found,
)
from lost.methods.lost import LostParams, discover_lost, lost_folder
from lost.methods.maskcut import MaskCutParams, discover_maskcut, maskcut_folder
from lost.methods.peekaboo import (
    PEEKABOO_TRAINED_ON,
    PeekabooParams,
    discover_peekaboo,
    peekaboo_folder,
    prepare_peekaboo,
)
from lost.methods.tokencut import TokenCutParams, discover_tokencut, tokencut_folder
from lost.viz.method_pictures import (
    box_picture,
    found_mask_picture,
    lost_feature_maps_picture,
    lost_seed_expansion_picture,
    masks_picture,
    ranked_boxes_picture,
    seed_pred_picture,
    tokencut_cut_picture,
)

__all__ = [
    "METHODS", "PICTURE_KINDS", "DinoSegParams", "FoundBackgroundParams", "FoundParams", "LostParams",
    "MaskCutParams", "Method", "PeekabooParams", "TokenCutParams", "flag", "method_entry",
]


FOUND_PICTURES = {"pred": box_picture, "mask": found_mask_picture, "masks": masks_picture}
"""The pictures of FOUND's results (found, found_bkg, peekaboo)."""

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
                "masks": masks_picture,
            },
        ),
        Method(
            name="dinoseg",
            title="DINO-seg",
            params=DinoSegParams,
            needs=frozenset({"cls_attention"}),
            discover=discover_dinoseg,
            folder=dinoseg_folder,
            pictures={"pred": box_picture, "masks": masks_picture},
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
            pictures={"pred": seed_pred_picture, "cut": tokencut_cut_picture, "masks": masks_picture},
        ),
        Method(
            name="maskcut",
            title="MaskCut",
            params=MaskCutParams,
            needs=frozenset({"feats"}),
            discover=discover_maskcut,
            folder=maskcut_folder,
            pictures={"pred": ranked_boxes_picture, "masks": masks_picture},
        ),
        Method(
            name="found",
            title="FOUND",
            params=FoundParams,
            needs=frozenset({"feats"}),
            discover=discover_found,
            folder=found_folder,
            pictures=FOUND_PICTURES,
            vit_only=True,
            prepare=prepare_found,
            released_head=FOUND_TRAINED_ON,
        ),
        Method(
            name="found_bkg",
            title="FOUND background discovery",
            params=FoundBackgroundParams,
            needs=frozenset({"feats", "cls_attention"}),
            discover=discover_found_background,
            folder=found_background_folder,
            pictures=FOUND_PICTURES,
            vit_only=True,
        ),
        Method(
            name="peekaboo",
            title="PEEKABOO",
            params=PeekabooParams,
            needs=frozenset({"feats"}),
            discover=discover_peekaboo,
            folder=peekaboo_folder,
            pictures=FOUND_PICTURES,
            vit_only=True,
            prepare=prepare_peekaboo,
            released_head=PEEKABOO_TRAINED_ON,
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


