"""Files that survive crashes and hostile input: atomic writes, restricted unpickling, predictions.

Writing: :func:`atomic_write` (and :func:`write_json`, :func:`write_predictions` on top of it)
replaces a file in one step, so that a reader sees the old file or the new one, never part.

Reading: pickles are only ever read by :func:`restricted_load`, which imports nothing but numpy
array/scalar/dtype reconstruction and a few builtin containers; :func:`read_json` turns a
missing or malformed JSON file into a LostError naming the file and the fix.

Prediction files map an image name to its boxes ``[x1, y1, x2, y2]`` in pixels of the original
image, x2/y2 exclusive. One-box methods (the published format): ``preds.pkl`` holds name -> (4,)
numpy array, ``preds.json`` name -> ``[x1, y1, x2, y2]``. Multi-object methods (best box first):
``preds.pkl`` holds name -> (K, 4) array, ``preds.scores.pkl`` beside it name -> (K,) float64
scores in the same order (see :func:`scores_file`), and ``preds.json`` name -> ``[{"box": [x1, y1,
x2, y2], "score": s}, ...]``. Every reader accepts both kinds: :func:`read_predictions` gives the
top box of each image, :func:`read_prediction_boxes` every box, :func:`read_scored_predictions`
every box with its score (1 for a one-box entry). detectron2's ``coco_instances_results.json``
holds COCO ``[x, y, w, h]`` boxes, converted here.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import contextlib
import importlib
import io
import json
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lost.errors import LostError, writing

# ----------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never part:
    a temporary file in the same folder, flushed and fsynced, then renamed over `path`.
    The file gets the permissions a plain `open(path, "w")` would give it (0666 less umask).
    A full disk, a read-only file system or missing permissions raise LostError naming `path`.
    """
    with atomic_file(path) as file:
        file.write(data)


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file to stream into, that replaces `path` when the block ends (as
    :func:`atomic_write`: readers see the old file or the whole new one) and is removed when the
    block raises. Write failures raise LostError naming `path`."""
    path = Path(path)
    with writing(path):
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_current_umask())
            with os.fdopen(fd, "wb") as f:
                yield f
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


@dataclass(frozen=True)
class ScoredBoxes:
    """The boxes of one image, best first: boxes (K, 4) ``[x1, y1, x2, y2]`` in original-image
    pixels, x2/y2 exclusive (int64 or float64), K >= 1; scores (K,) float64, non-increasing."""

    boxes: np.ndarray
    scores: np.ndarray

    @property
    def box(self) -> np.ndarray:
        """(4,) the best box."""
        return self.boxes[0]


def scores_file(pred_file: Path | str) -> Path:
    """Where the scores of a multi-box ``<stem>.pkl`` lie: ``<stem>.scores.pkl`` beside it."""
    pred_file = Path(pred_file)
    return pred_file.with_name(f"{pred_file.stem}.scores.pkl")


def read_predictions(path: Path | str) -> dict[str, np.ndarray]:
    """Predictions `name -> box (4,)` [x1, y1, x2, y2], the top box of each image, from a `.json`
    file or a pickle of either kind (see the module docstring); pickles are read with a restricted
    unpickler that admits only numpy arrays/scalars/dtypes and builtin containers.

    Raises LostError for a missing or unreadable file, a pickle that imports anything else
    ("refusing to load ... it tries to import X"), or content that is not name -> box(es).
    """
    return {name: boxes if boxes.ndim == 1 else boxes[0] for name, boxes in read_prediction_boxes(path).items()}


def read_prediction_boxes(path: Path | str) -> dict[str, np.ndarray]:
    """Every box of every image, as stored: name -> (4,) for a one-box entry, (K, 4) best first
    for a multi-box one (a JSON entry's boxes ordered by decreasing score, ties in file order).
    Needs no scores file. Raises LostError as :func:`read_predictions` does."""
    path = Path(path)
    return {str(name): _parse_entry(path, name, value)[0] for name, value in _read_prediction_mapping(path).items()}


def read_scored_predictions(path: Path | str) -> dict[str, ScoredBoxes]:
    """Every box of every image with its score, best first: a one-box entry is one box of score 1;
    a multi-box JSON entry carries its scores; a multi-box pickle's scores come from
    :func:`scores_file` beside it. Boxes are ordered by decreasing score (ties in stored order).

    Raises LostError as :func:`read_predictions` does, and when a multi-box pickle's scores file
    is missing or does not give one score per box.
    """
    path = Path(path)
    stored_scores: Mapping | None = None
    scored = {}
    for name, value in _read_prediction_mapping(path).items():
        boxes, scores = _parse_entry(path, name, value)
        if boxes.ndim == 1:
            boxes, scores = boxes[None], np.ones(1)
        elif scores is None:
            stored_scores = _read_scores_file(path) if stored_scores is None else stored_scores
            scores = _entry_scores(path, name, stored_scores, len(boxes))
            order = np.argsort(-scores, kind="stable")
            boxes, scores = boxes[order], scores[order]
        scored[str(name)] = ScoredBoxes(boxes, scores)
    return scored


def _read_prediction_mapping(path: Path) -> Mapping:
    """The raw content of a prediction file: a mapping image name -> entry."""
    if not path.is_file():
        raise LostError(f"{path}: prediction file not found; check --pred_file")
    if path.suffix.lower() == ".json":
        raw = read_json(path, "write it again (a JSON object: image name -> [x1, y1, x2, y2] or [{box, score}, ...])")
    else:
        raw = restricted_load(path)
    if not isinstance(raw, Mapping):
        raise LostError(
            f"{path}: expected a mapping image name -> [x1, y1, x2, y2], found {type(raw).__name__}; "
            "a detectron coco_instances_results.json is read as type 'detectron'"
        )
    return raw


def _parse_entry(path: Path, name: Any, value: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(boxes, scores) of one stored entry: (4,) and None for one box (4 numbers); (K, 4) and
    (K,) for a JSON list of ``{"box", "score"}``, ordered by decreasing score (ties in file order);
    (K, 4) and None for a (K, 4) array, whose scores are in the scores file."""
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        try:
            boxes = np.stack([_as_box(path, name, item["box"]) for item in value])
            scores = np.asarray([float(item["score"]) for item in value])
        except (KeyError, TypeError, ValueError):
            raise LostError(
                f"{path}: prediction for {name!r} is not a list of {{\"box\": [x1, y1, x2, y2], \"score\": s}}; "
                "regenerate the file"
            ) from None
        order = np.argsort(-scores, kind="stable")
        return boxes[order], scores[order]
    is_box_array = isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[1] == 4 and len(value) > 0
    if is_box_array and np.issubdtype(value.dtype, np.number):
        return value, None
    return _as_box(path, name, value), None


def _as_box(path: Path, name: Any, value: Any) -> np.ndarray:
    try:
        box = np.asarray(value)
        valid = box.size == 4 and box.ndim <= 1 and np.issubdtype(box.dtype, np.number)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise LostError(
            f"{path}: prediction for {name!r} is not 4 numbers [x1, y1, x2, y2] (nor K x 4 boxes); regenerate the file"
        )
    return box.reshape(4)


def _read_scores_file(pred_file: Path) -> Mapping:
    """The name -> (K,) scores of a multi-box pickle, from :func:`scores_file`."""
    path = scores_file(pred_file)
    if not path.is_file():
        raise LostError(
            f"{path}: scores of the multi-box predictions {pred_file} not found; keep the two files "
            f"together (main_lost.py writes both), or pass {pred_file.with_suffix('.json')}, which holds the scores"
        )
    scores = restricted_load(path)
    if not isinstance(scores, Mapping):
        raise LostError(f"{path}: expected a mapping image name -> scores; regenerate it with main_lost.py")
    return scores


def _entry_scores(pred_file: Path, name: Any, scores: Mapping, count: int) -> np.ndarray:
    """(count,) float64 scores of one image from a scores file, or LostError."""
    try:
        values = np.asarray(scores[name], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        values = None
    if values is None or len(values) != count:
        raise LostError(
            f"{scores_file(pred_file)}: no {count} scores for {name!r} of {pred_file}; the two files do not "
            "belong together: regenerate them with main_lost.py"
        )
    return values


def write_predictions(folder: Path | str, preds: Mapping[str, np.ndarray]) -> None:
    """Write `preds` (name -> box [x1, y1, x2, y2]) to `folder/preds.pkl` (a dict of numpy
    arrays, the published format) and `folder/preds.json` (name -> list), each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {str(name): np.asarray(box) for name, box in preds.items()}
    _write_pickle(folder / "preds.pkl", arrays)
    write_json(folder / "preds.json", {name: box.tolist() for name, box in arrays.items()})


def write_scored_predictions(folder: Path | str, preds: Mapping[str, ScoredBoxes]) -> None:
    """Write multi-box predictions (name -> boxes and scores, best first) to `folder`:
    ``preds.pkl`` (name -> (K, 4) array), ``preds.scores.pkl`` (name -> (K,) float64) and
    ``preds.json`` (name -> ``[{"box": [x1, y1, x2, y2], "score": s}, ...]``), each atomically,
    the scores first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scores = {str(name): np.asarray(found.scores, dtype=np.float64) for name, found in preds.items()}
    _write_pickle(scores_file(folder / "preds.pkl"), scores)
    _write_pickle(folder / "preds.pkl", {str(name): np.asarray(found.boxes) for name, found in preds.items()})
    listed = {
        str(name): [
            {"box": np.asarray(box).tolist(), "score": float(score)}
            for box, score in zip(found.boxes, found.scores, strict=True)
        ]
        for name, found in preds.items()
    }
    write_json(folder / "preds.json", listed)


def _write_pickle(path: Path, content: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    pickle.dump(dict(content), buffer, protocol=4)
    atomic_write(path, buffer.getvalue())


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
    return {image_id: scored.box for image_id, scored in read_detectron_scored(json_path).items()}


def read_detectron_scored(json_path: Path | str) -> dict[str, ScoredBoxes]:
    """str(image_id) -> every detection of that image in a detectron2 `coco_instances_results.json`
    (categories ignored), by decreasing score (ties in file order), boxes [x1, y1, x2, y2] float64."""
    by_image: dict[str, list[Detection]] = {}
    for detection in read_coco_results(json_path):
        by_image.setdefault(str(detection.image_id), []).append(detection)
    scored = {}
    for image_id, detections in by_image.items():
        scores = np.asarray([detection.score for detection in detections])
        order = np.argsort(-scores, kind="stable")
        boxes = np.stack([detections[index].box for index in order])
        scored[image_id] = ScoredBoxes(boxes, scores[order])
    return scored
