"""Simulated potentiostat and camera: the drivers' interfaces as views of one SimWorld.

(The simulated microscope is simulators/microscope.py over the world's MicroscopeState.)

* `SimPotentiostat` sources the world's cell: every call first advances the cell to the clock's
  present time at the level programmed before, then applies the change. Readings carry SMU
  noise of the current ranges of the declared instrument (`model` "keithley2400": 1 uA .. 1 A;
  "keithley2450": 10 nA .. 1 A; the tables of simulators/emulators/smu.py, physics.md §4.4:
  sigma = offset/3 of the active range at 1 NPLC). It offers an instrument-timed staircase
  (`run_sweep`) like the 2400's list sweep: the whole staircase is advanced in one call. With
  `source_mode` "current" it is a galvanostat: `set_current` holds the world's cell at that
  current with the configured voltage limit (`SimWorld.hold_current`).
* `SimCamera` synthesises each exposure from the world at read-out: the Li profile (mean of
  the profiles at exposure start and end), the exact electron dose the optics delivered in the
  exposure window (a blanked beam gives a dark frame), the EELS physics and the CCD model; it
  then applies the acquisition software's dark and gain-reference correction when asked.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from insitem.drivers.errors import DeviceError
from insitem.drivers.interfaces import (
    Camera,
    CameraSettings,
    Frame,
    InstrumentIdentity,
    Potentiostat,
    PotentiostatConfig,
    Reading,
)
from insitem.simulators.emulators.smu import K2400_SPEC, K2450_SPEC
from insitem.simulators.heap import TRIM_ABOVE_BYTES, release_free_heap
from insitem.simulators.world import SimWorld

#: current ranges and accuracy offsets per declared instrument (physics.md §4.4, [S:K2400SPEC],
#: [S:K2450SPEC]; the same tables the emulated instruments use)
CURRENT_RANGES_A: dict[str, tuple[tuple[float, float], ...]] = {
    "keithley2400": K2400_SPEC.current_ranges,
    "keithley2450": K2450_SPEC.current_ranges,
}


def _range_for(
    current_A: float, fixed: float | None, table: tuple[tuple[float, float], ...] = CURRENT_RANGES_A["keithley2400"]
) -> tuple[float, float]:
    if fixed is not None:
        for rng, off in table:
            if rng >= fixed * (1 - 1e-9):
                return rng, off
    for rng, off in table:
        if abs(current_A) <= rng * 1.05:
            return rng, off
    return table[-1]


class SimPotentiostat(Potentiostat):
    """A SourceMeter driving the simulated cell."""

    def __init__(self, world: SimWorld, model: str = "keithley2400", resource: str = "sim://potentiostat") -> None:
        super().__init__()
        self.world = world
        self.model = model
        self.resource = resource
        if model not in CURRENT_RANGES_A:
            raise ValueError(f"model {model!r}: expected one of {', '.join(CURRENT_RANGES_A)}")
        self._ranges = CURRENT_RANGES_A[model]
        self._rng = np.random.default_rng(world.rng.integers(2**63))
        self._errors: list[tuple[int, str]] = []
        self._level_A = 0.0

    def identify(self) -> InstrumentIdentity:
        return InstrumentIdentity("insitem", f"simulated {self.model}", "SIM-0001", "1.0", self.resource)

    def reset(self) -> None:
        """Output off (relay open), as *RST leaves a SourceMeter."""
        self._set_output(False)
        self._output_on = False

    def errors(self) -> list[tuple[int, str]]:
        out, self._errors = self._errors, []
        return out

    def _configure(self, config: PotentiostatConfig) -> None:
        with self.world.lock:
            self.world.advance_to()
            self.world.compliance_A = config.compliance_A

    def _set_voltage(self, voltage_V: float) -> None:
        with self.world.lock:
            self.world.advance_to()
            self._level_V = voltage_V
            if self._output_on:
                self.world.applied_V = voltage_V

    def _set_output(self, on: bool) -> None:
        with self.world.lock:
            self.world.advance_to()
            if on and self._current_mode():
                self._hold_current()
            else:
                self.world.applied_V = getattr(self, "_level_V", 0.0) if on else None

    def _current_mode(self) -> bool:
        return self._config is not None and self._config.source_mode == "current"

    def _hold_current(self) -> None:
        """Source the programmed current from now on (the world keeps its current mode)."""
        assert self._config is not None and self._config.voltage_limit_V is not None
        limit = math.copysign(self._config.voltage_limit_V, self._level_A)  # the side the current drives towards
        self.world.hold_current(self._level_A, self.world.clock.now(), limit)

    def _set_current(self, current_A: float) -> None:
        with self.world.lock:
            self.world.advance_to()
            self._level_A = current_A
            if self._output_on:
                self._hold_current()

    def measure(self) -> Reading:
        with self.world.lock:
            self.world.advance_to()
            cell = self.world.cell
            t = self.world.clock.now()
            if self.world.applied_A is not None:  # galvanostatic: the current the SMU forces (or the cell takes at the limit)
                i = self._noisy(cell.last_current_A)
                return Reading(t, float(cell.V_term_V), i, bool(cell.last_tripped), math.nan, float(self.world.applied_A))
            if self.world.applied_V is None:
                raise DeviceError("measure with the output off (the output relay is open)", self.resource)
            i = self._noisy(cell.i_cell_A)
            return Reading(t, float(cell.V_term_V), i, bool(cell.last_tripped), float(self.world.applied_V))

    def _noisy(self, current_A: float | np.ndarray) -> float | np.ndarray:
        cfg = self._config
        nplc = cfg.nplc if cfg else 1.0
        rng, offset = _range_for(float(np.max(np.abs(current_A))), cfg.current_range_A if cfg else None, self._ranges)
        sigma = offset / 3 * math.sqrt(max(1.0, 1.0 / nplc))
        noise = self._rng.normal(0.0, sigma, np.shape(current_A))
        out = np.asarray(current_A) + noise
        return float(out) if np.ndim(out) == 0 else out

    @property
    def supports_sweep(self) -> bool:
        return True

    def run_sweep(self, points_V: Sequence[float], dwell_s: float) -> list[Reading]:
        if self._config is None:
            raise DeviceError("run_sweep before configure", self.resource)
        if self._current_mode():
            from insitem.drivers.errors import SafetyLimitError

            raise SafetyLimitError("run_sweep is a voltage staircase: configure with source_mode='voltage'")
        pts = np.asarray(points_V, float)
        lo, hi = self._config.voltage_limits_V
        if pts.size == 0:
            return []
        if pts.min() < lo or pts.max() > hi:
            from insitem.drivers.errors import SafetyLimitError

            raise SafetyLimitError(f"run_sweep: levels outside the safety window [{lo}, {hi}] V")
        with self.world.lock:
            self._output_on = True
            out = self.world.run_staircase(pts, dwell_s)
            self._level_V = float(pts[-1])
        self.world.clock.sleep_until(float(out["time_s"][-1]))
        cur = self._noisy(out["current_A"])
        # Python floats and bools by tolist (the same values as float()/bool() of each numpy
        # scalar, 30 % faster for the 200 000 readings of a protocol)
        columns = (
            np.asarray(out["time_s"], float).tolist(),
            np.asarray(out["terminal_V"], float).tolist(),
            np.atleast_1d(np.asarray(cur, float)).tolist(),
            np.asarray(out["compliance_tripped"], bool).tolist(),
            pts.tolist(),
        )
        return [Reading(t, v, i, tr, s) for t, v, i, tr, s in zip(*columns)]

    def safe_state(self) -> None:
        self._set_output(False)
        self._output_on = False


class SimCamera(Camera):
    """A GIF CCD and spectrometer looking at the simulated sample."""

    def __init__(self, world: SimWorld, resource: str = "sim://camera") -> None:
        super().__init__()
        self.world = world
        self.resource = resource
        self.sensor_shape = tuple(world.detector.params.shape_px)  # type: ignore[assignment]
        self._t_start: float | None = None
        self._li_start: np.ndarray | None = None
        self._dark_cache: dict[tuple[float, tuple[int, int], tuple[int, int, int, int]], np.ndarray] = {}

    def identify(self) -> InstrumentIdentity:
        return InstrumentIdentity("insitem", "simulated GIF 2k CCD", "SIM-GIF", "1.0", self.resource)

    def _configure(self, settings: CameraSettings) -> None:
        pass

    def _rows_y(self, settings: CameraSettings) -> np.ndarray:
        return self.world.binned_row_positions_m(settings, self.sensor_shape[0])

    def _start_exposure(self) -> float:
        assert self._settings is not None
        with self.world.lock:
            self.world.advance_to()
            self._t_start = self.world.clock.now()
            self._li_start = self.world.li_ratio(self._rows_y(self._settings))
        return self._t_start

    def read_frame(self) -> Frame:
        if self._t_start is None or self._settings is None:
            raise DeviceError("read_frame without start_exposure", self.resource)
        s = self._settings
        t0, t1 = self._t_start, self._t_start + s.exposure_s
        self._t_start = None
        det = self.world.detector
        area = s.area(self.sensor_shape)
        self.world.clock.sleep_until(t1)
        with self.world.lock:
            self.world.advance_to(t1)
            li = 0.5 * (self._li_start + self.world.li_ratio(self._rows_y(s)))
        # outside the world lock: the potentiostat keeps stepping the cell during the synthesis
        electrons = self.world.expected_rows(s, self.sensor_shape, t0, t1, li)
        release_free_heap(TRIM_ABOVE_BYTES)  # the synthesis' temporaries, before the detector's own peak
        frame = det.expose(electrons, s.exposure_s, binning=s.binning, readout_area=area)
        del electrons
        self.world.clock.sleep_until(t1 + frame.readout_s)
        data: np.ndarray = frame.data
        if s.processing != "unprocessed":
            dark = self._dark(s.exposure_s, s.binning, area)
            if s.processing == "gain_normalized":
                data = det.correct(frame.data, dark, det.gain_reference(), binning=s.binning, readout_area=area)
            else:
                data = frame.data.astype(np.float32) - dark
        release_free_heap(TRIM_ABOVE_BYTES)
        return Frame(data=data, t_start_s=t0, settings=s, saturated_px=int(frame.saturated_px))

    def _dark(self, exposure_s: float, binning: tuple[int, int], area: tuple[int, int, int, int]) -> np.ndarray:
        key = (exposure_s, binning, area)
        if key not in self._dark_cache:
            self._dark_cache[key] = self.world.detector.dark_reference(exposure_s, 10, binning=binning, area=area)
        return self._dark_cache[key]

    def dark_reference(self, exposure_s: float, n_frames: int = 10) -> np.ndarray:
        s = self._settings or CameraSettings(exposure_s=exposure_s)
        area = s.area(self.sensor_shape)
        return self.world.detector.dark_reference(exposure_s, n_frames, binning=s.binning, area=area)

    def gain_reference(self) -> np.ndarray:
        return self.world.detector.gain_reference()
