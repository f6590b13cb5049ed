"""`podwall inspect http`: tables or JSON per file, exit 0 pass / 1 blocked / 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from podwall.cli.inspect import inspect_app
from podwall.inspect.waf.crs import DEFAULT_RULES_DIR
from tests.unit.inspect.cli_kit import mounted, write_file

pytestmark = pytest.mark.skipif(not DEFAULT_RULES_DIR.is_dir(), reason="Debian's modsecurity-crs is not installed")

runner = CliRunner()
APP = mounted(inspect_app, "inspect")
CLEAN = b"GET /products?page=2 HTTP/1.1\r\nHost: shop\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n"
SQLI = b"GET /item?id=1'%20OR%201=1-- HTTP/1.1\r\nHost: shop\r\nUser-Agent: Mozilla/5.0\r\n\r\n"


def test_json_gives_one_object_per_file_and_exit_1_when_blocked(tmp_path: Path) -> None:
    """--json prints file, matches, anomaly_score and verdict per file; a blocked one makes the exit 1."""
    files = [write_file(tmp_path, "ok.http", CLEAN), write_file(tmp_path, "sqli.http", SQLI)]
    result = runner.invoke(APP, ["inspect", "http", *files, "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert [d["file"] for d in doc] == files
    assert [d["verdict"] for d in doc] == ["pass", "block"]
    assert doc[0]["anomaly_score"] == 0 and doc[0]["matches"] == []
    ids = {m["id"] for m in doc[1]["matches"]}
    assert any(i.startswith("942") for i in ids) and "waf.podwall.sqli.libinjection" in ids
    assert all({"id", "message", "category", "location"} <= set(m) for m in doc[1]["matches"])


def test_all_pass_exits_0_with_a_table(tmp_path: Path) -> None:
    """Clean traffic exits 0 and the text output is a table naming the file."""
    result = runner.invoke(APP, ["inspect", "http", write_file(tmp_path, "ok.http", CLEAN)])
    assert result.exit_code == 0, result.output
    assert "ok.http" in result.stdout and "0 of 1 transaction(s) blocked" in result.stdout


def test_threshold_option_changes_the_verdict(tmp_path: Path) -> None:
    """A threshold above the score lets the attack pass (exit 0); paranoia is accepted."""
    path = write_file(tmp_path, "sqli.http", SQLI)
    result = runner.invoke(APP, ["inspect", "http", path, "--threshold", "1000", "--paranoia", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["verdict"] == "pass"


@pytest.mark.parametrize(("name", "data", "needle"), [
    pytest.param("broken.http", b"NOT HTTP\r\n\r\n", "request line", id="unparsable"),
    pytest.param("missing.http", None, "No such file", id="unreadable"),
])  # fmt: skip
def test_bad_input_exits_2_with_file_and_reason(tmp_path: Path, name: str, data: bytes | None, needle: str) -> None:
    """An unreadable or unparsable file gives exit 2 and a message with the file and what is wrong."""
    path = write_file(tmp_path, name, data) if data is not None else str(tmp_path / name)
    result = runner.invoke(APP, ["inspect", "http", write_file(tmp_path, "ok.http", CLEAN), path])
    assert result.exit_code == 2
    assert name in result.output and needle in result.output


def test_bad_paranoia_exits_2(tmp_path: Path) -> None:
    """A paranoia level outside 1-4 is refused as bad input."""
    result = runner.invoke(APP, ["inspect", "http", write_file(tmp_path, "ok.http", CLEAN), "--paranoia", "5"])
    assert result.exit_code == 2


def test_sensors_option_adds_sensor_matches(tmp_path: Path) -> None:
    """--sensors loads custom sensors whose hits appear with waf.sensor ids and block."""
    sensors = tmp_path / "s.yaml"
    sensors.write_text(
        "name: shop\nrules:\n  - name: products\n    patterns:\n"
        "      - {key: pattern, op: regex, value: '/products', context: url}\n"
    )
    path = write_file(tmp_path, "ok.http", CLEAN)
    result = runner.invoke(APP, ["inspect", "http", path, "--sensors", str(sensors), "--json"])
    assert result.exit_code == 1, result.output
    assert [m["id"] for m in json.loads(result.stdout)[0]["matches"]] == ["waf.sensor.shop/products"]


def test_main_app_registers_inspect() -> None:
    """podwall's main command lists the `inspect` family."""
    main = pytest.importorskip("podwall.cli.main")
    names = {g.name for g in main.app.registered_groups}
    assert "inspect" in names


def test_no_narrowing_counts_the_raw_crs_334_match(tmp_path: Path) -> None:
    """A prose `union` that podwall's narrowing drops blocks again with --no-narrowing, and JSON lists the drop."""
    prose = b"GET /search?q=the%20%22Union%20Jack%22%20flag HTTP/1.1\r\nHost: shop\r\nUser-Agent: Mozilla/5.0\r\n"
    path = write_file(tmp_path, "prose.http", prose + b"Accept: */*\r\n\r\n")
    narrowed = runner.invoke(APP, ["inspect", "http", path, "--json"])
    raw = runner.invoke(APP, ["inspect", "http", path, "--json", "--no-narrowing"])
    assert narrowed.exit_code == 0 and raw.exit_code == 1, (narrowed.output, raw.output)
    assert json.loads(narrowed.stdout)[0]["narrowed"] == ["942190"]
    assert "942190" in {m["id"] for m in json.loads(raw.stdout)[0]["matches"]}
