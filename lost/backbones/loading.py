"""Building a backbone and loading its weights: the official download (DINO's checkpoints,
torchvision's ImageNet weights, timm's pretrained ones) or a checkpoint file.

Weight loading is strict: every missing, unexpected or wrong-shape parameter is listed; only
tensors and plain containers are unpickled."""

import argparse
import contextlib
import urllib.parse
from pathlib import Path

import torch
from torch import Tensor, nn

from lost.backbones.convnets import RESNET_DILATIONS, ConvFeatures
from lost.backbones.entry import Backbone
from lost.backbones.table import BackboneSpec, backbone_entry
from lost.backbones.timm_names import timm_state_dict, timm_vit
from lost.errors import LostError, one_line

# Keys of a checkpoint that are not backbone weights: DINO's projection head and timm's classifier
# (``head.*``), torchvision's classifiers (``fc.*``, ``classifier.*``, ConvNets only).
VIT_IGNORED_PREFIXES = ("head.",)
CONV_IGNORED_PREFIXES = ("head.", "fc.", "classifier.")
WRAPPER_PREFIXES = ("module.", "backbone.")
MAX_LISTED = 5


def build_model(arch: str, patch_size: int = 16, resnet_dilate: int = 2, initialize: bool = True) -> nn.Module:
    """A randomly initialized backbone in eval mode with gradients off (``initialize=False``: a
    DINO ViT's parameters are left as created, for weights loaded next)."""
    entry = _checked_entry(arch, patch_size, resnet_dilate)
    return entry.build(patch_size, resnet_dilate, initialize).eval().requires_grad_(False)


def get_model(
    arch: str,
    patch_size: int = 16,
    resnet_dilate: int = 2,
    device: str | torch.device = "cpu",
    pretrained_weights: str | Path | None = None,
    checkpoint_key: str = "teacher",
) -> nn.Module:
    """The backbone with its weights, on `device`, in eval mode with gradients off.

    Weights come from `pretrained_weights` when given (a timm name also reads the official files
    of its family, see :func:`timm_state_dict`), else from the official download: DINO's
    checkpoints and torchvision's ImageNet ones (``*_imagenet``) cached in the torch hub folder,
    timm's pretrained weights for a timm name, cached by timm.
    """
    entry = _checked_entry(arch, patch_size, resnet_dilate)
    target = _check_device(device)
    if pretrained_weights is None and entry.from_timm:
        return timm_vit(arch, pretrained=True).to(target)
    if pretrained_weights is not None:
        state_dict = load_checkpoint_state_dict(pretrained_weights, checkpoint_key)
        source = f"--pretrained_weights {pretrained_weights}"
    else:
        source = _official_url(entry, patch_size)
        state_dict = download_state_dict(source)
    model = build_model(arch, patch_size, resnet_dilate, initialize=False)
    if entry.from_timm:
        state_dict = timm_state_dict(model, state_dict)
    load_weights(model, state_dict, source, entry.label(patch_size, resnet_dilate, separator="/"))
    return model.to(target)


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The model of ``spec`` with its weights (see :func:`get_model`)."""
    return get_model(spec.arch, spec.patch_size, spec.resnet_dilate, device, spec.weights, spec.checkpoint_key)


def _checked_entry(arch: str, patch_size: int, resnet_dilate: int) -> Backbone:
    entry = backbone_entry(arch)
    if entry.dilated and resnet_dilate not in RESNET_DILATIONS:
        raise LostError(f"--resnet_dilate {resnet_dilate}: choose 1, 2 or 4")
    if entry.is_vit and not entry.from_timm and patch_size not in entry.patch_sizes:
        sizes = " or ".join(str(size) for size in entry.patch_sizes)
        raise LostError(f"--arch {arch} --patch_size {patch_size}: {arch} is built with patch size {sizes}")
    return entry


def _official_url(entry: Backbone, patch_size: int) -> str:
    url = entry.official_weights(patch_size)
    if url is None:
        raise LostError(
            f"--arch {entry.name} --patch_size {patch_size} has no official DINO weights; "
            "pass --pretrained_weights PATH to a checkpoint of that architecture"
        )
    return url


def _check_device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise LostError(f"--device {device}: not a device ({one_line(exc)}); use cpu or cuda") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise LostError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return target


def download_state_dict(url: str) -> dict[str, Tensor]:
    """The state dict at `url`, downloaded once into ``<torch hub dir>/checkpoints``."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True, weights_only=True)
    except Exception as exc:  # no network, HTTP errors, or a damaged file in the cache
        raise LostError(
            f"cannot get the weights {url} ({one_line(exc)}); connect to the network, or put that "
            f"file at {cached}, or pass --pretrained_weights PATH to a local copy"
        ) from exc


