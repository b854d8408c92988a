"""Transcriptions of CutLER's detector-stage code (facebookresearch/CutLER), for the tests to compare
the project's implementation with. Kept close to the published statements, quirks included; only
CUDA calls are dropped.

- ``droploss_stage_losses``: the training branch of ``CustomCascadeROIHeads._forward_box``
  (``cutler/modeling/roi_heads/custom_cascade_rcnn.py``) for one stage, with
  ``pairwise_iou_max_scores`` (``cutler/structures/boxes.py``) and ``FastRCNNOutputLayers.losses``
  (``cutler/modeling/roi_heads/fast_rcnn.py``, smooth-L1 box loss with beta 0);
- ``copy_and_paste``: ``CustomSimpleTrainer.copy_and_paste`` (``cutler/engine/train_loop.py``), on
  global ``random`` / ``np.random``; ``fix_swap`` applies the project's one correction;
- ``self_training_annotations``: the body of ``cutler/tools/get_self_training_ann.py``.
"""

from __future__ import annotations

import random

import numpy as np
import pycocotools.mask as cocomask
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances

# ----------------------------------------------------------------------------------------------
# DropLoss


def pairwise_iou_max_scores(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    width_height = torch.min(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, None, :2], boxes2[:, :2])
    width_height.clamp_(min=0)
    inter = width_height.prod(dim=2)
    iou = torch.where(inter > 0, inter / (area1[:, None] + area2 - inter), torch.zeros(1, dtype=inter.dtype))
    iou_max, _ = torch.max(iou, dim=1)
    return iou_max


def fast_rcnn_losses(predictions, proposals, box2box_transform, num_classes, weights=None):
    scores, proposal_deltas = predictions
    gt_classes = torch.cat([p.gt_classes for p in proposals], dim=0)
    proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals], dim=0)
    gt_boxes = torch.cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
    if weights is not None:
        loss_cls = (weights * F.cross_entropy(scores, gt_classes, reduction="none")).mean()
    else:
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean")
    fg_inds = torch.nonzero((gt_classes >= 0) & (gt_classes < num_classes), as_tuple=True)[0]
    gt_deltas = box2box_transform.get_deltas(proposal_boxes[fg_inds], gt_boxes[fg_inds])
    loss_box_reg = torch.abs(proposal_deltas[fg_inds] - gt_deltas).sum() / max(gt_classes.numel(), 1.0)
    return {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}


def droploss_stage_losses(predictions, proposals, box2box_transform, droploss_iou_thresh, num_classes=1):
    """One stage of the published loss loop (``use_droploss`` True)."""
    no_gt_found = False
    try:
        box_num_list = [len(x.gt_boxes) for x in proposals]
        gt_num_list = [torch.unique(x.gt_boxes.tensor[:100], dim=0).size()[0] for x in proposals]
    except AttributeError:
        box_num_list = [0 for x in proposals]
        gt_num_list = [0 for x in proposals]
        no_gt_found = True
    if not no_gt_found:
        predictions_delta = predictions[1]
        proposal_boxes = Boxes.cat([x.proposal_boxes for x in proposals])
        predictions_bbox = box2box_transform.apply_deltas(predictions_delta, proposal_boxes.tensor)
        idx_start = 0
        iou_max_list = []
        for idx, x in enumerate(proposals):
            idx_end = idx_start + box_num_list[idx]
            iou_max_list.append(
                pairwise_iou_max_scores(predictions_bbox[idx_start:idx_end], x.gt_boxes[: gt_num_list[idx]].tensor)
            )
            idx_start = idx_end
        iou_max = torch.cat(iou_max_list, dim=0)
        weights = iou_max.le(droploss_iou_thresh).float()
        weights = 1 - weights.ge(1.0).float()
        return fast_rcnn_losses(predictions, proposals, box2box_transform, num_classes, weights=weights.detach())
    return fast_rcnn_losses(predictions, proposals, box2box_transform, num_classes)


# ----------------------------------------------------------------------------------------------
# Copy-paste


def mask_iou_matrix(x, y, mode="iou"):
    x = x.reshape(x.shape[0], -1).float()
    y = y.reshape(y.shape[0], -1).float()
    inter_matrix = x @ y.transpose(1, 0)
    sum_x = x.sum(1)[:, None].expand(x.shape[0], y.shape[0])
    sum_y = y.sum(1)[None, :].expand(x.shape[0], y.shape[0])
    if mode == "ioy":
        iou_matrix = inter_matrix / (sum_y)
    else:
        iou_matrix = inter_matrix / (sum_x + sum_y - inter_matrix)
    return iou_matrix


