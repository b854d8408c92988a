"""DropLoss (CutLER): the classification loss of a sampled proposal counts only when its predicted
box overlaps the image's pseudo ground truth, so that objects the pseudo-masks missed are not
pushed to the background.

As CutLER's ROI heads (``cutler/modeling/roi_heads/roi_heads.py`` and ``custom_cascade_rcnn.py``)
compute it, for one stage of the box head:

1. each proposal's predicted box is its proposal box moved by the predicted class-agnostic deltas
   (the stage's own box transform; not clipped to the image);
2. per image, the boxes it is compared with are *the matched ground-truth boxes of the image's
   first k proposals*, k being the number of distinct matched boxes among its first 100
   proposals (CutLER's code takes these rows in order, so repeats and missed objects are possible;
   kept as published, see :func:`published_gt_rows`);
3. its largest IoU with those boxes (0 where they do not intersect) above the threshold
   (``MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH``, 0.01) gives weight 1, otherwise 0;
4. ``loss_cls = mean over all proposals of weight * cross-entropy`` (the dropped proposals stay in
   the denominator); the box regression loss is detectron2's, unchanged.

Fallback: when an image's proposals carry no matched ground truth (detectron2's sampling leaves
``gt_boxes`` out for an image without annotations, which happens in a cascade's first stage),
the whole stage uses the plain loss. Later cascade stages give such an image zero boxes as
matches, so all of its proposals are dropped there, as published.

Boxes are ``[x1, y1, x2, y2]`` in pixels of the network input (the resized image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTINCT_ROWS_LOOKED_AT = 100
"""CutLER counts the distinct matched ground-truth boxes among an image's first 100 proposals."""


def max_iou(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Largest IoU of each box with `gt_boxes`, 0 where they do not intersect.

    boxes: (R, 4), gt_boxes: (M, 4) float ``[x1, y1, x2, y2]``; returns (R,). With no
    ground truth (M = 0) every IoU is 0 (CutLER's ``pairwise_iou_max_scores`` fails there).
    """
    if len(gt_boxes) == 0:
        return boxes.new_zeros(len(boxes))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    corner_max = torch.min(boxes[:, None, 2:], gt_boxes[:, 2:])
    corner_min = torch.max(boxes[:, None, :2], gt_boxes[:, :2])
    inter = (corner_max - corner_min).clamp(min=0).prod(dim=2)
    iou = torch.where(inter > 0, inter / (area[:, None] + gt_area - inter), torch.zeros_like(inter))
    return iou.max(dim=1).values


def published_gt_rows(matched_gt_boxes: torch.Tensor) -> torch.Tensor:
    """The ground-truth boxes CutLER compares an image's predictions with.

    matched_gt_boxes: (R, 4), row i the ground-truth box proposal i was matched to. Returns its
    first k rows, k = number of distinct rows among its first 100.
    """
    count = len(torch.unique(matched_gt_boxes[:DISTINCT_ROWS_LOOKED_AT], dim=0))
    return matched_gt_boxes[:count]


def droploss_weights(
    pred_boxes: list[torch.Tensor], matched_gt_boxes: list[torch.Tensor], iou_thresh: float
) -> torch.Tensor:
    """Per-proposal weights (1 kept, 0 dropped) of one stage, images concatenated.

    pred_boxes[i]: (R_i, 4) predicted boxes of image i; matched_gt_boxes[i]: (R_i, 4) the matched
    ground-truth box of each of its proposals. Returns (sum R_i,) float32, 1 where the largest IoU
    exceeds `iou_thresh` (strictly).
    """
    ious = [max_iou(pred, published_gt_rows(gt)) for pred, gt in zip(pred_boxes, matched_gt_boxes, strict=True)]
    if not ious:
        return torch.zeros(0)
    return (torch.cat(ious) > iou_thresh).float()


def weighted_classification_loss(scores: torch.Tensor, gt_classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over all proposals of ``weights * cross_entropy``.

    scores: (R, K + 1) logits, gt_classes: (R,) in [0, K], weights: (R,). Zero proposals give 0
    (connected to `scores` for the gradient).
    """
    if gt_classes.numel() == 0:
        return scores.sum() * 0.0
    return (weights * F.cross_entropy(scores, gt_classes, reduction="none")).mean()
