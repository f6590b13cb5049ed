"""Hyperscan compilation of a sensor set's patterns, and the on-disk cache of compiled databases.

Compiling takes tens of milliseconds per sensor; loading a serialized database takes well under
one. So a database is cached under a key that hashes everything it depends on: the mode, the
patterns and their flags, the hyperscan library and binding versions and the machine. Entries
carry a SHA-256 of their payload; a corrupt, truncated or unloadable entry is compiled again and
overwritten, never fatal, and an unwritable cache directory only costs the next start its
compile. When a set fails to compile, each pattern is compiled alone to name every failing one.

Patterns are compiled with HS_FLAG_SOM_LEFTMOST so that a match reports where it starts; stream
databases track that start exactly for 2^16 bytes back (HS_MODE_SOM_HORIZON_SMALL), far more
than the bounded tail the scanner keeps. This module and the cache directory are the DLP
engine's only file I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import hyperscan

__all__ = [
    "CompileResult",
    "DatabaseCache",
    "Mode",
    "PatternCompileError",
    "PatternFailure",
    "compile_patterns",
    "database_key",
    "default_cache_dir",
    "hyperscan_version",
]

Mode = Literal["stream", "block"]
_MODES: dict[str, int] = {
    "stream": hyperscan.HS_MODE_STREAM | hyperscan.HS_MODE_SOM_HORIZON_SMALL,
    "block": hyperscan.HS_MODE_BLOCK,
}
PATTERN_FLAGS = hyperscan.HS_FLAG_SOM_LEFTMOST
_MAGIC = b"podwall-hyperscan 1\n"
_DIGEST_LEN = 64  # hex SHA-256


def hyperscan_version() -> str:
    """The hyperscan library version (with its build date) and the Python binding's version."""
    lib = getattr(getattr(hyperscan, "_hs_ext", None), "__version__", "unknown")
    return f"{lib} / python-hyperscan {getattr(hyperscan, '__version__', 'unknown')}"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/podwall/hyperscan, or ~/.cache/podwall/hyperscan (XDG_CACHE_HOME unset or relative)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "podwall" / "hyperscan"


def database_key(mode: Mode, expressions: Sequence[bytes]) -> str:
    """The cache key of a database: a hash of what the compiled bytes depend on."""
    material = {
        "format": _MAGIC.decode().strip(),
        "hyperscan": hyperscan_version(),
        "machine": platform.machine(),
        "mode": mode,
        "flags": PATTERN_FLAGS,
        "patterns": [e.hex() for e in expressions],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PatternFailure:
    """A pattern hyperscan refused: its index in the compiled list (-1: the set as a whole) and why."""

    index: int
    message: str


class PatternCompileError(Exception):
    """Hyperscan refused one or more patterns; `failures` names each."""

    def __init__(self, failures: list[PatternFailure]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"pattern {f.index}: {f.message}" for f in failures))


@dataclass(frozen=True, slots=True)
class CompileResult:
    """A ready database and how it was obtained: `cached` (loaded), `compiled` (and saved when a
    cache is given), `rebuilt` (a corrupt entry was replaced) or `uncached` (no cache in use)."""

    database: hyperscan.Database
    status: str
    seconds: float
    key: str


class DatabaseCache:
    """Serialized databases in one directory, one file per key; every failure degrades to a miss."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.save_error: str | None = None  # the last failure to write an entry, for diagnostics

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.hsdb"

    def read(self, key: str) -> bytes | None:
        """The payload stored under `key`; None when absent. Raises ValueError when the entry is corrupt."""
        try:
            blob = self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ValueError(f"unreadable: {exc}") from None
        head = len(_MAGIC) + _DIGEST_LEN + 1
        if not blob.startswith(_MAGIC) or len(blob) < head:
            raise ValueError("not a podwall hyperscan cache entry")
        digest, payload = blob[len(_MAGIC) : head - 1], blob[head:]
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch")
        return payload

    def write(self, key: str, payload: bytes) -> bool:
        """Store `payload` atomically (write a temporary file, then rename); False when it cannot."""
        blob = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".hsdb")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                os.replace(tmp, self.path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            self.save_error = f"{self.directory}: {exc.strerror or exc}"
            return False
        return True


def _ready(db: hyperscan.Database) -> hyperscan.Database:
    # A deserialized database has no scratch space, and scanning without one crashes the binding.
    db.scratch = hyperscan.Scratch(db)
    return db


def _build(mode: Mode, expressions: Sequence[bytes]) -> hyperscan.Database:
    db = hyperscan.Database(mode=_MODES[mode])
    n = len(expressions)
    db.compile(expressions=list(expressions), ids=list(range(n)), elements=n, flags=[PATTERN_FLAGS] * n)
    return db


def _failures(mode: Mode, expressions: Sequence[bytes], whole: str) -> list[PatternFailure]:
    # The binding drops the index of the failing expression: compile each alone to find them all.
    failures: list[PatternFailure] = []
    for i, expr in enumerate(expressions):
        try:
            _build(mode, [expr])
        except hyperscan.error as exc:
            failures.append(PatternFailure(i, _message(exc)))
    return failures or [PatternFailure(-1, whole)]


def _message(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.removeprefix("b'").removesuffix("'")


def compile_patterns(mode: Mode, expressions: Sequence[bytes], cache: DatabaseCache | None = None) -> CompileResult:
    """A database matching `expressions` (pattern ids are their indexes), from the cache when possible.

    Raises PatternCompileError naming every pattern hyperscan refuses."""
    if not expressions:
        raise ValueError("no pattern to compile")
    started = time.perf_counter()
    key = database_key(mode, expressions)
    status = "uncached"
    if cache is not None:
        status = "compiled"
        try:
            payload = cache.read(key)
            if payload is not None:
                db = _ready(hyperscan.loadb(payload, _MODES[mode]))
                return CompileResult(db, "cached", time.perf_counter() - started, key)
        except (ValueError, hyperscan.error):
            status = "rebuilt"
    try:
        db = _build(mode, expressions)
    except hyperscan.error as exc:
        raise PatternCompileError(_failures(mode, expressions, _message(exc))) from None
    if cache is not None:
        cache.write(key, hyperscan.dumpb(db))
    return CompileResult(db, status, time.perf_counter() - started, key)
