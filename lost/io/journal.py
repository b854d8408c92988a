"""Runs that survive being killed: a per-run journal of finished images and atomic outputs.

A run folder holds ``journal.jsonl`` (or ``journal.rank<R>.jsonl`` per process of a sharded
run). Its first line describes the run (``{"run": {...}}``); each further line is one finished
image, ``{"name": ..., "box": [x1, y1, x2, y2]}``, or for a multi-object method ``{"name": ...,
"boxes": [[x1, y1, x2, y2], ...], "scores": [...]}`` (best first), or ``{"name": ..., "error":
...}`` for a skipped one; a finished image's line may also carry ``"values"``, a JSON object of
per-image results beside its box (the saliency counts of ``main_saliency_evaluation.py``). Lines
are flushed and fsynced once per batch, so a SIGKILL loses at most the batch in flight, and a
last line cut in the middle is dropped on the next start. Boxes keep their
type through JSON: whole-number boxes (ViT) come back as int64, CNN boxes as float64.

A run holds a lock on its journal (``<journal>.lock``, an ``flock`` that the system releases
when the process dies, however it dies): a second command started on the same run folder stops
at once with the pid and host of the one running, and a run killed with SIGKILL leaves nothing
that blocks the next start. A :class:`Journal` is a context manager: the lock is released when
the ``with`` block ends, by an error too.

A journal whose first line records other settings (another input folder, another parameter) is
refused with one line naming each differing setting, its value there and here.

Final outputs are written with :func:`safe_files.atomic_write`: a reader sees the old file or the
new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from typing_extensions import Self

from lost.errors import LostError, writing
from lost.io.safe_files import ScoredBoxes


def box_from_json(values: list[float | int]) -> np.ndarray:
    """A box read back from JSON: int64 when every coordinate was written as an int."""
    if all(isinstance(value, int) for value in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.float64)


def box_to_json(box: np.ndarray) -> list[float | int]:
    """A box as a JSON list, ints for integer arrays and floats otherwise."""
    return [int(v) for v in box] if np.issubdtype(box.dtype, np.integer) else [float(v) for v in box]


def apply_entry(
    entry: dict[str, Any], boxes: dict[str, np.ndarray], errors: dict[str, str], detections: dict[str, ScoredBoxes]
) -> None:
    """Record one journal line: a box (the top one for a multi-box line, whose boxes and scores go
    to `detections`) replaces an earlier skip of that image, and a skip an earlier box."""
    name = entry["name"]
    if "error" in entry:
        errors[name] = entry["error"]
        boxes.pop(name, None)
        detections.pop(name, None)
    elif "boxes" in entry:
        scores = np.asarray(entry["scores"], dtype=np.float64)
        scored = ScoredBoxes(np.stack([box_from_json(box) for box in entry["boxes"]]), scores)
        detections[name] = scored
        boxes[name] = scored.box
        errors.pop(name, None)
    else:
        boxes[name] = box_from_json(entry["box"])
        errors.pop(name, None)


def entry_of(name: str, found: np.ndarray | ScoredBoxes) -> dict[str, Any]:
    """The journal line of a finished image: its box, or its boxes and scores."""
    if isinstance(found, ScoredBoxes):
        boxes = [box_to_json(box) for box in found.boxes]
        return {"name": name, "boxes": boxes, "scores": [float(v) for v in found.scores]}
    return {"name": name, "box": box_to_json(found)}


def read_entries(path: Path, repair: bool) -> list[dict[str, Any]]:
    """The JSON lines of a journal, without a last line cut short by a kill.

    With ``repair`` the cut line is also removed from the file, so new lines start clean.
    """
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if repair and len(complete) != len(raw):
        with open(path, "r+b") as file:
            file.truncate(len(complete))
    return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]


class RunLock:
    """An exclusive lock on ``path`` (the file holds the owner's pid and host), held until
    :meth:`release` or the process's end. Taking a lock that a live process holds raises
    LostError naming that process; a lock whose process died is simply taken."""

    def __init__(self, path: Path, what: Path) -> None:
        self._fd = -1
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with writing(self.path):
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            self.release()
            raise LostError(
                f"{what} is in use by {owner}: wait for that run to end (or stop it), or give this "
                "one another --output_dir"
            ) from None
        owner = f"pid {os.getpid()} on host {socket.gethostname()}".encode()
        with writing(self.path):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, owner, 0)

    def release(self) -> None:
        """Let another run take the folder."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()


class Journal:
    """The finished images of one run (or one shard of it), kept on disk as JSON lines.

    path: the journal file. run: settings that must match for a resume (dataset, model,
    method parameters); a journal written with other settings raises LostError.
    overwrite: forget any earlier journal and start over.
    The journal holds the lock ``<path>.lock`` from its creation to :meth:`close`.
    """

    def __init__(self, path: Path, run: dict[str, Any], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.boxes: dict[str, np.ndarray] = {}
        self.errors: dict[str, str] = {}
        self.detections: dict[str, ScoredBoxes] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.lock = RunLock(self.path.with_name(self.path.name + ".lock"), self.path.parent)
        try:
            self._open(run, overwrite)
        except BaseException:
            self.close()
            raise

    def _open(self, run: dict[str, Any], overwrite: bool) -> None:
        if overwrite:
            self.path.unlink(missing_ok=True)
        if self.path.exists():
            self._resume(run)
        else:
            self._write_lines([{"run": run}])

    def _resume(self, run: dict[str, Any]) -> None:
        """Load the finished images, after dropping a last line cut by a kill."""
        lines = read_entries(self.path, repair=True)
        if not lines or "run" not in lines[0]:
            self.path.unlink()
            self._write_lines([{"run": run}])
            return
        if lines[0]["run"] != run:
            raise LostError(
                f"{self.path} belongs to a run with other settings ({settings_difference(lines[0]['run'], run)}): "
                "rerun with the same flags to resume it, or add --overwrite to start over"
            )
        for entry in lines[1:]:
            self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        """One line into the boxes, skips, detections and per-image values held in memory."""
        apply_entry(entry, self.boxes, self.errors, self.detections)
        if "values" in entry:
            self.values[entry["name"]] = entry["values"]
        elif "error" in entry:
            self.values.pop(entry["name"], None)

    def _write_lines(self, entries: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(entry) + "\n" for entry in entries)
        with writing(self.path), open(self.path, "a", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())

    def close(self) -> None:
        """Release the run folder's lock."""
        self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _error: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        self.close()

    def is_done(self, name: str) -> bool:
        """Whether the image ``name`` already has its box (skipped images are tried again)."""
        return name in self.boxes

    def record(
        self,
        found: dict[str, np.ndarray | ScoredBoxes],
        errors: dict[str, str],
        values: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Append one batch of finished images and make it durable: `found` maps a name to its
        box (4,), or to its boxes and scores for a multi-object method; `errors` to a skip reason;
        `values` (optional) a finished name to a JSON object kept beside its box."""
        entries = [entry_of(name, result) for name, result in found.items()]
        for entry in entries:
            if values and entry["name"] in values:
                entry["values"] = values[entry["name"]]
        entries += [{"name": name, "error": reason} for name, reason in errors.items()]
        if entries:
            self._write_lines(entries)
            for entry in entries:
                self._apply(entry)


def settings_difference(written: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> str:
    """``input: /a/photos there, /b/photos here; params.tau: 0.2 there, 0.3 here``: every
    setting (nested ones by their dotted path) whose value differs, absent ones as ``none``."""
    differences = []
    for key in dict.fromkeys([*written, *wanted]):
        there, here = written.get(key), wanted.get(key)
        if isinstance(there, dict) and isinstance(here, dict):
            inner = settings_difference(there, here, f"{prefix}{key}.")
            differences += [inner] if inner else []
        elif there != here:
            differences.append(f"{prefix}{key}: {_setting_text(there)} there, {_setting_text(here)} here")
    return "; ".join(differences)


def _setting_text(value: Any) -> str:
    return "none" if value is None else str(value)


def merge_journals(paths: list[Path]) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, ScoredBoxes]]:
    """Boxes (the top one per image), skip reasons, and the boxes and scores of multi-box images
    of several shard journals (their run settings already checked)."""
    boxes: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    detections: dict[str, ScoredBoxes] = {}
    for path in paths:
        for entry in read_entries(Path(path), repair=False)[1:]:
            apply_entry(entry, boxes, errors, detections)
    return boxes, errors, detections
