"""What `insitem validate` says about a bad protocol (issue 16.4): every error, one line each, the
nearest known key for a misspelt one, and the fix when a count is given where a time belongs."""

from __future__ import annotations

from pathlib import Path

import pytest

from insitem.cli import main as cli

FULL_TEXT = (Path(__file__).parent / "full.yaml").read_text(encoding="utf-8")


def validate(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], Path]:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err.rstrip("\n").split("\n") if err else [], path


def test_every_error_in_a_file_is_reported_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (FULL_TEXT.replace("voltage_max: 3 V", "voltage_max: 1e308 V")
            .replace("length: 1880 nm", "length: 1 parsec")
            .replace("cycles: 2", "cycles: true")
            .replace("duration: 600 s", "duration: 1e12 s"))
    code, lines, path = validate(text, tmp_path, capsys)
    assert code == cli.EXIT_BAD_INPUT
    assert len(lines) == 4, lines
    for line, field in zip(lines, ["safety.voltage_max", "spectrometer.slit.length", "steps[0].cv.cycles", "steps[1].hold.duration"]):
        assert line.startswith(f"invalid: {path}:") and f": {field}: " in line, line
    assert "must be at most 210 V" in lines[0] and "must be at most 0.001 m" in lines[1]
    assert "true/false is not a number" in lines[2]


def test_a_misspelt_key_names_the_nearest_known_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, path = validate(FULL_TEXT.replace("sweep_rate:", "sweep_rte:"), tmp_path, capsys)
    assert code == cli.EXIT_BAD_INPUT
    # one line, at the misspelt key: not a second 'sweep_rate: required field missing'
    assert len(lines) == 1, lines
    line_no = int(lines[0].removeprefix(f"invalid: {path}:").split(":")[0])
    assert "sweep_rte" in FULL_TEXT.replace("sweep_rate:", "sweep_rte:").split("\n")[line_no - 1]
    assert "steps[0].cv.sweep_rte: unknown key: did you mean sweep_rate (a required field)?" in lines[0]


def test_cycles_where_a_time_is_expected_points_to_after_cycles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = validate(FULL_TEXT.replace("every: 2500 s", "every: 2 cycles"), tmp_path, capsys)
    assert code == cli.EXIT_BAD_INPUT and len(lines) == 1
    assert "steps[0].cv.exposures[0].every: '2 cycles' is a count of cycles, not a time" in lines[0]
    assert "after_cycles: [2, 4]" in lines[0]


def test_the_overlap_message_quotes_the_whole_exposure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = validate(FULL_TEXT.replace("every: 2500 s", "every: 20 s"), tmp_path, capsys)
    assert code == cli.EXIT_BAD_INPUT
    assert "previous li-k exposure (4 frames x 7.5 s = 30 s, each frame followed by 0.6 s dead time)" in lines[0], lines


def test_plan_prints_the_same_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = FULL_TEXT.replace("voltage_max: 3 V", "voltage_max: 1e308 V").replace("cycles: 2", "cycles: true")
    _, lines, path = validate(text, tmp_path, capsys)
    assert cli.main(["plan", str(path)]) == cli.EXIT_BAD_INPUT
    _, err = capsys.readouterr()
    assert [line.replace("insitem plan: ", "invalid: ") for line in err.rstrip("\n").split("\n")] == lines
