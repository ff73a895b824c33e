"""The galvanostatic and ocv step kinds: validation against the declared SourceMeter and the
safety limits, and their plan (issue 16.3). Their runs: tests/acquisition/test_galvanostatic.py."""

from __future__ import annotations

import re

import pytest

from insitem.drivers.errors import ProtocolError
from insitem.protocols.loader import library_dir, loads
from insitem.protocols.plan import make_plan

GALV = ("galvanostatic:\n  current: 2 uA\n  lower_limit: 1.0 V\n  upper_limit: 2.2 V\n  cycles: 3\n  capacity: 1 mC\n"
        "  max_time: 1 h\n  reading_interval: 2 s\n  exposures:\n    - windows: [li-k]\n      after_cycles: [1, 3]")


def protocol_with(step_yaml: str, safety: str = "  voltage_min: 0 V\n  voltage_max: 3 V\n  current_compliance: 10 uA\n") -> str:
    text = (library_dir() / "loopback-hold.yaml").read_text(encoding="utf-8")
    head, _ = text.split("steps:\n")
    head = head.replace("  voltage_min: -1 V\n  voltage_max: 1 V\n  current_compliance: 1 uA\n", safety)
    return head + "steps:\n" + "".join(f"  {'- ' if i == 0 else '  '}{line}\n" for i, line in enumerate(step_yaml.split("\n")))


def errors(text: str) -> str:
    with pytest.raises(ProtocolError) as info:
        loads(text)
    return str(info.value)


def test_the_galvanostatic_plan_has_one_leg_per_half_cycle_of_capacity_over_current() -> None:
    plan = make_plan(loads(protocol_with(GALV)))
    (step,) = plan.steps
    assert step.current is not None and step.current.ends_on_limits
    legs = step.current.legs
    assert [leg.current_A for leg in legs] == [2e-6, -2e-6] * 3  # charge first: the current is positive
    assert [leg.cycle for leg in legs] == [1, 1, 2, 2, 3, 3]
    assert all(leg.t1_s - leg.t0_s == pytest.approx(500.0) for leg in legs)  # 1 mC / 2 uA
    assert [(leg.stop_above_V, leg.stop_below_V) for leg in legs[:2]] == [(2.2, None), (None, 1.0)]
    assert all(leg.max_s == 3600.0 for leg in legs)
    assert step.current.voltage_limit_V == 2.2  # the SourceMeter's compliance: the larger limit
    # after_cycles: at the end of each named cycle's discharge
    assert [e.t_start_s for e in plan.images] == pytest.approx([1000.0, 3000.0])
    assert plan.n_ec_points() == 1500 + 1  # 3000 s at a reading every 2 s; the last image (1 s + 0.6 s dead time) one more
    assert plan.summary()["cycles"] == 3
    (note,) = plan.summary()["notes"]
    assert "end at the voltage limits" in note and "estimates" in note


def test_a_negative_current_starts_with_the_discharge_and_max_time_bounds_the_plan() -> None:
    text = protocol_with(GALV.replace("current: 2 uA", "current: -2 uA").replace("capacity: 1 mC", "capacity: 100 mC"))
    (step,) = make_plan(loads(text)).steps
    assert step.current is not None
    assert [leg.current_A for leg in step.current.legs[:2]] == [-2e-6, 2e-6]
    assert step.current.legs[0].t1_s == pytest.approx(3600.0)  # 100 mC / 2 uA = 50000 s, cut to max_time


def test_the_ocv_plan_reads_at_0_A_for_its_duration() -> None:
    text = protocol_with("ocv:\n  duration: 60 s\n  reading_interval: 5 s\n  exposures:\n    - windows: [li-k]\n      at_end: true")
    (step,) = make_plan(loads(text)).steps
    assert step.current is not None and not step.current.ends_on_limits
    (leg,) = step.current.legs
    assert (leg.current_A, leg.max_s, leg.stop_above_V, leg.stop_below_V) == (0.0, 60.0, None, None)
    assert step.current.voltage_limit_V is None  # the runner takes the safety window's larger magnitude
    assert step.n_points() == 12 + 1  # every 5 s; the at_end image (1 s + 0.6 s dead time) one more
    assert [e.t_start_s for e in step.exposures] == [60.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("current: 2 uA", "current: 0 A"), r"current: a galvanostatic step needs a non-zero current"),
        (("lower_limit: 1.0 V", "lower_limit: 2.5 V"), r"lower_limit: 2.5 V must be below upper_limit 2.2 V"),
        (("  capacity: 1 mC\n  max_time: 1 h\n", ""), r"max_time: give max_time .* or capacity"),
        (("current: 2 uA", "current: 20 uA"), r"current: 2e-05 A exceeds safety.current_compliance 1e-05 A"),
        (("current: 2 uA", "current: -0.5 nA"), r"current: -5e-10 A is below the Keithley 2450's smallest current 1e-09 A"),
        (("upper_limit: 2.2 V", "upper_limit: 3.5 V"), r"upper_limit: potential 3.5 V outside the safety window \[0, 3\] V"),
        (("after_cycles: [1, 3]", "after_cycles: [4]"), r"exposures\[0\].after_cycles: cycle 4 > cycles 3"),
        (("after_cycles: [1, 3]", "at_vertices: true"), r"exposures\[0\]\.at_vertices: a galvanostatic step takes every, at_start, at_end, after_cycles"),
        (("cycles: 3", "cycles: 5000"), r"cycles: 10000 half-cycles of 500 s take .* beyond the 30 days"),
        (("current: 2 uA", "current: 2 V"), r"current: '2 V' is not a current"),
    ],
)
def test_galvanostatic_mistakes_are_named(change: tuple[str, str], message: str) -> None:
    found = errors(protocol_with(GALV.replace(*change)))
    assert re.search(r"steps\[0\]\.galvanostatic\." + message, found), found


def test_the_docs_example_plans_with_its_estimate_said() -> None:
    from pathlib import Path

    path = Path(__file__).parents[2] / "docs" / "examples" / "galvanostatic-lasgtp.yaml"
    plan = make_plan(loads(path.read_text(encoding="utf-8")))
    assert [s.kind for s in plan.steps] == ["ocv", "galvanostatic", "ocv"]
    (note,) = plan.summary()["notes"]
    assert "planned 1250 s each (capacity 2.5 mC / 2 uA)" in note
