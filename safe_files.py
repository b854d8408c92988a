"""Files that survive crashes and hostile input: atomic writes, restricted unpickling, predictions.

Writing: :func:`atomic_write` (and :func:`write_json`, :func:`write_predictions` on top of it)
replaces a file in one step, so that a reader sees the old file or the new one, never part.

Reading: pickles are only ever read by :func:`restricted_load`, which imports nothing but numpy
array/scalar/dtype reconstruction and a few builtin containers; :func:`read_json` turns a
missing or malformed JSON file into a LostError naming the file and the fix.

Prediction files map an image name to one box ``[x1, y1, x2, y2]`` in pixels of the original
image, x2/y2 exclusive: ``preds.pkl`` (a dict of numpy arrays, the published format) and
``preds.json``; detectron2's ``coco_instances_results.json`` holds COCO ``[x, y, w, h]`` boxes,
converted here.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import importlib
import io
import json
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from errors import LostError, writing


# ----------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never part:
    a temporary file in the same folder, flushed and fsynced, then renamed over `path`.
    The file gets the permissions a plain `open(path, "w")` would give it (0666 less umask).
    A full disk, a read-only file system or missing permissions raise LostError naming `path`.
    """
    path = Path(path)
    with writing(path):
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_current_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path | str, content: Any, indent: int | None = None) -> None:
    """Write `content` as JSON to `path` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(content, indent=indent).encode())


# ----------------------------------------------------------------------------------------------
# Reading


def read_json(path: Path | str, fix: str, what: str = "file") -> Any:
    """The content of a JSON file; LostError "<path>: <what> not found; <fix>" when it is missing,
    "<path>: not valid JSON (...); <fix>" when it cannot be parsed."""
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{path}: {what} not found; {fix}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LostError(f"{path}: not valid JSON ({exc}); {fix}") from exc


def _numpy_core(submodule: str, name: str) -> Callable[[], Any]:
    """Resolver for numpy.core.<submodule>.<name>, renamed numpy._core in numpy 2."""

    def resolve() -> Any:
        try:
            module = importlib.import_module(f"numpy._core.{submodule}")
        except ImportError:
            module = importlib.import_module(f"numpy.core.{submodule}")
        return getattr(module, name)

    return resolve


_PICKLE_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{
        (f"numpy.{core}.multiarray", name): _numpy_core("multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    },
    **{(f"numpy.{core}.numeric", "_frombuffer"): _numpy_core("numeric", "_frombuffer") for core in ("core", "_core")},
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "bytes"): lambda: bytes,
    ("builtins", "bytearray"): lambda: bytearray,
    ("builtins", "complex"): lambda: complex,
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing but numpy array/scalar/dtype reconstruction and a few
    builtin containers; Python 2 names are mapped to Python 3 ones first."""

    def find_class(self, module: str, name: str) -> Any:
        key = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        resolve = _PICKLE_ALLOWED.get(key)
        if resolve is None:
            raise LostError(f"it tries to import {module}.{name}")
        return resolve()


def restricted_load(path: Path) -> Any:
    """Unpickle `path` with :class:`_RestrictedUnpickler`; any failure is a LostError."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except LostError as exc:
        raise LostError(
            f"refusing to load {path}: {exc}; pickles read by this project may hold only numpy arrays, "
            "numbers, strings and builtin containers: write the file again with plain values (or as JSON)"
        ) from None
    except Exception as exc:
        raise LostError(f"{path}: not a readable pickle ({exc!r}); regenerate it") from exc


# ----------------------------------------------------------------------------------------------
# Prediction files


def read_predictions(path: Path | str) -> dict[str, np.ndarray]:
    """Predictions `name -> box (4,)` [x1, y1, x2, y2] from a `.json` file (an object of
    4-number lists) or a pickle (a dict of arrays), read with a restricted unpickler that
    admits only numpy arrays/scalars/dtypes and builtin containers, numbers and strings.

    Raises LostError for a missing or unreadable file, a pickle that imports anything else
    ("refusing to load ... it tries to import X"), or content that is not name -> 4 numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise LostError(f"{path}: prediction file not found; check --pred_file")
    if path.suffix.lower() == ".json":
        raw = read_json(path, "write it again (a JSON object: image name -> [x1, y1, x2, y2])")
    else:
        raw = restricted_load(path)
    if not isinstance(raw, Mapping):
        raise LostError(
            f"{path}: expected a mapping image name -> [x1, y1, x2, y2], found {type(raw).__name__}; "
            "a detectron coco_instances_results.json is read as type 'detectron'"
        )
    return {str(name): _as_box(path, name, value) for name, value in raw.items()}


def _as_box(path: Path, name: Any, value: Any) -> np.ndarray:
    try:
        box = np.asarray(value)
        valid = box.size == 4 and np.issubdtype(box.dtype, np.number)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise LostError(f"{path}: prediction for {name!r} is not 4 numbers [x1, y1, x2, y2]; regenerate the file")
    return box.reshape(4)


def write_predictions(folder: Path | str, preds: Mapping[str, np.ndarray]) -> None:
    """Write `preds` (name -> box [x1, y1, x2, y2]) to `folder/preds.pkl` (a dict of numpy
    arrays, the published format) and `folder/preds.json` (name -> list), each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {str(name): np.asarray(box) for name, box in preds.items()}
    buffer = io.BytesIO()
    pickle.dump(arrays, buffer, protocol=4)
    atomic_write(folder / "preds.pkl", buffer.getvalue())
    as_lists = {name: box.tolist() for name, box in arrays.items()}
    write_json(folder / "preds.json", as_lists)


@dataclass(frozen=True)
class Detection:
    """One detection of a COCO results file: the image_id as written, category_id (None when the
    file has none), score, and box [x1, y1, x2, y2] float64 converted from COCO [x, y, w, h]."""

    image_id: int | str
    category_id: int | None
    score: float
    box: np.ndarray


def read_coco_results(json_path: Path | str) -> list[Detection]:
    """The detections of a COCO results file such as detectron2's ``coco_instances_results.json``
    (a list of {image_id, category_id, bbox [x, y, w, h], score}), in file order.

    Raises LostError for a missing or malformed file, or a detection without image_id, score or bbox.
    """
    json_path = Path(json_path)
    fix = "pass the coco_instances_results.json written by detectron2's COCO evaluator"
    results = read_json(json_path, fix, what="results file")
    if not isinstance(results, list):
        raise LostError(f"{json_path}: expected a list of detections; {fix}")
    detections = []
    for number, det in enumerate(results):
        try:
            category = det.get("category_id")
            x, y, w, h = (float(v) for v in det["bbox"])
            detection = Detection(
                det["image_id"],
                None if category is None else int(category),
                float(det["score"]),
                np.array([x, y, x + w, y + h], dtype=np.float64),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise LostError(
                f"{json_path}: detection {number} lacks image_id/score/bbox [x, y, w, h] ({exc!r}); {fix}"
            ) from exc
        detections.append(detection)
    return detections


def read_detectron_predictions(json_path: Path | str) -> dict[str, np.ndarray]:
    """str(image_id) -> the highest-scoring box of that image (first one on ties) in a
    detectron2 `coco_instances_results.json`, converted from COCO [x, y, w, h] to
    [x1, y1, x2, y2] float64."""
    best: dict[str, Detection] = {}
    for detection in read_coco_results(json_path):
        image_id = str(detection.image_id)
        if image_id not in best or detection.score > best[image_id].score:
            best[image_id] = detection
    return {image_id: detection.box for image_id, detection in best.items()}
