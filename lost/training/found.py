"""Training FOUND's head on a folder of images (the paper: DUTS-TR, 10,553 images), and
PEEKABOO's, which is FOUND's recipe plus masked images (:mod:`lost.training.masking`); the
commands are ``python train_found.py --data_dir datasets/DUTS/DUTS-TR-Image --output_dir
outputs/found`` and the same with ``--recipe peekaboo``.

The DINO backbone (ViT-S/8, 300 epochs, by default) stays frozen; only the 1x1 convolution on
its last-block keys learns, on the published schedule (valeoai/FOUND,
``configs/found_DUTS-TR.yaml``; hasibzunair/peekaboo, ``configs/peekaboo_DUTS-TR.yaml``, the
same): 500 iterations of 50 images, AdamW at 5e-2 multiplied by 0.95 every 50 iterations. The
loss is 1.5 x BCE(logits, the head's own mask refined by the bilateral solver) plus, for the
first ``stop_bkg_loss`` iterations (FOUND: 100; PEEKABOO: none), BCE(logits, found_bkg's
object mask refined by the bilateral solver), and afterwards 4 x BCE(logits, the head's own
mask); PEEKABOO adds its masked-image terms (``settings.masking``). Each image is resized to a
shorter side of 224, rescaled by a random factor in [0.1, 3], resized to 224 x 224 and
Gaussian-blurred half of the time (the published ``random_scale`` strategy: it does not crop).

Writes ``<output_dir>/decoder_weights.pt`` in the released format (for ``--found_weights`` or
``--peekaboo_weights``) and ``<output_dir>/last_checkpoint.pt`` after every iteration; a killed
run started again with the same settings continues from it and ends with the same head.

Differences from the published training scripts, on purpose: it runs exactly ``--max_iter``
iterations (the published loops also step at iteration 500, 501 in all, and stop after 3
epochs on a small folder); images (and PEEKABOO's masks) are drawn from a per-iteration seed,
so resuming repeats the same batches; the bilateral solver reads the uint8 image, not the
normalized tensor converted back.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lost.backbones import FeatureExtractor, get_model
from lost.data.images import IMAGE_EXTENSIONS, image_to_tensor, load_rgb
from lost.errors import LostError
from lost.io.safe_files import atomic_write
from lost.methods.found import (
    FOUND_HEAD,
    HeadWeights,
    coarse_object_masks,
    foreground_masks,
    head_scores,
    new_found_head,
    refined_masks,
    save_found_head,
)
from lost.methods.peekaboo import PEEKABOO_HEAD
from lost.training.masking import (
    MaskingSettings,
    check_masking,
    hidden_pixels,
    masked_image_loss,
    masked_views,
    scribble_files,
)

CHECKPOINT_FILE = "last_checkpoint.pt"


HEAD_FILE = "decoder_weights.pt"


BLUR_SIGMA_RANGE = (0.1, 2.0)


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that changes the trained head; a resumed run must match it exactly."""

    data_dir: str
    arch: str = "vit_small"
    patch_size: int = 8
    pretrained_weights: str | None = None
    checkpoint_key: str = "teacher"
    max_iter: int = 500
    batch_size: int = 50
    lr: float = 5e-2
    step_lr_size: int = 50
    step_lr_gamma: float = 0.95
    w_bs_loss: float = 1.5
    w_self_loss: float = 4.0
    stop_bkg_loss: int = 100
    crop_size: int = 224
    scale_range: tuple[float, float] = (0.1, 3.0)
    blur_probability: float = 0.5
    bkg_threshold: float = 0.3
    seed: int = 0
    masking: MaskingSettings | None = None


def trained_head(settings: TrainingSettings) -> HeadWeights:
    """Whose recipe the settings follow: PEEKABOO's with masked images, FOUND's without."""
    return FOUND_HEAD if settings.masking is None else PEEKABOO_HEAD


