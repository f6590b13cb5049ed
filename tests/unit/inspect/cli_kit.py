"""Helpers the inspection CLI tests share (test_dlp_cli.py, test_waf_cli.py): a mounted sub-app, input files."""

from __future__ import annotations

from pathlib import Path

import typer


def mounted(sub_app: typer.Typer, name: str) -> typer.Typer:
    """A root app with `sub_app` under `name`, as podwall/cli/main.py mounts it."""
    app = typer.Typer()
    app.add_typer(sub_app, name=name)

    @app.callback()
    def _root() -> None: ...

    return app


def write_file(tmp_path: Path, name: str, data: str | bytes) -> str:
    """Write `data` (text or bytes) to `tmp_path/name`; returns the path as a command-line argument."""
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return str(path)
