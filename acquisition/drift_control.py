"""Closed-loop drift correction: measure the specimen's position along the slit from each image of
one window and take drift back with the microscope's image shift between exposures.

The protocol's `drift` section sets the mode (off, measure, correct), the tracking window, a dead
band, the largest image shift allowed and what to do when the microscope refuses a correction.

- Measuring (`observe`) runs where the image is stored (the I/O thread on a real-time run): the
  image's counts-per-row profile is registered against the first tracked image around the
  Pt/electrolyte step (`insitem.analysis.drift`). The result is the displacement of the specimen's
  image over the slit, i.e. drift plus the image shift in force when the image was taken.
- Correcting (`apply`) runs on the runner's thread just before the next exposure that starts a
  group (one that does not follow the previous exposure back to back: the images of a group, such
  as a Li-K image and the low-loss image it is deconvolved with, must share one position), with the
  beam still blanked: when the displacement expected by then exceeds the dead band, the image
  shift (along the slit) is moved by minus it, within +-max_shift. Every estimate and every action is a row of
  the run file's drift table (`RunFile.append_drift`), so the record says what the microscope was
  asked and what it answered.

Sign convention (docs/tem-command-set.md, simulators/world.py `image_displacement_m`): an image
shift of -d takes back a drift of +d. Position rows are along the slit's y, the image shift's
second component.
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
from insitem.protocols.schema import DriftCorrection

log = logging.getLogger(__name__)


@dataclass
class _Estimate:
    t_s: float
    index: int
    displacement_m: float  # of the image over the slit since the first tracked image
    sigma_m: float
    drift_m: float = 0.0  # of the specimen itself: the displacement less the image shift applied since


class DriftController:
    """Drift tracking and correction for one run (see the module docstring)."""

    def __init__(self, config: DriftCorrection, window: str, position_m: np.ndarray,
                 record_io: Callable[..., None], record: Callable[..., None], event: Callable[[str, str], None]) -> None:
        """`record_io` writes a drift row from the thread that stores images, `record` from the
        runner's thread (`RunFile.append_drift` or its I/O-thread proxy); `event` logs a line."""
        self.config = config
        self.window = window
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
        self.refused = False

    # -- measuring (any thread) ----------------------------------------------------------------------
    def observe(self, window: str, index: int, t_s: float, image: np.ndarray) -> None:
        """Estimate the displacement from one stored image of the tracking window."""
        if window != self.window:
            return
        profile = row_profile(image)
        try:
            with self._lock:
                if self._reference is None:
                    self._step_m = step_position(profile, self.position_m).position_m
                    self._reference = profile
                    est = _Estimate(t_s, index, 0.0, 0.0)
                else:
                    assert self._step_m is not None
                    guess = self._last.displacement_m if self._last is not None else 0.0
                    r = register_shift(profile, self._reference, self.position_m, self._step_m + guess, guess_m=guess)
                    est = _Estimate(t_s, index, r.position_m, r.sigma_m, r.position_m - self._applied_m)
                self._previous, self._last = self._last, est
                self._pending = est
                shift = self._shift_y_m if self._shift_y_m is not None else math.nan
        except AnalysisError as exc:
            self._event("WARNING", f"drift: no estimate from {window} image {index}: {exc}")
            return
        self._record_io(t_s, window, index, est.displacement_m, est.sigma_m, shift, "measured")

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
        try:
            if self._shift_y_m is None:
                self._shift_x_m, self._shift_y_m = (float(v) for v in lens.image_shift_m)
                # the shift the loop starts from: the record's corrections are moves from it
                self._record(t_s, self.window, est.index, math.nan, math.nan, self._shift_y_m, "shift-read")
            # taken with the shift in force now (older images are skipped); the specimen goes on
            # drifting until the next image, so the correction also takes back the drift expected
            # by then at the velocity of the last two estimates (feed-forward)
            residual = est.displacement_m + self._velocity_m_per_s(est) * max(t_s - est.t_s, 0.0)
            if abs(residual) <= self.config.dead_band:
                self._record(t_s, self.window, est.index, residual, est.sigma_m, self._shift_y_m, "within-dead-band")
                return
            target = self._shift_y_m - residual
            action = "corrected"
            if abs(target) > self.config.max_shift:
                target = math.copysign(self.config.max_shift, target)
                action = "limited"
            lens.set_image_shift(self._shift_x_m, target)
            read_back = float(lens.image_shift_m[1])
            if not math.isclose(read_back, target, rel_tol=1e-6, abs_tol=1e-12):
                raise DeviceError(f"image shift reads {read_back:g} m after setting {target:g} m", "microscope")
        except NotImplementedError as exc:
            self._refused(t_s, est, f"this microscope has no image shift ({exc})")
            return
        except DeviceError as exc:
            self._refused(t_s, est, str(exc))
            return
        # the reference image was taken with the old shift: what the next image shows is relative
        # to it, so the applied change is added back when comparing
        moved = target - self._shift_y_m
        self._shift_y_m = target
        self._corrected_at_s = t_s
        with self._lock:
            self._applied_m += moved
            if self._last is not None:  # the next image is searched near where this one would now sit
                last = self._last
                self._last = _Estimate(last.t_s, last.index, last.displacement_m + moved, last.sigma_m, last.drift_m)
        self._record(t_s, self.window, est.index, est.displacement_m, est.sigma_m, target, action)
        self._event("INFO", f"drift: {est.displacement_m * 1e9:+.1f} +- {est.sigma_m * 1e9:.1f} nm; image shift along the slit now {target * 1e9:+.1f} nm")
        if action == "limited":
            self._event("WARNING", f"drift: the correction reached drift.max_shift ({self.config.max_shift * 1e9:g} nm); the stage must take over")

    def _velocity_m_per_s(self, est: _Estimate) -> float:
        """The specimen's drift velocity from the estimate before `est` to `est` (0 with one)."""
        prev = self._previous
        if prev is None or prev is est or est.t_s <= prev.t_s:
            return 0.0
        return (est.drift_m - prev.drift_m) / (est.t_s - prev.t_s)

    def _refused(self, t_s: float, est: _Estimate, why: str) -> None:
        self.refused = True
        shift = self._shift_y_m if self._shift_y_m is not None else math.nan
        self._record(t_s, self.window, est.index, est.displacement_m, est.sigma_m, shift, "refused")
        if self.config.on_refusal == "stop":
            raise SafetyLimitError(f"drift correction refused by the microscope: {why} (drift.on_refusal: stop)")
        self._event("WARNING", f"drift correction refused by the microscope: {why}; measuring only from now on (drift.on_refusal: continue)")
