"""The TEM command set as the server parses it (SCPI rules, design.md §5) and as documented."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from insitem.drivers.tem.commands import BY_NAME, COMMANDS, SYSTEM_COMMANDS, build_parser, split_response

DOC = Path(__file__).resolve().parents[3] / "docs" / "tem-command-set.md"


class DictBackend:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {
            "beam_blanked": True,
            "high_tension_V": 300e3,
            "beam_current_A": 0.5e-9,
            "illuminated_diameter_m": 2e-6,
            "illuminated_area_m2": math.pi * 1e-12,
            "lens_mode": "TEM",
            "magnification": 15000.0,
            "defocus_m": 0.0,
            "slit_inserted": True,
            "slit_width_m": 200e-9,
            "slit_height_m": 1880e-9,
            "slit_centre_m": (0.0, 0.0),
            "slit_angle_rad": 0.0,
        }
        self.calls: list[tuple[str, Any]] = []
        self.broken: str | None = None

    def get(self, name: str) -> Any:
        if name == self.broken:
            raise OSError("COM call failed")
        return self.values[name]

    def set(self, name: str, value: Any) -> None:
        if name == self.broken:
            raise OSError("COM call failed")
        self.calls.append((name, value))
        self.values[name] = value

    def identity(self) -> str:
        return "insitem,TEST,1,2"


@pytest.fixture
def backend() -> DictBackend:
    return DictBackend()


@pytest.fixture
def parser(backend: DictBackend):  # noqa: ANN201
    return build_parser(backend)


@pytest.mark.parametrize("line", ["BEAM:BLAN 0", "beam:blank 0", ":BEAM:BLANK OFF", "Beam:Blan off"])
def test_headers_case_insensitive_short_and_long(parser, backend: DictBackend, line: str) -> None:  # noqa: ANN001
    assert parser.execute(line) is None
    assert backend.calls == [("beam_blanked", False)]
    assert parser.execute("SYST:ERR?") == '0,"No error"'


def test_between_short_and_long_form_is_undefined(parser, backend: DictBackend) -> None:  # noqa: ANN001
    assert parser.execute("BEAM:BLANKE 1") is None
    assert backend.calls == []
    assert parser.execute("SYST:ERR?").startswith("-113,")


def test_queries_answered_in_order_and_relative_path(parser) -> None:  # noqa: ANN001
    reply = parser.execute("SLIT:WIDT 3e-7;WIDT?;HEIG?;:LENS:MODE?;:BEAM:BLAN?;*IDN?")
    assert split_response(reply) == ["3e-07", "1.88e-06", "TEM", "1", "insitem,TEST,1,2"]


def test_error_queue_codes_and_order(parser, backend: DictBackend) -> None:  # noqa: ANN001
    parser.execute("NOPE:NOPE 1")  # -113 undefined header
    parser.execute("SLIT:WIDT 1")  # -222 out of range (max 1e-3 m)
    parser.execute('SLIT:WIDT "2e-7')  # -102 syntax error (unterminated string)
    parser.execute("SLIT:WIDT abc")  # -104 data type
    parser.execute("LENS:MODE SEM")  # -224 illegal value
    parser.execute("SLIT:CENT 1e-9")  # -109 missing parameter
    parser.execute("BEAM:HTEN 5")  # query-only -> -113
    assert parser.execute("SYST:ERR:COUN?") == "7"
    codes = [int(parser.execute("SYST:ERR?").split(",")[0]) for _ in range(8)]
    assert codes == [-113, -222, -102, -104, -224, -109, -113, 0]
    assert backend.calls == []


def test_failed_query_answers_nothing_but_queues_execution_error(parser, backend: DictBackend) -> None:  # noqa: ANN001
    backend.broken = "magnification"
    assert parser.execute("LENS:MAG?;:BEAM:BLAN?") == "1"
    code, msg = parser.execute("SYST:ERR?").split(",", 1)
    assert code == "-200" and "COM call failed" in msg


def test_rst_blanks_and_cls_clears(parser, backend: DictBackend) -> None:  # noqa: ANN001
    backend.values["beam_blanked"] = False
    parser.execute("BOGUS")
    parser.execute("*RST;*CLS")
    assert backend.values["beam_blanked"] is True
    assert parser.execute("SYST:ERR:NEXT?") == '0,"No error"'
    assert parser.execute("*OPC?") == "1"


def test_error_queue_overflow_reports_350(parser) -> None:  # noqa: ANN001
    for _ in range(40):
        parser.execute("BOGUS")
    codes = [int(parser.execute("SYST:ERR?").split(",")[0]) for _ in range(17)]
    assert codes[:15] == [-113] * 15 and codes[15] == -350 and codes[16] == 0


def test_pair_round_trip_and_formats() -> None:
    cmd = BY_NAME["slit_centre_m"]
    assert cmd.set_line((1e-7, -2.5e-8)) == "SLIT:CENT 1e-07,-2.5e-08"
    assert cmd.parse_reply(cmd.format_value((1e-7, -2.5e-8))) == (1e-7, -2.5e-8)
    assert BY_NAME["beam_blanked"].set_line(True) == "BEAM:BLAN 1"
    assert BY_NAME["slit_width_m"].query == "SLIT:WIDT?"
    with pytest.raises(ValueError, match="outside"):
        BY_NAME["slit_width_m"].set_line(2e-3)
    with pytest.raises(ValueError, match="query-only"):
        BY_NAME["high_tension_V"].set_line(1.0)


def test_every_float_reads_back_bit_exact() -> None:
    for cmd in COMMANDS:
        if cmd.kind == "float":
            for v in (cmd.lo, cmd.hi, 0.1 * cmd.hi, (cmd.lo + cmd.hi) / 3):
                assert cmd.parse_reply(cmd.format_value(v)) == v, (cmd.header, v)
                if cmd.settable:
                    assert cmd.parse_args([cmd.format_arg(v)]) == v, (cmd.header, v)


def test_split_response_keeps_quoted_semicolons() -> None:
    assert split_response('1;-200,"Execution error; a;b"') == ["1", '-200,"Execution error; a;b"']


def test_every_command_is_documented() -> None:
    text = DOC.read_text()
    for cmd in COMMANDS:
        assert f"`{cmd.header}" in text, cmd.header
    for header in SYSTEM_COMMANDS:
        assert f"`{header}" in text, header
    for code in ("-102", "-104", "-108", "-109", "-113", "-200", "-222", "-224", "-240", "-350", "-363"):
        assert code in text