def copy_and_paste(
    labeled_data, unlabeled_data, rate=1.0, random_num=True, min_ratio=0.3, max_ratio=1.0, fix_swap=False
):
    new_unlabeled_data = []
    for cur_labeled_data, cur_unlabeled_data in zip(labeled_data, unlabeled_data):
        cur_labeled_instances = cur_labeled_data["instances"]
        cur_labeled_image = cur_labeled_data["image"]
        cur_unlabeled_instances = cur_unlabeled_data["instances"]
        cur_unlabeled_image = cur_unlabeled_data["image"]

        num_labeled_instances = len(cur_labeled_instances)
        copy_paste_rate = random.random()
        if rate >= copy_paste_rate and num_labeled_instances > 0:
            if random_num:
                num_copy = 1 if num_labeled_instances == 1 else np.random.randint(1, max(1, num_labeled_instances))
            else:
                num_copy = num_labeled_instances
        else:
            num_copy = 0
        if num_labeled_instances == 0 or num_copy == 0:
            new_unlabeled_data.append(cur_unlabeled_data)
            continue
        choice = np.random.choice(num_labeled_instances, num_copy, replace=False)
        copied_instances = cur_labeled_instances[choice].to(device=cur_unlabeled_instances.gt_boxes.device)
        copied_masks = copied_instances.gt_masks
        copied_boxes = copied_instances.gt_boxes
        _, labeled_h, labeled_w = cur_labeled_image.shape
        _, unlabeled_h, unlabeled_w = cur_unlabeled_image.shape

        resize_ratio = random.uniform(min_ratio, max_ratio)
        w_new = int(resize_ratio * unlabeled_w)
        h_new = int(resize_ratio * unlabeled_h)
        w_shift = random.randint(0, unlabeled_w - w_new)
        h_shift = random.randint(0, unlabeled_h - h_new)

        cur_labeled_image_new = (
            F.interpolate(
                cur_labeled_image[None, ...].float(), size=(h_new, w_new), mode="bilinear", align_corners=False
            )
            .byte()
            .squeeze(0)
        )
        masks_new = (
            F.interpolate(
                copied_masks.tensor[None, ...].float(), size=(h_new, w_new), mode="bilinear", align_corners=False
            )
            .bool()
            .squeeze(0)
        )
        copied_boxes.scale(1.0 * unlabeled_w / labeled_w * resize_ratio, 1.0 * unlabeled_h / labeled_h * resize_ratio)

        _, mask_w, mask_h = cur_unlabeled_instances.gt_masks.tensor.size()
        masks_new_all = torch.zeros(num_copy, mask_w, mask_h)
        image_new_all = torch.zeros_like(cur_unlabeled_image)
        image_new_all[:, h_shift : h_shift + h_new, w_shift : w_shift + w_new] += cur_labeled_image_new
        masks_new_all[:, h_shift : h_shift + h_new, w_shift : w_shift + w_new] += masks_new

        cur_labeled_image = image_new_all.byte()
        copied_masks.tensor = masks_new_all.bool()
        x_shift_used, y_shift_used = (w_shift, h_shift) if fix_swap else (h_shift, w_shift)
        copied_boxes.tensor[:, 0] += x_shift_used
        copied_boxes.tensor[:, 2] += x_shift_used
        copied_boxes.tensor[:, 1] += y_shift_used
        copied_boxes.tensor[:, 3] += y_shift_used

        copied_instances.gt_masks = copied_masks
        copied_instances.gt_boxes = copied_boxes
        copied_instances._image_size = (unlabeled_h, unlabeled_w)
        if len(cur_unlabeled_instances) == 0:
            alpha = copied_instances.gt_masks.tensor.sum(0) > 0
            composited_image = (alpha * cur_labeled_image) + (~alpha * cur_unlabeled_image)
            cur_unlabeled_data["image"] = composited_image
            cur_unlabeled_data["instances"] = copied_instances
        else:
            iou_matrix = mask_iou_matrix(copied_masks.tensor, cur_unlabeled_instances.gt_masks.tensor, mode="ioy")
            keep = iou_matrix.max(1)[0] < 0.5
            if keep.sum() == 0:
                new_unlabeled_data.append(cur_unlabeled_data)
                continue
            copied_instances = copied_instances[keep]
            alpha = copied_instances.gt_masks.tensor.sum(0) > 0
            cur_unlabeled_instances.gt_masks.tensor = ~alpha * cur_unlabeled_instances.gt_masks.tensor
            areas_unlabeled = cur_unlabeled_instances.gt_masks.tensor.sum((1, 2))
            composited_image = (alpha * cur_labeled_image) + (~alpha * cur_unlabeled_image)
            merged_instances = Instances.cat([cur_unlabeled_instances[areas_unlabeled > 0], copied_instances])
            merged_instances.gt_boxes = merged_instances.gt_masks.get_bounding_boxes()
            cur_unlabeled_data["image"] = composited_image
            cur_unlabeled_data["instances"] = merged_instances
        new_unlabeled_data.append(cur_unlabeled_data)
    return new_unlabeled_data


