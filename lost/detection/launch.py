"""The entry of the ``tools/train_net_*.py`` scripts: detectron2 is imported only here, so that a
missing detectron2 is one line naming how to install it."""

from __future__ import annotations

import importlib
import sys


def run_training_script(description: str, argv: list[str] | None = None, entry: str = "training") -> int:
    """What ``tools/train_net_*.py`` run: ``lost.detection.<entry>.main`` (``training``: the LOST
    paper's Faster R-CNN; ``cutler.training``: CutLER's detector), imported here so that a missing
    detectron2 is one line naming how to install it."""
    try:
        module = importlib.import_module(f"lost.detection.{entry}")
    except ImportError as exc:
        print(
            f"error: detectron2 cannot be imported ({exc}); install it with bash tools/install_detectron2.sh "
            "or pip install 'git+https://github.com/facebookresearch/detectron2.git'",
            file=sys.stderr,
        )
        return 2
    return module.main(argv, description=description)
