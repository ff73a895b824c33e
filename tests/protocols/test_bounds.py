"""Protocols cannot loosen safety (issue 18.3): duplicate keys, bounds on every number, strict
counts, capped strings, and validation time linear in the input size.

The bounds checked here are written out independently of protocols/schema.py (LIMITS below, in
SI, each with its physical reason), so a bound loosened in the schema fails this test.
"""

from __future__ import annotations

import copy
import math
import re
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from insitem.cli import main as cli
from insitem.drivers.errors import ProtocolError
from insitem.protocols.loader import library_dir, loads
from insitem.protocols.plan import make_plan
from insitem.protocols.schema import Protocol
from insitem.protocols.units import QuantityInfo

FULL_TEXT = (Path(__file__).parent / "full.yaml").read_text(encoding="utf-8")
FULL = yaml.safe_load(FULL_TEXT)
QUANTITY = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*(.+)$")
DAY = 86400.0
E_A2 = 1e20  # e/m² in 1 e/Å²

#: field name -> (lowest, highest) accepted value in SI, from physics and the instruments, not
#: from the schema: Keithley 2400/2450 source +-210 V, current limit 1 nA-1.05 A; steps and runs
#: within days; lengths within a TEM specimen; exposures within an hour; TEMs 10 kV-3 MV.
LIMITS: dict[str, tuple[float, float]] = {
    "voltage_min": (-210, 210), "voltage_max": (-210, 210), "start": (-210, 210), "vertices": (-210, 210),
    "end": (-210, 210), "potential": (-210, 210), "at_potentials": (-210, 210),
    "current_compliance": (1e-9, 1.05),
    "max_dose_rate": (1e-9 * E_A2, 1e13 * E_A2), "max_total_dose": (1e-6 * E_A2, 1e11 * E_A2),
    "max_exposure": (1e-4, 3600), "exposure": (1e-4, 3600),
    "max_compliance_trips": (0, 1e7), "seed": (0, 2**32 - 1),
    "high_tension": (1e4, 3e6), "current": (1e-16, 1e-5), "illuminated_diameter": (1e-11, 1e-3),
    "length": (1e-10, 1e-3), "width": (1e-10, 1e-3), "angle": (-360, 360),
    "convergence_semiangle": (1e-9, 1000), "collection_semiangle": (1e-9, 1000),
    "sensor_rows": (1, 65536), "sensor_channels": (1, 65536), "dead_time": (0, 60),
    "energy_offset": (-1000, 1e5), "dispersion": (1e-4, 100), "channels": (1, 65536), "frames": (1, 10000),
    "binning": (1, 65536), "readout_rows": (0, 65536),
    "sweep_rate": (1e-8, 1000), "step": (1e-7, 100), "cycles": (1, 1e6), "after_cycles": (1, 1e6),
    "duration": (1e-4, 31 * DAY), "every": (1e-4, 31 * DAY),
    "drift_rate": (0, 1e-6), "dead_band": (1e-10, 1e-3), "max_shift": (1e-10, 1e-3),
    # drift-tracking frames: an interval within a run, a camera exposure, a dose within the budget's
    # bounds; the stage's travel within a TEM specimen
    "track_every": (1e-4, 31 * DAY), "track_exposure": (1e-4, 3600), "track_max_dose": (1e-6 * E_A2, 1e11 * E_A2),
    "max_stage_travel": (1e-10, 1e-3),
    # galvanostatic cycling and ocv rests: a sourced current within the SourceMeters' +-1.05 A (signed),
    # cut-off voltages within their +-210 V, charges from a lamella's pC to a large cell's 28 Ah
    "galvanostatic.current": (-1.05, 1.05), "lower_limit": (-210, 210), "upper_limit": (-210, 210),
    "capacity": (1e-13, 1e6), "max_time": (1e-4, 31 * DAY), "reading_interval": (1e-4, 2 * 3600),
}


def numeric_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every number in a protocol tree: quantity strings ('1.5 V'), ints and floats."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        path = prefix + (k,)
        if isinstance(v, (dict, list)):
            out += numeric_paths(v, path)
        elif (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, str) and QUANTITY.match(v) and k != "name"):
            out.append(path)
    return out


