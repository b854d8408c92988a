"""Saliency metrics of the two published protocols: pixel accuracy, IoU and max F-beta.

A saliency map is ``(H, W)`` float in [0, 1] (foreground high), in pixels of the original image;
its ground truth the data set's ``(H, W)`` uint8 grey mask. Every image is reduced once to its
counts (:class:`ImageCounts`: pixels, ground-truth pixels, and predicted and true-positive pixels
at 0.5 and at each of the 255 thresholds ``k / 255``, ``k = 0..254``), and both protocols compute
their values from those counts, so that a run journals integers and a resumed run scores exactly
as an uninterrupted one.

The protocols (each number this toolkit prints carries the protocol's name):

* ``tokencut`` (TokenCut's ``unsupervised_saliency_detection/metric.py``): the ground truth is
  the grey PNG ``> 0.5``, i.e. every non-zero grey level is foreground (the PNG is compared
  unnormalized). Accuracy and IoU of ``map > 0.5`` per image, averaged over the images.
  F-beta with ``beta^2 = 0.3`` at every threshold ``map > t``, precision 1 when nothing is
  predicted and recall 1 when the ground truth is empty, F = 0 where it is 0 / 0; F averaged over
  the images at each threshold, then the maximum over the thresholds.
* ``found`` (FOUND's ``evaluation/saliency.py`` and ``evaluation/metrics/``, inherited from
  SelfMask and used by PEEKABOO): the ground truth is the grey PNG ``== 255``. IoU
  ``tp / (union + 1e-7)``, accuracy of ``map > 0.5``; precision ``tp / (predicted + 1e-7)``,
  recall ``tp / (gt + 1e-7)``, ``F = (1 + b) P R / (b P + R + 1e-7)`` with ``b = 0.3 ** 2`` as
  published (the code squares its ``beta_square = 0.3``: the effective beta^2 is 0.09); the
  maximum over the thresholds per image, then averaged over the images. ``max_fbeta_beta2_0.3``
  gives the same with ``b = 0.3`` beside it.

Thresholds are compared in the published dtypes: ``tokencut`` compares the map in its own dtype
(float64 for TokenCut's maps) with ``numpy.arange(0, 1, 1/255)``, ``found`` in float32 with
``torch.arange(0, 1, 1/255)``; both compare strictly (``>``), so a map at exactly 0.5 is
background. The values are computed in float64 from the counts; the published code divides in
float32, which differs in the seventh digit.

Deliberate difference: under ``tokencut``, an image whose prediction and ground truth are both
empty has IoU 1 (the published code divides 0 by 0, and one such image makes the data set's mean
IoU NaN). FOUND's epsilon gives 0 there, as published.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PROTOCOLS = ("tokencut", "found")

THRESHOLD_COUNT = 255
"""Thresholds ``k / 255``, ``k = 0..254``, of the F-beta curve (both protocols)."""

BETA_SQUARE = 0.3
"""beta^2 of F-beta as both papers state it."""

FOUND_BETA_SQUARE = BETA_SQUARE**2
"""The effective beta^2 of FOUND's published code (``beta_square ** 2``)."""

FOUND_EPSILON = 1e-7
"""SelfMask's epsilon in FOUND's IoU, precision, recall and F-beta."""

BINARY_THRESHOLD = 0.5
"""Accuracy and IoU score ``map > 0.5``."""


