"""The simulated world: one clock, one cell, one sample, one beam, one detector, one RNG.

The simulated devices (simulators/devices.py) and the emulated instruments are views of it, so
the charge the potentiostat passes inserts Li (Faraday's law, simulators/transport.py), which
changes the Li profile, the Ti valence and the O-O distance the camera then sees; unblanking the
beam adds dose and a beam-induced current; time passes only through the clock.

Geometry: specimen y is the sample frame of simulators/sample.py (y = 0 at the Pt/electrolyte
interface, the electrolyte at y > 0, Pt and W at y < 0) and equals the Li transport's x for
y >= 0. The slit (1880 nm by default) is centred so that it starts 400 nm inside the metal
layers; CCD rows are mapped onto it by the optics (0.95 nm per unbinned row, so 6-row binning
gives the paper's 5.70 nm pixels).
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.drivers.clock import Clock
from insitem.drivers.interfaces import CameraSettings, Rig
from insitem.protocols.schema import Protocol
from insitem.simulators.detector import CCDDetector, DetectorParameters, RowImage
from insitem.simulators.drift import DriftParameters, SpecimenDrift
from insitem.simulators.eels import EELSParameters, EELSSynthesizer, energy_drift_samples
from insitem.simulators.electrochemistry import Cell, CellParameters
from insitem.simulators.microscope import PositionState
from insitem.simulators.lamella import LamellaCell
from insitem.simulators.optics import MicroscopeState, OpticsParameters
from insitem.simulators.sample import VACUUM, Sample, SampleParameters, column_from_phases
from insitem.simulators.specimen_shape import StripView, strip_view
from insitem.simulators.silicon import SiCluster


#: A change of the cell's bias by this much at once counts as a bias step that restarts the
#: specimen's thermal drift [est: two orders of magnitude above a CV's 1 mV stairs, so a sweep never
#: counts and a jump to a hold or a CV's start does; no measured threshold was found]
BIAS_STEP_V = 0.1


class WorldParameters(BaseModel):
    """Run-level settings of the world that are not physics of one module."""

    model_config = ConfigDict(extra="forbid")

    slit_start_y_m: float = Field(default=-400e-9, description="sample y at the slit's first edge, m")
    ypix_m: float = Field(default=5.70e-9, description="specimen length of one 6-row y pixel [Y14], m")
    rows_per_ypix: int = Field(default=6, ge=1, description="CCD rows per y pixel (binning used by the protocols)")
    max_cell_dt_s: float = Field(default=1.5, gt=0, description="longest single cell step (1 mV at 40 mV/min)")
    alignment_error_eV: float = Field(default=0.05, ge=0, description="rms energy-offset error after re-alignment, eV [est]")
    li_critical_dose_e_per_m2: float = Field(
        default=1e24, gt=0,
        description="knock-on Li loss c -> c exp(-dose/D_c) in the illuminated region; 1e4 e/A^2 (physics.md §5 [est])",
    )
    drift: DriftParameters = Field(default_factory=DriftParameters, description="specimen drift under the slit (default none)")
    seed: int = 0


#: positions across a pixel that spans a layer boundary (its spectrum is their mean); 8 puts the
#: boundary within 1/16 of a pixel (0.36 nm at 5.7 nm pixels)
PIXEL_SUBSAMPLES = 8

PRESETS: dict[str, tuple[Callable[[], CellParameters], Callable[[], SampleParameters]]] = {
    "lasgtp_bulk": (CellParameters.lasgtp_bulk, SampleParameters.lasgtp_cell),
    "lfp_lamella": (CellParameters.lfp_lamella, SampleParameters.lfp_lagp_lvp_lamella),
    "si_nanoparticle": (CellParameters.si_nanoparticle, SampleParameters.si_nanoparticles),
}


#: presets whose cell is also the sample: the geometry follows the electrochemical state
#: (`column_state`), so one object stands in for Cell and Sample
STRUCTURED_PRESETS: dict[str, Callable[[], Any]] = {"si_nanoparticle": SiCluster, "lfp_lamella": LamellaCell}


class SimWorld:
    """The shared physical state behind every simulated device. Thread-safe (one lock)."""

    def __init__(
        self,
        clock: Clock,
        cell: Cell,
        sample: Sample,
        optics: MicroscopeState,
        detector: CCDDetector,
        params: WorldParameters | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.clock = clock
        self.cell = cell
        self.sample = sample
        self.optics = optics
        self.detector = detector
        self.params = params or WorldParameters()
        self.rng = rng or np.random.default_rng(self.params.seed)
        self.lock = threading.RLock()
        self._t_cell = clock.now()
        self._applied_V: float | None = None  # None = output off (high impedance)
        self.applied_A: float | None = None  # set: the SMU sources this current (galvanostatic)
        self.voltage_limit_V: float | None = None  # the current source's voltage limit
        self.compliance_A = 1e-3
        self.eels = EELSSynthesizer(EELSParameters())
        # specimen coordinates have the slit centre on the optical axis; sample y = specimen y + this
        self.sample_y_offset_m = self.params.slit_start_y_m + optics.slit_height_m / 2
        # the specimen's displacement under the slit (y along it, x across), on the world's clock
        self.drift = SpecimenDrift(self.params.drift, self.params.seed, t_start_s=clock.now())
        # stage and image/beam shifts of the simulated microscope: the image shift moves the
        # specimen's image over the slit (`image_displacement_m`)
        self.position = PositionState()
        self._stage_start_m = (self.position.stage["x_m"], self.position.stage["y_m"])
        # the sample at each thickness of the wedge across the slit (`strip_view`), level 0 = nominal
        self._samples_by_level: dict[int, Sample] = {}
        self._vacuum_phases = (VACUUM,)  # one tuple: the EELS caches are keyed on it

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_protocol(cls, protocol: Protocol, clock: Clock, params: WorldParameters | None = None) -> "SimWorld":
        preset = protocol.sample.preset
        if preset is None:
            from insitem.drivers.errors import ProtocolError

            raise ProtocolError("sample.preset: a simulated run needs a simulator parameter set (lasgtp_bulk, lfp_lamella, si_nanoparticle)")
        if params is None:
            rate = protocol.sample.drift_rate
            drift = DriftParameters.typical_holder(rate * 60e9) if rate > 0 else DriftParameters()
            params = WorldParameters(seed=protocol.sample.seed, drift=drift)
        cell_params_f, sample_params_f = PRESETS[preset]
        rng = np.random.default_rng(params.seed)
        cell_params = cell_params_f()
        structured = STRUCTURED_PRESETS.get(preset)
        if structured is not None:
            cell = structured()  # cell and sample in one model (simulators/silicon.py, lamella.py)
        elif protocol.sample.initial_state == "cycled" and cell_params.transport is not None:
            cell = cycled_cell(cell_params, rng=rng)
        else:
            cell = Cell(cell_params, rng=rng)
        sample = Sample(sample_params_f())
        slit = protocol.spectrometer.slit
        row_pitch_at_specimen = params.ypix_m / params.rows_per_ypix
        optics_params = OpticsParameters(
            high_tension_V=protocol.beam.high_tension,
            beam_current_A=protocol.beam.current,
            illuminated_diameter_m=protocol.beam.illuminated_diameter,
            magnification=OpticsParameters.model_fields["detector_row_pitch_m"].default / row_pitch_at_specimen,
            rows_per_ypix=params.rows_per_ypix,
            slit_width_m=slit.width,
            slit_height_m=slit.length,
            slit_centre_m=(0.0, 0.0),  # on the optical axis, inside the illuminated disc
            slit_angle_rad=math.radians(slit.angle),
        )
        optics = MicroscopeState(optics_params, clock)
        detector = CCDDetector(DetectorParameters(), rng=np.random.default_rng(rng.integers(2**63)))
        return cls(clock, cell, sample, optics, detector, params, rng)

    # -- electrochemistry ----------------------------------------------------------------------
    @property
    def cell_time_s(self) -> float:
        """Clock time (s) the cell has been advanced to."""
        return self._t_cell

    @property
    def applied_V(self) -> float | None:
        """Voltage the SMU sources (None: output off, or sourcing current, see `applied_A`)."""
        return self._applied_V

    @applied_V.setter
    def applied_V(self, value: float | None) -> None:
        """Source a voltage (None: output off); this ends current sourcing. A bias step (see
        `_bias_step`) disturbs the specimen's thermal drift."""
        self._bias_step(value, self.clock.now())
        self._set_source_V(value)

    def _set_source_V(self, value: float | None) -> None:
        self._applied_V = value
        self.applied_A = None
        self.voltage_limit_V = None

    def _bias_step(self, new_V: float | None, t_s: float) -> None:
        """The specimen's thermal drift starts again (`SpecimenDrift.disturb`) when the cell's bias
        changes at once by `BIAS_STEP_V` or more: from the level sourced before, or from the cell's
        open-circuit voltage when the output was off. Switching the output off is not counted."""
        if new_V is None:
            return
        old = self._applied_V if self._applied_V is not None else float(self.cell.V_term_V)
        if abs(float(new_V) - old) >= BIAS_STEP_V:
            self.drift.disturb(t_s)

    def advance_to(self, t_s: float | None = None) -> None:
        """Advance the cell to `t_s` (default: now) at the present source (applied voltage, or
        applied current with its voltage limit) and beam."""
        with self.lock:
            t1 = self.clock.now() if t_s is None else t_s
            t0 = self._t_cell
            if t1 <= t0:
                return
            n = max(1, math.ceil((t1 - t0) / self.params.max_cell_dt_s))
            dt = (t1 - t0) / n
            current = self.applied_A
            for k in range(n):
                a, b = t0 + k * dt, t0 + (k + 1) * dt
                beam = self.optics.beam_current_A * self.optics.beam_on_fraction(a, b)
                if current is None:
                    self.cell.advance(dt, self._applied_V, self.compliance_A, beam)
                else:
                    self.cell.advance_current(current, dt, self.voltage_limit_V, beam)
            self._t_cell = t1

    def hold_current(self, current_A: float, t_end_s: float, voltage_limit_V: float) -> tuple[float, float]:
        """Source `current_A` (> 0 charges) from now until `t_end_s` (clock time, s) with a
        voltage limit, as a SourceMeter in current-source mode: constant current until the cell
        voltage would pass `voltage_limit_V` (above it when charging, below it when discharging),
        then the voltage is held at the limit and the current is what the cell takes there.

        The world stays in current-source mode afterwards (until `applied_V` is set). Returns
        (terminal voltage V, measured current A) at `t_end_s`.
        """
        if not (math.isfinite(current_A) and math.isfinite(voltage_limit_V)):
            raise ValueError("hold_current: current_A and voltage_limit_V must be finite numbers")
        with self.lock:
            self.advance_to()
            self._applied_V = None
            self.applied_A = float(current_A)
            self.voltage_limit_V = float(voltage_limit_V)
            self.advance_to(t_end_s)
            return float(self.cell.V_term_V), float(self.cell.last_current_A)

    def run_staircase(self, points_V: np.ndarray, dwell_s: float) -> dict[str, np.ndarray]:
        """Advance through a staircase starting now: stair k at points_V[k] for dwell_s.

        The beam state is taken as constant over the staircase (the runner changes it only
        between staircases); returns the cell's arrays with absolute times.
        """
        with self.lock:
            self.advance_to()
            t0 = self._t_cell
            n = len(points_V)
            if n:
                self._bias_step(float(points_V[0]), t0)  # the stairs after the first are small steps
            t = t0 + dwell_s * np.arange(n + 1)
            v = np.concatenate([[np.nan], np.asarray(points_V, float)])
            beam = 0.0 if self.optics.blanked else self.optics.beam_current_A
            out = self.cell.advance_sweep(t, v, self.compliance_A, beam)
            out["time_s"] = t[1:]
            self._t_cell = float(t[-1])
            self._set_source_V(float(points_V[-1]))
            return out

    # -- spectrum images --------------------------------------------------------------------------
    def li_ratio(self, y_m: np.ndarray) -> np.ndarray:
        """c/c0 at sample positions y (1 outside the electrolyte side)."""
        y = np.asarray(y_m, float)
        if self.cell.transport is None:
            return np.ones_like(y)
        return np.where(y >= 0, self.cell.concentration_ratio(np.maximum(y, 0.0)), 1.0)

    def li_retained(self, t0_s: float, t1_s: float) -> float:
        """Mean fraction of the Li left by knock-on damage over [t0, t1] (physics.md §5).

        At 300 kV the maximum energy transferred to Li (123 eV) exceeds its displacement energy, so
        the illuminated region loses Li as exp(-D/D_c) with D the dose since the run started.
        Averaged over the exposure: D_c (e^(-D0/D_c) - e^(-D1/D_c)) / (D1 - D0). It scales the Li
        the spectra see (`Sample.column_state(li_retained=)`), not the Ti valence or O-O distance.
        Simplifications (named): the whole slit region gets the same dose (uniform illuminated disc); the lost Li
        leaves the electrochemistry untouched (the irradiated volume is a tiny part of the cell),
        so the ground truth's li_fraction is the electrochemical profile and li_retained_fraction
        the factor the spectra see."""
        dc = self.params.li_critical_dose_e_per_m2
        t_start = self.optics.t_start_s
        d0 = self.optics.dose_e_per_m2(t_start, max(t0_s, t_start))
        d1 = self.optics.dose_e_per_m2(t_start, max(t1_s, t_start))
        if d1 - d0 <= 1e-9 * dc:
            return math.exp(-d0 / dc)
        return dc * (math.exp(-d0 / dc) - math.exp(-d1 / dc)) / (d1 - d0)

    def column_state(self, y_m: np.ndarray, li_ratio: np.ndarray | float, li_retained: float = 1.0,
                     thickness_level: int = 0) -> Any:
        """What the beam crosses at sample positions y: from the cell itself when it is a structured
        model (its geometry is its state), else from the layer stack at Li ratio c/c0, as thick as
        the wedge across the slit is at `thickness_level` (`strip_view`; 0: the nominal thickness).
        Simplification: the structured models keep their own thickness (no wedge)."""
        structured = getattr(self.cell, "column_state", None)
        if structured is not None:
            return structured(y_m, li_retained=li_retained)
        return self._sample_at(thickness_level).column_state(y_m, li_ratio, li_retained=li_retained)

    def _sample_at(self, level: int) -> Sample:
        """The layer stack at the wedge's thickness level (one Sample per level, kept: the EELS
        synthesis caches its templates per sample)."""
        if level == 0:
            return self.sample
        sample = self._samples_by_level.get(level)
        if sample is None:
            p = self.sample.params
            t = p.thickness_m * (1.0 + level * p.across_slit.thickness_step)
            sample = Sample(p.model_copy(update={"thickness_m": t}))
            self._samples_by_level[level] = sample
        return sample

    def strip_view(self, image_dx_m: float) -> StripView:
        """What the slit's strip integrates across its width when the specimen's image sits
        `image_dx_m` across the slit (drift plus image shift): simulators/specimen_shape.py."""
        width = self.optics.slit_width_m if self.optics.slit_inserted else self.optics.illuminated_diameter_m
        p = self.sample.params
        return strip_view(p.across_slit, self.optics.slit_centre_m[0] - image_dx_m, width, p.thickness_m)

    def binned_row_positions_m(self, settings: CameraSettings, sensor_rows: int) -> np.ndarray:
        """Sample y (m) of the centre of every binned row of a readout."""
        _, _, y_spec = self.optics.row_positions_m(sensor_rows)
        y_rows = y_spec + self.sample_y_offset_m
        top, _, bottom, _ = settings.area((sensor_rows, 1 << 30))
        by = settings.binning[0]
        n = (bottom - top) // by
        rows = y_rows[top : top + n * by].reshape(n, by)
        return rows.mean(axis=1)

    def expected_image(self, settings: CameraSettings, sensor_shape: tuple[int, int], t0_s: float, t1_s: float,
                       li_ratio_rows: np.ndarray) -> np.ndarray:
        """Expected primary electrons per unbinned pixel of the readout area over [t0, t1], float32
        (`expected_rows` as an array)."""
        return self.expected_rows(settings, sensor_shape, t0_s, t1_s, li_ratio_rows).to_array()

    def expected_rows(self, settings: CameraSettings, sensor_shape: tuple[int, int], t0_s: float, t1_s: float,
                      li_ratio_rows: np.ndarray) -> RowImage:
        """Expected primary electrons per unbinned pixel of the readout area over [t0, t1], as rows.

        Spectra are synthesised once per binned row (the position pixel) and repeated over the
        CCD rows of that bin: variation inside one 5.7 nm pixel is not resolved (simplification),
        except across a layer boundary (`_split_pixels`). Across the slit the strip integrates the
        specimen at the drifted position (`strip_view`): a tilted interface shifts and smears the
        layers along the slit, a wedge changes the thickness, an edge mixes in vacuum.
        Area rows below the last whole bin get no electrons. The detector takes the rows as
        they are (`CCDDetector.expose`), so the area-sized image (16 MB for the protocols'
        1980 x 2048 area) is never made.
        """
        rows, cols = sensor_shape
        top, left, bottom, right = settings.area(sensor_shape)
        by = settings.binning[0]
        n = (bottom - top) // by
        y_bin = self.binned_row_positions_m(settings, rows)
        with self.lock:  # the shared state; the synthesis below runs without it (long: 40-550 ms)
            electrons_rows = self.optics.electrons_per_row(t0_s, t1_s, rows)[top : top + n * by]
            drift_mean, drift_spread = self.drift.mean_and_spread_m(t0_s, t1_s)
            shift_x, shift_y = self.correction_m()
            view = self.strip_view(float(drift_mean[1]) + shift_x)
            dy = float(drift_mean[0]) + shift_y
            if view.shift_m != 0.0:  # a tilted interface: the x under the strip moves the layers along it
                dy += view.shift_m
            y_seen, li_seen = self._drifted_rows(y_bin, li_ratio_rows, dy)
            retained = self.li_retained(t0_s, t1_s)
            level = view.thickness_level
            column = self.column_state(y_seen, li_seen, li_retained=retained, thickness_level=level)
            pitch = abs(float(y_bin[1] - y_bin[0])) if n > 1 else self.params.ypix_m
            if hasattr(self.cell, "column_state"):  # structured sample: no layer stack to split pixels at
                split, y_sub, li_sub = np.zeros(0, dtype=np.intp), y_seen[:0], li_seen[:0]
            else:
                split, y_sub, li_sub = self._split_pixels(y_seen, li_seen, pitch)
            column_sub = self.column_state(y_sub, li_sub, li_retained=retained, thickness_level=level) if split.size else None
            shift = self.energy_shift_samples_eV(t0_s, t1_s)
            tan_tilt = math.tan(self.sample.params.across_slit.interface_tilt_rad)
        electrons_bin = electrons_rows.reshape(n, by).sum(axis=1)
        energy = settings.energy_offset_eV + settings.dispersion_eV_per_px * (np.arange(left, right) + 0.5)
        # (n, channels); with pixels across a layer boundary the chromatic blur along the slit comes
        # after their parts are averaged: the parts are no evenly spaced line of rows to blur along
        spectra = self.eels.synthesize(energy, column, electrons_bin, energy_shift_eV=shift,
                                       blur_rows=column_sub is None)
        if column_sub is not None:
            # a pixel across a layer boundary sees both layers side by side: the mean of its parts
            sub = self.eels.synthesize(energy, column_sub, np.repeat(electrons_bin[split], PIXEL_SUBSAMPLES),
                                       energy_shift_eV=shift, blur_rows=False)
            spectra[split] = sub.reshape(split.size, PIXEL_SUBSAMPLES, -1).mean(axis=1)
            spectra = self.eels.blur_along_rows(spectra, energy, column)
        if view.vacuum_fraction > 0.0:
            # the strip's part beyond the specimen's edge: every electron passes without loss
            vacuum = column_from_phases(y_seen, np.zeros((n, 1)), self._vacuum_phases)
            spectra *= 1.0 - view.vacuum_fraction
            spectra += view.vacuum_fraction * self.eels.synthesize(energy, vacuum, electrons_bin, energy_shift_eV=shift)
        if n > 1:
            along = drift_spread[:, 0]
            if tan_tilt != 0.0:  # the drift across the slit during the exposure moves the tilted layers along it
                along = along - drift_spread[:, 1] * tan_tilt
            spectra = smear_rows(spectra, along / float(y_bin[1] - y_bin[0]))
            spectra = box_smear_rows(spectra, view.smear_m / abs(float(y_bin[1] - y_bin[0])))
        # FFT round-off leaves values of order -1e-11 where the expectation is ~0: clip them
        np.maximum(spectra, 0.0, out=spectra)
        spectra /= by  # each binned row's electrons shared by its `by` CCD rows
        rest = bottom - top - n * by
        out = np.zeros((n + (rest > 0), right - left), dtype=np.float32)
        out[:n] = spectra  # cast to float32
        repeats = np.full(out.shape[0], by, dtype=np.intp)
        if rest:
            repeats[-1] = rest
        return RowImage(out, repeats)

    def _drifted_rows(self, y_bin: np.ndarray, li_rows: np.ndarray, dy_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Sample y under each row when the specimen has moved `dy_m` along the slit, and c/c0
        there: interpolated from the caller's rows (which average the exposure's start and end)
        where they cover it, the world's present profile beyond them."""
        if dy_m == 0.0:
            return y_bin, li_rows
        y_seen = y_bin - dy_m
        li = np.interp(y_seen, y_bin, li_rows)
        outside = (y_seen < y_bin.min()) | (y_seen > y_bin.max())
        if outside.any():
            li[outside] = self.li_ratio(y_seen[outside])
        return y_seen, li

    def _split_pixels(self, y_m: np.ndarray, li: np.ndarray, pitch_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows whose pixel (centre y, width `pitch_m`) spans a layer boundary, and the
        `PIXEL_SUBSAMPLES` positions (and c/c0) across each such pixel at which it is evaluated."""
        lo = self.sample.layer_index(y_m - 0.5 * pitch_m)
        hi = self.sample.layer_index(y_m + 0.5 * pitch_m)
        split = np.nonzero(lo != hi)[0]
        if split.size == 0:
            return split, y_m[:0], li[:0]
        frac = (np.arange(PIXEL_SUBSAMPLES) + 0.5) / PIXEL_SUBSAMPLES - 0.5
        y_sub = (y_m[split, None] + pitch_m * frac[None, :]).ravel()
        order = np.argsort(y_m)
        li_sub = np.interp(y_sub, y_m[order], li[order])
        return split, y_sub, li_sub

    def specimen_drift_m(self, t_s: float | None = None) -> tuple[float, float]:
        """The specimen's displacement (y along the slit, x across) at `t_s` (default now), m."""
        d = self.drift.displacement_m(self.clock.now() if t_s is None else t_s)
        return float(d[0]), float(d[1])

    def correction_m(self) -> tuple[float, float]:
        """What the microscope has done to move the specimen's image over the slit (x across, y
        along), m: its image shift plus the stage's travel since the world started. The slit lies
        along the stage's y axis (no stage-to-slit rotation); a stage move of -d, like an image
        shift of -d, takes back a drift of +d."""
        sx, sy = self.position.image_shift_m
        x0, y0 = self._stage_start_m
        return sx + self.position.stage["x_m"] - x0, sy + self.position.stage["y_m"] - y0

    def image_displacement_m(self, t_s: float | None = None) -> tuple[float, float]:
        """Where the specimen's image sits over the slit: its drift plus the microscope's
        correction (`correction_m`) (y along the slit, x across), m."""
        dy, dx = self.specimen_drift_m(t_s)
        sx, sy = self.correction_m()
        return dy + sy, dx + sx

    def energy_shift_samples_eV(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Energy shift during one exposure: the spectrometer is re-aligned before each
        exposure (residual error `alignment_error_eV` rms), then drifts linearly with a random
        walk (physics.md §1.9). Simplification: no drift carried over between exposures, as
        after a zero-loss re-alignment; the whole image shifts together."""
        start = float(self.rng.normal(0.0, self.params.alignment_error_eV))
        return energy_drift_samples(self.eels.params, max(t1_s - t0_s, 1e-9), t0_s, self.rng, start_shift_eV=start)

    # -- ground truth ----------------------------------------------------------------------------
    def ground_truth(self, y_m: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        with self.lock:
            self.advance_to()
            c = self.li_ratio(y_m)
            column = self.column_state(y_m, c)
            if column.li_per_m3 is not None:
                c = column.li_per_m3 * 1e-27  # structured samples: Li atoms per nm^3 (no c0 scale)
            gt = self.cell.ground_truth()
            profiles = {"li_fraction": c, "ti3_fraction": np.asarray(column.f_ti3, float), "oo_distance_m": np.asarray(column.R_nm, float) * 1e-9}
            drift_y, drift_x = self.specimen_drift_m()
            scalars = {
                "total_dose_e_per_m2": float(self.optics.total_dose_e_per_m2()),
                "li_retained_fraction": self.li_retained(self.clock.now(), self.clock.now()),
                "state_of_charge": float(gt.get("theta", math.nan)),
                "charge_C": float(self.cell.charge_passed_C),
                "cell_voltage_V": float(self.cell.V_term_V),
                "specimen_drift_y_m": drift_y,
                "specimen_drift_x_m": drift_x,
                "image_displacement_y_m": drift_y + self.correction_m()[1],
            }
            return profiles, scalars

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            self.advance_to()
            return {"cell": self.cell.state_dict(), "total_dose_e_per_m2": self.optics.total_dose_e_per_m2()}

    def load_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            kind = state["cell"].get("kind")
            if kind is None:
                self.cell = Cell.from_state_dict(state["cell"])
            else:
                self.cell = type(self.cell).from_state_dict(state["cell"])
            self._t_cell = self.clock.now()


def smear_rows(spectra: np.ndarray, offsets_rows: np.ndarray) -> np.ndarray:
    """The image of a specimen that moved during the exposure: the mean of the (rows, channels)
    image shifted by each of `offsets_rows` (in rows, fractional; linear interpolation, edge rows
    repeated). Offsets below 1 % of a row are left out (no visible smear)."""
    offsets = np.asarray(offsets_rows, float)
    if offsets.size == 0 or float(np.max(np.abs(offsets))) < 0.01:
        return spectra
    n = spectra.shape[0]
    idx = np.arange(n, dtype=float)
    out = np.zeros_like(spectra)
    for off in offsets:
        src = np.clip(idx - off, 0.0, n - 1.0)
        i0 = np.floor(src).astype(np.intp)
        i1 = np.minimum(i0 + 1, n - 1)
        f = (src - i0)[:, None]
        out += spectra[i0] * (1.0 - f) + spectra[i1] * f
    out /= offsets.size
    return out


def box_smear_rows(spectra: np.ndarray, width_rows: float, samples: int = 32) -> np.ndarray:
    """The (rows, channels) image seen through a box `width_rows` wide along the rows (a tilted
    interface seen across the slit's width): the mean of the image shifted by `samples` offsets evenly
    spread over the box, each by linear interpolation with edge rows repeated (as `smear_rows`),
    summed as one kernel along the rows. Boxes below 1 % of a row are left out."""
    if width_rows < 0.01:
        return spectra
    offsets = width_rows * ((np.arange(samples) + 0.5) / samples - 0.5)
    whole = np.floor(offsets).astype(np.intp)
    frac = offsets - whole
    lo, hi = int(whole.min()), int(whole.max()) + 1
    kernel = np.zeros(hi - lo + 1)
    np.add.at(kernel, whole - lo, 1.0 - frac)
    np.add.at(kernel, whole - lo + 1, frac)
    kernel /= samples
    n = spectra.shape[0]
    pad = max(abs(lo), abs(hi))
    padded = np.pad(spectra, ((pad, pad), (0, 0)), mode="edge")
    out = np.zeros_like(spectra)
    for j, w in enumerate(kernel):  # out[r] = sum_k w_k spectra[r - k], k = lo + j
        if w:
            k = lo + j
            out += w * padded[pad - k : pad - k + n]
    return out


#: the cycling that makes a "cycled" sample: [Y14]'s 50 CV cycles 0.5-2.5 V at 40 mV/min, 1 mV stairs
CYCLED_CV = dict(cycles=50, v_lo_V=0.5, v_hi_V=2.5, rate_V_per_s=0.040 / 60.0, step_V=1e-3)
_CYCLED_STATES: dict[str, dict[str, Any]] = {}


def cycled_cell(params: CellParameters, rng: np.random.Generator | None = None) -> Cell:
    """A cell as [Y14]'s ex-situ sample left it: a fresh cell cycled 50 times 0.5-2.5 V at
    40 mV/min (`CYCLED_CV`), ending discharged at 0.5 V. The state comes out of the model (the
    formed electrode grows over the cycles); it is computed once per parameter set and process
    (~1.5-3 s) and copied from then on."""
    key = params.model_dump_json()
    if key not in _CYCLED_STATES:
        cv = CYCLED_CV
        cell = Cell(params)
        n = int(round((cv["v_hi_V"] - cv["v_lo_V"]) / cv["step_V"]))
        up = np.linspace(cv["v_lo_V"], cv["v_hi_V"], n + 1)
        wave = np.r_[up, up[::-1][1:]]
        t = np.arange(len(wave)) * (cv["step_V"] / cv["rate_V_per_s"])
        for _ in range(int(cv["cycles"])):
            cell.advance_sweep(t, wave, 1.0)
        cell.sync_transport()
        _CYCLED_STATES[key] = cell.state_dict()
    state = copy.deepcopy(_CYCLED_STATES[key])
    cell = Cell.from_state_dict(state)
    cell.rng = rng
    cell.time_s = 0.0
    cell.charge_passed_C = 0.0  # the run's SMU record starts here
    return cell
