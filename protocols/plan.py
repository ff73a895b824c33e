"""Expand a protocol into a timeline: potential segments, staircase points and exposures.

`insitem plan` reports from it (duration, exposures per window, dose, data volume) before
anything runs, and the runner walks it, so timing is derived once. Times are seconds from the
start of the run; potentials in V; dose in electrons per m².
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from insitem.drivers.errors import ProtocolError
from insitem.protocols.schema import CV, MAX_STEP_S, Exposures, Hold, Protocol, Rest
from insitem.protocols.units import E_PER_A2, TIME, show

BYTES_PER_PIXEL = 4  # float32 spectrum images in the run file
BYTES_PER_EC_POINT = 6 * 8  # t, V, I, cycle, step, compliance flag
HOLD_SAMPLE_INTERVAL_S = 1.0  # potentiostat readings during holds and rests
MAX_EXPOSURES = 1_000_000  # camera exposures per plan (sub-exposures included): beyond it the plan is refused
MAX_RUN_S = MAX_STEP_S  # a whole protocol: 30 days
MAX_EC_POINTS = 20_000_000  # potentiostat points per run: 1 GB of record at BYTES_PER_EC_POINT


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

    @property
    def t_end_s(self) -> float:
        return self.t_start_s + self.exposure_s


@dataclass
class PlannedStep:
    index: int
    kind: str
    t_start_s: float
    t_end_s: float
    segments: list[Segment]
    step_V: float = 0.0  # staircase step height (cv)
    dwell_s: float = HOLD_SAMPLE_INTERVAL_S  # time per staircase point / reading
    cycles: int = 0
    exposures: list[PlannedExposure] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    def points(self) -> Iterator[tuple[float, float | None, int]]:
        """Staircase points (t_s, potential_V or None for open circuit, cycle) in time order.

        A cv step yields one point per step height along each segment; holds and rests one
        reading per `dwell_s`. After the last segment the final potential is held until
        `t_end_s` (when exposures run past the nominal end).
        """
        for seg in self.segments:
            if seg.v0_V is not None and seg.v1_V is not None and self.kind == "cv" and seg.v1_V != seg.v0_V:
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
            if self.kind == "cv" and seg.v0_V is not None and seg.v1_V is not None and seg.v1_V != seg.v0_V:
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


@dataclass
class Plan:
    protocol: Protocol
    steps: list[PlannedStep]

    @property
    def exposures(self) -> list[PlannedExposure]:
        """Every camera exposure, sub-exposures of summed windows included."""
        return [e for s in self.steps for e in s.exposures]

    @property
    def images(self) -> list[PlannedExposure]:
        """One entry per spectrum image written (the first sub-exposure of each)."""
        return [e for e in self.exposures if e.subframe == 0]

    @property
    def duration_s(self) -> float:
        return self.steps[-1].t_end_s if self.steps else 0.0

    @property
    def beam_on_s(self) -> float:
        if self.protocol.beam.policy == "always_on":
            return self.duration_s
        return sum(e.exposure_s for e in self.exposures)

    @property
    def dose_e_per_m2(self) -> float:
        return self.beam_on_s * self.protocol.beam.dose_rate_e_per_m2_s

    def exposures_per_window(self) -> dict[str, int]:
        counts = Counter(e.window for e in self.images)
        return {w.name: counts.get(w.name, 0) for w in self.protocol.spectrometer.windows}

    def frame_shape(self, window_name: str) -> tuple[int, int]:
        w = self.protocol.spectrometer.window(window_name)
        cam = self.protocol.spectrometer.camera
        r0, r1 = w.readout_rows or (0, cam.sensor_rows)
        return (r1 - r0) // w.binning[0], w.channels // w.binning[1]

    def n_ec_points(self) -> int:
        return sum(s.n_points() for s in self.steps)

    def data_bytes(self) -> int:
        image = sum(math.prod(self.frame_shape(e.window)) * BYTES_PER_PIXEL for e in self.images)
        return image + self.n_ec_points() * BYTES_PER_EC_POINT

    def summary(self) -> dict[str, object]:
        return {
            "name": self.protocol.name,
            "duration_s": self.duration_s,
            "steps": len(self.steps),
            "cycles": sum(s.cycles for s in self.steps),
            "exposures": self.exposures_per_window(),
            "beam_on_s": self.beam_on_s,
            "dose_e_per_A2": self.dose_e_per_m2 / E_PER_A2,
            "ec_points": self.n_ec_points(),
            "data_bytes": self.data_bytes(),
        }


def make_plan(protocol: Protocol) -> Plan:
    """Build the timeline; raise ProtocolError listing every overlap, and a run or dose over its bound.

    The error holds one `field: message` line per problem (the loader adds the file and line).
    """
    steps: list[PlannedStep] = []
    problems: list[str] = []
    t = 0.0
    n_exp = 0
    for i, step in enumerate(protocol.steps):
        body = step.body
        where = f"steps[{i}].{body.kind}"
        if isinstance(body, CV):
            planned = _plan_cv(i, t, body)
        elif isinstance(body, Hold):
            planned = PlannedStep(i, "hold", t, t + body.duration, [Segment(t, t + body.duration, body.potential, body.potential)])
        else:
            assert isinstance(body, Rest)
            planned = PlannedStep(i, "rest", t, t + body.duration, [Segment(t, t + body.duration, None, None)])
        try:
            exps = _plan_exposures(protocol, planned, body, where, n_exp, problems)
        except _TooMany as exc:
            raise ProtocolError(str(exc)) from None
        planned.exposures = exps
        if exps:
            dead = protocol.spectrometer.camera.dead_time
            planned.t_end_s = max(planned.t_end_s, exps[-1].t_end_s + dead)
        n_exp += len(exps)
        steps.append(planned)
        t = planned.t_end_s
    plan = Plan(protocol, steps)
    if plan.duration_s > MAX_RUN_S:
        problems.append(f"steps: the run lasts {show(plan.duration_s, TIME)}, beyond the {show(MAX_RUN_S, TIME)} a protocol may last")
    if plan.n_ec_points() > MAX_EC_POINTS:
        problems.append(f"steps: {plan.n_ec_points()} potentiostat points, more than the {MAX_EC_POINTS} a run records (lengthen the cv steps or the readings)")
    budget = protocol.safety.max_total_dose
    if plan.dose_e_per_m2 > budget * (1 + 1e-9):
        problems.append(
            f"safety.max_total_dose: the plan delivers {plan.dose_e_per_m2 / E_PER_A2:.4g} e/Å^2 "
            f"({plan.beam_on_s:.4g} s of beam at {protocol.beam.dose_rate_e_per_m2_s / E_PER_A2:.3g} e/Å^2/s), "
            f"over the budget of {budget / E_PER_A2:.4g} e/Å^2"
        )
    if problems:
        raise ProtocolError("\n".join(problems))
    return plan


class _TooMany(Exception):
    """The plan would hold more exposures than MAX_EXPOSURES: planning stops at once."""


def _plan_cv(index: int, t0: float, cv: CV) -> PlannedStep:
    segments: list[Segment] = []
    t = t0
    path = [cv.start, *cv.vertices, cv.start]
    for cycle in range(1, cv.cycles + 1):
        for a, b in zip(path[:-1], path[1:]):
            dt = abs(b - a) / cv.sweep_rate
            segments.append(Segment(t, t + dt, a, b, cycle))
            t += dt
    end = cv.end if cv.end is not None else cv.start
    if end != cv.start:
        dt = abs(end - cv.start) / cv.sweep_rate
        segments.append(Segment(t, t + dt, cv.start, end, cv.cycles))
        t += dt
    return PlannedStep(index, "cv", t0, t, segments, step_V=cv.step, dwell_s=cv.step / cv.sweep_rate, cycles=cv.cycles)


def _trigger_times(step: PlannedStep, body: CV | Hold | Rest, ex: Exposures) -> list[float]:
    t0, t1 = step.t_start_s, step.t_end_s
    if ex.at_start:
        return [t0]
    if ex.at_end:
        return [t1]
    if ex.every is not None:
        n = int(math.floor((t1 - t0) / ex.every + 1e-9))
        return [t0 + k * ex.every for k in range(n)]
    assert isinstance(body, CV)
    n_vertex_segments = len(body.vertices) + 1  # segments per cycle
    cycle_segments = step.segments[: body.cycles * n_vertex_segments]
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


def _plan_exposures(
    protocol: Protocol, step: PlannedStep, body: CV | Hold | Rest, where: str, first_index: int, problems: list[str]
) -> list[PlannedExposure]:
    """The step's exposures in time order; an overlap is added to `problems` (one per exposure entry)."""
    spec = protocol.spectrometer
    dead = spec.camera.dead_time
    items: list[tuple[float, str, int, str, int, float]] = []  # (t, window, entry, trigger, subframe, trigger time)
    for k, ex in enumerate(body.exposures):
        trigger = ex.trigger
        if ex.every is not None and (step.t_end_s - step.t_start_s) / ex.every > MAX_EXPOSURES:
            raise _TooMany(
                f"{where}.exposures[{k}].every: {ex.every:g} s over a {step.t_end_s - step.t_start_s:g} s step "
                f"gives more than {MAX_EXPOSURES} exposures"
            )
        for t0 in _trigger_times(step, body, ex):
            # the windows of one trigger run back to back
            t = t0
            for w in ex.windows:
                win = spec.window(w)
                for f in range(win.frames):
                    items.append((t, w, k, trigger, f, t0))
                    t += win.exposure / win.frames + dead
            if first_index + len(items) > MAX_EXPOSURES:
                raise _TooMany(f"{where}.exposures[{k}]: the plan needs more than {MAX_EXPOSURES} exposures")
    items.sort(key=lambda it: (it[0], it[4]))
    out: list[PlannedExposure] = []
    busy_until = -math.inf
    reported: set[int] = set()
    for t, w, k, trigger, sub, t0 in items:
        win = spec.window(w)
        exposure = win.exposure / win.frames
        if t < busy_until - 1e-9:
            prev = out[-1]
            if k not in reported:
                reported.add(k)
                pw = spec.window(prev.window)
                whole = (f"{pw.frames} frames x {pw.exposure / pw.frames:g} s = {pw.exposure:g} s, each frame followed by {dead:g} s dead time"
                         if pw.frames > 1 else f"{pw.exposure:g} s + {dead:g} s dead time")
                problems.append(
                    f"{where}.exposures[{k}]: the {w} exposure at t = {t:.6g} s starts before the previous "
                    f"{prev.window} exposure ({whole}) ends at t = {busy_until:.6g} s: an interval must be "
                    f"longer than the exposures it holds"
                )
            continue
        out.append(
            PlannedExposure(
                index=first_index + len(out),
                t_start_s=t,
                window=w,
                exposure_s=exposure,
                step_index=step.index,
                cycle=step.cycle_at(t),
                trigger=trigger,
                potential_V=step.potential_at(t),
                subframe=sub,
                n_subframes=win.frames,
            )
        )
        busy_until = t + exposure + dead
    return out
