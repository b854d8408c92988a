"""The project's one exception type for problems a user can fix, and how scripts report it.

Library code raises :class:`LostError` with a message that names the file (or flag), the
problem and the fix; the command-line scripts run their body through :func:`run_cli`, which
prints that message as one line and exits with status 2. A failed write (full disk, read-only
file system, no permission) becomes such an error through :func:`writing`. Any other exception
is a bug in this project and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "read-only file system"}
"""Write failures a user fixes outside the program, with the words used to report them."""


class LostError(Exception):
    """A user-fixable problem: bad path, unreadable file, wrong checkpoint, missing data set."""


def write_failure(path: Path | str, exc: OSError) -> LostError:
    """The one-line error for a failed write of ``path``: the cause and what to do."""
    cause = WRITE_ERRNOS.get(exc.errno, exc.strerror or type(exc).__name__)
    return LostError(
        f"cannot write {path}: {cause}; free some space or fix the permissions there, then run the "
        "same command again (finished work is kept)"
    )


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError of a full disk, a quota, a read-only file system or missing permissions
    raised while writing ``path`` into a :class:`LostError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise write_failure(path, exc) from exc


def run_cli(body: Callable[[], int | None]) -> int:
    """The exit status of a script's body: its own (None counts as 0); 2 when it raises a
    :class:`LostError` (or an unhandled write failure), printed as ``error: <message>`` on one
    line of stderr."""
    try:
        status = body()
        return 0 if status is None else status
    except LostError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {write_failure(exc.filename or 'a file', exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """The informative line of an exception message (PyTorch's are paragraphs)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
