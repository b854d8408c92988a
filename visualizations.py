"""The published code's ``visualizations`` module: pictures of what a method found.

The implementation lives in :mod:`lost.viz`.
"""

from lost.viz.pictures import (  # noqa: F401
    draw_box,
    feature_maps_picture,
    prediction_picture,
    seed_expansion_picture,
)
