"""The one base class of the project's expected failures.

Every stage raises a subclass of :class:`FaceswapError` for a problem the user can fix (bad input, data or
environment), with a message that fits on one line; the CLI prints that line instead of a traceback. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class FaceswapError(Exception):
    """A problem with the user's input, data, or environment that has a clear one-line message."""

    #: the process exit status the CLI uses for this kind of failure (2: a bad argument or params value)
    exit_code: int = 1