def load_checkpoint_state_dict(
    path: str | Path, checkpoint_key: str = "teacher", flag: str = "--pretrained_weights"
) -> dict[str, Tensor]:
    """Backbone weights from a checkpoint file, heads included (``load_weights`` drops them).

    Reads a plain state dict, a DINO full checkpoint (``teacher``/``student``, picked by
    `checkpoint_key`), ``model``/``state_dict``/``network`` wrappers (timm, torchvision training
    scripts) and strips ``module.`` and ``backbone.`` prefixes. Only tensors and plain containers
    are unpickled. Errors name the file after `flag`, the option that passed it.
    """
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{flag} {path}: no such file; pass the path of a .pth checkpoint")
    try:
        with _admitting_training_arguments():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # arbitrary bytes make the unpickler fail in arbitrary ways
        raise LostError(
            f"{flag} {path}: not a readable PyTorch checkpoint ({one_line(exc)}); pass a file written by torch.save"
        ) from exc
    state_dict = _unwrap_checkpoint(checkpoint, checkpoint_key, f"{flag} {path}")
    return {_strip_prefixes(key): value for key, value in state_dict.items()}


def _admitting_training_arguments() -> contextlib.AbstractContextManager:
    """Let ``weights_only`` loading accept the ``argparse.Namespace`` that DINO's full training
    checkpoints store under ``args`` (torch >= 2.5; older torch refuses those files)."""
    if hasattr(torch.serialization, "safe_globals"):
        return torch.serialization.safe_globals([argparse.Namespace])
    return contextlib.nullcontext()


def _unwrap_checkpoint(checkpoint: object, checkpoint_key: str, source: str) -> dict[str, Tensor]:
    if isinstance(checkpoint, dict) and not _is_state_dict(checkpoint):
        for key in (checkpoint_key, "model", "state_dict", "network"):
            if key in checkpoint:
                checkpoint = checkpoint[key]
                break
    if not (isinstance(checkpoint, dict) and checkpoint and _is_state_dict(checkpoint)):
        keys = list(checkpoint)[:MAX_LISTED] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise LostError(
            f"{source}: no state dict found (top level: {keys}); pass "
            "--checkpoint_key KEY naming the entry that holds the weights"
        )
    return checkpoint


def _is_state_dict(obj: dict) -> bool:
    return all(isinstance(key, str) and isinstance(value, Tensor) for key, value in obj.items())


def _strip_prefixes(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
    return key


def load_weights(model: nn.Module, state_dict: dict[str, Tensor], source: str, name: str) -> None:
    """Copy `state_dict` into `model`, or raise LostError listing every mismatched parameter.

    Head and classifier keys are ignored; BatchNorm's ``num_batches_tracked`` may be absent.
    """
    ignored = CONV_IGNORED_PREFIXES if isinstance(model, ConvFeatures) else VIT_IGNORED_PREFIXES
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignored)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        _listing(what, names)
        for what, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped))
        if names
    ]
    if problems:
        raise LostError(
            f"{source}: these weights do not fit {name}: {'; '.join(problems)}; pass weights of "
            "this --arch and --patch_size, or the --arch and --patch_size of these weights"
        )
    model.load_state_dict(state_dict)


def _listing(what: str, names: list[str]) -> str:
    more = f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return f"{len(names)} {what} ({', '.join(names[:MAX_LISTED])}{more})"
