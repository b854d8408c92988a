"""CutLER's detector stage (Wang et al., CVPR 2023): class-agnostic Cascade Mask R-CNN trained on
pseudo-masks with DropLoss and copy-paste, then self-trained on its own confident predictions.

Pure pieces (no detectron2): :mod:`droploss` (the loss weights), :mod:`copy_paste` (the batch
augmentation on tensors), :mod:`self_training` (the merge of predictions and previous pseudo-masks),
:mod:`coco_input` (reading and checking a COCO instances file). detectron2 pieces:
:mod:`roi_heads`, :mod:`mapper` and :mod:`training`.
"""

import warnings

# detectron2 v0.5 applies torch.jit.script at import time, which recent torch flags as deprecated.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
