"""PEEKABOO's published computations, transcribed operation by operation for the tests
(hasibzunair/peekaboo at its main branch).

Inference: ``datasets/uod_datasets.py`` (the transform), ``evaluation/uod.py`` (padding, the
threshold, the box), ``model.py`` (``PeekabooModel.forward`` and ``extract_feats``: the keys of
the last block's ``qkv``, read by a forward hook) and ``misc.get_bbox_from_segmentation_labels``.
Training: the loss of ``train.py``'s loop and the masking of ``datasets/datasets.py``
(``_preprocess_scribble``, the inverted scribble multiplying the normalized image).

The DINO ViT is the model given (the published code builds DINO's own ``vision_transformer``);
``.cuda()`` calls are left out.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

TRANSFORM = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


class PublishedPeekaboo:
    """``PeekabooModel`` around a ViT whose last block's ``attn.qkv`` is hooked, with the decoder
    ``nn.Conv2d(d, 1, (1, 1))`` loaded from a ``{"decoder": state_dict}`` checkpoint."""

    def __init__(self, vit: nn.Module, patch_size: int, checkpoint: dict):
        self.vit_encoder = vit.eval()
        self.vit_patch_size = patch_size
        self.hook_features = {}
        self.num_heads = vit.blocks[-1].attn.num_heads

        def hook_fn_forward_qkv(module, input, output):
            self.hook_features["qkv"] = output

        self.handle = vit.blocks[-1].attn.qkv.register_forward_hook(hook_fn_forward_qkv)
        weight = checkpoint["decoder"]["weight"]
        self.decoder = nn.Conv2d(weight.shape[1], 1, (1, 1))
        self.decoder.load_state_dict(checkpoint["decoder"])
        self.decoder.eval()

    def extract_feats(self, dims):
        nb_im, nh, nb_tokens, _ = dims
        qkv = self.hook_features["qkv"].reshape(nb_im, nb_tokens, 3, nh, -1 // nh).permute(2, 0, 3, 1, 4)
        k = qkv[1]
        return k.transpose(1, 2).float()

    def __call__(self, batch):
        w, h = (
            batch.shape[-2] - batch.shape[-2] % self.vit_patch_size,
            batch.shape[-1] - batch.shape[-1] % self.vit_patch_size,
        )
        batch = batch[:, :, :w, :h]
        w_featmap = batch.shape[-2] // self.vit_patch_size
        h_featmap = batch.shape[-1] // self.vit_patch_size
        with torch.no_grad():
            self.vit_encoder.forward_features(batch)
            tokens = self.hook_features["qkv"].shape[1]
            dims = (batch.shape[0], self.num_heads, tokens, tokens)
            feats = self.extract_feats(dims)
            feats = feats[:, 1:, :, :].reshape(batch.shape[0], w_featmap, h_featmap, -1)
            feats = feats.permute(0, 3, 1, 2)
            return self.decoder(feats)


def get_bbox_from_segmentation_labels(segmenter_predictions, initial_image_size, scales):
    """misc.get_bbox_from_segmentation_labels: the largest component's box; raises ValueError
    (``argmax`` of an empty sequence) when nothing is foreground."""
    objects, _ = scipy.ndimage.label(segmenter_predictions)
    all_foreground_labels = objects.flatten()[objects.flatten() != 0]
    most_frequent_label = np.bincount(all_foreground_labels).argmax()
    mask = np.where(objects == most_frequent_label)
    ymin, ymax = min(mask[0]), max(mask[0]) + 1
    xmin, xmax = min(mask[1]), max(mask[1]) + 1
    if initial_image_size == segmenter_predictions.shape:
        pred = [xmin, ymin, xmax, ymax]
    else:
        r_xmin, r_xmax = scales[1] * xmin, scales[1] * xmax
        r_ymin, r_ymax = scales[0] * ymin, scales[0] * ymax
        pred = [r_xmin, r_ymin, r_xmax, r_ymax]
    if initial_image_size:
        pred[2] = min(pred[2], initial_image_size[1])
        pred[3] = min(pred[3], initial_image_size[0])
    return np.asarray(pred)


def predictions_to_box(outputs, patch_size, init_image_size):
    """evaluation/uod.py after the model: sigmoid > 0.5, then the box."""
    preds = (nn.Sigmoid()(outputs[0].detach()) > 0.5).float().squeeze().cpu().numpy()
    return get_bbox_from_segmentation_labels(
        segmenter_predictions=preds, scales=[patch_size, patch_size], initial_image_size=init_image_size[1:]
    )


def published_uod_box(image: Image.Image, model: PublishedPeekaboo) -> np.ndarray:
    """One image of evaluation/uod.py: transform, zero padding to the patch size, the model, the box."""
    img = TRANSFORM(image.convert("RGB"))
    init_image_size = img.shape
    p = model.vit_patch_size
    size_im = (img.shape[0], int(np.ceil(img.shape[1] / p) * p), int(np.ceil(img.shape[2] / p) * p))
    paded = torch.zeros(size_im)
    paded[:, : img.shape[1], : img.shape[2]] = img
    outputs = model(paded[None, :, :, :])
    return predictions_to_box(outputs, p, init_image_size)


def published_box_from_keys(keys, weight, bias, grid, patch_size, image_size):
    """The same from the keys on: (N, d) keys in raster order through the decoder as the
    (1, d, h, w) map ``forward`` builds; image_size (H, W) unpadded."""
    decoder = nn.Conv2d(keys.shape[1], 1, (1, 1))
    decoder.load_state_dict({"weight": weight, "bias": bias})
    feats = keys.float()[None].reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    with torch.no_grad():
        outputs = decoder(feats)
    return predictions_to_box(outputs, patch_size, (3, *image_size))


def published_scribble(path, img_size):
    """datasets/datasets.py: a scribble file -> (1, S, S) float multiplier of the normalized image
    (0 where hidden), ``_preprocess_scribble`` then the threshold and the inversion."""
    with open(path, "rb") as f:
        scribble = Image.open(f).convert("P")
        transform = T.Compose([T.Resize(img_size, T.InterpolationMode.BICUBIC), T.CenterCrop(img_size), T.ToTensor()])
        scribble = transform(scribble)
        scribble = (scribble > 0).float()
        return torch.max(scribble) - scribble


def published_training_loss(preds, preds_mask, preds_mask_bs, preds_mfp, preds_mask_mfp_bs):
    """train.py's loss: preds / preds_mfp (B, 1, h, w) logits of the image and of the masked
    image; preds_mask (B, 1, h, w) their binarized image prediction; preds_mask_bs and
    preds_mask_mfp_bs (B, h, w) the bilateral-solver targets."""
    criterion = nn.BCEWithLogitsLoss()
    criterion_mse = nn.MSELoss()
    flat_preds = preds.permute(0, 2, 3, 1).reshape(-1, 1)
    alpha = 1.5
    loss = alpha * criterion(flat_preds, preds_mask_bs.reshape(-1).float()[:, None])
    flat_preds_mfp = preds_mfp.permute(0, 2, 3, 1).reshape(-1, 1)
    beta = 1.0
    loss += beta * criterion(flat_preds_mfp, preds_mask_mfp_bs.reshape(-1).float()[:, None])
    gamma = 1.0
    loss += gamma * criterion_mse(
        preds_mask_bs.reshape(-1).float()[:, None], preds_mask_mfp_bs.reshape(-1).float()[:, None]
    )
    self_loss = criterion(flat_preds, preds_mask.reshape(-1).float()[:, None])
    loss += self_loss * 4.0
    return loss
