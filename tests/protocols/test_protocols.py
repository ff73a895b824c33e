"""Protocol schema, units and the shipped library: what is accepted and what is rejected, and how."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from insitem.drivers.errors import ProtocolError
from insitem.protocols.loader import library_names, load, load_and_plan
from insitem.protocols.plan import make_plan
from insitem.protocols.units import DOSE_RATE, SWEEP_RATE, TIME, parse_quantity

LIB = Path(load.__code__.co_filename).parent / "library"


def shipped(name: str) -> dict:
    return yaml.safe_load((LIB / f"{name}.yaml").read_text())


def mutate(name: str, path: list, value) -> str:
    data = shipped(name)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


_DELETE = object()


SHIPPED = ["ex-situ-lasgtp", "in-situ-lasgtp", "loopback-hold", "micro-battery-lagp", "si-nanoparticle-hold"]


def test_library_has_the_four_published_experiments_and_the_loopback_smoke_test() -> None:
    assert library_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_protocol_validates_and_plans(name: str) -> None:
    plan = make_plan(load(name))
    assert plan.duration_s > 0 and plan.exposures


def test_units_are_parsed_into_si() -> None:
    assert parse_quantity("40 mV/min", SWEEP_RATE) == pytest.approx(40e-3 / 60)
    assert parse_quantity("0.5 min", TIME) == pytest.approx(30.0)
    # 1 e/Å²/s = 1e20 e/m²/s: `e` counts electrons, it is not the elementary charge
    assert parse_quantity("10 e/Å^2/s", DOSE_RATE) == pytest.approx(1e21)


def test_ex_situ_numbers_match_the_paper() -> None:
    p = load("ex-situ-lasgtp")
    cv = p.steps[0].cv
    assert cv.sweep_rate == pytest.approx(6.667e-4, rel=1e-3)  # 40 mV/min [Y14]
    assert cv.cycles == 50
    w = {w.name: w for w in p.spectrometer.windows}
    assert w["li-k"].exposure == 30 and w["ti-l-o-k"].exposure == 30
    assert w["li-k"].dispersion == pytest.approx(0.1)
    assert p.spectrometer.slit.length == pytest.approx(1880e-9)
    plan = make_plan(p)
    assert plan.frame_shape("li-k") == (330, 2048)  # 330 position pixels over 1880 nm [Y14]


def _expect_error(text: str, *fragments: str, tmp: Path | None = None) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "bad.yaml"
        f.write_text(text, encoding="utf-8")
        with pytest.raises(ProtocolError) as info:
            load_and_plan(str(f))
        msg = str(info.value).replace(str(f), "bad.yaml")
    lines = msg.split("\n")
    assert all(line.startswith("bad.yaml") for line in lines), "one line per error, each naming the file"
    for f in fragments:
        assert f in lines[0], msg
    return lines[0]


def test_misspelt_key_names_the_key_and_line() -> None:
    text = mutate("ex-situ-lasgtp", ["steps", 0, "cv", "sweeprate"], "40 mV/min")
    msg = _expect_error(text, "steps[0].cv.sweeprate", "unknown key")
    line = int(msg.split(":")[1])
    assert "sweeprate" in text.splitlines()[line - 1]


def test_negative_or_zero_sweep_rate() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["steps", 0, "cv", "sweep_rate"], "-40 mV/min"), "sweep_rate", "must be at least 1e-07 V/s")
    _expect_error(mutate("ex-situ-lasgtp", ["steps", 0, "cv", "sweep_rate"], "0 mV/s"), "sweep_rate", "must be at least")


def test_bare_number_names_the_expected_unit() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["steps", 0, "cv", "sweep_rate"], 40), "sweep_rate", "needs a unit", "mV/min")


def test_wrong_dimension() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["steps", 1, "rest", "duration"], "120 V"), "duration", "not a time")


def test_vertex_outside_safety_window() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["steps", 0, "cv", "vertices"], ["3.5 V"]), "steps[0].cv", "3.5 V outside the safety window")


def test_exposure_longer_than_its_interval() -> None:
    text = mutate("in-situ-lasgtp", ["steps", 1, "cv", "exposures", 0, "every"], "20 s")
    # the whole li-k exposure is quoted (4 frames of 7.5 s), not one frame
    _expect_error(text, "steps[1].cv.exposures[0]", "interval must be longer", "4 frames x 7.5 s = 30 s")


def test_window_that_cannot_contain_its_edge() -> None:
    text = mutate("ex-situ-lasgtp", ["spectrometer", "windows", 1, "energy_offset"], "100 eV")
    _expect_error(text, "spectrometer.windows[1].edges", "Li-K needs 44-80 eV", "100-304.8 eV")


def test_dose_rate_above_limit() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["beam", "current"], "5 nA"), "beam", "exceeds safety.max_dose_rate")


def test_total_dose_above_budget() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["safety", "max_total_dose"], "100 e/Å^2"), "safety.max_total_dose", "over the budget")


def test_invalid_yaml_names_the_line() -> None:
    msg = _expect_error("name: x\nsteps: [\n  - cv: {\n", "invalid YAML")
    assert msg.split(":")[1].isdigit()


def test_missing_required_field() -> None:
    _expect_error(mutate("ex-situ-lasgtp", ["safety"], _DELETE), "safety", "required field missing")


def test_missing_file() -> None:
    with pytest.raises(ProtocolError, match="no such file"):
        load("/nonexistent/protocol.yaml")


def test_dose_rate_is_current_over_charge_times_area() -> None:
    # physics.md §5: 0.5 nA over a 2 um disc = 10 e/Å²/s (9.93 exactly)
    p = load("ex-situ-lasgtp")
    expected = 0.5e-9 / (1.602176634e-19 * math.pi * (1e-6) ** 2) / 1e20
    assert p.beam.dose_rate_e_per_m2_s / 1e20 == pytest.approx(expected)
    assert expected == pytest.approx(9.93, abs=0.01)
