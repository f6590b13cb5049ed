"""Conformance of the built-in DLP sensors on the shared corpus: precision and recall of each sensor.

`dlp/` holds synthetic values, one per line, labelled by file name: Luhn-valid cards of every
brand (plain and grouped), same-shaped numbers with a wrong check digit plus order numbers and
phone numbers, valid SSNs, and SSNs each with exactly one invalid part. A line counts for a sensor
when it yields a finding of that sensor covering the whole value; the other sensor's files are
negatives too. The files are also scanned whole as TCP-sized segments (1460 bytes), where the
count of findings must equal the count of positive lines. The table is printed (pytest -s).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from podwall.inspect.dlp import DlpEngine, builtin_sensors
from tests.conftest import corpus_dir

GOAL = 0.99
SEGMENT = 1460
POSITIVES = {"sensor.creditcard": "cards.txt", "sensor.ssn": "ssn.txt"}
FILES = ("cards.txt", "not_cards.txt", "ssn.txt", "not_ssn.txt")


@dataclass
class Score:
    sensor: str
    tp: int = 0
    fn: int = 0
    fp: int = 0
    negatives: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DlpEngine:
    return DlpEngine(builtin_sensors(), cache_dir=tmp_path_factory.mktemp("hs"))


def _lines(folder: Path, name: str) -> list[str]:
    return [line.strip() for line in (folder / name).read_text().splitlines() if line.strip()]


def _score(engine: DlpEngine, folder: Path) -> tuple[dict[str, Score], Counter[str], list[str]]:
    scores = {s: Score(s) for s in POSITIVES}
    rules: Counter[str] = Counter()
    misses: list[str] = []
    for name in FILES:
        for value in _lines(folder, name):
            found = engine.scan(value.encode())
            for sensor, score in scores.items():
                whole = [f for f in found if f.detail["sensor"] == sensor and f.detail["length"] == len(value)]
                hit = any(f.detail["sensor"] == sensor for f in found)
                if POSITIVES[sensor] == name:
                    score.tp += bool(whole)
                    score.fn += not whole
                    rules.update(f.detail["rule"] for f in whole)
                    if not whole:
                        misses.append(f"{sensor} missed a value of {name} (line ending {value[-4:]})")
                else:
                    score.negatives += 1
                    score.fp += hit
                    if hit:
                        misses.append(f"{sensor} flagged a value of {name} (line ending {value[-4:]})")
    return scores, rules, misses


def _table(scores: dict[str, Score], rules: Counter[str]) -> str:
    lines = [
        f"{'sensor':<20}{'TP':>6}{'FN':>6}{'FP':>6}{'negatives':>11}{'precision':>11}{'recall':>9}",
        *(
            f"{s.sensor:<20}{s.tp:>6}{s.fn:>6}{s.fp:>6}{s.negatives:>11}{s.precision:>11.2%}{s.recall:>9.2%}"
            for s in scores.values()
        ),
        "findings by rule: " + ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items())),
    ]
    return "\n".join(lines)


def test_precision_and_recall_of_each_sensor(engine: DlpEngine) -> None:
    """Each built-in sensor finds at least 99 % of its values and flags under 1 % wrongly (table printed)."""
    folder = corpus_dir("dlp")
    scores, rules, misses = _score(engine, folder)
    report = _table(scores, rules)
    print(f"\nDLP built-in sensors on the corpus (goal: precision and recall >= {GOAL:.0%})\n{report}")
    for line in misses[:20]:
        print("  " + line)
    for score in scores.values():
        assert score.tp + score.fn == len(_lines(folder, POSITIVES[score.sensor]))
        assert score.precision >= GOAL and score.recall >= GOAL, f"{score.sensor}\n{report}"


@pytest.mark.parametrize("name", FILES)
def test_whole_files_streamed_in_segments_give_one_finding_per_positive_line(engine: DlpEngine, name: str) -> None:
    """Each corpus file fed as 1460-byte segments yields one finding per positive line, on that line, none otherwise."""
    folder = corpus_dir("dlp")
    data = (folder / name).read_bytes()
    stream = engine.stream(track_lines=True)
    found = []
    for at in range(0, len(data), SEGMENT):
        found += stream.feed(data[at : at + SEGMENT])
    found += stream.close()
    sensor = next((s for s, f in POSITIVES.items() if f == name), None)
    lines = data.decode().splitlines()
    expected = [i + 1 for i, line in enumerate(lines) if line.strip()] if sensor else []
    assert [f.detail["line"] for f in found] == expected
    assert all(f.detail["sensor"] == sensor for f in found)