def check_settings(settings: TrainingSettings) -> None:
    for flag, value in (
        ("--max_iter", settings.max_iter),
        ("--batch_size", settings.batch_size),
        ("--step_lr_size", settings.step_lr_size),
    ):
        if value < 1:
            raise LostError(f"{flag} {value}: must be at least 1")
    if settings.crop_size < settings.patch_size or settings.crop_size % settings.patch_size:
        raise LostError(
            f"--crop_size {settings.crop_size}: must be a multiple of --patch_size {settings.patch_size}; "
            f"use {max(1, settings.crop_size // settings.patch_size) * settings.patch_size}"
        )
    if settings.masking is not None:
        check_masking(settings.masking)


def training_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        raise LostError(f"--data_dir {folder}: no such folder; pass the folder of training images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LostError(
            f"--data_dir {folder}: holds no image ({', '.join(IMAGE_EXTENSIONS)}); pass the folder of training images"
        )
    return files


def shorter_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side set to `side`, the other truncated as published."""
    if width > height:
        return int(width / height * side), side
    return side, int(height / width * side)


def rescaled_square(image: Image.Image, side: int, scale: float) -> Image.Image:
    """The published ``random_scale`` view: shorter side to `side`, scaled by `scale`, then
    squeezed to side x side (bilinear each time; aspect ratio not kept)."""
    image = image.resize(shorter_side_size(image.width, image.height, side), Image.BILINEAR)
    scaled = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(scaled, Image.BILINEAR).resize((side, side), Image.BILINEAR)


def blur_kernel_size(side: int) -> int:
    """The published Gaussian kernel: about 10% of the side, odd (23 for 224)."""
    return int(0.1 * side // 2 * 2 + 1)


def gaussian_blurred(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) uint8 blurred by OpenCV's separable Gaussian kernel of
    :func:`blur_kernel_size` taps and `sigma`, borders mirrored without repeating the edge."""
    size = blur_kernel_size(min(pixels.shape[:2]))
    offsets = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    blurred = pixels.astype(np.float64)
    for axis in (0, 1):
        blurred = scipy.ndimage.correlate1d(blurred, kernel, axis=axis, mode="mirror")
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def augmented_pixels(image: Image.Image, settings: TrainingSettings, rng: np.random.Generator) -> np.ndarray:
    """One training view of an RGB image: (crop_size, crop_size, 3) uint8."""
    square = np.asarray(rescaled_square(image, settings.crop_size, rng.uniform(*settings.scale_range)))
    if rng.random() < settings.blur_probability:
        return gaussian_blurred(square, rng.uniform(*BLUR_SIGMA_RANGE))
    return square.copy()


@dataclass(frozen=True)
class TrainingBatch:
    """images: (B, 3, S, S) normalized; pixels: (B, S, S, 3) uint8; hidden: (B, S, S) bool, the
    pixels PEEKABOO's masked views hide (None without masking); errors: unreadable files."""

    images: Tensor | None
    pixels: Tensor | None
    errors: list[str]
    hidden: Tensor | None = None


View = tuple[Tensor | None, Tensor | None, Tensor | None, str | None]


class AugmentedImages(Dataset):
    """Item ``(index, sample_seed)``: image `index` augmented with its own random generator,
    as ``(image (3, S, S), pixels (S, S, 3) uint8, hidden (S, S) bool or None, error)``; the
    hidden pixels are drawn after the augmentation, from the same generator, when masking."""

    def __init__(self, paths: list[Path], settings: TrainingSettings, scribbles: list[Path] | None = None):
        self.paths = paths
        self.settings = settings
        self.scribbles = scribbles or []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> View:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        try:
            image = load_rgb(self.paths[index])
            pixels = augmented_pixels(image, self.settings, rng)
            hidden = None
            if self.settings.masking is not None:
                hidden = torch.from_numpy(hidden_pixels(len(pixels), rng, self.settings.masking, self.scribbles))
        except LostError as exc:
            return None, None, None, str(exc)
        return image_to_tensor(Image.fromarray(pixels)), torch.from_numpy(pixels), hidden, None


