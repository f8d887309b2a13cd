"""The one exception type a user sees: a one-line message, printed by the CLI without a traceback."""

from __future__ import annotations


class LorekitError(Exception):
    """A user-facing error. `str(err)` is a complete one-line message: what, where, and the fix."""

    def __init__(self, message: str, *, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def where(path: object, line: int | None = None) -> str:
    """Format a location the way every LoreKit message does: `file:line` (line omitted when unknown)."""
    return f"{path}:{line}" if line else f"{path}"
