"""The compiled-sensor cache: a second engine loads from it, corrupt entries are rebuilt, failures are never fatal."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from podwall.inspect.dlp import DlpEngine, Sensor, builtin_sensors
from podwall.inspect.dlp.compile import DatabaseCache, default_cache_dir

SAMPLE = b"4111 1111 1111 1111 / 123-45-6789"


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.hsdb"))


def _ids(engine: DlpEngine) -> list[str]:
    return [f.id for f in engine.scan(SAMPLE)]


def test_second_engine_loads_the_compiled_database_from_the_cache(tmp_path: Path) -> None:
    """The first engine compiles and stores one entry; the next one loads it and finds the same values."""
    first = DlpEngine(builtin_sensors(), cache_dir=tmp_path)
    assert first.compiled["stream"].status == "compiled"
    assert len(_entries(tmp_path)) == 1
    second = DlpEngine(builtin_sensors(), cache_dir=tmp_path)
    assert second.compiled["stream"].status == "cached"
    assert _ids(second) == _ids(first) == ["dlp.sensor.creditcard/visa", "dlp.sensor.ssn/ssn"]


def _flip_payload(p: Path) -> None:
    blob = bytearray(p.read_bytes())
    blob[-10] ^= 0xFF
    p.write_bytes(bytes(blob))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:50])


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00garbage" * 10)


def _valid_checksum_bad_database(p: Path) -> None:
    import hashlib

    payload = b"not a hyperscan database" * 4
    p.write_bytes(b"podwall-hyperscan 1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


CORRUPTIONS: list[tuple[str, Callable[[Path], None]]] = [
    ("flipped-byte", _flip_payload),
    ("truncated", _truncate),
    ("garbage", _garbage),
    ("checksum-ok-but-not-a-database", _valid_checksum_bad_database),
    ("empty", _empty),
]


@pytest.mark.parametrize("corrupt", [c for _, c in CORRUPTIONS], ids=[i for i, _ in CORRUPTIONS])
def test_a_corrupt_entry_is_rebuilt_and_replaced(tmp_path: Path, corrupt: Callable[[Path], None]) -> None:
    """A damaged cache entry is compiled again (status `rebuilt`), overwritten, and loads fine afterwards."""
    DlpEngine(builtin_sensors(), cache_dir=tmp_path)
    (entry,) = _entries(tmp_path)
    corrupt(entry)
    rebuilt = DlpEngine(builtin_sensors(), cache_dir=tmp_path)
    assert rebuilt.compiled["stream"].status == "rebuilt"
    assert _ids(rebuilt) == ["dlp.sensor.creditcard/visa", "dlp.sensor.ssn/ssn"]
    assert DlpEngine(builtin_sensors(), cache_dir=tmp_path).compiled["stream"].status == "cached"


def test_an_unwritable_cache_directory_only_costs_the_compile(tmp_path: Path) -> None:
    """When the cache directory cannot be created, every engine compiles and works; the failure is recorded."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    engine = DlpEngine(builtin_sensors(), cache_dir=blocker / "hs")
    assert engine.compiled["stream"].status == "compiled"
    assert engine.cache is not None and engine.cache.save_error is not None
    assert _ids(engine) == ["dlp.sensor.creditcard/visa", "dlp.sensor.ssn/ssn"]


def test_without_cache_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cache=False compiles in memory and writes no file, not even to the default directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    engine = DlpEngine(builtin_sensors(), cache=False)
    assert engine.compiled["stream"].status == "uncached"
    assert list(tmp_path.rglob("*.hsdb")) == []


def test_each_sensor_set_has_its_own_entry(tmp_path: Path) -> None:
    """The key hashes the patterns: another sensor set gets another entry instead of a wrong database."""
    cards, ssn = builtin_sensors()
    DlpEngine([cards], cache_dir=tmp_path)
    only_ssn = DlpEngine([ssn], cache_dir=tmp_path)
    assert only_ssn.compiled["stream"].status == "compiled"
    assert len(_entries(tmp_path)) == 2
    assert _ids(only_ssn) == ["dlp.sensor.ssn/ssn"]


def test_the_default_directory_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a cache_dir the cache lives in $XDG_CACHE_HOME/podwall/hyperscan."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "podwall" / "hyperscan"
    DlpEngine(builtin_sensors())
    assert len(_entries(tmp_path / "podwall" / "hyperscan")) == 1


def test_the_home_cache_is_used_when_xdg_cache_home_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With XDG_CACHE_HOME empty or relative (which the XDG spec says to ignore) the cache goes under ~/.cache."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for value in ("", "relative/dir"):
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert default_cache_dir() == tmp_path / ".cache" / "podwall" / "hyperscan"


def test_cache_writes_are_atomic_and_leave_no_temporary_file(tmp_path: Path) -> None:
    """An entry is written to a temporary file then renamed: no `.tmp-` file is left behind."""
    cache = DatabaseCache(tmp_path)
    assert cache.write("k", b"payload")
    assert cache.read("k") == b"payload"
    assert [p.name for p in tmp_path.iterdir()] == ["k.hsdb"]
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))


def test_message_rules_are_cached_too(tmp_path: Path) -> None:
    """A sensor with url-context rules stores its block database as its own entry, reused next time."""
    sensor = Sensor.model_validate(
        {"name": "sensor.url", "rules": [{"name": "r", "patterns": [{"value": "/admin", "context": "url"}]}]}
    )
    assert DlpEngine([sensor], cache_dir=tmp_path).compiled["message"].status == "compiled"
    assert DlpEngine([sensor], cache_dir=tmp_path).compiled["message"].status == "cached"
