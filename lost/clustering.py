"""Pseudo-classes for LOST boxes: CLS features of the box crops, whitening, k-means.

Data flow: image + box → crop to the box → shorter side resized to 256 (bicubic) → ImageNet
normalization → CLS token of a ViT after its final norm ``(B, d)`` (DINO, DINOv2 ± registers, DINOv3
alike; timm's default pooling of DINOv3 would average the patches) → L2-normalized → whitened over the whole
set → L2-normalized → k-means → one pseudo-label per image.

Whitening: ``"std"`` (default) divides each dimension by its standard deviation over the set,
what ``scipy.cluster.vq.whiten`` does and what the paper's clustering used; ``"pca"`` is PCA
whitening (decorrelated components of unit variance).

Batching: crops of one batch must share a size. A ViT's patch embedding (a stride-p convolution)
ignores the pixels past the last full patch, so each resized crop is cut at its bottom/right to a
multiple of the model's own patch size (14 for DINOv2), which leaves its features unchanged, and
crops are batched by patch grid, as many as the attention maps of the model's heads and tokens
(patches, CLS, registers) allow in the memory budget. A crop whose long side would exceed ``MAX_LONG_SIDE`` pixels (boxes more than 16 times
longer than wide) is scaled so its long side is that limit instead.

Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image, x2/y2 exclusive. Predictions of a
multi-object method give several boxes per image: every box is a crop of its own and gets its own
pseudo-label.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.cluster import KMeans
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lost.backbones import FeatureExtractor
from lost.data import images
from lost.engine.discovery import DEFAULT_MEMORY_BUDGET, SizeBucketBatchSampler, attention_images_per_pass
from lost.errors import LostError
from lost.io import safe_files

CROP_SHORT_SIDE = 256
MAX_LONG_SIDE = 16 * CROP_SHORT_SIDE
WHITENINGS = ("std", "pca")
KMEANS_RESTARTS = 10


# ----------------------------------------------------------------------------------------------
# Crops


def clip_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """`box` [x1, y1, x2, y2] rounded to pixels and clipped to a width x height image, at least
    one pixel wide and high."""
    x1, y1, x2, y2 = (round(float(v)) for v in np.asarray(box).reshape(4))
    x1, y1 = min(max(x1, 0), width - 1), min(max(y1, 0), height - 1)
    x2, y2 = min(max(x2, x1 + 1), width), min(max(y2, y1 + 1), height)
    return x1, y1, x2, y2


def resized_crop_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of a height x width crop once its shorter side is CROP_SHORT_SIDE, the longer one
    scaled alike and truncated (torchvision's ``Resize(256)``), capped at MAX_LONG_SIDE."""
    short, long = sorted((height, width))
    new_long = int(CROP_SHORT_SIDE * long / short)
    new_short = CROP_SHORT_SIDE
    if new_long > MAX_LONG_SIDE:
        new_short, new_long = max(1, int(MAX_LONG_SIDE * short / long)), MAX_LONG_SIDE
    return (new_short, new_long) if height <= width else (new_long, new_short)


