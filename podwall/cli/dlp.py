"""`podwall dlp`: scan files (or standard input) with the DLP sensors; list the sensors.

Exit codes: 0 no match, 1 matches found, 2 bad input (missing file, bad sensors file, unknown
sensor). Matched values are always printed masked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
import yaml
from rich.table import Table
from rich.text import Text

from podwall.cli.common import _fail, _handles_errors, err, out
from podwall.inspect.dlp.engine import DlpEngine, sensor_catalog
from podwall.inspect.dlp.loader import load_sensors
from podwall.inspect.dlp.model import Sensor

dlp_app = typer.Typer(
    help="Data-loss prevention: scan files for card numbers, US SSNs and custom sensors.",
    no_args_is_help=True,
)

CHUNK = 1024 * 1024  # files are fed to the stream scanner in pieces: memory stays flat on large files

SensorsFileOpt = Annotated[
    Path | None, typer.Option("--sensors", help="YAML file of custom sensors (NeuVector shape), added to the built-ins")
]
SensorOpt = Annotated[
    list[str] | None,
    typer.Option("--sensor", help="scan with this sensor only (repeatable; default: every sensor)"),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="compiled-sensor cache (default $XDG_CACHE_HOME/podwall/hyperscan)"),
]


def _sensors(sensors_file: Path | None, names: Sequence[str] | None) -> list[Sensor]:
    custom: list[Sensor] = []
    if sensors_file is not None:
        if not sensors_file.is_file():
            raise _fail(f"{sensors_file}: no such sensors file")
        custom = load_sensors(sensors_file)
    catalog = sensor_catalog(custom, str(sensors_file) if sensors_file else None)
    if not names:
        return list(catalog.values())
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise _fail(f"--sensor: unknown sensor(s) {', '.join(unknown)}; known: {', '.join(catalog)}")
    return [catalog[n] for n in dict.fromkeys(names)]


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    if str(path) == "-":
        yield typer.get_binary_stream("stdin")
    else:
        with path.open("rb") as fh:
            yield fh


def _check_inputs(files: Sequence[Path]) -> None:
    if sum(1 for f in files if str(f) == "-") > 1:
        raise _fail("standard input (-) can be scanned only once")
    for f in files:
        if str(f) == "-":
            continue
        if not f.exists():
            raise _fail(f"{f}: no such file")
        if f.is_dir():
            raise _fail(f"{f}: is a directory (give the files inside it)")


@dlp_app.command("scan")
@_handles_errors
def dlp_scan(
    files: Annotated[list[Path], typer.Argument(help="files to scan; - for standard input", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per match per line")] = False,
    sensor: SensorOpt = None,
    sensors_file: SensorsFileOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Scan files for sensitive data; exit 1 when something matched (values are shown masked)."""
    _check_inputs(files)
    chosen = _sensors(sensors_file, sensor)
    engine = DlpEngine(chosen, cache_dir=cache_dir, source=str(sensors_file) if sensors_file else None)
    skipped = sorted({s.name for s in chosen for r in s.rules if not r.streamed})
    if skipped:
        note = "rules with a url, header or body context or a '!regex' pattern apply to HTTP messages only"
        err.print(f"[yellow]warning:[/] {note}: not used on files (sensor(s) {', '.join(skipped)})", highlight=False)
    if not engine.streams_bytes:
        raise _fail("the chosen sensors have no rule that applies to files")
    rows: list[dict[str, Any]] = []
    matched_files = 0
    for path in files:
        name = str(path)
        before = len(rows)
        with _open(path) as fh:
            stream = engine.stream(track_lines=True)
            while chunk := fh.read(CHUNK):
                found = stream.feed(chunk)
                rows += _records(name, found, as_json)
            rows += _records(name, stream.close(), as_json)
        matched_files += len(rows) > before
    if not as_json:
        table = Table(title="DLP matches")
        for col in ("file", "line", "offset", "sensor", "rule", "match"):
            table.add_column(col)
        for r in rows:
            table.add_row(*(Text(str(r[c])) for c in ("file", "line", "offset", "sensor", "rule", "match")))
        if rows:
            out.print(table)
        out.print(f"{len(rows)} match(es) in {matched_files} of {len(files)} file(s)", highlight=False)
    if rows:
        raise typer.Exit(1)


def _records(name: str, found: Sequence[Any], as_json: bool) -> list[dict[str, Any]]:
    records = [
        {
            "file": name,
            "line": f.detail.get("line"),
            "offset": f.detail.get("offset"),
            "sensor": f.detail.get("sensor"),
            "rule": f.detail.get("rule"),
            "id": f.id,
            "match": f.match,
        }
        for f in found
    ]
    if as_json:
        # Printed as found: a pipe sees matches of a large file before the scan ends.
        for r in records:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
    return records


@dlp_app.command("sensors")
@_handles_errors
def dlp_sensors(sensors_file: SensorsFileOpt = None, sensor: SensorOpt = None) -> None:
    """Print the sensors' definitions (the built-ins, and those of --sensors) as YAML."""
    chosen = _sensors(sensors_file, sensor)
    docs = [s.model_dump(mode="json", exclude_defaults=False) for s in chosen]
    sys.stdout.write(yaml.safe_dump({"sensors": docs}, sort_keys=False, width=1000))
