"""CutLER's MaskCut pseudo-masks as ``maskcut/maskcut.py`` (facebookresearch/CutLER) computes them,
for tests and the benchmark's reference loop to compare with: its loop on the keys (dense
``scipy.linalg.eigh`` on every cut, float64 painting, the corner rule, the drop rule that lets
the loop go on), its CRF (``maskcut/crf.py``) and its post-processing, step by step in its own
numpy / torch / PIL operations, on the CPU, one image at a time.

``published_maskcut_forward`` also returns a trace of each cut (eigenvector, partition, seed,
corner count, whether it was dropped) so that tests can check which edge case a map hits.
"""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
import pydensecrf.utils as crf_utils
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage


def published_iou(mask1, mask2):
    """TokenCut's ``metric.IoU`` on torch tensors."""
    mask1, mask2 = (mask1 > 0.5).to(torch.bool), (mask2 > 0.5).to(torch.bool)
    intersection = torch.sum(mask1 * (mask1 == mask2), dim=[-1, -2]).squeeze()
    union = torch.sum(mask1 + mask2, dim=[-1, -2]).squeeze()
    return (intersection.to(torch.float) / union).mean().item()


def published_affinity(feats, tau, eps=1e-5):
    """``get_affinity_matrix``: feats (d, N) -> (A, D)."""
    feats = F.normalize(feats, p=2, dim=0)
    affinity = (feats.transpose(0, 1) @ feats).cpu().numpy()
    affinity = affinity > tau
    affinity = np.where(affinity.astype(float) == 0, eps, affinity)
    return affinity, np.diag(np.sum(affinity, axis=1))


def published_corners(bipartition, dims):
    """``check_num_fg_corners``."""
    grid = bipartition.reshape(dims)
    return int(grid[0][0]) + int(grid[0][-1]) + int(grid[-1][0]) + int(grid[-1][-1])


def published_paint(painting, feats, mask, ps):
    """``get_masked_affinity_matrix``: the float64 painting zeroes the painted features."""
    dim, num_patch = feats.size()[0], feats.size()[1]
    painting = painting + mask.unsqueeze(0)
    painting[painting > 0] = 1
    painting[painting <= 0] = 0
    feats = feats.clone().view(dim, ps, ps)
    feats = ((1 - painting) * feats).view(dim, num_patch)
    return feats, painting


def published_maskcut_forward(feats, dims, scales, init_image_size, tau=0.15, N=3):
    """``maskcut_forward`` on the CPU: feats (d, N) float32 keys -> (bipartitions, trace).

    bipartitions: N arrays (H, W) float64 0/1 at ``init_image_size``, each less the earlier ones.
    trace: one dict per cut with the eigenvector, the corner count, the seed and ``dropped``.
    """
    bipartitions, trace = [], []
    current_mask = ps = None
    for i in range(N):
        if i == 0:
            painting = torch.from_numpy(np.zeros(dims))
        else:
            feats, painting = published_paint(painting, feats, current_mask, ps)
        affinity, degrees = published_affinity(feats, tau)
        _, eigenvectors = scipy.linalg.eigh(degrees - affinity, degrees, subset_by_index=[1, 2])
        eigenvec = np.copy(eigenvectors[:, 0])
        second_smallest_vec = eigenvectors[:, 0]
        avg = np.sum(second_smallest_vec) / len(second_smallest_vec)
        bipartition = second_smallest_vec > avg
        seed = np.argmax(np.abs(second_smallest_vec))
        corners = published_corners(bipartition, dims)
        reverse = True if corners >= 3 else bipartition[seed] != 1
        if reverse:
            eigenvec = eigenvec * -1
            bipartition = np.logical_not(bipartition)
            seed = np.argmax(eigenvec)
        else:
            seed = np.argmax(second_smallest_vec)
        objects, _ = ndimage.label(bipartition.reshape(dims).astype(float))
        cc = np.where(objects == objects[np.unravel_index(seed, dims)])
        pseudo_mask = np.zeros(dims)
        pseudo_mask[cc[0], cc[1]] = 1
        pseudo_mask = torch.from_numpy(pseudo_mask)
        ps = pseudo_mask.shape[0]
        dropped = False
        if i >= 1:
            ratio = torch.sum(pseudo_mask) / pseudo_mask.size()[0] / pseudo_mask.size()[1]
            if published_iou(current_mask, pseudo_mask) > 0.5 or ratio <= 0.01:
                pseudo_mask = torch.from_numpy(np.zeros(dims))
                dropped = True
        current_mask = pseudo_mask
        masked_out = 0 if len(bipartitions) == 0 else np.sum(bipartitions, axis=0)
        upsampled = F.interpolate(pseudo_mask.unsqueeze(0).unsqueeze(0), size=init_image_size, mode="nearest").squeeze()
        bipartition_masked = upsampled.cpu().numpy() - masked_out
        bipartition_masked[bipartition_masked <= 0] = 0
        bipartitions.append(bipartition_masked)
        trace.append({"eigenvector": second_smallest_vec, "mean": avg, "corners": corners, "seed": int(seed),
                      "reverse": bool(reverse), "dropped": dropped, "component": pseudo_mask.numpy().astype(bool)})
    return bipartitions, trace