def collate_views(samples: list[View]) -> TrainingBatch:
    errors = [error for *_, error in samples if error is not None]
    if errors:
        return TrainingBatch(None, None, errors)
    images, pixels, hidden = (torch.stack(part) if part[0] is not None else None for part in list(zip(*samples))[:3])
    return TrainingBatch(images, pixels, [], hidden)


def sample_seed(seed: int, iteration: int, slot: int) -> int:
    """The seed of the augmentation of batch position `slot` at `iteration`."""
    return int(np.random.SeedSequence([seed, iteration, slot]).generate_state(1)[0])


def iteration_batch(iteration: int, num_images: int, settings: TrainingSettings) -> list[tuple[int, int]]:
    """The ``(image index, sample seed)`` pairs of an iteration: epochs are seeded shuffles cut
    into batches of ``batch_size`` (the last one of an epoch may be smaller, as published)."""
    per_epoch = math.ceil(num_images / settings.batch_size)
    epoch, position = divmod(iteration, per_epoch)
    order = np.random.default_rng([settings.seed, epoch]).permutation(num_images)
    chosen = order[position * settings.batch_size : (position + 1) * settings.batch_size]
    return [(int(index), sample_seed(settings.seed, iteration, slot)) for slot, index in enumerate(chosen)]


def make_loader(
    paths: list[Path], settings: TrainingSettings, start: int, num_workers: int, scribbles: list[Path] | None = None
) -> DataLoader:
    """The batches of iterations ``start .. max_iter - 1``, decoded in `num_workers` processes
    (masked with `scribbles`, or procedural masks, when the settings mask)."""
    batches = [iteration_batch(iteration, len(paths), settings) for iteration in range(start, settings.max_iter)]
    return DataLoader(
        AugmentedImages(paths, settings, scribbles),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate_views,
    )


def found_loss(
    logits: Tensor, own: Tensor, own_refined: Tensor, objects_refined: Tensor | None, settings: TrainingSettings
) -> Tensor:
    """The published loss on (B, N) logits and (B, N) bool targets (binary cross-entropy with
    logits, averaged over all patches): ``w_bs * BCE(own_refined)`` plus ``BCE(objects_refined)``
    while found_bkg's masks are used, ``w_self * BCE(own)`` afterwards."""
    loss = settings.w_bs_loss * F.binary_cross_entropy_with_logits(logits, own_refined.float())
    if objects_refined is not None:
        return loss + F.binary_cross_entropy_with_logits(logits, objects_refined.float())
    return loss + settings.w_self_loss * F.binary_cross_entropy_with_logits(logits, own.float())


def train_step(
    extractor: FeatureExtractor,
    head: nn.Conv2d,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: TrainingBatch,
    iteration: int,
    settings: TrainingSettings,
) -> float:
    """One optimizer step on one batch; returns the loss. The targets (the head's foreground,
    found_bkg's objects while they are used, the masked views' foreground when masking) are
    refined together, one bilateral solver per (unmasked) image."""
    device = head.weight.device
    images = batch.images.to(device, non_blocking=True)
    features = extractor.extract(images, frozenset({"feats", "cls_attention"}))
    keys, cls_attention, grid = features.feats, features.cls_attention.float(), features.grid
    logits = head_scores(keys, head, grid)
    own = foreground_masks(logits.detach())
    size = len(own)
    families = [own.view(size, *grid)]
    with_background = iteration < settings.stop_bkg_loss
    if with_background:
        objects, _, _ = coarse_object_masks(keys, cls_attention, settings.bkg_threshold)
        families.append(objects.view(size, *grid))
    if settings.masking is not None:
        masked = extractor.extract(masked_views(images, batch.hidden.to(device)), frozenset({"feats"}))
        masked_logits = head_scores(masked.feats, head, grid)
        families.append(foreground_masks(masked_logits.detach()).view(size, *grid))
    refined = [mask.view(size, -1) for mask in refined_masks(batch.pixels.numpy(), families)]
    loss = found_loss(logits, own, refined[0], refined[1] if with_background else None, settings)
    if settings.masking is not None:
        loss = loss + masked_image_loss(masked_logits, refined[-1], refined[0], settings.masking)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def run_identity(settings: TrainingSettings, num_images: int) -> dict:
    """What a checkpoint must share with the run that resumes it."""
    identity = {**asdict(settings), "scale_range": list(settings.scale_range), "images": num_images}
    if settings.masking is not None:
        identity["masking"] = {**identity["masking"], "coverage": list(settings.masking.coverage)}
    return identity


