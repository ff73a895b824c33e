"""Closed-loop drift correction: measure the specimen's position along the slit from each image of
one window (or from the protocol's drift-tracking frames) and take drift back with the
microscope's image shift between exposures, with the stage when the image shift would leave its
range.

The protocol's `drift` section sets the mode (off, measure, correct), the tracking window, a dead
band, the largest image shift allowed, the stage's travel and what to do when the microscope
refuses a correction.

- Measuring (`observe`) runs where the image is stored (the I/O thread on a real-time run): the
  image's counts-per-row profile is registered against the first tracked image around the
  Pt/electrolyte step (`insitem.analysis.drift`). The result is the displacement of the specimen's
  image over the slit, i.e. drift plus the image shift (and stage move) in force when the image
  was taken. With tracking frames (`drift.track_every` / `track_groups`) only they are measured,
  against the window's first image when that comes before the first frame; otherwise the
  tracking window's own images.
- Correcting (`apply`) runs on the runner's thread just before the next exposure that starts a
  group (one that does not follow the previous exposure back to back: the images of a group, such
  as a Li-K image and the low-loss image it is deconvolved with, must share one position), with the
  beam still blanked: when the displacement expected by then exceeds the dead band, the image
  shift (along the slit) is moved by minus it, within +-max_shift. A correction that would take the
  image shift beyond max_shift moves the stage instead (`use_stage`): by the whole correction
  measured from the image shift the loop started from, to which the image shift returns; the
  stage is waited for, read back, and kept within `max_stage_travel` of where the run found it.
  Every estimate and every action is a row of the run file's drift table
  (`RunFile.append_drift`), so the record says what the microscope was asked and what it answered.

Sign convention (docs/tem-command-set.md, simulators/world.py `image_displacement_m`): an image
shift of -d takes back a drift of +d, and so does a stage move of -d (the stage carries the
specimen). Position rows are along the slit's y: the image shift's second component, the
stage's y axis (the slit is taken as lying along the stage's y; a rotated slit would need the
stage-to-slit rotation, not calibrated here).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from insitem.analysis.axes import AnalysisError
from insitem.analysis.drift import register_shift, row_profile, step_position
from insitem.drivers.errors import DeviceError, SafetyLimitError
from insitem.protocols.schema import TRACKING_WINDOW, DriftCorrection

log = logging.getLogger(__name__)

#: how long a stage move may take before the correction counts as refused (wall or rig clock):
#: a few-micrometre move of a goniometer takes seconds, with backlash correction [est]
STAGE_TIMEOUT_S = 60.0
STAGE_POLL_S = 0.05  # interval between `moving` queries while the stage travels


@dataclass
class _Estimate:
    t_s: float
    index: int
    displacement_m: float  # of the image over the slit since the first tracked image
    sigma_m: float
    drift_m: float = 0.0  # of the specimen itself: the displacement less the image shift (and stage) applied since
    window: str = ""  # the run-file window of the image (TRACKING_WINDOW for a tracking frame)
    kind: str = "science"  # science | tracking


class DriftController:
    """Drift tracking and correction for one run (see the module docstring)."""

    def __init__(self, config: DriftCorrection, window: str, position_m: np.ndarray,
                 record_io: Callable[..., None], record: Callable[..., None], event: Callable[[str, str], None],
                 pause: Callable[[float], None] | None = None) -> None:
        """`record_io` writes a drift row from the thread that stores images, `record` from the
        runner's thread (`RunFile.append_drift` or its I/O-thread proxy); `event` logs a line;
        `pause(s)` waits while the stage travels (the runner's: its clock, renewing the lease)."""
        self.config = config
        self.window = window
        self.from_tracking = config.tracking_exposures  # measure the tracking frames only
        self._pause = pause
        self.position_m = np.asarray(position_m, float)
        self._record_io = record_io
        self._record = record
        self._event = event  # runner log: level, message
        self._lock = threading.Lock()
        self._reference: np.ndarray | None = None
        self._step_m: float | None = None
        self._pending: _Estimate | None = None
        self._last: _Estimate | None = None  # displacement found in the last image, before any correction since
        self._shift_y_m: float | None = None  # image shift along the slit we have set (None: not read yet)
        self._corrected_at_s = -math.inf  # rig time of the last correction: older images show the old shift
        self._applied_m = 0.0  # image shift along the slit applied since the first tracked image
        self._previous: _Estimate | None = None  # the estimate before the last, for the drift velocity
        self._shift0_y_m: float | None = None  # the image shift the loop found: a stage move recentres it here
        self._stage0_y_m: float | None = None  # the stage y the loop found (None: not read yet)
        self._stage_y_m: float = math.nan  # the stage y in force (read back after each move)
        self.refused = False

    # -- measuring (any thread) ----------------------------------------------------------------------
    def observe(self, window: str, index: int, t_s: float, image: np.ndarray, *, kind: str = "science",
                dose_e_per_m2: float = math.nan) -> None:
        """Estimate the displacement from one stored image taken with the tracking window's settings:
        the window's own images, or, when the protocol asks for tracking frames, those frames, the
        reference being the window's first image when it comes before the first frame (so the loop
        holds the image where the science series started). `index` is the image's index in its
        run-file window (TRACKING_WINDOW for a tracking frame), `dose` its dose (recorded with the
        estimate)."""
        if window != self.window:
            return
        if self.from_tracking and kind != "tracking" and self._reference is not None:
            return  # with tracking frames, a science image serves only as the reference (the first)
        if not self.from_tracking and kind == "tracking":
            return
        stored = TRACKING_WINDOW if kind == "tracking" else window
        profile = row_profile(image)
        try:
            with self._lock:
                if self._reference is None:
                    self._step_m = step_position(profile, self.position_m).position_m
                    self._reference = profile
                    est = _Estimate(t_s, index, 0.0, 0.0, window=stored, kind=kind)
                else:
                    assert self._step_m is not None
                    guess = self._last.displacement_m if self._last is not None else 0.0
                    r = register_shift(profile, self._reference, self.position_m, self._step_m + guess, guess_m=guess)
                    est = _Estimate(t_s, index, r.position_m, r.sigma_m, r.position_m - self._applied_m, stored, kind)
                self._previous, self._last = self._last, est
                self._pending = est
                shift = self._shift_y_m if self._shift_y_m is not None else math.nan
                stage = self._stage_y_m
        except AnalysisError as exc:
            self._event("WARNING", f"drift: no estimate from {stored} image {index}: {exc}")
            return
        self._record_io(t_s, stored, index, est.displacement_m, est.sigma_m, shift, "measured", kind, dose_e_per_m2, stage)

    def _row(self, t_s: float, est: _Estimate, measured_m: float, sigma_m: float, action: str) -> None:
        """One action row (runner's thread): about estimate `est`, with the image shift and stage
        in force after the action; an action delivers no dose (NaN)."""
        shift = self._shift_y_m if self._shift_y_m is not None else math.nan
        self._record(t_s, est.window or self.window, est.index, measured_m, sigma_m, shift, action, est.kind, math.nan,
                     self._stage_y_m)

    # -- correcting (the runner's thread, beam blanked) --------------------------------------------------
    def apply(self, microscope: Any, t_s: float) -> None:
        """Before the next exposure: correct the last estimate if it is outside the dead band. The
        runner calls this only before an exposure that does not follow another back to back, so
        the images of one group (a Li-K image and the low-loss image it is deconvolved with) are
        taken at one position."""
        if self.config.mode != "correct" or self.refused:
            return
        with self._lock:
            est, self._pending = self._pending, None
        if est is None or est.t_s < self._corrected_at_s:
            return  # no new image, or one taken before the last correction (a real-time run's late write)
        lens = microscope.lens
        moved = 0.0  # how far the image over the slit has been moved by this call so far
        try:
            if self._shift_y_m is None:
                self._shift_x_m, self._shift_y_m = (float(v) for v in lens.image_shift_m)
                self._shift0_y_m = self._shift_y_m
                # the shift the loop starts from: the record's corrections are moves from it
                self._row(t_s, est, math.nan, math.nan, "shift-read")
            # taken with the shift in force now (older images are skipped); the specimen goes on
            # drifting until the next image, so the correction also takes back the drift expected
            # by then at the velocity of the last two estimates (feed-forward)
            residual = est.displacement_m + self._velocity_m_per_s(est) * max(t_s - est.t_s, 0.0)
            if abs(residual) <= self.config.dead_band:
                self._row(t_s, est, residual, est.sigma_m, "within-dead-band")
                return
            target = self._shift_y_m - residual
            action = "corrected"
            if abs(target) > self.config.max_shift:
                if self.config.use_stage:
                    # the stage takes the whole correction beyond the image shift's start, which
                    # the image shift returns to
                    assert self._shift0_y_m is not None
                    moved += self._move_stage(microscope, t_s, est, target - self._shift0_y_m)
                    target = self._shift0_y_m
                    action = "stage"
                else:
                    target = math.copysign(self.config.max_shift, target)
                    action = "limited"
            if target != self._shift_y_m:
                lens.set_image_shift(self._shift_x_m, target)
                read_back = float(lens.image_shift_m[1])
                if not math.isclose(read_back, target, rel_tol=1e-6, abs_tol=1e-12):
                    raise DeviceError(f"image shift reads {read_back:g} m after setting {target:g} m", "microscope")
        except NotImplementedError as exc:
            self._account(t_s, moved)
            self._refused(t_s, est, f"this microscope has no {'stage' if 'stage' in str(exc) else 'image shift'} ({exc})")
            return
        except _TravelLimit as exc:
            self._account(t_s, moved)
            self._refused(t_s, est, str(exc), by_microscope=False)
            return
        except DeviceError as exc:
            self._account(t_s, moved)
            self._refused(t_s, est, str(exc))
            return
        # the reference image was taken with the old shift: what the next image shows is relative
        # to it, so the applied change is added back when comparing
        moved += target - self._shift_y_m
        self._shift_y_m = target
        self._account(t_s, moved)
        self._row(t_s, est, est.displacement_m, est.sigma_m, action)
        where = f"image shift along the slit now {target * 1e9:+.1f} nm"
        if action == "stage":
            where = f"stage y now {self._stage_y_m * 1e6:+.4f} um, {where}"
        self._event("INFO", f"drift: {est.displacement_m * 1e9:+.1f} +- {est.sigma_m * 1e9:.1f} nm; {where}")
        if action == "limited":
            self._event("WARNING", f"drift: the correction reached drift.max_shift ({self.config.max_shift * 1e9:g} nm) "
                        "and drift.use_stage is off")

    def _account(self, t_s: float, moved: float) -> None:
        """Book a move of the image over the slit (image shift and stage) made at `t_s`."""
        if moved == 0.0:
            return
        self._corrected_at_s = t_s
        with self._lock:
            self._applied_m += moved
            if self._last is not None:  # the next image is searched near where this one would now sit
                last = self._last
                self._last = _Estimate(last.t_s, last.index, last.displacement_m + moved, last.sigma_m, last.drift_m,
                                       last.window, last.kind)

    def _move_stage(self, microscope: Any, t_s: float, est: _Estimate, offset_m: float) -> float:
        """Move the stage along the slit so that the image moves by `offset_m` beyond what the
        image shift's start gives; wait for it, read it back. Returns the move read back."""
        stage = microscope.stage  # NotImplementedError: no stage
        if self._stage0_y_m is None:
            self._stage_y_m = float(stage.position.y_m)
            self._stage0_y_m = self._stage_y_m
            self._row(t_s, est, math.nan, math.nan, "stage-read")
        want = self._stage_y_m + offset_m
        if abs(want - self._stage0_y_m) > self.config.max_stage_travel:
            raise _TravelLimit(f"the stage would move {(want - self._stage0_y_m) * 1e6:+.3g} um from where the run found it, "
                               f"beyond drift.max_stage_travel ({self.config.max_stage_travel * 1e6:g} um)")
        stage.move_to(y_m=want)
        waited = 0.0
        while stage.moving:
            if waited >= STAGE_TIMEOUT_S:
                raise DeviceError(f"the stage still moves {STAGE_TIMEOUT_S:g} s after a move to y = {want:g} m", "microscope")
            if self._pause is not None:
                self._pause(STAGE_POLL_S)
            waited += STAGE_POLL_S
        read_back = float(stage.position.y_m)
        before, self._stage_y_m = self._stage_y_m, read_back
        if abs(read_back - want) > self.config.max_shift:
            # beyond what the image shift could make up: booked where it went, then refused
            self._account(t_s, read_back - before)
            raise DeviceError(f"the stage reads y = {read_back:g} m after a move to {want:g} m", "microscope")
        return read_back - before

    def _velocity_m_per_s(self, est: _Estimate) -> float:
        """The specimen's drift velocity from the estimate before `est` to `est`: 0 with one, and
        0 unless it exceeds twice its own uncertainty (two estimates close in time, such as a
        window's image and a tracking frame right after it, give a velocity of noise that the
        feed-forward would multiply by the whole interval to the next group). The reference's
        uncertainty, recorded as 0, is taken as the other's."""
        prev = self._previous
        if prev is None or prev is est or est.t_s <= prev.t_s:
            return 0.0
        dt = est.t_s - prev.t_s
        v = (est.drift_m - prev.drift_m) / dt
        s_prev = prev.sigma_m if prev.sigma_m > 0 else est.sigma_m
        sigma_v = math.hypot(s_prev, est.sigma_m) / dt
        return v if abs(v) > 2.0 * sigma_v else 0.0

    def _refused(self, t_s: float, est: _Estimate, why: str, by_microscope: bool = True) -> None:
        self.refused = True
        self._row(t_s, est, est.displacement_m, est.sigma_m, "refused")
        what = "drift correction refused by the microscope" if by_microscope else "drift correction refused"
        if self.config.on_refusal == "stop":
            raise SafetyLimitError(f"{what}: {why} (drift.on_refusal: stop)")
        self._event("WARNING", f"{what}: {why}; measuring only from now on (drift.on_refusal: continue)")


class _TravelLimit(Exception):
    """A stage move the protocol's `drift.max_stage_travel` does not allow."""
