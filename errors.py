"""The project's one exception type for problems a user can fix.

Library code raises :class:`LostError` with a message that names the file (or flag), the
problem and the fix; the command-line scripts print that message as one line and exit
non-zero. Any other exception is a bug in this project and keeps its traceback.
"""


class LostError(Exception):
    """A user-fixable problem: bad path, unreadable file, wrong checkpoint, missing data set."""
