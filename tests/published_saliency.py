"""Transcriptions of the published saliency evaluations, to test ``lost.eval.saliency`` against.

``tokencut_metrics``: TokenCut's ``unsupervised_saliency_detection/metric.py`` (``metrics`` with
IoU, accuracy and F_max over 255 bins) on the grey ground truths as ``get_saliency.py`` reads them
(``np.array(Image.open(gt).convert('L'))``, not normalized). ``found_metrics``: FOUND's
``evaluation/saliency.py`` ``eval_batch`` with SelfMask's ``compute_iou``,
``compute_pixel_accuracy`` and ``FMeasure`` (f_max per image, averaged), on ground truths
``== 255`` as FOUND's ``datasets/datasets.py`` makes them. Same operations, same dtypes, same order.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def _tokencut_iou(gt: torch.Tensor, prediction: torch.Tensor) -> float:
    first, second = (gt > 0.5).to(torch.bool), (prediction > 0.5).to(torch.bool)
    intersection = torch.sum(first * (first == second), dim=[-1, -2]).squeeze()
    union = torch.sum(first + second, dim=[-1, -2]).squeeze()
    return (intersection.to(torch.float) / union).mean().item()


def _tokencut_accuracy(gt: torch.Tensor, prediction: torch.Tensor) -> float:
    first, second = (gt > 0.5).to(torch.bool), (prediction > 0.5).to(torch.bool)
    return torch.mean((first == second).to(torch.float)).item()


def _tokencut_precision_recall(gt: torch.Tensor, binary: torch.Tensor) -> tuple[float, float]:
    gt, binary = gt.to(torch.bool), binary.to(torch.bool)
    true_positive = torch.sum(gt * (gt == binary), dim=[-1, -2]).squeeze()
    predicted = torch.sum(binary, dim=[-1, -2]).to(torch.float)
    actual = torch.sum(gt, dim=[-1, -2]).to(torch.float)
    precision = true_positive / predicted
    precision[predicted == 0.0] = 1.0
    recall = true_positive / actual
    recall[actual == 0.0] = 1.0
    return precision.item(), recall.item()


def tokencut_metrics(predictions: list[np.ndarray], grey_gts: list[np.ndarray]) -> dict[str, float]:
    """TokenCut's ``metrics(pred, gt)``: IoU and accuracy averaged over images, F_max of the
    per-threshold mean F (beta^2 = 0.3); predictions as numpy maps, ground truths uint8 grey."""
    iou = accuracy = 0.0
    precisions, recalls = [], []
    for prediction_array, gt_array in zip(predictions, grey_gts, strict=True):
        prediction, gt = torch.from_numpy(prediction_array), torch.from_numpy(gt_array)
        iou += _tokencut_iou(gt, prediction)
        accuracy += _tokencut_accuracy(gt, prediction)
        pairs = [_tokencut_precision_recall(gt, prediction > split) for split in np.arange(0.0, 1.0, 1.0 / 255)]
        precisions.append([pair[0] for pair in pairs])
        recalls.append([pair[1] for pair in pairs])
    p, r = torch.tensor(precisions), torch.tensor(recalls)
    f_scores = ((1 + 0.3) * p * r) / (0.3 * p + r)
    f_scores[torch.isnan(f_scores)] = 0.0
    count = len(grey_gts)
    return {"IoU": iou / count, "accuracy": accuracy / count, "F_max": f_scores.mean(dim=0).max().item()}


def _selfmask_f_max(pred: torch.Tensor, gt: torch.Tensor, beta_square: float) -> float:
    bins = 255
    preds = pred.unsqueeze(dim=0).repeat(bins, 1, 1)
    gts = gt.unsqueeze(dim=0).repeat(bins, 1, 1)
    thresholds = torch.arange(0, 1, 1 / bins).view(bins, 1, 1)
    binary = preds > thresholds
    tp = torch.logical_and(binary, gts).sum(dim=(-1, -2))
    precision = tp / (binary.sum(dim=(-1, -2)) + 1e-7)
    recall = tp / (gts.sum(dim=(-1, -2)) + 1e-7)
    f = ((1 + (beta_square**2)) * precision * recall) / ((beta_square**2) * precision + recall + 1e-7)
    return float(torch.max(f))


def found_metrics(predictions: list[np.ndarray], grey_gts: list[np.ndarray], beta_square: float = 0.3) -> dict[str, float]:
    """FOUND's ``eval_batch`` over the images: ``iou``, ``pixel_acc`` and ``f_max`` averages
    (``beta_square`` is squared inside, as published); predictions float32 maps."""
    iou = accuracy = f_max = 0.0
    for prediction_array, gt_array in zip(predictions, grey_gts, strict=True):
        pred = torch.from_numpy(np.asarray(prediction_array, dtype=np.float32))
        gt = torch.tensor(gt_array == 255).float()
        binary = (pred > 0.5).float()
        thresholded = binary > 0.5
        iou += float(torch.logical_and(thresholded, gt).sum() / (torch.logical_or(thresholded, gt).sum() + 1e-7))
        accuracy += float((thresholded == gt).to(torch.float32).mean())
        f_max += _selfmask_f_max(pred, gt, beta_square)
    count = len(grey_gts)
    return {"iou": iou / count, "pixel_acc": accuracy / count, "f_max": f_max / count}


def found_single_component(binary: np.ndarray) -> np.ndarray:
    """FOUND's ``evaluate_saliency`` single mode: label the binary map, find the label set as
    background (the one overlapping most with the map's zeros), and keep the largest other one."""
    labeled, count = ndimage.label(binary)
    if count == 0:
        return np.asarray(binary, dtype=bool)
    sizes = [np.sum(labeled == i) for i in range(count + 1)]
    order = np.argsort(sizes)
    components = torch.stack([torch.Tensor(labeled == i) for i in order])
    zeros = (~torch.from_numpy(np.asarray(binary, dtype=bool))).float()
    background = int(((zeros[None] + components) > 1).sum(-1).sum(-1).argmax())
    order = np.delete(order, background)
    return labeled == order[-1]


def solver_region(filled: np.ndarray, get_all_cc: bool) -> np.ndarray:
    """The region rule of FOUND's ``bilateral_solver_output`` on the filled ``output > 0.5``."""
    labeled, count = ndimage.label(filled)
    sizes = [np.sum(labeled == i) for i in range(count + 1)]
    order = np.argsort(sizes)
    if get_all_cc:
        return (labeled[None] == order[::-1][1:, None, None]).astype(int).sum(0).astype(bool)
    try:
        return labeled == order[-2]
    except IndexError:
        return np.ones(filled.shape, dtype=bool)


def tokencut_component_map(bipartition: np.ndarray, seed: int, dims: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """TokenCut's saliency ``ncut``: the seed's component of the (h, w) bipartition, then
    ``F.interpolate(mode='nearest')`` to the (H, W) image, float64."""
    objects, _ = ndimage.label(bipartition)
    label = objects[np.unravel_index(seed, dims)]
    mask = np.zeros(dims)
    rows, cols = np.where(objects == label)
    mask[rows, cols] = 1
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None], size=image_size, mode="nearest")
    return upsampled.squeeze().numpy()