def field_of(path: tuple[Any, ...]) -> str:
    """The LIMITS key of a path: the field name, or `kind.field` where a step kind's field shares
    its name with another section's (the galvanostatic `current` is not the beam's)."""
    name = next(p for p in reversed(path) if isinstance(p, str))
    kinds = [p for p in path if isinstance(p, str) and f"{p}.{name}" in LIMITS]
    return f"{kinds[-1]}.{name}" if kinds else name


def _numeric_schema_fields(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Names of every numeric field of the schema (quantities, counts, bare numbers)."""
    seen = seen if seen is not None else set()
    seen.add(model)
    out: set[str] = set()
    for name, info in model.model_fields.items():
        if _is_numeric(info.annotation) or any(isinstance(m, QuantityInfo) for m in info.metadata):
            out.add(name)
        for sub in _models_in(info.annotation):
            if sub not in seen:
                out |= _numeric_schema_fields(sub, seen)
    return out


def _is_numeric(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if any(isinstance(m, QuantityInfo) for m in getattr(annotation, "__metadata__", ())):
        return True
    return any(_is_numeric(a) for a in typing.get_args(annotation))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def test_the_full_protocol_sets_every_numeric_field_of_the_schema() -> None:
    """The fuzzing below covers every numeric field: a new field must be added to full.yaml."""
    covered = {field_of(p) for p in numeric_paths(FULL)}
    assert _numeric_schema_fields(Protocol) <= {name.split(".")[-1] for name in covered}, _numeric_schema_fields(Protocol) - covered
    assert covered <= set(LIMITS), covered - set(LIMITS)
    make_plan(loads(FULL_TEXT))  # the starting point is valid


def accepted_value(protocol: Protocol, path: tuple[Any, ...]) -> Any:
    node: Any = protocol
    for p in path:
        node = node[p] if isinstance(p, int) else getattr(node, p)
    return node


def with_value(path: tuple[Any, ...], magnitude: float) -> str:
    tree = copy.deepcopy(FULL)
    parent = tree
    for p in path[:-1]:
        parent = parent[p]
    old = parent[path[-1]]
    if isinstance(old, str):
        m = QUANTITY.match(old)
        assert m is not None
        parent[path[-1]] = f"{magnitude!r} {m.group(2)}"
    elif isinstance(old, int) and math.isfinite(magnitude) and abs(magnitude) < 2**70 and magnitude == int(magnitude):
        parent[path[-1]] = int(magnitude)
    else:
        parent[path[-1]] = magnitude
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


PATHS = numeric_paths(FULL)
magnitudes = st.one_of(
    st.builds(lambda e, m, s: s * m * 10.0**e, st.integers(-30, 307), st.floats(1.0, 9.99), st.sampled_from([1, -1])),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-30, -1e-30, 1.0, 2.0]),
    st.integers(-(2**64), 2**64).map(float),
)


def _check_accepted(text: str, path: tuple[Any, ...]) -> None:
    try:
        protocol = loads(text)
    except ProtocolError as exc:
        assert all(len(line) < 400 for line in str(exc).split("\n"))
        return
    value = accepted_value(protocol, path)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    lo, hi = LIMITS[field_of(path)]
    for v in values:
        assert isinstance(v, (int, float)) and not isinstance(v, bool)
        assert math.isfinite(v) and lo <= v <= hi, f"{path}: accepted {v!r} outside [{lo:g}, {hi:g}]"
    try:
        plan = make_plan(protocol)
    except ProtocolError:
        return
    assert plan.duration_s <= 31 * DAY
    assert plan.dose_e_per_m2 <= protocol.safety.max_total_dose * (1 + 1e-9)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(PATHS) - 1), magnitude=magnitudes)
def test_no_number_out_of_bounds_is_accepted(index: int, magnitude: float) -> None:
    """Magnitudes from 1e-30 to 1e308, negative, zero, nan and inf in every numeric field."""
    path = PATHS[index]
    _check_accepted(with_value(path, magnitude), path)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # ~0.1 s each: within the 300 s test timeout on a loaded machine
@given(index=st.integers(0, len(PATHS) - 1), magnitude=magnitudes)
def test_no_number_out_of_bounds_is_accepted_many(index: int, magnitude: float) -> None:
    path = PATHS[index]
    _check_accepted(with_value(path, magnitude), path)


@pytest.mark.parametrize("path", PATHS, ids=["/".join(map(str, p)) for p in PATHS])
def test_every_numeric_field_refuses_the_extremes(path: tuple[Any, ...]) -> None:
    """1e308, -1e308, nan and inf everywhere; 1e-30 wherever zero is not a meaningful value."""
    extremes = [1e308, -1e308, math.nan, math.inf, -math.inf] + ([1e-30] if LIMITS[field_of(path)][0] > 0 else [])
    for magnitude in extremes:
        with pytest.raises(ProtocolError):
            loads(with_value(path, magnitude))


# ---------------------------------------------------------------------------------------------
# Duplicate keys, booleans as numbers, strings


def test_a_duplicate_key_is_an_error_naming_the_key_and_both_lines() -> None:
    text = (library_dir() / "loopback-hold.yaml").read_text(encoding="utf-8")
    lines = text.split("\n")
    n = next(i for i, line in enumerate(lines) if "current_compliance" in line)
    lines.insert(n + 2, "  current_compliance: 1 A")  # two lines later, after another key
    with pytest.raises(ProtocolError) as info:
        loads("\n".join(lines), source="p.yaml")
    assert str(info.value) == f"p.yaml:{n + 3}: duplicate key 'current_compliance': first given at line {n + 1}; each key may appear once"


def test_duplicate_keys_anywhere_are_all_reported() -> None:
    text = FULL_TEXT.replace("      cycles: 2\n", "      cycles: 2\n      cycles: 3\n").replace(
        "name: full\n", "name: full\nname: other\n")
    with pytest.raises(ProtocolError) as info:
        loads(text, source="p.yaml")
    lines = str(info.value).split("\n")
    assert len(lines) == 2
    assert "duplicate key 'name'" in lines[0] and "duplicate key 'cycles'" in lines[1]


def test_merge_keys_cannot_override_a_limit() -> None:
    text = FULL_TEXT.replace("safety:\n", "limits: &l {current_compliance: 1 uA}\nsafety:\n  <<: *l\n")
    with pytest.raises(ProtocolError, match=r"merge keys \(<<\) are not allowed"):
        loads(text)


@pytest.mark.parametrize(("old", "new"), [("cycles: 2", "cycles: true"), ("frames: 4", "frames: true"),
                                          ("seed: 7", "seed: false"), ("cycles: 2", "cycles: 2.0"),
                                          ("max_compliance_trips: 10", "max_compliance_trips: '10'"),
                                          ("at_start: true", "at_start: 1"), ("angle: 0", "angle: true")])
def test_no_boolean_or_text_stands_for_a_number(old: str, new: str) -> None:
    assert old in FULL_TEXT
    with pytest.raises(ProtocolError) as info:
        loads(FULL_TEXT.replace(old, new, 1), source="p.yaml")
    assert new.split(":")[0] in str(info.value)


def test_bounds_are_in_the_message() -> None:
    with pytest.raises(ProtocolError) as info:
        loads(FULL_TEXT.replace("duration: 600 s", "duration: 1e12 s"), source="p.yaml")
    assert "steps[1].hold.duration: must be at most 30 days (2.592e+06 s), got '1e12 s'" in str(info.value)
    with pytest.raises(ProtocolError) as info:
        loads(FULL_TEXT.replace("current_compliance: 1 mA", "current_compliance: 2 A"), source="p.yaml")
    assert "must be at most 1.05 A" in str(info.value)


def test_the_declared_keithley_limits_the_compliance_above_21_V() -> None:
    """2400 and 2450: +-21 V at up to 1.05 A, +-210 V at up to 105 mA (SPEC-2450, 2400 specifications)."""
    text = FULL_TEXT.replace("voltage_max: 3 V", "voltage_max: 50 V").replace("current_compliance: 1 mA", "current_compliance: 0.5 A")
    with pytest.raises(ProtocolError, match=r"0.5 A is above the 0.105 A the Keithley 2400 sources beyond \+-21 V"):
        loads(text)
    loads(text.replace("current_compliance: 0.5 A", "current_compliance: 100 mA"))


@pytest.mark.parametrize("field", ["name", "description", "reference", "windows", "value", "key"])
def test_an_overlong_string_is_refused_in_one_short_line(field: str) -> None:
    long = "x" * 100_000
    text = {
        "name": FULL_TEXT.replace("name: full", f"name: {long}"),
        "description": FULL_TEXT.replace("description: every field set", f"description: {long}"),
        "reference": FULL_TEXT.replace("reference: none", f"reference: {long}"),
        "windows": FULL_TEXT.replace("at_end: true", f"at_end: true\n          windows: [{long}]").replace(
            "        - windows: [li-k]\n          at_end", "        - at_end"),
        "value": FULL_TEXT.replace("voltage_max: 3 V", f"voltage_max: 3{long} V"),
        "key": FULL_TEXT.replace("voltage_max: 3 V", f"voltage_max: 3 V\n  {long}: 1"),
    }[field]
    with pytest.raises(ProtocolError) as info:
        loads(text, source="p.yaml")
    message = str(info.value)
    assert len(message) < 300, message[:300]


# ---------------------------------------------------------------------------------------------
# Validation time against input size. Two measures, neither a wall-clock threshold: the number of
# Python function calls (deterministic; a per-character loop in Python shows as calls growing
# with the input) and the ratio of the best-of-5 times for a 10x longer input (a quadratic step,
# such as pint's parser on a 16,000-character value, gives ~100x; linear work ~10x; the bound of
# 30x leaves room for a loaded machine).

SIZES = (1_000, 10_000, 100_000)


def _long_value(field: str, n: int) -> str:
    return {
        "voltage_max": FULL_TEXT.replace("voltage_max: 3 V", f"voltage_max: {'1' * n} V"),
        "unit": FULL_TEXT.replace("voltage_max: 3 V", f"voltage_max: 3 {'m' * n}V"),
        "description": FULL_TEXT.replace("description: every field set", f"description: {'A' * n}"),
        "name": FULL_TEXT.replace("name: full", f"name: {'a b' * (n // 3)}"),
        "window": FULL_TEXT.replace("windows: [li-k]\n          at_end", f"windows: [{'w' * n}]\n          at_end"),
    }[field]


def _validate(text: str) -> None:
    try:
        loads(text)
    except ProtocolError:
        pass


def _calls_to_validate(text: str) -> int:
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        _validate(text)
    finally:
        sys.setprofile(None)
    return calls


FIELDS = ["voltage_max", "unit", "description", "name", "window"]


@pytest.mark.parametrize("field", FIELDS)
def test_validation_calls_grow_at_most_linearly_with_the_input(field: str) -> None:
    _validate(FULL_TEXT)  # caches (unit registry, schema) filled before counting
    c1, c2, c3 = (_calls_to_validate(_long_value(field, n)) for n in SIZES)
    # the calls that depend on the input size grow like the size (ratio 10), not its square (100)
    assert (c3 - c1) <= 15 * max(c2 - c1, 1_000), (c1, c2, c3)


@pytest.mark.parametrize("field", FIELDS)
def test_validation_time_grows_at_most_linearly_with_the_input(field: str) -> None:
    _validate(FULL_TEXT)
    best = {n: math.inf for n in SIZES[1:]}
    for _ in range(5):  # interleaved, best of 5: a busy moment of the machine inflates one sample only
        for n in best:
            text = _long_value(field, n)
            t0 = time.perf_counter()
            _validate(text)
            best[n] = min(best[n], time.perf_counter() - t0)
    assert best[SIZES[2]] < 30 * best[SIZES[1]], best
