"""Shared test settings: the external corpus location and an isolated event store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PODWALL_CORPUS", REPO.parent / "shared" / "corpus"))


def corpus_dir(*parts: str) -> Path:
    """A folder of the external corpus, or a clear skip when the corpus is not there."""
    path = CORPUS.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"corpus folder {path} is absent (set PODWALL_CORPUS to the shared corpus)")
    return path


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own event store and data directory, so nothing is written outside temp."""
    base = tmp_path_factory.mktemp("podwall-home")
    monkeypatch.setenv("PODWALL_DB", str(base / "events.db"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))
