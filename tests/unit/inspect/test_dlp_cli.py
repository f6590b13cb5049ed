"""`podwall dlp scan` and `sensors`: JSON lines and tables, stdin, exit 0 clean / 1 matches / 2 bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from podwall.cli.dlp import dlp_app
from tests.unit.inspect.cli_kit import mounted, write_file

runner = CliRunner()
APP = mounted(dlp_app, "dlp")
CARD = "4111 1111 1111 1111"
SENSORS_YAML = """\
sensors:
- name: sensor.keys
  comment: Cloud keys
  rules:
  - name: aws
    patterns:
    - {key: pattern, op: regex, value: 'AKIA[0-9A-Z]{16}', context: packet}
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled sensors go to a temporary cache, never to the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_json_prints_one_masked_object_per_match_and_exits_1(tmp_path: Path) -> None:
    """--json gives one line per match with file, line, sensor, rule and the masked value; matches make exit 1."""
    leak = write_file(tmp_path, "leak.txt", f"hello\ncard {CARD}\n\nssn 123-45-6789 and 4111111111111111\n")
    clean = write_file(tmp_path, "clean.txt", "nothing here 1234\n")
    res = runner.invoke(APP, ["dlp", "scan", "--json", leak, clean])
    assert res.exit_code == 1, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["file"], r["line"], r["sensor"], r["rule"], r["match"]) for r in rows] == [
        (leak, 2, "sensor.creditcard", "visa", "4111 **** **** 1111"),
        (leak, 4, "sensor.ssn", "ssn", "***-**-6789"),
        (leak, 4, "sensor.creditcard", "visa", "4111********1111"),
    ]
    assert CARD not in res.stdout and "123-45-6789" not in res.stdout


def test_clean_files_exit_0_with_a_summary(tmp_path: Path) -> None:
    """Without matches the table is skipped, the summary says 0 and the exit code is 0."""
    clean = write_file(tmp_path, "clean.txt", "invoice INV-2021-361993, call 942-568-3249\n")
    res = runner.invoke(APP, ["dlp", "scan", clean])
    assert res.exit_code == 0, res.output
    assert "0 match(es) in 0 of 1 file(s)" in res.stdout


def test_text_output_is_a_table_of_masked_matches(tmp_path: Path) -> None:
    """The default output is a table naming file, line, sensor and rule, with the value masked."""
    leak = write_file(tmp_path, "leak.txt", f"x\n{CARD}\n")
    res = runner.invoke(APP, ["dlp", "scan", leak])
    assert res.exit_code == 1
    assert "4111 **** **** 1111" in res.stdout and "sensor.creditcard" in res.stdout and CARD not in res.stdout
    assert "1 match(es) in 1 of 1 file(s)" in res.stdout


def test_stdin_is_scanned_for_a_dash(tmp_path: Path) -> None:
    """`-` reads standard input; its matches are reported with file `-`."""
    res = runner.invoke(APP, ["dlp", "scan", "--json", "-"], input=f"ssn: 219-44-1234\n{CARD}")
    assert res.exit_code == 1, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["file"], r["line"], r["rule"]) for r in rows] == [("-", 1, "ssn"), ("-", 2, "visa")]


def test_sensor_option_limits_the_scan(tmp_path: Path) -> None:
    """--sensor sensor.ssn ignores card numbers."""
    leak = write_file(tmp_path, "leak.txt", f"{CARD} 123-45-6789\n")
    res = runner.invoke(APP, ["dlp", "scan", "--json", "--sensor", "sensor.ssn", leak])
    assert [json.loads(line)["sensor"] for line in res.stdout.splitlines()] == ["sensor.ssn"]


def test_custom_sensors_file_adds_its_sensors(tmp_path: Path) -> None:
    """--sensors FILE adds custom sensors next to the built-ins."""
    sensors = write_file(tmp_path, "sensors.yaml", SENSORS_YAML)
    leak = write_file(tmp_path, "leak.txt", f"key AKIA0123456789ABCDEF\n{CARD}\n")
    res = runner.invoke(APP, ["dlp", "scan", "--json", "--sensors", sensors, leak])
    assert res.exit_code == 1, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["sensor"], r["rule"], r["match"]) for r in rows] == [
        ("sensor.keys", "aws", "AKIA************CDEF"),
        ("sensor.creditcard", "visa", "4111 **** **** 1111"),
    ]


BAD_INPUT = [
    ("missing-file", lambda p: ["dlp", "scan", str(p / "absent.txt")], "absent.txt: no such file"),
    ("directory", lambda p: ["dlp", "scan", str(p)], "is a directory"),
    ("unknown-sensor", lambda p: ["dlp", "scan", "--sensor", "sensor.iban", write_file(p, "a.txt", "x")],
     "unknown sensor(s) sensor.iban"),
    ("missing-sensors-file", lambda p: ["dlp", "scan", "--sensors", str(p / "s.yaml"), write_file(p, "a.txt", "x")],
     "no such sensors file"),
    ("bad-sensors-file", lambda p: ["dlp", "scan", "--sensors", write_file(p, "s.yaml", "name: x\nrules: []\n"),
                                    write_file(p, "a.txt", "x")], "x: rules: must not be empty"),
    ("bad-regex", lambda p: ["dlp", "scan", "--sensors",
                             write_file(p, "s.yaml", "name: x\nrules: [{name: r, patterns: [{value: '(?<=a)b'}]}]\n"),
                             write_file(p, "a.txt", "x")], "Zero-width assertions"),
    ("stdin-twice", lambda p: ["dlp", "scan", "-", "-"], "only once"),
]  # fmt: skip


@pytest.mark.parametrize("argv,message", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, argv: Callable[[Path], list[str]], message: str
) -> None:
    """Missing files, unknown sensors and bad sensor files exit 2 and say what is wrong."""
    res = runner.invoke(APP, argv(tmp_path))
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.stderr.split())
    assert res.stdout == ""


def test_sensors_command_prints_the_definitions_as_yaml(tmp_path: Path) -> None:
    """`dlp sensors` prints loadable YAML of the built-ins and the custom sensors."""
    from podwall.inspect.dlp import parse_sensors

    res = runner.invoke(APP, ["dlp", "sensors", "--sensors", write_file(tmp_path, "s.yaml", SENSORS_YAML)])
    assert res.exit_code == 0, res.output
    assert [s.name for s in parse_sensors(res.stdout)] == ["sensor.creditcard", "sensor.ssn", "sensor.keys"]


def test_the_podwall_command_has_the_dlp_group() -> None:
    """podwall/cli/main.py mounts `dlp` with its `scan` command."""
    from podwall.cli.main import app

    res = runner.invoke(app, ["dlp", "scan", "--help"])
    assert res.exit_code == 0
    assert "--sensors" in res.stdout
