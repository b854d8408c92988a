"""The project's one exception type for problems a user can fix.

Library code raises :class:`LostError` with a message that names the file (or flag), the
problem and the fix; the command-line scripts print that message as one line and exit
non-zero (:func:`exit_status`). Any other exception is a bug in this project and keeps its
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class LostError(Exception):
    """A user-fixable problem: bad path, unreadable file, wrong checkpoint, missing data set."""


def exit_status(command: Callable[[], object]) -> int:
    """The exit status of a command-line body: 0 once `command()` returns; 2 when it raises
    LostError, whose message is printed as one line ``error: ...`` on stderr."""
    try:
        command()
    except LostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
