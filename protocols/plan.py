"""Expand a protocol into a timeline: potential segments, staircase points and exposures.

`insitem plan` reports from it (duration, exposures per window, dose, data volume) before
anything runs, and the runner walks it, so timing is derived once. Times are seconds from the
start of the run; potentials in V; dose in electrons per m².
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field, replace

from insitem.drivers.errors import ProtocolError
from insitem.protocols.schema import MAX_STEP_S, TRACKING_WINDOW, Protocol
from insitem.protocols.steps import StepKind
from insitem.protocols.timeline import HOLD_SAMPLE_INTERVAL_S, PlannedExposure, PlannedStep, Segment
from insitem.protocols.units import E_PER_A2, TIME, show

__all__ = ["HOLD_SAMPLE_INTERVAL_S", "MAX_EXPOSURES", "Plan", "PlannedExposure", "PlannedStep", "Segment", "make_plan"]

BYTES_PER_PIXEL = 4  # float32 spectrum images in the run file
BYTES_PER_EC_POINT = 6 * 8  # t, V, I, cycle, step, compliance flag
MAX_EXPOSURES = 1_000_000  # camera exposures per plan (sub-exposures included): beyond it the plan is refused
MAX_RUN_S = MAX_STEP_S  # a whole protocol: 30 days
MAX_EC_POINTS = 20_000_000  # potentiostat points per run: 1 GB of record at BYTES_PER_EC_POINT
#: time kept free between a tracking frame's read-out and the next group of exposures, for the
#: estimate and the correction (registration ~ms, an image-shift set and read-back tens of ms on
#: the wire, a stage move longer) [est]
TRACK_LEAD_S = 1.0


@dataclass
class Plan:
    protocol: Protocol
    steps: list[PlannedStep]
    notes: list[str] = field(default_factory=list)  # what the summary says about the whole plan

    @property
    def exposures(self) -> list[PlannedExposure]:
        """Every camera exposure, sub-exposures of summed windows and tracking frames included."""
        return [e for s in self.steps for e in s.exposures]

    @property
    def images(self) -> list[PlannedExposure]:
        """One entry per spectrum image written (the first sub-exposure of each; tracking frames included)."""
        return [e for e in self.exposures if e.subframe == 0]

    @property
    def tracking(self) -> list[PlannedExposure]:
        """The drift-tracking frames (protocol `drift.track_every` / `track_groups`)."""
        return [e for e in self.exposures if e.tracking]

    @property
    def tracking_beam_on_s(self) -> float:
        """Beam-on time of the tracking frames (with the beam blanked between exposures)."""
        if self.protocol.beam.policy == "always_on":
            return 0.0  # the beam is on all the time anyway: tracking adds nothing
        return sum(e.exposure_s for e in self.tracking)

    @property
    def tracking_dose_e_per_m2(self) -> float:
        return self.tracking_beam_on_s * self.protocol.beam.dose_rate_e_per_m2_s

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
        """Spectrum images per protocol window (tracking frames not counted: `tracking`)."""
        counts = Counter(e.window for e in self.images if not e.tracking)
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
        """Duration, exposures, beam-on time and dose (totals include the tracking frames, which
        `tracking` lists apart when the protocol asks for them), data volume, notes."""
        out: dict[str, object] = {
            "name": self.protocol.name,
            "duration_s": self.duration_s,
            "steps": len(self.steps),
            "cycles": sum(s.cycles for s in self.steps),
            "exposures": self.exposures_per_window(),
            "beam_on_s": self.beam_on_s,
            "dose_e_per_A2": self.dose_e_per_m2 / E_PER_A2,
            "ec_points": self.n_ec_points(),
            "data_bytes": self.data_bytes(),
            "notes": [s.note for s in self.steps if s.note] + self.notes,
        }
        if self.protocol.drift.tracking_exposures:
            out["tracking"] = {
                "window": TRACKING_WINDOW,
                "settings_of": self.protocol.drift.window or self.protocol.spectrometer.windows[0].name,
                "exposures": len(self.tracking),
                "exposure_s": self.protocol.drift.track_exposure,
                "beam_on_s": self.tracking_beam_on_s,
                "dose_e_per_A2": self.tracking_dose_e_per_m2 / E_PER_A2,
            }
        return out


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
    if protocol.drift.tracking_exposures:
        _plan_tracking(plan, problems)
    if plan.duration_s > MAX_RUN_S:
        problems.append(f"steps: the run lasts {show(plan.duration_s, TIME)}, beyond the {show(MAX_RUN_S, TIME)} a protocol may last")
    if plan.n_ec_points() > MAX_EC_POINTS:
        problems.append(f"steps: {plan.n_ec_points()} potentiostat points, more than the {MAX_EC_POINTS} a run records (lengthen the cv steps or the readings)")
    budget = protocol.safety.max_total_dose
    if plan.dose_e_per_m2 > budget * (1 + 1e-9):
        tracking = (f"; {len(plan.tracking)} drift-tracking exposures {plan.tracking_dose_e_per_m2 / E_PER_A2:.4g} e/Å^2 of it"
                    if plan.tracking_dose_e_per_m2 > 0 else "")
        problems.append(
            f"safety.max_total_dose: the plan delivers {plan.dose_e_per_m2 / E_PER_A2:.4g} e/Å^2 "
            f"({plan.beam_on_s:.4g} s of beam at {protocol.beam.dose_rate_e_per_m2_s / E_PER_A2:.3g} e/Å^2/s{tracking}), "
            f"over the budget of {budget / E_PER_A2:.4g} e/Å^2"
        )
    cap = protocol.drift.track_max_dose
    if cap is not None and plan.tracking_dose_e_per_m2 > cap * (1 + 1e-9):
        problems.append(
            f"drift.track_max_dose: the {len(plan.tracking)} drift-tracking exposures deliver "
            f"{plan.tracking_dose_e_per_m2 / E_PER_A2:.4g} e/Å^2, over the cap of {cap / E_PER_A2:.4g} e/Å^2 "
            "(track less often or shorten drift.track_exposure)"
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


def _plan_tracking(plan: Plan, problems: list[str]) -> None:
    """Add the drift-tracking frames (`drift.track_every` or `drift.track_groups`) to the plan's
    steps, then renumber every exposure in time order.

    A tracking frame is one exposure of `drift.track_exposure` with the tracking window's camera
    settings. It never overlaps another exposure (each is followed by the camera's dead time), it
    lies inside one step, and it ends at least the dead time plus `TRACK_LEAD_S` before the next
    science exposure, so that it is a group of its own: the runner corrects before the group
    after it with its estimate (docs/decisions/0026). `track_groups`: one just before each group
    of science exposures, where that slot is free (not before the run's first group, nor after an
    exposure that ends too close before the group). `track_every`: one at each multiple of the
    interval from the run start, moved later to the first free slot, dropped when none comes
    before the next multiple.
    """
    protocol = plan.protocol
    d = protocol.drift
    dead = protocol.spectrometer.camera.dead_time
    texp = d.track_exposure
    window = d.window or protocol.spectrometer.windows[0].name
    science = sorted(plan.exposures, key=lambda e: (e.t_start_s, e.subframe))
    starts = [e.t_start_s for e in science]
    step_starts = [s.t_start_s for s in plan.steps]
    placed: list[tuple[int, float]] = []  # (step position, start time)
    last_end = -math.inf  # end of the last tracking frame placed, plus dead time

    def step_at(t: float) -> int | None:
        k = bisect.bisect_right(step_starts, t + 1e-9) - 1
        return k if k >= 0 and t < plan.steps[k].t_end_s else None

    def conflict(t: float) -> float | None:
        """Where a frame at `t` could start instead, or None when the slot at `t` is free."""
        k = step_at(t)
        if k is None:
            return math.inf
        step = plan.steps[k]
        if t + texp + dead > step.t_end_s + 1e-9:
            return step.t_end_s if k + 1 < len(plan.steps) else math.inf
        if t < last_end - 1e-9:
            return last_end
        i = bisect.bisect_left(starts, t + texp + dead + TRACK_LEAD_S - 1e-9) - 1
        if i >= 0 and science[i].t_end_s + dead > t + 1e-9:
            return science[i].t_end_s + dead
        return None

    skipped = 0
    if d.track_groups:
        prev_end: float | None = None
        for e in science:
            starts_group = e.subframe == 0 and (prev_end is None or e.t_start_s - prev_end > dead + 1e-6)
            prev_end = e.t_end_s
            if not starts_group:
                continue
            t = e.t_start_s - TRACK_LEAD_S - dead - texp
            if t >= 0.0 and conflict(t) is None:
                k = step_at(t)
                assert k is not None
                placed.append((k, t))
                last_end = t + texp + dead
            elif e is not science[0]:
                skipped += 1
    else:
        assert d.track_every is not None
        n = math.ceil(plan.duration_s / d.track_every - 1e-9)
        if len(science) + n > MAX_EXPOSURES:
            problems.append(f"drift.track_every: {d.track_every:g} s over a {plan.duration_s:g} s run gives more than "
                            f"{MAX_EXPOSURES} exposures")
            return
        for k in range(n):
            t, limit = k * d.track_every, min((k + 1) * d.track_every, plan.duration_s)
            while t < limit:
                moved = conflict(t)
                if moved is None:
                    break
                t = max(moved, t + 1e-6)
            if t < limit:
                step_k = step_at(t)
                assert step_k is not None
                placed.append((step_k, t))
                last_end = t + texp + dead
            else:
                skipped += 1
    if len(science) + len(placed) > MAX_EXPOSURES:
        problems.append(f"drift: the tracking exposures take the plan beyond {MAX_EXPOSURES} exposures")
        return
    for k, t in placed:
        step = plan.steps[k]
        step.exposures.append(PlannedExposure(
            index=0, t_start_s=t, window=window, exposure_s=texp, step_index=step.index, cycle=step.cycle_at(t),
            trigger="drift-tracking", potential_V=step.potential_at(t), kind="tracking"))
    index = 0
    for step in plan.steps:
        step.exposures.sort(key=lambda e: (e.t_start_s, e.subframe))
        step.exposures = [replace(e, index=index + j) for j, e in enumerate(step.exposures)]
        index += len(step.exposures)
    if skipped:
        what = "exposure groups have no tracking exposure before them" if d.track_groups else "tracking exposures found no free slot"
        plan.notes.append(f"drift: {skipped} {what} (the camera busy, or a group too close after the one before)")
