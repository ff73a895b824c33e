"""Optics and beam of the simulated microscope: dose bookkeeping and the slit/row geometry.

What this module knows (physics.md §0, §1.7, §5, §6.1, §6.4):

* **Dose rate** ``D = I / (e A)`` (physics.md §5), ``A`` the area of the illuminated disc.
  1 nA on a 1 um disc is 79.5 e/Å²/s (§7 check 10); the default 0.5 nA on a 2 um disc is
  9.9 e/Å²/s, the 10 e/Å²/s study-3 limit (§5, §6.4).
* **Blanking** is a time record, not a flag: every change of the blanker (or of the current or
  illuminated area) closes a segment of constant dose rate, so the dose delivered in any
  interval and the beam-on fraction are exact integrals of a piecewise-constant function
  (§5: "accumulate dose only while beam_on"). The blanker is taken as instantaneous (§5: microseconds
  against 30 s exposures).
* **Slit geometry**: the spectrum image's rows are positions along the slit (y). A detector row
  of pitch ``p`` sees ``p / M`` of specimen along the strip, ``M`` the specimen-to-CCD
  magnification along y. The default ``M`` makes the 1880 nm slit fill the 2048 rows, so
  ``rows_per_ypix = 2048/330`` rows make one 5.70 nm y pixel (§0, §6.1).
* **Electrons per row**: ``D * (p/M) * w * t`` with ``w`` the slit width (integrated x);
  §5 gives 3.4e7 electrons per 5.7 nm pixel for w = 200 nm, 30 s, 10 e/Å²/s.

Simplifications (named, with limits):

* The centre row of the detector images the slit centre and the strip is imaged without
  distortion (no spectrometer aberrations, no non-isochromaticity here — those are the EELS/
  detector modules' business). Good to the 5.7 nm pixel; a real SR-EELS setup needs a
  calibration of ``M`` and of the row offset.
* The illuminated disc is uniform (top hat) and centred on the optical axis at specimen
  (0, 0); rows whose specimen point lies outside it get no electrons. Real probes have
  Gaussian-ish tails: a few % of the current lands outside the nominal disc.
* Geometry (slit, magnification) is read when the electrons per row are evaluated: if the slit
  is moved during an exposure, the whole exposure is computed with the final geometry. The dose
  itself is exact for any blanking/current history.
* The magnification is one number: the indicated lens magnification times a spectrometer
  factor (``spectrometer_magnification``, default 1) — the whole specimen-to-CCD chain.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from insitem.drivers.clock import Clock
from insitem.drivers.interfaces import (
    E_PER_A2_IN_E_PER_M2,
    ELEMENTARY_CHARGE_C,
    disc_area_m2,
    dose_rate_e_per_m2_s,
)

__all__ = [
    "OpticsParameters",
    "MicroscopeState",
    "BlankListener",
    "E_PER_A2_IN_E_PER_M2",
    "ELEMENTARY_CHARGE_C",
]

BlankListener = Callable[[bool, float], None]
"""Called as ``listener(blanked, t_s)`` after every change of the blanker."""


class OpticsParameters(BaseModel):
    """Beam, lens and slit defaults of the simulated microscope (all SI, energies in eV).

    Defaults and their sources (physics.md):

    * ``high_tension_V`` 300 kV — Hitachi HF3300 (§0 [Y14], §6.1).
    * ``beam_current_A`` 0.5 nA over ``illuminated_diameter_m`` 2 um — 10 e/Å²/s, the study-3
      dose-rate limit (§5, §6.4 [derived]/[P3]).
    * ``detector_rows`` 2048 (§0 [Y14]); ``detector_row_pitch_m`` 14 um — [est] (a typical
      2k scintillator CCD pixel; physics.md gives no figure; keep it a parameter).
    * ``slit_height_m`` 1880 nm along y, imaged over 330 y pixels of 5.70 nm (§0 [Y14]);
      ``rows_per_ypix`` 2048/330 = 6.2 rows per y pixel (§0 [derived]/[est], binning not
      stated in the paper).
    * ``slit_width_m`` 200 nm, the integrated x width used in §5's electron count [est].
    * ``magnification``: specimen-to-CCD magnification along y. ``None`` (default) derives it
      so the slit height fills the detector rows: ``rows * pitch / height`` = 15251 [derived].
    """

    model_config = ConfigDict(extra="forbid")

    high_tension_V: float = Field(default=300e3, gt=0, le=1.5e6, description="accelerating voltage, V")
    beam_current_A: float = Field(default=0.5e-9, ge=0, le=1e-6, description="beam current on the specimen, A")
    illuminated_diameter_m: float = Field(default=2e-6, gt=0, le=1e-3, description="illuminated disc diameter, m")
    magnification: float | None = Field(
        default=None, gt=0, description="specimen-to-CCD magnification along y; None = slit fills the rows"
    )
    spectrometer_magnification: float = Field(
        default=1.0, gt=0, description="extra factor of the spectrometer between lens magnification and CCD [est]"
    )
    mode: Literal["TEM", "DIFF"] = "TEM"
    defocus_m: float = Field(default=0.0, ge=-1e-3, le=1e-3, description="objective defocus, m")
    detector_rows: int = Field(default=2048, ge=1, description="CCD rows (position axis)")
    detector_row_pitch_m: float = Field(default=14e-6, gt=0, description="CCD row pitch, m [est]")
    rows_per_ypix: float = Field(default=2048 / 330, gt=0, description="CCD rows per spatial (y) pixel")
    slit_inserted: bool = True
    slit_width_m: float = Field(default=200e-9, gt=0, le=1e-3, description="slit width (integrated x) at specimen, m")
    slit_height_m: float = Field(default=1880e-9, gt=0, le=1e-3, description="slit length along y at specimen, m")
    slit_centre_m: tuple[float, float] = Field(default=(0.0, 0.0), description="(x, y) of slit centre, m")
    slit_angle_rad: float = Field(default=0.0, ge=-math.pi, le=math.pi, description="strip angle to specimen y, rad")
    start_blanked: bool = Field(default=True, description="the beam is blanked when the world starts (safe)")

    @model_validator(mode="after")
    def _derive_magnification(self) -> "OpticsParameters":
        if self.magnification is None:
            self.magnification = (
                self.detector_rows * self.detector_row_pitch_m / self.slit_height_m / self.spectrometer_magnification
            )
        return self


class MicroscopeState:
    """Beam, lens and slit state of the simulated world, with an exact dose record.

    Thread-safe (one lock): an emulator thread may blank while the runner reads the dose.
    Every setter validates and raises ``ValueError`` out of range; the simulated microscope and
    the emulator turn that into their own errors.
    """

    def __init__(self, params: OpticsParameters | None = None, clock: Clock | None = None) -> None:
        from insitem.drivers.clock import VirtualClock

        self.params = params or OpticsParameters()
        self.clock: Clock = clock or VirtualClock()
        p = self.params
        self._lock = threading.RLock()
        self.high_tension_V = p.high_tension_V
        self._current_A = p.beam_current_A
        self._diameter_m = p.illuminated_diameter_m
        assert p.magnification is not None
        self.magnification = float(p.magnification)
        self.mode: str = p.mode
        self.defocus_m = p.defocus_m
        self.slit_inserted = p.slit_inserted
        self.slit_width_m = p.slit_width_m
        self.slit_height_m = p.slit_height_m
        self.slit_centre_m: tuple[float, float] = (float(p.slit_centre_m[0]), float(p.slit_centre_m[1]))
        self.slit_angle_rad = p.slit_angle_rad
        self._blanked = p.start_blanked
        self._listeners: list[BlankListener] = []
        t0 = self.clock.now()
        self.t_start_s = t0
        # Piecewise-constant record: from _t[i] on, dose rate _rate[i] (e/m²/s) and beam-on flag
        # _on[i]; _cum_dose/_cum_on hold the integrals up to _t[i]. Written by hand (bisect +
        # running sums) because the record grows one segment at a time and numpy/scipy have no
        # appendable piecewise-constant integrator; lookups are O(log n).
        self._t: list[float] = [t0]
        self._rate: list[float] = [0.0 if self._blanked else self._nominal_rate()]
        self._on: list[bool] = [not self._blanked]
        self._cum_dose: list[float] = [0.0]
        self._cum_on: list[float] = [0.0]

    # -- beam ----------------------------------------------------------------------------------
    @property
    def blanked(self) -> bool:
        return self._blanked

    @property
    def beam_current_A(self) -> float:
        return self._current_A

    @property
    def illuminated_diameter_m(self) -> float:
        return self._diameter_m

    @property
    def illuminated_area_m2(self) -> float:
        """Area of the illuminated disc, m² (π d²/4)."""
        return disc_area_m2(self._diameter_m)

    @property
    def dose_rate_e_per_m2_s(self) -> float:
        """Dose rate while unblanked, I/(e A) in e/m²/s (physics.md §5); 1e20 e/m²/s = 1 e/Å²/s."""
        return self._nominal_rate()

    @property
    def dose_rate_now_e_per_m2_s(self) -> float:
        """Dose rate actually delivered now: 0 while blanked."""
        return 0.0 if self._blanked else self._nominal_rate()

    def _nominal_rate(self) -> float:
        return dose_rate_e_per_m2_s(self._current_A, disc_area_m2(self._diameter_m))

    def add_blank_listener(self, listener: BlankListener) -> None:
        """Call ``listener(blanked, t_s)`` after each change of the blanker (e.g. the cell's
        beam-induced current, physics.md §6.3: 0.05 x I_beam while unblanked)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_blank_listener(self, listener: BlankListener) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def set_blanked(self, blanked: bool, t_s: float | None = None) -> None:
        """Blank or unblank at ``t_s`` (default: the clock's now). Listeners hear of changes only."""
        blanked = bool(blanked)
        with self._lock:
            if blanked == self._blanked:
                return
            t = self._close_segment(t_s)
            self._blanked = blanked
            self._open_segment(t)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(blanked, t)

    def set_beam_current(self, current_A: float, t_s: float | None = None) -> None:
        """Change the beam current (A); the dose record follows from ``t_s`` (default now)."""
        if not (math.isfinite(current_A) and 0 <= current_A <= 1e-6):
            raise ValueError(f"beam current {current_A} A outside [0, 1e-6] A")
        with self._lock:
            t = self._close_segment(t_s)
            self._current_A = float(current_A)
            self._open_segment(t)

    def set_illuminated_diameter(self, diameter_m: float, t_s: float | None = None) -> None:
        """Change the illuminated disc diameter (m); the dose record follows from ``t_s``."""
        if not (math.isfinite(diameter_m) and 0 < diameter_m <= 1e-3):
            raise ValueError(f"illuminated diameter {diameter_m} m outside (0, 1e-3] m")
        with self._lock:
            t = self._close_segment(t_s)
            self._diameter_m = float(diameter_m)
            self._open_segment(t)

    def _close_segment(self, t_s: float | None) -> float:
        t = self.clock.now() if t_s is None else float(t_s)
        if t < self._t[-1]:
            raise ValueError(f"time {t} s is before the last recorded change at {self._t[-1]} s")
        return t

    def _open_segment(self, t: float) -> None:
        dt = t - self._t[-1]
        cum_dose = self._cum_dose[-1] + self._rate[-1] * dt
        cum_on = self._cum_on[-1] + (dt if self._on[-1] else 0.0)
        rate = 0.0 if self._blanked else self._nominal_rate()
        if t == self._t[-1]:  # several changes at one instant: the last one holds
            self._rate[-1], self._on[-1] = rate, not self._blanked
            return
        self._t.append(t)
        self._rate.append(rate)
        self._on.append(not self._blanked)
        self._cum_dose.append(cum_dose)
        self._cum_on.append(cum_on)

    # -- exact integrals of the record -----------------------------------------------------------
    def _integral(self, t: float, values: list[float] | list[bool], cum: list[float]) -> float:
        i = bisect.bisect_right(self._t, t) - 1
        if i < 0:
            return 0.0  # before the world started: no beam
        return cum[i] + float(values[i]) * (t - self._t[i])

    def dose_e_per_m2(self, t0_s: float, t1_s: float) -> float:
        """Electrons per m² delivered in [t0, t1] (exact; future times continue the present state)."""
        if t1_s < t0_s:
            raise ValueError(f"dose interval [{t0_s}, {t1_s}] is reversed")
        with self._lock:
            return self._integral(t1_s, self._rate, self._cum_dose) - self._integral(t0_s, self._rate, self._cum_dose)

    def beam_on_time_s(self, t0_s: float, t1_s: float) -> float:
        """Seconds of [t0, t1] during which the beam was unblanked."""
        if t1_s < t0_s:
            raise ValueError(f"interval [{t0_s}, {t1_s}] is reversed")
        with self._lock:
            return self._integral(t1_s, self._on, self._cum_on) - self._integral(t0_s, self._on, self._cum_on)

    def beam_on_fraction(self, t0_s: float, t1_s: float) -> float:
        """Fraction of [t0, t1] with the beam unblanked (the instantaneous state if t0 == t1)."""
        if t1_s == t0_s:
            with self._lock:
                i = bisect.bisect_right(self._t, t0_s) - 1
                return float(self._on[i]) if i >= 0 else 0.0
        return self.beam_on_time_s(t0_s, t1_s) / (t1_s - t0_s)

    def total_dose_e_per_m2(self) -> float:
        """Dose since the world started, up to the clock's now, e/m²."""
        return self.dose_e_per_m2(self.t_start_s, self.clock.now())

    def blank_intervals(self) -> list[tuple[float, float]]:
        """Unblanked intervals [(t_on, t_off), ...] so far; an open one ends at the clock's now."""
        with self._lock:
            out: list[tuple[float, float]] = []
            start: float | None = None
            for t, on in zip(self._t, self._on):
                if on and start is None:
                    start = t
                elif not on and start is not None:
                    out.append((start, t))
                    start = None
            if start is not None:
                out.append((start, max(start, self.clock.now())))
            return out

    # -- lens and slit -----------------------------------------------------------------------------
    def set_magnification(self, magnification: float) -> None:
        if not (math.isfinite(magnification) and 1 <= magnification <= 1e8):
            raise ValueError(f"magnification {magnification} outside [1, 1e8]")
        self.magnification = float(magnification)

    def set_mode(self, mode: str) -> None:
        if mode not in ("TEM", "DIFF"):
            raise ValueError(f"lens mode {mode!r} is not 'TEM' or 'DIFF'")
        self.mode = mode

    def set_defocus(self, defocus_m: float) -> None:
        if not (math.isfinite(defocus_m) and -1e-3 <= defocus_m <= 1e-3):
            raise ValueError(f"defocus {defocus_m} m outside [-1e-3, 1e-3] m")
        self.defocus_m = float(defocus_m)

    def set_slit_inserted(self, inserted: bool) -> None:
        self.slit_inserted = bool(inserted)

    def set_slit_width(self, width_m: float) -> None:
        if not (math.isfinite(width_m) and 0 < width_m <= 1e-3):
            raise ValueError(f"slit width {width_m} m outside (0, 1e-3] m")
        self.slit_width_m = float(width_m)

    def set_slit_height(self, height_m: float) -> None:
        if not (math.isfinite(height_m) and 0 < height_m <= 1e-3):
            raise ValueError(f"slit height {height_m} m outside (0, 1e-3] m")
        self.slit_height_m = float(height_m)

    def set_slit_centre(self, x_m: float, y_m: float) -> None:
        if not all(math.isfinite(v) and abs(v) <= 1e-3 for v in (x_m, y_m)):
            raise ValueError(f"slit centre ({x_m}, {y_m}) m outside ±1e-3 m")
        self.slit_centre_m = (float(x_m), float(y_m))

    def set_slit_angle(self, angle_rad: float) -> None:
        if not (math.isfinite(angle_rad) and -math.pi <= angle_rad <= math.pi):
            raise ValueError(f"slit angle {angle_rad} rad outside [-pi, pi]")
        self.slit_angle_rad = float(angle_rad)

    # -- geometry: detector rows -> specimen ----------------------------------------------------
    @property
    def effective_magnification(self) -> float:
        """Specimen-to-CCD magnification along y: lens magnification x spectrometer factor."""
        return self.magnification * self.params.spectrometer_magnification

    def row_pitch_at_specimen_m(self, row_pitch_m: float | None = None) -> float:
        """Specimen length along the strip seen by one CCD row: pitch / M (m)."""
        pitch = self.params.detector_row_pitch_m if row_pitch_m is None else row_pitch_m
        return pitch / self.effective_magnification

    def ypix_pitch_m(self) -> float:
        """Specimen length of one spatial (y) pixel = rows_per_ypix rows (5.70 nm default, §0)."""
        return self.params.rows_per_ypix * self.row_pitch_at_specimen_m()

    def row_positions_m(
        self, n_rows: int | None = None, row_pitch_m: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each CCD row: (s, x, y) in m.

        ``s`` is the position along the strip from the slit centre (row centres, the detector's
        middle row imaging the slit centre); (x, y) the specimen point, rotated by the slit angle
        (angle 0: the strip runs along specimen y).
        """
        n = self.params.detector_rows if n_rows is None else int(n_rows)
        step = self.row_pitch_at_specimen_m(row_pitch_m)
        s = (np.arange(n) + 0.5 - n / 2) * step
        cx, cy = self.slit_centre_m
        a = self.slit_angle_rad
        return s, cx - s * math.sin(a), cy + s * math.cos(a)

    def row_illumination_mask(self, n_rows: int | None = None, row_pitch_m: float | None = None) -> np.ndarray:
        """Fraction (0..1) of each row inside the slit and the illuminated disc.

        Rows wholly outside the slit get 0; the rows at the slit ends get the overlapping
        fraction, so the total specimen length seen equals the slit height exactly.
        """
        s, x, y = self.row_positions_m(n_rows, row_pitch_m)
        step = self.row_pitch_at_specimen_m(row_pitch_m)
        if self.slit_inserted:
            half = self.slit_height_m / 2
            lo = np.maximum(s - step / 2, -half)
            hi = np.minimum(s + step / 2, half)
            frac = np.clip((hi - lo) / step, 0.0, 1.0)
        else:
            frac = np.ones_like(s)
        inside_disc = np.hypot(x, y) <= self._diameter_m / 2
        return frac * inside_disc

    def electrons_per_row_per_s(self, n_rows: int | None = None, row_pitch_m: float | None = None) -> np.ndarray:
        """Electrons per second into each row while unblanked: D (p/M) w x mask (physics.md §5).

        ``w`` is the slit width (the integrated x direction); with the slit retracted ``w`` is
        the illuminated diameter (simplification: the whole disc width is integrated).
        """
        width = self.slit_width_m if self.slit_inserted else self._diameter_m
        area_per_row = self.row_pitch_at_specimen_m(row_pitch_m) * width
        return self._nominal_rate() * area_per_row * self.row_illumination_mask(n_rows, row_pitch_m)

    def electrons_per_row(
        self, t0_s: float, t1_s: float, n_rows: int | None = None, row_pitch_m: float | None = None
    ) -> np.ndarray:
        """Electrons into each row over [t0, t1]: exact dose of the interval x row area x mask."""
        width = self.slit_width_m if self.slit_inserted else self._diameter_m
        area_per_row = self.row_pitch_at_specimen_m(row_pitch_m) * width
        return self.dose_e_per_m2(t0_s, t1_s) * area_per_row * self.row_illumination_mask(n_rows, row_pitch_m)
