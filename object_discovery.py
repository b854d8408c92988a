"""The published code's ``object_discovery`` module: LOST and DINO-seg on one feature map.

    from object_discovery import lost, dino_seg

The implementation lives in :mod:`lost.methods.lost` and :mod:`lost.methods.dinoseg`.
"""

from lost.methods.dinoseg import dino_seg  # noqa: F401
from lost.methods.lost import LostResult, lost  # noqa: F401
