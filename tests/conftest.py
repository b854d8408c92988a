"""Fixtures shared by the test modules: tiny models, checkpoints and images, all seeded; the device.

Every test that runs a model or a method runs it on ``TEST_DEVICE``, from the environment variable
``LOST_TEST_DEVICE`` (default ``cpu``): ``LOST_TEST_DEVICE=cuda python -m pytest -q tests`` runs
the suite on a GPU, where its runs take the GPU's branches (default workers and batch size, the
eigensolvers on the device). Tests of what only a GPU run does (pinned memory, fp16, Lanczos on
the GPU) carry ``needs_cuda`` and are skipped on a CPU, with the reason.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from PIL import Image
from planted_squares import crafted_vit_tiny, planted_square

from lost.backbones import DinoVisionTransformer, build_model
from lost.methods import METHODS

T = TypeVar("T")

TEST_DEVICE = torch.device(os.environ.get("LOST_TEST_DEVICE", "cpu"))
"""Where the tests run models and methods: ``LOST_TEST_DEVICE`` (cpu, cuda, cuda:N), default cpu."""
if TEST_DEVICE.type == "cuda" and not torch.cuda.is_available():
    raise pytest.UsageError(f"LOST_TEST_DEVICE={TEST_DEVICE}: CUDA is not available; unset it to test on the CPU")
if TEST_DEVICE.type == "cuda":
    # full float32 products and convolutions (no TF32), so that GPU results meet the tolerances
    # at which the tests compare them with float32 references computed on the CPU
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

needs_cuda = pytest.mark.skipif(
    TEST_DEVICE.type != "cuda", reason="a GPU-only branch: run with LOST_TEST_DEVICE=cuda on a machine with a GPU"
)
"""Marks a test of a branch only a CUDA run takes."""

DEVICE_FLAGS = ["--device", str(TEST_DEVICE)]
"""The command-line flags that put a script's run on TEST_DEVICE."""


def on_test_device(method: Callable[..., T]) -> Callable[..., T]:
    """`method` (a function of features first) run with its features moved to TEST_DEVICE:
    ``on_test_device(tokencut)(feats, grid, ...)``; its numpy results stay where they were."""

    @functools.wraps(method)
    def run_on_test_device(feats: torch.Tensor, *args: Any, **kwargs: Any) -> T:
        return method(feats.to(TEST_DEVICE), *args, **kwargs)

    return run_on_test_device


MIXED_SIZES = [(64, 48), (48, 64), (50, 40), (64, 48), (33, 17), (48, 64), (64, 48), (60, 45), (17, 33), (64, 48)]
"""(width, height) of the mixed-size image set: several padded sizes, some shared (p = 8 and 16)."""


def tiny_vit(patch_size: int = 8, seed: int = 0) -> DinoVisionTransformer:
    """A 2-block DINO ViT (d = 48, 3 heads) with seeded random weights, in eval mode, on the CPU
    (``.to(TEST_DEVICE)`` where a test runs it on the test device)."""
    torch.manual_seed(seed)
    return DinoVisionTransformer(patch_size, embed_dim=48, depth=2, num_heads=3).eval()


def write_noise_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[Path]:
    """JPEGs of smooth random blobs, one per (width, height), named 000000.jpg, 000001.jpg, ..."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (width, height) in enumerate(sizes):
        coarse = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
        path = folder / f"{index:06d}.jpg"
        image.save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture
def mixed_images(tmp_path: Path) -> Path:
    """A folder of 10 JPEGs in MIXED_SIZES."""
    folder = tmp_path / "mixed"
    write_noise_images(folder, MIXED_SIZES)
    return folder


@pytest.fixture(scope="session")
def vit_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ViT-Tiny/16 (the real architecture) saved as a plain state dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "vit_tiny16.pth"
    torch.save(build_model("vit_tiny", 16).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def crafted_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """planted_squares.crafted_vit_tiny saved as a plain state dict."""
    path = tmp_path_factory.mktemp("vit") / "crafted_vit_tiny8.pth"
    torch.save(crafted_vit_tiny().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def square_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 PNGs of planted_squares.planted_square (seed 1)."""
    folder = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(1)
    for index in range(8):
        planted_square(rng)[0].save(folder / f"{index:03d}.png")
    return folder


def method_params_for_tests(method: str, tmp_path: Path, embed_dim: int):
    """Each method's parameters, with a random FOUND/PEEKABOO head of the test model's width."""
    if method in ("found", "peekaboo"):
        torch.manual_seed(4)
        head = tmp_path / "head.pt"
        torch.save({"decoder": torch.nn.Conv2d(embed_dim, 1, kernel_size=1).state_dict()}, head)
        return METHODS[method].params(weights=str(head))
    return METHODS[method].params(**({"head": 1} if method == "dinoseg" else {}))
