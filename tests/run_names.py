"""Experiment and input folder names as the README states them, worked out here from SHA-256
digests of the weights file's bytes and of the input folder's resolved path."""

from __future__ import annotations

import hashlib
from pathlib import Path


def weights_tag(path: str | Path) -> str:
    """``_weights-<first 8 hex digits of the file's SHA-256>``: how a weights file is named."""
    return "_weights-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


def head_tag(path: str | Path) -> str:
    """``_found_weights-<8 hex digits>``: how a FOUND head file is named."""
    return "_found_weights-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


def input_folder(path: str | Path) -> str:
    """``<last name>-<first 8 hex digits of the SHA-256 of the resolved path>``: where runs on
    a folder of images live."""
    resolved = str(Path(path).resolve())
    return f"{Path(path).name}-{hashlib.sha256(resolved.encode('utf-8')).hexdigest()[:8]}"