def published_densecrf(image, mask):
    """``crf.densecrf``: image (H, W, 3) uint8, mask (h, w) -> MAP (H, W) float32."""
    h, w = mask.shape
    mask = mask.reshape(1, h, w)
    fg = mask.astype(float)
    bg = 1 - fg
    output_logits = torch.from_numpy(np.concatenate((bg, fg), axis=0))
    height, width = image.shape[:2]
    image = np.ascontiguousarray(image)
    output_logits = F.interpolate(output_logits.unsqueeze(0), size=(height, width), mode="bilinear").squeeze()
    output_probs = F.softmax(output_logits, dim=0).cpu().numpy()
    c, h, w = output_probs.shape
    unary = np.ascontiguousarray(crf_utils.unary_from_softmax(output_probs))
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=3, compat=7)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=image, compat=10)
    q = np.array(crf.inference(10)).reshape((c, h, w))
    return np.argmax(q, axis=0).reshape((h, w)).astype(np.float32)


def published_binary_mask(image_new, bipartition, width, height):
    """The ``__main__`` loop's steps for one bipartition, then ``create_annotation_info``'s
    threshold: (height, width) uint8 with the values ``upper`` / ``lower`` of the published mask."""
    pseudo_mask = published_densecrf(np.array(image_new), bipartition)
    pseudo_mask = ndimage.binary_fill_holes(pseudo_mask >= 0.5)
    if published_iou(torch.from_numpy(bipartition), torch.from_numpy(pseudo_mask)) < 0.5:
        pseudo_mask = pseudo_mask * -1
    pseudo_mask[pseudo_mask < 0] = 0
    pseudo_mask = Image.fromarray(np.uint8(pseudo_mask * 255))
    binary_mask = np.asarray(pseudo_mask.resize((width, height))).astype(np.uint8).copy()
    upper, lower = np.max(binary_mask), np.min(binary_mask)
    thresh = upper / 2.0
    binary_mask[binary_mask > thresh] = upper
    binary_mask[binary_mask <= thresh] = lower
    return binary_mask


def published_masks(image_new, bipartitions, original_size):
    """(K, H, W) bool: the published masks, the pixels holding the upper value (every pixel
    when all hold one non-zero value; none when all are zero, a mask the writer skips)."""
    height, width = original_size
    masks = []
    for bipartition in bipartitions:
        binary_mask = published_binary_mask(image_new, bipartition, width, height)
        upper, lower = binary_mask.max(), binary_mask.min()
        masks.append(binary_mask == upper if upper > lower else binary_mask > 0)
    return np.stack(masks)


def published_cutler(image_new, feats, patch, original_size, tau=0.15, N=3):
    """The whole published computation from the keys: image_new the fixed-size PIL image,
    feats (d, N) float32 keys of it, original_size (H, W). Returns ((K, H, W) bool, trace)."""
    side = image_new.size[0]
    dims = [side // patch, side // patch]
    bipartitions, trace = published_maskcut_forward(feats, dims, [patch, patch], [side, side], tau, N)
    return published_masks(image_new, bipartitions, original_size), trace
