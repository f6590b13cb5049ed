"""Error types with locations: every rejected input says what is wrong and where.

`PodwallError` is the root; the CLI maps it to exit code 2. `Location` names the file, the
YAML document (0-based), the object and the field path, so that a user can find the fault.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """Where a fault is: file, document index, object name and dotted field path, each optional."""

    file: str | None = None
    document: int | None = None
    obj: str | None = None
    path: str | None = None
    offset: int | None = None  # byte offset or frame number, for captures

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file)
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.obj:
            parts.append(self.obj)
        if self.path:
            parts.append(self.path)
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        return ": ".join(parts) if parts else "<input>"


@dataclass(frozen=True, slots=True)
class Problem:
    """One located fault in an input (policy, inventory, capture)."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class PodwallError(Exception):
    """Base of every error podwall reports to a user (CLI exit code 2)."""


class InputError(PodwallError):
    """An input was rejected as a whole; `problems` lists every fault found, each located."""

    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.what = what
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{what}: {len(problems)} error(s)\n{lines}")


class CaptureError(PodwallError):
    """A capture file cannot be read any further (bad magic, unsupported link type, I/O error)."""


class ProtocolError(Exception):
    """Malformed application-protocol bytes; the only exception a DPI parser may raise."""