def save_checkpoint(
    path: Path,
    head: nn.Conv2d,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    iteration: int,
    identity: dict,
) -> None:
    """Atomically write the state after `iteration` finished iterations."""
    buffer = io.BytesIO()
    state = {
        "decoder": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": iteration,
        "settings": identity,
    }
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def restore(
    path: Path,
    identity: dict,
    head: nn.Conv2d,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Load the checkpoint at `path` into head/optimizer/scheduler; returns the iterations done
    (0 when there is none). A checkpoint of other settings is a LostError."""
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["settings"]
    except Exception as exc:  # a damaged or foreign file
        raise LostError(
            f"{path}: unreadable training checkpoint ({exc.__class__.__name__}); pass --overwrite to start over"
        ) from exc
    changed = sorted(key for key in identity.keys() | saved.keys() if identity.get(key) != saved.get(key))
    if changed:
        raise LostError(
            f"{path}: a run with other settings ({', '.join(changed)}) is in this folder; "
            "pass another --output_dir, the same settings to resume it, or --overwrite to start over"
        )
    head.load_state_dict(state["decoder"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["iteration"])


def load_backbone(settings: TrainingSettings, device: str) -> FeatureExtractor:
    """The frozen backbone on `device`, reading the last block's keys and CLS attention."""
    model = get_model(
        settings.arch,
        settings.patch_size,
        device=device,
        pretrained_weights=settings.pretrained_weights,
        checkpoint_key=settings.checkpoint_key,
    )
    return FeatureExtractor(model, settings.arch, settings.patch_size, "k")


def train(
    settings: TrainingSettings, output_dir: Path, device: str, num_workers: int | None = None, overwrite: bool = False
) -> Path:
    """Train (or resume training) the head on `device` with `num_workers` decoding processes
    (None: 1 beside a CPU run, up to 8 for a GPU); returns the path of the saved head."""
    paths = training_images(Path(settings.data_dir))
    masks = settings.masking
    scribbles = scribble_files(Path(masks.scribbles)) if masks is not None and masks.scribbles else None
    extractor = load_backbone(settings, device)
    device = next(extractor.model.parameters()).device
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 1
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = output_dir / CHECKPOINT_FILE
    if overwrite:
        checkpoint.unlink(missing_ok=True)
    torch.manual_seed(settings.seed)
    head = new_found_head(extractor.model.embed_dim).to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=settings.step_lr_size, gamma=settings.step_lr_gamma
    )
    identity = run_identity(settings, len(paths))
    start = restore(checkpoint, identity, head, optimizer, scheduler)
    release = trained_head(settings)
    print(
        f"Training {release.title}'s head on {len(paths)} images of {settings.data_dir} "
        f"(device: {device}, from iteration {start})"
    )
    loader = make_loader(paths, settings, start, num_workers, scribbles)
    with tqdm(total=settings.max_iter, initial=start, unit="it") as bar:
        for iteration, batch in enumerate(loader, start):
            if batch.errors:
                raise LostError(batch.errors[0])
            loss = train_step(extractor, head, optimizer, scheduler, batch, iteration, settings)
            save_checkpoint(checkpoint, head, optimizer, scheduler, iteration + 1, identity)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    saved = output_dir / HEAD_FILE
    save_found_head(head, saved)
    print(
        f"{release.title} head saved at {saved} (use it with --method {release.title.lower()} {release.flag} {saved})"
    )
    return saved
