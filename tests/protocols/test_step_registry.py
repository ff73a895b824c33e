"""Step kinds are a registry (issue 16.3): a kind defined here, in a test module, without touching
insitem's files, is validated with its bounds and safety checks, planned, and run on the
simulated rig; the built-in kinds keep their behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
from pydantic import Field

from insitem.cli import main as cli
from insitem.drivers.errors import ProtocolError
from insitem.protocols.loader import library_dir, loads
from insitem.protocols.plan import make_plan
from insitem.protocols.schema import STEP_KINDS, Potential, StepDuration
from insitem.protocols.steps import StepKind, register_step, unregister_step
from insitem.protocols.timeline import PlannedStep, Segment


class Ramp(StepKind):
    """One linear potential ramp from `start` to `stop` over `duration`, as a staircase of `step`."""

    kind: ClassVar[str] = "ramp"
    example: ClassVar[str] = "ramp:\n  start: -0.2 V\n  stop: 0.2 V\n  duration: 10 s"
    start: Potential
    stop: Potential
    duration: StepDuration
    step: Potential = Field(default=0.04)

    def applied_potentials(self) -> list[tuple[str, float]]:
        return [("start", self.start), ("stop", self.stop)]

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        n = max(1, round(abs(self.stop - self.start) / self.step))
        return PlannedStep(index, self.kind, t0_s, t0_s + self.duration, [Segment(t0_s, t0_s + self.duration, self.start, self.stop)],
                           step_V=abs(self.stop - self.start) / n, dwell_s=self.duration / n, staircase=True)


@pytest.fixture
def ramp() -> Iterator[type[Ramp]]:
    register_step(Ramp)
    yield Ramp
    unregister_step("ramp")


def protocol_with(step_yaml: str) -> str:
    text = (library_dir() / "loopback-hold.yaml").read_text(encoding="utf-8")
    head, _ = text.split("steps:\n")
    return head + "steps:\n" + "".join(f"  {'- ' if i == 0 else '  '}{line}\n" for i, line in enumerate(step_yaml.split("\n")))


RAMP = "ramp:\n  start: -0.2 V\n  stop: 0.2 V\n  duration: 10 s\n  exposures:\n    - windows: [li-k]\n      every: 5 s"


def test_a_kind_registered_from_a_test_module_validates_and_plans(ramp: type[Ramp]) -> None:
    protocol = loads(protocol_with(RAMP))
    assert protocol.steps[0].kind == "ramp" and isinstance(protocol.steps[0].body, Ramp)
    plan = make_plan(protocol)
    (step,) = plan.steps
    assert step.duration_s >= 10.0
    t, v, _ = step.point_arrays()
    assert len(t) == 10 and v[0] == pytest.approx(-0.2) and v[-1] == pytest.approx(0.16)  # 10 stairs of 40 mV
    assert [e.t_start_s for e in plan.images] == pytest.approx([0.0, 5.0])
    assert [e.potential_V for e in plan.images] == pytest.approx([-0.2, 0.0])


def test_the_new_kind_gets_bounds_safety_checks_and_messages(ramp: type[Ramp]) -> None:
    with pytest.raises(ProtocolError) as info:
        loads(protocol_with(RAMP.replace("stop: 0.2 V", "stop: 5 V").replace("duration: 10 s", "duration: 1e12 s")), source="p.yaml")
    lines = str(info.value).split("\n")
    assert any("steps[0].ramp.duration: must be at most 30 days" in line for line in lines), lines
    with pytest.raises(ProtocolError, match=r"steps\[0\]\.ramp\.stop: potential 5 V outside the safety window \[-1, 1\] V"):
        loads(protocol_with(RAMP.replace("stop: 0.2 V", "stop: 5 V")))
    with pytest.raises(ProtocolError, match=r"steps\[0\]\.ramp\.exposures\[0\]\.at_vertices: a ramp step takes every, at_start, at_end"):
        loads(protocol_with(RAMP.replace("every: 5 s", "at_vertices: true")))
    with pytest.raises(ProtocolError, match=r"unknown step kind 'rmap': did you mean ramp\?"):
        loads(protocol_with(RAMP.replace("ramp:", "rmap:")))


def test_the_new_kind_runs_on_the_simulated_rig(ramp: type[Ramp], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ramp.yaml"
    path.write_text(protocol_with(RAMP), encoding="utf-8")
    out = tmp_path / "runs"
    code = cli.main(["run", str(path), "--sim", "--out", str(out), "--no-progress", "--no-figures"])
    assert code == 0, capsys.readouterr().err
    (run,) = out.rglob("*.h5")
    with h5py.File(run, "r") as f:
        ec = f["insitem/electrochemistry"][:]
        assert f["Experiments/li-k/data"].shape[0] == 2
    v = ec["voltage_V"]
    # the potentiostat walked the staircase up: -0.2 V to 0.16 V
    assert v[0] == pytest.approx(-0.2, abs=0.01) and v.max() == pytest.approx(0.16, abs=0.01)
    assert np.all(np.diff(v) > -0.01)


def test_registering_is_undone_and_a_kind_cannot_be_taken_twice(ramp: type[Ramp]) -> None:
    class OtherHold(StepKind):
        kind: ClassVar[str] = "hold"

    with pytest.raises(ValueError, match="already registered by Hold"):
        register_step(OtherHold)
    assert set(STEP_KINDS) >= {"cv", "hold", "rest", "ramp"}


def test_without_the_kind_a_ramp_is_unknown() -> None:
    assert "ramp" not in STEP_KINDS
    with pytest.raises(ProtocolError, match=r"steps\[0\]: unknown step kind 'ramp' \(kinds: cv, hold, rest, galvanostatic, ocv\)"):
        loads(protocol_with(RAMP))
