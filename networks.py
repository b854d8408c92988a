"""The published code's ``networks`` module: building a backbone and loading its weights.

    from networks import get_model
    model = get_model("vit_small", patch_size=16, device="cpu")

The implementation lives in :mod:`lost.backbones`.
"""

from lost.backbones import (  # noqa: F401
    BACKBONES,
    BackboneSpec,
    FeatureExtractor,
    Features,
    build_model,
    get_model,
    last_selfattention,
    load_backbone,
)
