"""The masks of a run as they are found, kept on disk so that a killed run loses none of them.

Beside the box journal (``journal.py``) of a run, or of each shard of a torchrun run, a run that
saves masks keeps ``masks.jsonl`` (``masks.rank<R>-of-<W>.jsonl``). Its first line describes the
run (``{"run": {...}}``, the box journal's settings); each further line is one image,
``{"name": ..., "height": H, "width": W, "masks": [RLE, ...], "scores": [...]}``, its objects best
first as pycocotools' compressed RLE (``counts`` str, ``size`` [H, W], original pixels). Lines are
fsynced once per batch, a line cut by a kill is dropped, and a later line of an image replaces an
earlier one.

Only the names of the finished images are held in memory: :func:`mask_index` maps each name to
where its line lies, so that ``instances.json`` is assembled image by image at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lost.errors import LostError, writing
from lost.io.instances import encode_masks


def mask_journal_name(box_journal: Path) -> Path:
    """``masks.jsonl`` beside ``journal.jsonl``, ``masks.rank0-of-2.jsonl`` beside ``journal.rank0-of-2.jsonl``."""
    return box_journal.with_name("masks" + box_journal.name[len("journal") :])


def mask_line(name: str, masks: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The journal line of one image: masks (K, H, W) bool in original pixels, scores (K,)."""
    height, width = masks.shape[1:]
    return {
        "name": name,
        "height": int(height),
        "width": int(width),
        "masks": encode_masks(masks),
        "scores": [float(v) for v in scores],
    }


def complete_lines(path: Path, repair: bool) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every whole line of ``path``; with ``repair`` a last line cut short by a
    kill is also cut from the file."""
    with open(path, "r+b" if repair else "rb") as file:
        offset = 0
        for line in file:
            if not line.endswith(b"\n"):
                if repair:
                    file.truncate(offset)
                return
            yield offset, line
            offset += len(line)


class MaskJournal:
    """The images of one run (or shard) whose masks are on disk. The run's folder lock, held by
    its box journal, covers this file too.

    path: the journal file; run: the run's settings, which a resumed file must carry (else
    LostError: the file is another run's); overwrite: start over.
    """

    def __init__(self, path: Path, run: dict[str, Any], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        if overwrite:
            self.path.unlink(missing_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self._resume(run)
        else:
            self.path.unlink(missing_ok=True)
            self._append([{"run": run}])

    def _resume(self, run: dict[str, Any]) -> None:
        lines = complete_lines(self.path, repair=True)
        header = next(lines, None)
        if header is None or json.loads(header[1]).get("run") != run:
            raise LostError(
                f"{self.path}: a mask file from another run (its settings differ from this run's); "
                "remove it, or add --overwrite to start the run over"
            )
        self.done.update(json.loads(line)["name"] for _, line in lines)

    def _append(self, entries: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(entry) + "\n" for entry in entries)
        with writing(self.path), open(self.path, "a", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())

    def record(self, lines: list[dict[str, Any]]) -> None:
        """Append one batch of :func:`mask_line` lines and make it durable."""
        if lines:
            self._append(lines)
            self.done.update(line["name"] for line in lines)


@dataclass(frozen=True)
class MaskLine:
    """Where an image's mask line lies: the journal and the byte offset."""

    path: Path
    offset: int


def mask_index(paths: Sequence[Path]) -> dict[str, MaskLine]:
    """Name -> the last line of that image over the journals ``paths`` (shards of one run)."""
    index: dict[str, MaskLine] = {}
    for path in paths:
        if not Path(path).exists():
            continue
        lines = complete_lines(Path(path), repair=False)
        next(lines, None)
        for offset, line in lines:
            index[json.loads(line)["name"]] = MaskLine(Path(path), offset)
    return index


def read_mask_line(where: MaskLine) -> dict[str, Any]:
    """The journal line at ``where``."""
    with open(where.path, "rb") as file:
        file.seek(where.offset)
        return json.loads(file.readline())
