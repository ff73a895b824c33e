"""The timeline a plan is made of: potential segments, planned steps and exposures.

Times are seconds from the start of the run; potentials in V (None = open circuit). Each step
kind (protocols/steps.py) builds its PlannedStep; protocols/plan.py adds the exposures, checks
the whole and sums duration, dose and data volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

HOLD_SAMPLE_INTERVAL_S = 1.0  # potentiostat readings during holds and rests


@dataclass(frozen=True)
class Segment:
    """A linear potential ramp (v0 == v1 for a hold; None for open circuit)."""

    t0_s: float
    t1_s: float
    v0_V: float | None
    v1_V: float | None
    cycle: int = 0  # 1-based cycle for cv steps, 0 otherwise

    def potential_at(self, t_s: float) -> float | None:
        if self.v0_V is None or self.v1_V is None:
            return None
        if self.t1_s <= self.t0_s:
            return self.v1_V
        f = min(max((t_s - self.t0_s) / (self.t1_s - self.t0_s), 0.0), 1.0)
        return self.v0_V + f * (self.v1_V - self.v0_V)


@dataclass(frozen=True)
class CurrentLeg:
    """One constant-current leg of a current-sourcing step (a half-cycle of galvanostatic
    cycling, or an open-circuit rest at 0 A): planned from `t0_s` to `t1_s` (an estimate when the
    leg ends on a voltage limit), run until the measured voltage reaches `stop_above_V` (or falls
    to `stop_below_V`) or `max_s` has passed."""

    t0_s: float
    t1_s: float
    current_A: float  # > 0 charges the cell (see protocols/steps.py, Galvanostatic)
    cycle: int = 0
    stop_above_V: float | None = None
    stop_below_V: float | None = None
    max_s: float | None = None  # None: the leg ends on its voltage limit only

    def reached(self, voltage_V: float) -> bool:
        """Whether a measured voltage ends the leg."""
        return ((self.stop_above_V is not None and voltage_V >= self.stop_above_V)
                or (self.stop_below_V is not None and voltage_V <= self.stop_below_V))


@dataclass(frozen=True)
class CurrentProgram:
    """What the runner sources in a current-sourcing step: its legs in order, each read every
    `reading_interval_s`, with the SourceMeter's voltage limit (compliance) `voltage_limit_V`
    (a magnitude: the source holds |V| at most there; None: the protocol's safety window's larger
    magnitude). After the last leg the step's remaining
    time (exposures planned at its end) is spent at 0 A, the open circuit."""

    legs: tuple[CurrentLeg, ...]
    voltage_limit_V: float | None
    reading_interval_s: float
    ends_on_limits: bool = False  # leg times are estimates: the run re-bases the schedule per leg


@dataclass(frozen=True)
class PlannedExposure:
    index: int
    t_start_s: float
    window: str
    exposure_s: float
    step_index: int
    cycle: int
    trigger: str
    potential_V: float | None  # programmed potential at the exposure start (None: open circuit)
    subframe: int = 0  # index of this sub-exposure of a summed spectrum image
    n_subframes: int = 1
    kind: str = "science"  # science | tracking (a drift-tracking frame with `window`'s settings, docs/drift.md)

    @property
    def t_end_s(self) -> float:
        return self.t_start_s + self.exposure_s

    @property
    def tracking(self) -> bool:
        return self.kind == "tracking"


@dataclass
class PlannedStep:
    index: int
    kind: str
    t_start_s: float
    t_end_s: float
    segments: list[Segment]
    step_V: float = 0.0  # staircase step height (staircase steps)
    dwell_s: float = HOLD_SAMPLE_INTERVAL_S  # time per staircase point / reading
    cycles: int = 0
    exposures: list[PlannedExposure] = field(default_factory=list)
    staircase: bool = False  # ramps are walked in steps of step_V (cv); otherwise one reading per dwell_s
    current: CurrentProgram | None = None  # set: the step sources current (its segments carry no potential)
    note: str = ""  # what the plan's summary should say about this step (e.g. estimated times)

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    def points(self) -> Iterator[tuple[float, float | None, int]]:
        """Staircase points (t_s, potential_V or None for open circuit, cycle) in time order.

        A staircase step (cv) yields one point per step height along each ramp; other steps one
        reading per `dwell_s`. After the last segment the final potential is held until
        `t_end_s` (when exposures run past the nominal end).
        """
        for seg in self.segments:
            if seg.v0_V is not None and seg.v1_V is not None and self.staircase and seg.v1_V != seg.v0_V:
                n = max(1, round(abs(seg.v1_V - seg.v0_V) / self.step_V))
                dv = (seg.v1_V - seg.v0_V) / n
                dt = (seg.t1_s - seg.t0_s) / n
                for k in range(n):
                    yield seg.t0_s + k * dt, seg.v0_V + k * dv, seg.cycle
            else:
                n = max(1, math.ceil((seg.t1_s - seg.t0_s) / self.dwell_s - 1e-9))
                for k in range(n):
                    yield seg.t0_s + k * self.dwell_s, seg.v0_V, seg.cycle
        last = self.segments[-1]
        t = last.t1_s
        while t < self.t_end_s - 1e-9:
            yield t, last.v1_V, last.cycle
            t += self.dwell_s

    def point_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The staircase of `points` as arrays: times (s), potentials (V; NaN = open circuit), cycles."""
        n = self.n_points()
        t = np.empty(n)
        v = np.empty(n)
        c = np.empty(n, dtype=np.int32)
        for k, (tk, vk, ck) in enumerate(self.points()):
            t[k], v[k], c[k] = tk, (math.nan if vk is None else vk), ck
        return t, v, c

    def n_points(self) -> int:
        n = 0
        for seg in self.segments:
            if self.staircase and seg.v0_V is not None and seg.v1_V is not None and seg.v1_V != seg.v0_V:
                n += max(1, round(abs(seg.v1_V - seg.v0_V) / self.step_V))
            else:
                n += max(1, math.ceil((seg.t1_s - seg.t0_s) / self.dwell_s - 1e-9))
        extra = self.t_end_s - self.segments[-1].t1_s
        if extra > 1e-9:
            n += math.ceil(extra / self.dwell_s - 1e-9)
        return n

    def potential_at(self, t_s: float) -> float | None:
        for seg in self.segments:
            if t_s <= seg.t1_s:
                return seg.potential_at(t_s)
        return self.segments[-1].v1_V

    def cycle_at(self, t_s: float) -> int:
        for seg in self.segments:
            if t_s < seg.t1_s:
                return seg.cycle
        return self.segments[-1].cycle