def bitmask_instances(image_size, boxes, classes, masks) -> Instances:
    instances = Instances(image_size)
    instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
    instances.gt_masks = BitMasks(torch.as_tensor(masks, dtype=torch.bool))
    return instances


# ----------------------------------------------------------------------------------------------
# Self-training merge


def segm_to_rle(segm, h, w):
    if isinstance(segm, list):
        return cocomask.merge(cocomask.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return cocomask.frPyObjects(segm, h, w)
    return segm


def cocosegm2mask(segm, h, w):
    rle = segm_to_rle(segm, h, w)
    if "counts" in rle and isinstance(rle["counts"], list):
        rle = cocomask.frPyObjects(rle, h, w)
    return cocomask.decode(rle)


def batch_iou(masks1, masks2):
    n1, n2 = masks1.size()[0], masks2.size()[0]
    masks1, masks2 = (masks1 > 0.5).to(torch.bool), (masks2 > 0.5).to(torch.bool)
    masks1_ = masks1[:, None, :, :].expand(-1, n2, -1, -1)
    masks2_ = masks2[None, :, :, :].expand(n1, -1, -1, -1)
    intersection = torch.sum(masks1_ * (masks1_ == masks2_), dim=[-1, -2])
    union = torch.sum(masks1_ + masks2_, dim=[-1, -2])
    return intersection.to(torch.float) / union


def self_training_annotations(predictions, pseudo_ann_dict, threshold):
    """(images, annotations) of the published output file."""
    pred_image_to_anns = {}
    for ann in predictions:
        if ann["score"] >= threshold:
            pred_image_to_anns.setdefault(ann["image_id"], []).append(ann)
    pseudo_image_list = pseudo_ann_dict["images"]
    pseudo_image_to_anns = {}
    for ann in pseudo_ann_dict["annotations"]:
        pseudo_image_to_anns.setdefault(ann["image_id"], []).append(ann)

    merged_anns = []
    for k, anns_pseudo in pseudo_image_to_anns.items():
        masks = []
        for ann in anns_pseudo:
            segm = ann["segmentation"]
            masks.append(torch.from_numpy(cocosegm2mask(segm, segm["size"][0], segm["size"][1])))
        pseudo_masks = torch.stack(masks, dim=0)
        if k not in pred_image_to_anns:
            merged_anns += anns_pseudo
            continue
        anns_pred = pred_image_to_anns[k]
        masks = []
        for ann in anns_pred:
            segm = ann["segmentation"]
            masks.append(torch.from_numpy(cocosegm2mask(segm, segm["size"][0], segm["size"][1])))
        pred_masks = torch.stack(masks, dim=0)
        try:
            ious = batch_iou(pseudo_masks, pred_masks)
            iou_max, _ = ious.max(dim=1)
            selected_index = (iou_max < 0.5).nonzero()
            selected_pseudo = [anns_pseudo[i] for i in selected_index]
            merged_anns += anns_pred + selected_pseudo
        except RuntimeError:
            merged_anns += anns_pseudo
    for key in pred_image_to_anns:  # noqa: PLC0206  (as published)
        if key not in pseudo_image_to_anns:
            merged_anns += pred_image_to_anns[key]

    ann_id = 1
    for ann in merged_anns:
        ann["id"] = ann_id
        ann["area"] = ann["bbox"][-1] * ann["bbox"][-2]
        ann["iscrowd"] = 0
        ann["width"] = ann["segmentation"]["size"][0]
        ann["height"] = ann["segmentation"]["size"][1]
        ann_id += 1
    return pseudo_image_list, merged_anns
