"""Shared pieces of the `podwall` commands: consoles, option types, error handling, capture reading
and event recording (used by podwall/cli/main.py, policy.py and enforce.py)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from podwall.analysis.runner import NamedFlow, read_flows
from podwall.core.errors import PodwallError, Problem
from podwall.core.events import Event
from podwall.inventory.loader import load_inventory
from podwall.inventory.model import Inventory
from podwall.inventory.resolver import Resolver

out = Console(soft_wrap=False)
err = Console(stderr=True, soft_wrap=True)
if not out.is_terminal:
    # Piped output is read by people in logs and CI; do not squeeze tables into 80 columns.
    out.width = 200

Captures = Annotated[list[Path], typer.Argument(help="pcap or pcapng files", show_default=False)]
InventoryOpt = Annotated[
    list[Path] | None,
    typer.Option("--inventory", "-i", help="inventory YAML or Kubernetes objects (file or directory); repeatable"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document instead of tables")]
JsonlOpt = Annotated[Path | None, typer.Option("--jsonl", help="also append the events to this JSON-lines file")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="event store: a SQLite path or SQLAlchemy URL (default $PODWALL_DB or ~/.local/share/podwall)",
    ),
]
NoStoreOpt = Annotated[bool, typer.Option("--no-store", help="do not write events to the store")]
AllowDamagedOpt = Annotated[
    bool, typer.Option("--allow-damaged", help="accept captures that end in damage (results cover the part read)")
]


class _Problems:
    """Collects capture problems; prints the first few as warnings and counts the rest."""

    def __init__(self, quiet: bool = False, shown: int = 10) -> None:
        self.items: list[Problem] = []
        self.quiet = quiet
        self.shown = shown

    def __call__(self, problem: Problem) -> None:
        self.items.append(problem)
        if not self.quiet and len(self.items) <= self.shown:
            err.print(f"[yellow]warning:[/] {problem}", highlight=False)

    def summary(self) -> None:
        if not self.quiet and len(self.items) > self.shown:
            err.print(f"[yellow]warning:[/] {len(self.items) - self.shown} more problem(s) not shown")

    @property
    def damaged(self) -> list[Problem]:
        """Problems that stopped a capture early (the reader locates them by byte offset); a
        malformed packet inside an intact capture is only skipped and does not count."""
        return [p for p in self.items if p.location.offset is not None]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _check_files(paths: Sequence[Path], what: str) -> None:
    for p in paths:
        if not p.exists():
            raise _fail(f"{p}: no such {what}")


def _load_inventory(paths: Sequence[Path] | None) -> Inventory | None:
    if not paths:
        return None
    _check_files(paths, "inventory file or directory")
    return load_inventory([str(p) for p in paths])


@contextmanager
def _progress(paths: Sequence[Path]) -> Iterator[Callable[[int], None]]:
    total = sum(p.stat().st_size for p in paths)
    show = err.is_terminal and total > 2 * 1024 * 1024
    with Progress(
        TextColumn("reading captures"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as progress:
        task = progress.add_task("read", total=total)
        yield lambda n: progress.advance(task, n)


def _flows(captures: Sequence[Path], resolver: Resolver, problems: _Problems, depth: str = "full") -> list[NamedFlow]:
    """Read and name the flows; `depth="detect"` when nothing needs more than each flow's first
    request and answer (no L7 rule, no inspector): the DPI then stops early, as nDPI does."""
    _check_files(captures, "capture file")
    with _progress(captures) as advance:
        flows = list(read_flows(captures, resolver, on_problem=problems, progress=advance, depth=depth))
    problems.summary()
    return flows


class _Recorder:
    """Where a command's events go: opened before the work (a bad --db fails at once, before
    captures are read), written after the results are printed."""

    def __init__(self, db: str | None, no_store: bool, jsonl: Path | None) -> None:
        # The store pulls in SQLAlchemy (~0.4 s): imported only by the commands that write events.
        from podwall.store.events import EventStore

        self.jsonl = jsonl
        self.store = None
        if not no_store:
            try:
                self.store = EventStore(db)
            except ValueError as exc:
                raise _fail(f"--db: {exc}") from None

    def write(self, events: Sequence[Event]) -> None:
        from podwall.store.sinks import JsonlSink

        try:
            if self.jsonl is not None:
                with JsonlSink(self.jsonl) as sink:
                    sink.write(events)
            if self.store is not None and events:
                self.store.add(events)
        finally:
            if self.store is not None:
                self.store.close()


def _dump(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _handles_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Report podwall's own errors (bad input) as a located message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except PodwallError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"{exc.filename or ''}: {exc.strerror or exc}") from None

    return wrapper
