"""Step kinds: a registry of small classes, one per kind of protocol step.

A step kind is a pydantic model (its keys in the protocol file, with bounds) that also carries:

* `timeline(index, t0_s)`: its contribution to the plan, a PlannedStep of potential segments
  (the plan adds exposures, and sums duration, dose and data volume from the timeline);
* `trigger_times(step, exposures)`: when its exposure triggers fire (every kind understands
  `every`, `at_start` and `at_end`; a kind lists any others it understands in `triggers`);
* `safety_problems(protocol)`: its checks against the protocol's safety limits, one
  `field: message` per problem (paths relative to the step body);
* `kind` (the key in `steps:`), `example` (YAML, shown in docs/protocol-format.md and planned
  by a test) and a docstring whose first line describes it.

`@register_step` adds a kind; the protocol schema's `steps` entry is a union tagged by the
kind, rebuilt from the registry, so a new kind (from any module, a test included) needs no
change to insitem's files. The runner walks the PlannedStep (its staircase points and
exposures) and never sees the kind. A kind that needs the runner to source something other than
a potential (a current, for galvanostatic cycling) also needs that in the potentiostat
interface and the runner: its PlannedStep carries a `CurrentProgram` (constant-current legs
ending on voltage limits) that the runner sources instead of the staircase
(`galvanostatic`, `ocv`; docs/decisions/0024-galvanostatic-and-ocv-steps.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, model_validator

from insitem.protocols.schema import (
    MAX_STEP_S,
    MIN_DWELL_S,
    Capacity,
    Potential,
    ReadingInterval,
    SourceCurrent,
    StepDuration,
    StepExposures,
    StepHeight,
    Strict,
    SweepRate,
    _count,
    problems_error,
    register_step_kind,
    unregister_step_kind,
)
from insitem.protocols.timeline import CurrentLeg, CurrentProgram, PlannedStep, Segment
from insitem.protocols.units import CURRENT, TIME, VOLTAGE, show

if TYPE_CHECKING:
    from insitem.protocols.schema import Exposures, Protocol

#: triggers every step kind understands
BASIC_TRIGGERS = ("every", "at_start", "at_end")


class StepKind(Strict):
    """Base of every step kind (subclass it and decorate the subclass with @register_step)."""

    kind: ClassVar[str] = ""
    example: ClassVar[str] = ""
    triggers: ClassVar[tuple[str, ...]] = BASIC_TRIGGERS
    exposures: StepExposures = Field(default_factory=list, description="spectrum images taken during the step")

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        raise NotImplementedError

    def applied_potentials(self) -> list[tuple[str, float]]:
        """(field, potential in V) of every potential the step applies: checked against the safety window."""
        return []

    def safety_problems(self, protocol: "Protocol") -> list[str]:
        s = protocol.safety
        return [
            f"{field}: potential {v:g} V outside the safety window [{s.voltage_min:g}, {s.voltage_max:g}] V"
            for field, v in self.applied_potentials()
            if not s.voltage_min <= v <= s.voltage_max
        ]

    def trigger_times(self, step: PlannedStep, ex: "Exposures") -> list[float]:
        t0, t1 = step.t_start_s, step.t_end_s
        if ex.at_start:
            return [t0]
        if ex.at_end:
            return [t1]
        if ex.every is not None:
            n = int(math.floor((t1 - t0) / ex.every + 1e-9))
            return [t0 + k * ex.every for k in range(n)]
        raise ValueError(f"{self.kind} steps do not understand the trigger {ex.trigger}")


STEP_KINDS: dict[str, type[StepKind]] = {}


def register_step(cls: type[StepKind]) -> type[StepKind]:
    """Add a step kind to the protocol schema (a class decorator)."""
    if not cls.kind or not cls.kind.isidentifier():
        raise ValueError(f"{cls.__name__}: a step kind needs a `kind` that is an identifier, got {cls.kind!r}")
    if STEP_KINDS.get(cls.kind, cls) is not cls:
        raise ValueError(f"step kind {cls.kind!r} is already registered by {STEP_KINDS[cls.kind].__name__}")
    STEP_KINDS[cls.kind] = cls
    register_step_kind(cls)
    return cls


def unregister_step(kind: str) -> None:
    """Remove a step kind from the protocol schema (for tests that register their own)."""
    STEP_KINDS.pop(kind, None)
    unregister_step_kind(kind)


# ---------------------------------------------------------------------------------------------
# The built-in kinds


@register_step
class CV(StepKind):
    """Cyclic voltammetry: a staircase from `start` through the `vertices` and back, `cycles` times."""

    kind: ClassVar[str] = "cv"
    example: ClassVar[str] = (
        "cv:\n  start: 1.0 V\n  vertices: [2.5 V, 0.5 V]\n  end: 1.0 V\n  sweep_rate: 40 mV/min\n  step: 1 mV\n"
        "  cycles: 2\n  exposures:\n    - windows: [li-k]\n      at_vertices: true"
    )
    triggers: ClassVar[tuple[str, ...]] = (*BASIC_TRIGGERS, "at_vertices", "after_cycles", "at_potentials")
    start: Potential = Field(description="potential at the start of each cycle")
    vertices: list[Potential] = Field(min_length=1, max_length=100, description="turning potentials of each cycle")
    end: Potential | None = Field(default=None, description="final potential (default: start)")
    sweep_rate: SweepRate = Field(description="rate of the staircase ramp")
    step: StepHeight = Field(default=1e-3, description="staircase step height")
    cycles: _count(1, 100_000) = Field(default=1, description="number of cycles")
    exposures: StepExposures = Field(default_factory=list, description="spectrum images taken during the step")

    @model_validator(mode="after")
    def _check(self) -> "CV":
        problems = []
        dwell = self.step / self.sweep_rate
        if dwell < MIN_DWELL_S:
            problems.append(f"step: {self.step:g} V at {self.sweep_rate:g} V/s is {dwell:.3g} s per point, "
                            f"shorter than the {MIN_DWELL_S:g} s a source-measure point takes")
        if self.duration_s > MAX_STEP_S:
            problems.append(f"cycles: {self.cycles} cycles at {self.sweep_rate:g} V/s take {show(self.duration_s, TIME)}, "
                            f"beyond the {show(MAX_STEP_S, TIME)} a step may last")
        if problems:
            raise problems_error(problems)
        return self

    @property
    def potentials(self) -> list[float]:
        return [self.start, *self.vertices, self.end if self.end is not None else self.start]

    @property
    def duration_s(self) -> float:
        path = [self.start, *self.vertices, self.start]
        travel = sum(abs(b - a) for a, b in zip(path[:-1], path[1:])) * self.cycles
        end = self.end if self.end is not None else self.start
        return (travel + abs(end - self.start)) / self.sweep_rate

    def applied_potentials(self) -> list[tuple[str, float]]:
        out = [("start", self.start), *((f"vertices[{j}]", v) for j, v in enumerate(self.vertices))]
        return out + ([("end", self.end)] if self.end is not None else [])

    def safety_problems(self, protocol: "Protocol") -> list[str]:
        out = super().safety_problems(protocol)
        for k, ex in enumerate(self.exposures):
            if ex.after_cycles and max(ex.after_cycles) > self.cycles:
                out.append(f"exposures[{k}].after_cycles: cycle {max(ex.after_cycles)} > cycles {self.cycles}")
            lo, hi = min(self.potentials), max(self.potentials)
            for j, v in enumerate(ex.at_potentials or []):
                if not lo <= v <= hi:
                    out.append(f"exposures[{k}].at_potentials[{j}]: {v:g} V is never reached (the sweep spans {lo:g}-{hi:g} V)")
        return out

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        segments: list[Segment] = []
        t = t0_s
        path = [self.start, *self.vertices, self.start]
        for cycle in range(1, self.cycles + 1):
            for a, b in zip(path[:-1], path[1:]):
                dt = abs(b - a) / self.sweep_rate
                segments.append(Segment(t, t + dt, a, b, cycle))
                t += dt
        end = self.end if self.end is not None else self.start
        if end != self.start:
            dt = abs(end - self.start) / self.sweep_rate
            segments.append(Segment(t, t + dt, self.start, end, self.cycles))
            t += dt
        return PlannedStep(index, self.kind, t0_s, t, segments, step_V=self.step, dwell_s=self.step / self.sweep_rate,
                           cycles=self.cycles, staircase=True)

    def trigger_times(self, step: PlannedStep, ex: "Exposures") -> list[float]:
        if ex.trigger in BASIC_TRIGGERS:
            return super().trigger_times(step, ex)
        n_vertex_segments = len(self.vertices) + 1  # segments per cycle
        cycle_segments = step.segments[: self.cycles * n_vertex_segments]
        if ex.at_vertices:
            # a vertex is the end of every segment except the one returning to the start potential
            return [s.t1_s for k, s in enumerate(cycle_segments) if k % n_vertex_segments != n_vertex_segments - 1]
        if ex.after_cycles:
            return [cycle_segments[c * n_vertex_segments - 1].t1_s for c in sorted(set(ex.after_cycles))]
        times: list[float] = []
        for v in ex.at_potentials or []:
            for s in step.segments:
                assert s.v0_V is not None and s.v1_V is not None
                lo, hi = sorted((s.v0_V, s.v1_V))
                if lo <= v < hi or (v == hi and s is step.segments[-1]):
                    times.append(s.t0_s + (v - s.v0_V) / (s.v1_V - s.v0_V) * (s.t1_s - s.t0_s))
        return sorted(set(times))


@register_step
class Hold(StepKind):
    """A constant potential for a duration."""

    kind: ClassVar[str] = "hold"
    example: ClassVar[str] = "hold:\n  potential: 1.5 V\n  duration: 10 min\n  exposures:\n    - windows: [li-k]\n      every: 60 s"
    potential: Potential = Field(description="potential held")
    duration: StepDuration = Field(description="how long")
    exposures: StepExposures = Field(default_factory=list, description="spectrum images taken during the step")

    def applied_potentials(self) -> list[tuple[str, float]]:
        return [("potential", self.potential)]

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        t1 = t0_s + self.duration
        return PlannedStep(index, self.kind, t0_s, t1, [Segment(t0_s, t1, self.potential, self.potential)])


@register_step
class Rest(StepKind):
    """Open circuit (potentiostat output off, relay open) for a duration; nothing is read (`ocv` reads the voltage)."""

    kind: ClassVar[str] = "rest"
    example: ClassVar[str] = "rest:\n  duration: 2 min\n  exposures:\n    - windows: [li-k]\n      at_start: true"
    duration: StepDuration = Field(description="how long")
    exposures: StepExposures = Field(default_factory=list, description="spectrum images taken during the step")

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        t1 = t0_s + self.duration
        return PlannedStep(index, self.kind, t0_s, t1, [Segment(t0_s, t1, None, None)])


# ---------------------------------------------------------------------------------------------
# Current-sourcing kinds: the SourceMeter as a current source with a voltage limit


def _eng(value: float, unit: str) -> str:
    """A value with an SI prefix: 2e-06 A -> '2 uA', 0.0005 C -> '500 uC'."""
    for scale, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _source_current_problems(protocol: "Protocol", field: str, current_A: float) -> list[str]:
    """A sourced current within the declared model's current limits and the protocol's compliance."""
    s, src = protocol.safety, protocol.instruments.source
    out = []
    if abs(current_A) > s.current_compliance * (1 + 1e-12):
        out.append(f"{field}: {show(current_A, CURRENT)} exceeds safety.current_compliance "
                   f"{show(s.current_compliance, CURRENT)} (the source refuses more)")
    if abs(current_A) < src.i_min_A:
        out.append(f"{field}: {show(current_A, CURRENT)} is below the {src.label}'s smallest current {show(src.i_min_A, CURRENT)} ({src.source})")
    return out


@register_step
class Galvanostatic(StepKind):
    """Galvanostatic cycling: a constant current between a lower and an upper voltage limit, charge then discharge, `cycles` times.

    Sign convention: a positive current flows out of the SourceMeter's HI terminal into the
    working electrode (the cell's positive electrode, wired to HI) and oxidises it; that charges
    the cell (for LiCoO2 | LASGTP | Pt: Li leaves LiCoO2 for the Pt-side electrode) and the
    voltage rises towards `upper_limit`. A cycle is a charge half-cycle then a discharge
    half-cycle at the same magnitude, as battery cyclers do; a negative `current` starts with
    the discharge. A half-cycle ends at the first reading at or beyond its limit (upper when
    charging, lower when discharging), or after `max_time`. The SourceMeter's own voltage limit
    (compliance) is the larger magnitude of the two limits, so the charge stops in hardware at
    `upper_limit` between readings; the discharge cut-off at `lower_limit` is the reading's.
    The plan assumes each half-cycle lasts `capacity / |current|` (at most `max_time`): times,
    dose and data volume of the plan are estimates, and the run re-bases its schedule at each
    half-cycle.
    """

    kind: ClassVar[str] = "galvanostatic"
    example: ClassVar[str] = (
        "galvanostatic:\n  current: 1 uA\n  lower_limit: 1.0 V\n  upper_limit: 2.2 V\n  cycles: 2\n"
        "  capacity: 1 mC\n  max_time: 1 h\n  reading_interval: 1 s\n  exposures:\n    - windows: [li-k]\n      after_cycles: [1, 2]"
    )
    triggers: ClassVar[tuple[str, ...]] = (*BASIC_TRIGGERS, "after_cycles")
    current: SourceCurrent = Field(description="constant current; + charges (oxidises the working electrode on HI), - starts with the discharge")
    lower_limit: Potential = Field(description="a discharge half-cycle ends when the voltage falls to this")
    upper_limit: Potential = Field(description="a charge half-cycle ends when the voltage reaches this")
    cycles: _count(1, 100_000) = Field(default=1, description="number of cycles (charge + discharge each)")
    capacity: Capacity | None = Field(
        default=None, description="expected charge of one half-cycle: the plan's estimate of its time is capacity/|current|")
    max_time: StepDuration | None = Field(default=None, description="longest half-cycle (ends it when the limit is not reached)")
    reading_interval: ReadingInterval = Field(default=1.0, description="time between voltage readings")
    exposures: StepExposures = Field(default_factory=list, description="spectrum images taken during the step")

    @model_validator(mode="after")
    def _check(self) -> "Galvanostatic":
        problems = []
        if self.current == 0:
            problems.append("current: a galvanostatic step needs a non-zero current (an open-circuit rest is the ocv step)")
        if not self.lower_limit < self.upper_limit:
            problems.append(f"lower_limit: {show(self.lower_limit, VOLTAGE)} must be below upper_limit {show(self.upper_limit, VOLTAGE)}")
        if self.capacity is None and self.max_time is None:
            problems.append("max_time: give max_time (the longest half-cycle) or capacity (expected charge per half-cycle): "
                            "the plan needs one to know how long a half-cycle lasts")
        elif self.current != 0 and self.duration_s > MAX_STEP_S:
            problems.append(f"cycles: {2 * self.cycles} half-cycles of {show(self.half_cycle_s, TIME)} take "
                            f"{show(self.duration_s, TIME)}, beyond the {show(MAX_STEP_S, TIME)} a step may last")
        if problems:
            raise problems_error(problems)
        return self

    @property
    def half_cycle_s(self) -> float:
        """The plan's time for one half-cycle: capacity / |current|, at most max_time."""
        times = [t for t in (self.capacity / abs(self.current) if self.capacity is not None else None, self.max_time) if t is not None]
        return min(times)

    @property
    def duration_s(self) -> float:
        return 2 * self.cycles * self.half_cycle_s

    def applied_potentials(self) -> list[tuple[str, float]]:
        return [("lower_limit", self.lower_limit), ("upper_limit", self.upper_limit)]

    def safety_problems(self, protocol: "Protocol") -> list[str]:
        out = super().safety_problems(protocol) + _source_current_problems(protocol, "current", self.current)
        for k, ex in enumerate(self.exposures):
            if ex.after_cycles and max(ex.after_cycles) > self.cycles:
                out.append(f"exposures[{k}].after_cycles: cycle {max(ex.after_cycles)} > cycles {self.cycles}")
        return out

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        legs: list[CurrentLeg] = []
        segments: list[Segment] = []
        t, dt, first = t0_s, self.half_cycle_s, math.copysign(1.0, self.current)
        for cycle in range(1, self.cycles + 1):
            for direction in (first, -first):
                i = direction * abs(self.current)
                legs.append(CurrentLeg(t, t + dt, i, cycle, stop_above_V=self.upper_limit if i > 0 else None,
                                       stop_below_V=self.lower_limit if i < 0 else None, max_s=self.max_time))
                segments.append(Segment(t, t + dt, None, None, cycle))
                t += dt
        program = CurrentProgram(tuple(legs), max(abs(self.lower_limit), abs(self.upper_limit)), self.reading_interval,
                                 ends_on_limits=True)
        basis = (f"capacity {_eng(self.capacity, 'C')} / {_eng(abs(self.current), 'A')}"
                 if self.capacity is not None and self.half_cycle_s < (self.max_time or math.inf) else "max_time")
        note = (f"step {index} galvanostatic {_eng(self.current, 'A')} between {self.lower_limit:g} V and "
                f"{self.upper_limit:g} V: {2 * self.cycles} half-cycles end at the voltage limits; "
                f"planned {show(dt, TIME)} each ({basis}), so its time, exposures, dose and data are estimates")
        return PlannedStep(index, self.kind, t0_s, t, segments, dwell_s=self.reading_interval, cycles=self.cycles,
                           current=program, note=note)

    def trigger_times(self, step: PlannedStep, ex: "Exposures") -> list[float]:
        if ex.after_cycles:
            assert step.current is not None
            legs = step.current.legs
            return [legs[2 * c - 1].t1_s for c in sorted(set(ex.after_cycles))]
        return super().trigger_times(step, ex)


@register_step
class OCV(StepKind):
    """Open-circuit rest that records the voltage: the source at 0 A (high impedance), the voltage read every `reading_interval`.

    On a SourceMeter the open circuit is current sourcing at 0 A with a voltage limit (the
    safety window's larger magnitude): the cell relaxes undisturbed while its voltage is
    measured. A `rest` instead opens the output relay and records nothing.
    """

    kind: ClassVar[str] = "ocv"
    example: ClassVar[str] = "ocv:\n  duration: 10 min\n  reading_interval: 5 s\n  exposures:\n    - windows: [li-k]\n      at_end: true"
    duration: StepDuration = Field(description="how long")
    reading_interval: ReadingInterval = Field(default=1.0, description="time between voltage readings")
    exposures: StepExposures = Field(default_factory=list, description="spectrum images taken during the step")

    def timeline(self, index: int, t0_s: float) -> PlannedStep:
        t1 = t0_s + self.duration
        leg = CurrentLeg(t0_s, t1, 0.0, 0, max_s=self.duration)
        return PlannedStep(index, self.kind, t0_s, t1, [Segment(t0_s, t1, None, None)], dwell_s=self.reading_interval,
                           current=CurrentProgram((leg,), None, self.reading_interval))
