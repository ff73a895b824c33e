"""Expand a protocol into a timeline: potential segments, staircase points and exposures.

`insitem plan` reports from it (duration, exposures per window, dose, data volume) before
anything runs, and the runner walks it, so timing is derived once. Times are seconds from the
start of the run; potentials in V; dose in electrons per m².
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from insitem.drivers.errors import ProtocolError
from insitem.protocols.schema import MAX_STEP_S, Protocol
from insitem.protocols.steps import StepKind
from insitem.protocols.timeline import HOLD_SAMPLE_INTERVAL_S, PlannedExposure, PlannedStep, Segment
from insitem.protocols.units import E_PER_A2, TIME, show

__all__ = ["HOLD_SAMPLE_INTERVAL_S", "MAX_EXPOSURES", "Plan", "PlannedExposure", "PlannedStep", "Segment", "make_plan"]

BYTES_PER_PIXEL = 4  # float32 spectrum images in the run file
BYTES_PER_EC_POINT = 6 * 8  # t, V, I, cycle, step, compliance flag
MAX_EXPOSURES = 1_000_000  # camera exposures per plan (sub-exposures included): beyond it the plan is refused
MAX_RUN_S = MAX_STEP_S  # a whole protocol: 30 days
MAX_EC_POINTS = 20_000_000  # potentiostat points per run: 1 GB of record at BYTES_PER_EC_POINT


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
            "notes": [s.note for s in self.steps if s.note],
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
        planned = body.timeline(i, t)
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


def _plan_exposures(
    protocol: Protocol, step: PlannedStep, body: StepKind, where: str, first_index: int, problems: list[str]
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
        for t0 in body.trigger_times(step, ex):
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