def crop_grid(box: np.ndarray, image_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Patch grid (rows, cols) of the resized crop of `box` in an image of (width, height)."""
    x1, y1, x2, y2 = clip_box(box, *image_size)
    height, width = resized_crop_size(y2 - y1, x2 - x1)
    return height // patch_size, width // patch_size


def crop_tensor(image: Image.Image, box: np.ndarray, patch_size: int) -> torch.Tensor:
    """The normalized crop of `box` in `image` (RGB): (3, rows * p, cols * p) float32, resized
    with bicubic interpolation and cut to whole patches (see the module docstring)."""
    x1, y1, x2, y2 = clip_box(box, image.width, image.height)
    height, width = resized_crop_size(y2 - y1, x2 - x1)
    crop = image.crop((x1, y1, x2, y2)).resize((width, height), Image.BICUBIC)
    tensor = images.image_to_tensor(crop)
    return tensor[:, : height // patch_size * patch_size, : width // patch_size * patch_size]


class BoxCropDataset(Dataset):
    """Crops for a DataLoader: item i is ``(crop (3, h, w), i, None)``, or ``(None, i, reason)``
    when the image cannot be read (so that a worker process survives)."""

    def __init__(self, paths: Sequence[Path], boxes: Sequence[np.ndarray], patch_size: int) -> None:
        self.paths = paths
        self.boxes = boxes
        self.patch_size = patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            image = images.load_rgb(self.paths[i])
        except LostError as exc:
            return None, i, str(exc)
        return crop_tensor(image, self.boxes[i], self.patch_size), i, None


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it cannot be read."""
    try:
        return images.read_image_size(path)
    except LostError:  # BoxCropDataset reports why
        return None


def _collate(samples: list) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    crops = [(crop, i) for crop, i, _ in samples if crop is not None]
    failures = [(i, reason) for crop, i, reason in samples if crop is None]
    stacked = torch.stack([crop for crop, _ in crops]) if crops else None
    return stacked, [i for _, i in crops], failures


def cls_embedding(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """The CLS token after the final norm of a timm-built ViT: crops (B, 3, H, W) -> (B, d)."""
    return model.forward_features(crops)[:, 0]


@torch.inference_mode()
def crop_features(
    extractor: FeatureExtractor,
    paths: Sequence[Path],
    boxes: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
) -> np.ndarray:
    """L2-normalized CLS embeddings of the box crops: (n, d) float32, row i for paths[i], boxes[i].

    extractor: of a ViT on `device`; its patch size cuts the crops, its heads and prefix tokens
    size the batches. Raises LostError listing the images that cannot be read.
    """
    device = torch.device(device)
    patch_size = extractor.patch_size
    sizes = [_image_size(path) for path in paths]
    grids = [None if size is None else crop_grid(box, size, patch_size) for box, size in zip(boxes, sizes, strict=True)]
    heads, prefix_tokens = extractor.num_heads, extractor.backbone.prefix_tokens
    sampler = SizeBucketBatchSampler(
        grids,
        batch_size,
        lambda grid: attention_images_per_pass(
            (grid[0] * patch_size, grid[1] * patch_size), patch_size, heads, DEFAULT_MEMORY_BUDGET, prefix_tokens
        ),
    )
    loader = DataLoader(
        BoxCropDataset(paths, boxes, patch_size),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    feats: np.ndarray | None = None
    failures: list[tuple[int, str]] = []
    for crops, indices, failed in tqdm(loader, desc="crop features", unit="batch"):
        failures.extend(failed)
        if crops is None:
            continue
        embedding = F.normalize(cls_embedding(extractor.model, crops.to(device, non_blocking=True)).float(), dim=1)
        if feats is None:
            feats = np.zeros((len(paths), embedding.shape[1]), dtype=np.float32)
        feats[indices] = embedding.cpu().numpy()
    if failures:
        listed = "; ".join(reason for _, reason in failures[:3])
        raise LostError(f"{len(failures)} image(s) cannot be read: {listed}")
    return np.zeros((0, 0), dtype=np.float32) if feats is None else feats


# ----------------------------------------------------------------------------------------------
# Clustering


def l2_normalize(feats: np.ndarray) -> np.ndarray:
    """Rows of `feats: (n, d)` scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.where(norms > 0, norms, 1.0)


def whiten(feats: np.ndarray, method: str = "std") -> np.ndarray:
    """Whitened `feats: (n, d)` over the set: (n, d) for "std", (n, r) for "pca" (r = rank).

    "std": each dimension divided by its standard deviation (dimensions of zero variance are left
    as they are), like ``scipy.cluster.vq.whiten``. "pca": centered, projected on the principal
    axes of non-zero variance and scaled to unit variance along each.
    """
    feats = np.asarray(feats, dtype=np.float64)
    if method == "std":
        std = feats.std(axis=0)
        return feats / np.where(std > 0, std, 1.0)
    if method == "pca":
        centered = feats - feats.mean(axis=0)
        u, s, _ = np.linalg.svd(centered, full_matrices=False)
        keep = s > s[0] * 1e-6 if s.size and s[0] > 0 else np.zeros_like(s, dtype=bool)
        return u[:, keep] * np.sqrt(len(feats))
    raise LostError(f"--whitening {method}: unknown; choose one of {', '.join(WHITENINGS)}")


def kmeans(feats: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """Cluster index (0..K-1) of each row of `feats: (n, d)`: k-means (k-means++ initialization,
    KMEANS_RESTARTS restarts, best inertia kept); the same seed gives the same clusters."""
    if not 1 <= num_clusters <= len(feats):
        raise LostError(f"--nb_clusters {num_clusters}: needs between 1 and the {len(feats)} boxes to cluster")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # "fewer distinct points than clusters"
        model = KMeans(n_clusters=num_clusters, n_init=KMEANS_RESTARTS, random_state=seed)
        return model.fit_predict(feats).astype(np.int64)


def cluster_features(feats: np.ndarray, num_clusters: int, seed: int, whitening: str = "std") -> np.ndarray:
    """Pseudo-labels (n,) of L2-normalized crop features (n, d): whiten, L2-normalize, k-means."""
    return kmeans(l2_normalize(whiten(feats, whitening)), num_clusters, seed)


# ----------------------------------------------------------------------------------------------
# Files


def clustered_file(pred_file: Path, num_clusters: int, seed: int) -> Path:
    """``<pred_file stem>_clustered_<K>clu.pkl`` beside the predictions (``_seed-<s>`` appended
    before ``.pkl`` for a seed other than 123, as in the paper's code)."""
    pred_file = Path(pred_file)
    suffix = "" if seed == 123 else f"_seed-{seed}"
    return pred_file.with_name(f"{pred_file.stem}_clustered_{num_clusters}clu{suffix}.pkl")


def features_cache_file(pred_file: Path, arch: str, patch_size: int) -> Path:
    """``<pred_file stem>_cropped_feats_<arch><patch>.npz`` beside the predictions."""
    pred_file = Path(pred_file)
    return pred_file.with_name(f"{pred_file.stem}_cropped_feats_{arch}{patch_size}.npz")


def save_features(path: Path, names: Sequence[str], boxes: np.ndarray, feats: np.ndarray, model_id: str) -> None:
    """Cache crop features: names (n,), boxes (n, 4), feats (n, d) and the model they come from."""
    buffer = io.BytesIO()
    np.savez(buffer, names=np.array(names, dtype=str), boxes=boxes, feats=feats, model=np.array(model_id))
    safe_files.atomic_write(path, buffer.getvalue())


def load_features(path: Path, names: Sequence[str], boxes: np.ndarray, model_id: str) -> np.ndarray | None:
    """Cached features (n, d) when `path` holds those of exactly these names, boxes and model,
    else None (no cache, or a stale one to recompute)."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            same = (
                str(cache["model"]) == model_id
                and cache["names"].tolist() == list(names)
                and np.array_equal(cache["boxes"], boxes)
            )
            return cache["feats"] if same else None
    except (OSError, KeyError, ValueError):
        return None


@dataclass(frozen=True)
class PseudoLabel:
    """A clustered box: its pseudo-class and the box [x1, y1, x2, y2]."""

    label: int
    box: np.ndarray


def write_pseudo_labels(
    path: Path, names: Sequence[str], labels: np.ndarray, boxes: Sequence[np.ndarray], grouped: bool = False
) -> None:
    """Pickle the pseudo-labels of clustered boxes, row i being box i of image names[i].

    One box per image (the paper's format): ``{image name: {"pseudo_label": int, "predicted_bb":
    box (4,)}}``. With `grouped` (boxes of a multi-object method; rows of one image adjacent, best
    first): ``{image name: {"pseudo_label": (K,) int64, "predicted_bb": (K, 4)}}``. Numpy arrays
    and builtins only, readable by :func:`read_pseudo_labels`.
    """
    if grouped:
        rows: dict[str, list[tuple[int, np.ndarray]]] = {}
        for name, label, box in zip(names, labels, boxes, strict=True):
            rows.setdefault(str(name), []).append((int(label), np.asarray(box)))
        content = {
            name: {
                "pseudo_label": np.array([label for label, _ in entries], dtype=np.int64),
                "predicted_bb": np.stack([box for _, box in entries]),
            }
            for name, entries in rows.items()
        }
    else:
        content = {
            str(name): {"pseudo_label": int(label), "predicted_bb": np.asarray(box)}
            for name, label, box in zip(names, labels, boxes, strict=True)
        }
    safe_files.atomic_write(path, pickle.dumps(content, protocol=4))


def read_pseudo_labels(path: Path) -> dict[str, tuple[PseudoLabel, ...]]:
    """The pseudo-boxes of each image in a ``*_clustered_<K>clu.pkl`` file, in either format of
    :func:`write_pseudo_labels`, read with the restricted unpickler of ``safe_files`` (numpy arrays
    and builtins only). Raises LostError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{path}: clustered pseudo-boxes not found; write them with cluster_for_OD.py")
    raw = safe_files.restricted_load(path)
    fix = "write it again with cluster_for_OD.py"
    if not isinstance(raw, dict):
        raise LostError(f"{path}: expected image name -> {{pseudo_label, predicted_bb}}; {fix}")
    pseudo = {}
    for name, entry in raw.items():
        try:
            boxes = np.asarray(entry["predicted_bb"], dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(entry["pseudo_label"]).reshape(-1)
            if len(labels) != len(boxes) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError("one integer pseudo_label per box")
        except (KeyError, TypeError, ValueError):
            raise LostError(
                f"{path}: entry {name!r} lacks pseudo_label / predicted_bb [x1, y1, x2, y2]; {fix}"
            ) from None
        pseudo[str(name)] = tuple(PseudoLabel(int(label), box) for label, box in zip(labels, boxes, strict=True))
    return pseudo
