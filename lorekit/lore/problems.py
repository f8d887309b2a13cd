"""A problem found in a vault: where it is, how bad it is, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    file: str  # path relative to the vault (or a template path)
    line: int | None
    severity: Severity
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        tail = f" ({self.fix})" if self.fix else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}{tail}"

    def sort_key(self) -> tuple:
        return (self.file, self.line or 0, self.message)


def error(file: str, line: int | None, message: str, fix: str = "") -> Problem:
    return Problem(file, line, "error", message, fix)


def warning(file: str, line: int | None, message: str, fix: str = "") -> Problem:
    return Problem(file, line, "warning", message, fix)
