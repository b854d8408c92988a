"""CutLER's ROI heads on detectron2: the Cascade R-CNN and standard (Mask R-CNN) heads whose box
predictors apply DropLoss (:mod:`lost.detection.cutler.droploss`) to the classification loss.

Registered in detectron2's ``ROI_HEADS_REGISTRY`` under CutLER's names, ``CustomCascadeROIHeads``
and ``CustomStandardROIHeads``, so that CutLER's config files name them as they are. Both are
detectron2's heads with one change: each box predictor (one per cascade stage) is a
:class:`DropLossOutputLayers`, which computes the DropLoss weights of its stage from the
proposals it is given, as CutLER's ``_forward_box`` does after running the stages. The cascade's
stages, sampling, matching, gradient scaling, mask head and inference are detectron2's.

Config keys (CutLER's, added by :func:`add_cutler_config`): ``MODEL.ROI_HEADS.USE_DROPLOSS``,
``MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH``, and the copy-paste keys ``DATALOADER.COPY_PASTE*``.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import cat
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from lost.detection.cutler import droploss


def add_cutler_config(cfg: CfgNode) -> CfgNode:
    """Add CutLER's config keys with CutLER's defaults (``cutler/config/cutler_config.py``);
    returns `cfg`. Its keys that change nothing here (``VISUALIZE_COPY_PASTE``,
    ``SOLVER.BASE_LR_MULTIPLIER*``, ``TEST.NO_SEGM``) are accepted, so that CutLER's own config
    files load, and refused when set to anything but their default (see ``check_config``)."""
    cfg.DATALOADER.COPY_PASTE = False
    cfg.DATALOADER.COPY_PASTE_RATE = 0.0
    cfg.DATALOADER.COPY_PASTE_MIN_RATIO = 0.5
    cfg.DATALOADER.COPY_PASTE_MAX_RATIO = 1.0
    cfg.DATALOADER.COPY_PASTE_RANDOM_NUM = True
    cfg.DATALOADER.VISUALIZE_COPY_PASTE = False
    cfg.MODEL.ROI_HEADS.USE_DROPLOSS = False
    cfg.MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH = 0.0
    cfg.SOLVER.BASE_LR_MULTIPLIER = 1
    cfg.SOLVER.BASE_LR_MULTIPLIER_NAMES = []
    cfg.TEST.NO_SEGM = False
    return cfg


class DropLossOutputLayers(FastRCNNOutputLayers):
    """detectron2's box predictor whose ``loss_cls`` is DropLoss's when ``use_droploss``."""

    @configurable
    def __init__(self, *args, use_droploss: bool = False, droploss_iou_thresh: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.use_droploss = use_droploss
        self.droploss_iou_thresh = droploss_iou_thresh

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape, box2box_transform: Box2BoxTransform | None = None) -> dict:
        ret = super().from_config(cfg, input_shape)
        if box2box_transform is not None:
            ret["box2box_transform"] = box2box_transform
        ret["use_droploss"] = cfg.MODEL.ROI_HEADS.USE_DROPLOSS
        ret["droploss_iou_thresh"] = cfg.MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH
        return ret

    def losses(self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]) -> dict:
        """detectron2's losses; with DropLoss, ``loss_cls`` weighted by :func:`droploss_weights`
        unless a proposal set carries no matched ground truth (the plain loss then)."""
        losses = super().losses(predictions, proposals)
        if not self.use_droploss or not all(p.has("gt_boxes") for p in proposals):
            return losses
        scores, deltas = predictions
        weights = self.droploss_weights(deltas, proposals).detach()
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        loss_cls = droploss.weighted_classification_loss(scores, gt_classes, weights)
        losses["loss_cls"] = loss_cls * self.loss_weight.get("loss_cls", 1.0)
        if weights.numel():
            get_event_storage().put_scalar("fast_rcnn/droploss_kept_fraction", weights.mean().item())
        return losses

    def droploss_weights(self, deltas: torch.Tensor, proposals: list[Instances]) -> torch.Tensor:
        """(R,) 1/0 weights of the proposals of all images; deltas: (R, 4) class-agnostic."""
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        pred_boxes = self.box2box_transform.apply_deltas(deltas, proposal_boxes)
        per_image = pred_boxes.split([len(p) for p in proposals])
        matched = [p.gt_boxes.tensor for p in proposals]
        return droploss.droploss_weights(list(per_image), matched, self.droploss_iou_thresh)


@ROI_HEADS_REGISTRY.register()
class CustomCascadeROIHeads(CascadeROIHeads):
    """detectron2's Cascade R-CNN heads with a DropLoss box predictor in every stage."""

    @classmethod
    def _init_box_head(cls, cfg: CfgNode, input_shape) -> dict:
        ret = super()._init_box_head(cfg, input_shape)
        weights = cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
        ret["box_predictors"] = [
            DropLossOutputLayers(cfg, head.output_shape, box2box_transform=Box2BoxTransform(weights=w))
            for head, w in zip(ret["box_heads"], weights, strict=True)
        ]
        return ret


@ROI_HEADS_REGISTRY.register()
class CustomStandardROIHeads(StandardROIHeads):
    """detectron2's standard (FPN, Mask R-CNN) heads with a DropLoss box predictor."""

    @classmethod
    def _init_box_head(cls, cfg: CfgNode, input_shape) -> dict:
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = DropLossOutputLayers(cfg, ret["box_head"].output_shape)
        return ret