def check_protocol(protocol: str) -> None:
    """ValueError for a protocol that is not one of :data:`PROTOCOLS`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown saliency protocol {protocol!r}; use one of {PROTOCOLS}")


def ground_truth_mask(grey: np.ndarray, protocol: str) -> np.ndarray:
    """(H, W) uint8 grey ground truth -> (H, W) bool foreground of the protocol: ``grey > 0.5``
    (any non-zero level) for ``tokencut``, ``grey == 255`` for ``found``."""
    check_protocol(protocol)
    grey = np.asarray(grey)
    return grey > BINARY_THRESHOLD if protocol == "tokencut" else grey == 255


def curve_thresholds(protocol: str, dtype: np.dtype) -> np.ndarray:
    """(255,) thresholds of the F-beta curve, in the dtype the protocol compares them in."""
    check_protocol(protocol)
    if protocol == "found":
        return torch.arange(0, 1, 1 / THRESHOLD_COUNT, dtype=torch.float32).numpy()
    return np.arange(0.0, 1.0, 1.0 / THRESHOLD_COUNT).astype(dtype)


def comparison_values(saliency: np.ndarray, protocol: str) -> np.ndarray:
    """The map in the dtype its thresholds are compared in: float32 for ``found``; for
    ``tokencut`` float32 stays float32 and everything else (bool, uint8, float64) is float64."""
    values = np.asarray(saliency)
    if protocol == "found":
        return values.astype(np.float32, copy=False)
    return values if values.dtype == np.float32 else values.astype(np.float64, copy=False)


@dataclass(frozen=True)
class ImageCounts:
    """Pixel counts of one image's map against its ground truth (one protocol's).

    pixels: H * W; gt_pixels: ground-truth foreground; predicted_half / true_positive_half:
    pixels with ``map > 0.5``, and those in the ground truth; predicted / true_positive: (255,)
    int64, the same at each threshold of :func:`curve_thresholds`.
    """

    pixels: int
    gt_pixels: int
    predicted_half: int
    true_positive_half: int
    predicted: np.ndarray
    true_positive: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """The counts as JSON values (the journal's ``values`` of the image)."""
        return {
            "pixels": self.pixels,
            "gt_pixels": self.gt_pixels,
            "predicted_half": self.predicted_half,
            "true_positive_half": self.true_positive_half,
            "predicted": [int(v) for v in self.predicted],
            "true_positive": [int(v) for v in self.true_positive],
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ImageCounts:
        """The counts written by :meth:`to_json`."""
        return cls(
            pixels=int(values["pixels"]),
            gt_pixels=int(values["gt_pixels"]),
            predicted_half=int(values["predicted_half"]),
            true_positive_half=int(values["true_positive_half"]),
            predicted=np.asarray(values["predicted"], dtype=np.int64),
            true_positive=np.asarray(values["true_positive"], dtype=np.int64),
        )


def count_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the ascending ``sorted_values`` are strictly above each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="right").astype(np.int64)


def image_counts(saliency: np.ndarray, ground_truth: np.ndarray, protocol: str) -> ImageCounts:
    """The counts of one (H, W) map against its (H, W) bool ground truth under ``protocol``.

    Raises ValueError when the shapes differ.
    """
    if np.shape(saliency) != np.shape(ground_truth):
        raise ValueError(f"saliency map {np.shape(saliency)} and ground truth {np.shape(ground_truth)} differ in size")
    values = comparison_values(saliency, protocol).ravel()
    truth = np.asarray(ground_truth, dtype=bool).ravel()
    thresholds = curve_thresholds(protocol, values.dtype)
    half = values > BINARY_THRESHOLD
    return ImageCounts(
        pixels=int(values.size),
        gt_pixels=int(truth.sum()),
        predicted_half=int(half.sum()),
        true_positive_half=int((half & truth).sum()),
        predicted=count_above(np.sort(values), thresholds),
        true_positive=count_above(np.sort(values[truth]), thresholds),
    )


@dataclass(frozen=True)
class ImageScores:
    """One image's values under a protocol: acc, iou of ``map > 0.5``; f_curve (255,) float64
    F-beta at each threshold (the protocol's beta^2); max_fbeta its maximum; f_curve_beta2_03:
    ``found`` only, the curve with beta^2 = 0.3 (None for ``tokencut``, whose beta^2 is 0.3)."""

    acc: float
    iou: float
    f_curve: np.ndarray
    f_curve_beta2_03: np.ndarray | None = None

    @property
    def max_fbeta(self) -> float:
        return float(self.f_curve.max())

    def to_json(self) -> dict[str, float]:
        """``acc``, ``iou``, ``max_fbeta`` (and ``max_fbeta_beta2_0.3`` for ``found``)."""
        values = {"acc": self.acc, "iou": self.iou, "max_fbeta": self.max_fbeta}
        if self.f_curve_beta2_03 is not None:
            values["max_fbeta_beta2_0.3"] = float(self.f_curve_beta2_03.max())
        return values


def accuracy(counts: ImageCounts) -> float:
    """Share of pixels where ``map > 0.5`` agrees with the ground truth."""
    wrong = counts.predicted_half + counts.gt_pixels - 2 * counts.true_positive_half
    return (counts.pixels - wrong) / counts.pixels


def tokencut_scores(counts: ImageCounts) -> ImageScores:
    """The ``tokencut`` protocol's values of one image (see the module docstring)."""
    tp, predicted, gt = counts.true_positive_half, counts.predicted_half, counts.gt_pixels
    union = predicted + gt - tp
    iou = tp / union if union else 1.0
    curve_tp = counts.true_positive.astype(np.float64)
    precision = np.divide(curve_tp, counts.predicted, out=np.ones_like(curve_tp), where=counts.predicted > 0)
    recall = np.full_like(curve_tp, 1.0) if gt == 0 else curve_tp / gt
    return ImageScores(acc=accuracy(counts), iou=iou, f_curve=tokencut_fbeta(precision, recall))


def tokencut_fbeta(precision: np.ndarray, recall: np.ndarray, beta_square: float = BETA_SQUARE) -> np.ndarray:
    """F-beta of TokenCut's ``F_score``: ``(1 + b) P R / (b P + R)``, 0 where that is 0 / 0."""
    numerator = (1 + beta_square) * precision * recall
    denominator = beta_square * precision + recall
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def found_fbeta(precision: np.ndarray, recall: np.ndarray, beta_square: float) -> np.ndarray:
    """F-beta of SelfMask's ``FMeasure``: ``(1 + b) P R / (b P + R + 1e-7)``."""
    return (1 + beta_square) * precision * recall / (beta_square * precision + recall + FOUND_EPSILON)


def found_scores(counts: ImageCounts) -> ImageScores:
    """The ``found`` protocol's values of one image (see the module docstring)."""
    tp, predicted, gt = counts.true_positive_half, counts.predicted_half, counts.gt_pixels
    iou = tp / (predicted + gt - tp + FOUND_EPSILON)
    curve_tp = counts.true_positive.astype(np.float64)
    precision = curve_tp / (counts.predicted + FOUND_EPSILON)
    recall = curve_tp / (gt + FOUND_EPSILON)
    return ImageScores(
        acc=accuracy(counts),
        iou=iou,
        f_curve=found_fbeta(precision, recall, FOUND_BETA_SQUARE),
        f_curve_beta2_03=found_fbeta(precision, recall, BETA_SQUARE),
    )


def image_scores(counts: ImageCounts, protocol: str) -> ImageScores:
    """One image's acc, IoU and F-beta curve under ``protocol``."""
    check_protocol(protocol)
    return tokencut_scores(counts) if protocol == "tokencut" else found_scores(counts)


class SaliencyMeter:
    """Running scores of a data set under one protocol: add images one at a time, read
    :meth:`summary` at any point (the progress bar's running score and the final result)."""

    def __init__(self, protocol: str) -> None:
        check_protocol(protocol)
        self.protocol = protocol
        self.count = 0
        self._acc = 0.0
        self._iou = 0.0
        self._curve = np.zeros(THRESHOLD_COUNT)
        self._max_f = 0.0
        self._max_f_03 = 0.0

    def add(self, counts: ImageCounts) -> ImageScores:
        """Count one image in; returns its own scores."""
        scores = image_scores(counts, self.protocol)
        self.count += 1
        self._acc += scores.acc
        self._iou += scores.iou
        self._curve += scores.f_curve
        self._max_f += scores.max_fbeta
        if scores.f_curve_beta2_03 is not None:
            self._max_f_03 += float(scores.f_curve_beta2_03.max())
        return scores

    def summary(self) -> dict[str, Any]:
        """``protocol``, ``acc``, ``iou``, ``max_fbeta`` as fractions in [0, 1] (and, for
        ``found``, ``max_fbeta_beta2_0.3``), and ``images``; the values are 0 before any image."""
        count = max(self.count, 1)
        result: dict[str, Any] = {"protocol": self.protocol, "acc": self._acc / count, "iou": self._iou / count}
        if self.protocol == "tokencut":
            result["max_fbeta"] = float((self._curve / count).max())
            result["beta_square"] = BETA_SQUARE
        else:
            result["max_fbeta"] = self._max_f / count
            result["beta_square"] = FOUND_BETA_SQUARE
            result["max_fbeta_beta2_0.3"] = self._max_f_03 / count
        result["images"] = self.count
        return result


def evaluate_saliency(counts: Iterable[ImageCounts], protocol: str) -> dict[str, Any]:
    """:meth:`SaliencyMeter.summary` over all the images' counts."""
    meter = SaliencyMeter(protocol)
    for image in counts:
        meter.add(image)
    return meter.summary()


def summary_line(summary: dict[str, Any]) -> str:
    """One line naming the protocol: ``protocol tokencut: acc 0.918, IoU 0.712, max F-beta (beta^2
    0.3) 0.803 over 1000 images``, plus FOUND's beta^2 = 0.3 value beside its published one."""
    line = (
        f"protocol {summary['protocol']}: acc {summary['acc']:.3f}, IoU {summary['iou']:.3f}, "
        f"max F-beta (beta^2 {summary['beta_square']:.2g}) {summary['max_fbeta']:.3f}"
    )
    if "max_fbeta_beta2_0.3" in summary:
        line += f" [with beta^2 0.3: {summary['max_fbeta_beta2_0.3']:.3f}]"
    return f"{line} over {summary['images']} images"
