"""SCPI codec and server-side parser (IEEE 488.2 / SCPI-1999 parsing rules, design.md §5)."""

from __future__ import annotations

import pytest

from insitem.drivers.scpi import (
    ScpiParser,
    arg_float,
    format_number,
    parse_error,
    parse_floats,
    split_arguments,
)


@pytest.fixture
def parser() -> ScpiParser:
    state: dict[str, object] = {"v": 0.0, "args": []}
    p = ScpiParser()
    p.add(":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", lambda a: state.__setitem__("v", arg_float(a[0], -210, 210)), lambda a: format_number(state["v"]))  # type: ignore[arg-type]
    p.add(":SOURce[1]:VOLTage:RANGe", lambda a: None, lambda a: "20")
    p.add(":CALCulate3:FORMat", lambda a: None, lambda a: "MEAN")
    p.add(":SYSTem:ERRor[:NEXT]", None, lambda a: '{},"{}"'.format(*p.pop_error()))
    p.add(":TRACe:DATA", None, lambda a: "|".join(a), (0, 9))
    p.add(":TRACe:MAKE", lambda a: state.__setitem__("args", a), None, (2, 2))
    p.add("*IDN", None, lambda a: "X,Y,0,1")
    p.state = state  # type: ignore[attr-defined]
    return p


@pytest.mark.parametrize(
    "header",
    [":SOUR:VOLT", ":SOURCE:VOLTAGE:LEVEL", ":source1:voltage:level:immediate:amplitude", "SOUR:VOLT:AMPL", ":sOuR:vOlT:iMm"],
)
def test_long_short_forms_and_optional_nodes_reach_one_command(parser: ScpiParser, header: str) -> None:
    assert parser.execute(f"{header} 1.25") is None
    assert parser.execute(f"{header}?") == "1.25"
    assert not parser.errors


@pytest.mark.parametrize("header", [":SOURC:VOLT", ":SOU:VOLT", ":SOUR2:VOLT", ":SOUR:VOLT:LEV:LEV", ":CALC:FORM", ":CALC2:FORM"])
def test_neither_short_nor_long_form_is_undefined_header(parser: ScpiParser, header: str) -> None:
    parser.execute(f"{header} 1")
    assert parser.pop_error()[0] == -113


def test_required_numeric_suffix(parser: ScpiParser) -> None:
    assert parser.execute(":CALC3:FORM?") == "MEAN"
    assert parser.execute(":CALCULATE3:FORMAT?") == "MEAN"


def test_semicolons_queries_answered_in_order_and_relative_path(parser: ScpiParser) -> None:
    # "VOLT:RANG?" after ":SOUR:VOLT 2" continues from :SOUR (SCPI-1999 §6.2.4); *IDN? leaves the path alone
    assert parser.execute(":SOUR:VOLT 2;*IDN?;VOLT:RANG?;:SOUR:VOLT?") == "X,Y,0,1;20;2"
    assert not parser.errors


def test_quoted_arguments_keep_commas_and_semicolons(parser: ScpiParser) -> None:
    parser.execute(':TRAC:MAKE "a,b;c", 10')
    assert parser.state["args"] == ['"a,b;c"', "10"]  # type: ignore[attr-defined]
    assert parser.execute(':TRAC:DATA? 1, 2, "buf", SOUR') == '1|2|"buf"|SOUR'
    assert split_arguments("'it''s', 2") == ["'it''s'", "2"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (":SOUR:VOLT 300", -222),  # Data out of range
        (":SOUR:VOLT abc", -104),  # Data type error
        (":SOUR:VOLT", -109),  # Missing parameter
        (":TRAC:MAKE 1,2,3", -108),  # Parameter not allowed
        ("*IDN? x", -108),  # common queries take no parameters
        (':TRAC:MAKE "open, 2', -102),  # Syntax error: unterminated string
        (":SOUR::VOLT 1", -102),  # Syntax error: empty node
        (":SOUR:VOLT 1,,2", -102),
        (":NOPE:NODE?", -113),  # Undefined header
        ("*FOO", -113),
    ],
)
def test_errors_are_queued_not_raised(parser: ScpiParser, message: str, code: int) -> None:
    assert parser.execute(message) is None
    assert parser.pop_error()[0] == code
    assert parser.pop_error() == (0, "No error")


def test_a_bad_unit_does_not_stop_the_rest_of_the_line(parser: ScpiParser) -> None:
    assert parser.execute(":BAD;:SOUR:VOLT 1;:SOUR:VOLT?") == "1"
    assert parser.execute(":SYST:ERR?") .startswith("-113,")


def test_error_queue_overflow_replaces_last_entry_with_minus_350(parser: ScpiParser) -> None:
    for _ in range(15):
        parser.execute(":NOPE")
    codes = [parser.pop_error()[0] for _ in range(11)]
    assert codes == [-113] * 9 + [-350, 0]


def test_client_codec() -> None:
    assert parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert parse_error('-222,"Data out of range;1;2024/01/01 10:00:00.000"') == (-222, "Data out of range")
    assert parse_error('+0,"No error"') == (0, "No error")
    with pytest.raises(ValueError):
        parse_error("garbage")
    assert parse_floats("+1.0E+00,-2.5E-06", expected=2) == [1.0, -2.5e-6]
    with pytest.raises(ValueError):
        parse_floats("+1.0E+00,abc")
    assert [format_number(x) for x in (20.0, 1e-3, 1.5e-7, -0.25)] == ["20", "0.001", "1.5e-07", "-0.25"]
    assert float(format_number(1.234567891)) == 1.234567891  # 10 significant digits survive
    with pytest.raises(ValueError):
        format_number(float("nan"))
