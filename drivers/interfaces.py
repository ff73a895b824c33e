"""Device interfaces: what the runner may ask of a potentiostat, a camera and a microscope.

Every real backend (drivers/keithley, drivers/gif, drivers/tem) and every simulated device
(simulators/devices.py) implements these. The runner never knows which it has.

Conventions
-----------
* SI units everywhere, written in the name: `voltage_V`, `current_A`, `exposure_s`,
  `width_m`, `dose_rate_e_per_m2_s` (1 e/Å²/s = 1e20 e/m²/s). Energies are in eV (`_eV`).
* Public methods do the shared checks (ranges, safety limits) once, here; backends implement the
  underscored hooks that talk to the instrument.
* Detector geometry: rows = position along the slit (y), columns = energy loss (x).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from insitem.drivers.clock import Clock
from insitem.drivers.errors import SafetyLimitError

ELEMENTARY_CHARGE_C = 1.602176634e-19
E_PER_A2_IN_E_PER_M2 = 1e20  # 1 electron per square ångström, in electrons per square metre


# ---------------------------------------------------------------------------------------------
# Shared value classes


@dataclass(frozen=True)
class InstrumentIdentity:
    """Who answered behind a resource (from *IDN? or the equivalent)."""

    vendor: str
    model: str
    serial: str = ""
    firmware: str = ""
    resource: str = ""

    def __str__(self) -> str:
        return f"{self.vendor} {self.model} (s/n {self.serial or '?'}, fw {self.firmware or '?'}) at {self.resource}"


# ---------------------------------------------------------------------------------------------
# Potentiostat


class PotentiostatConfig(BaseModel):
    """Source-measure settings applied by `Potentiostat.configure`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compliance_A: float = Field(gt=0, le=1.05, description="current limit (compliance) in A")
    nplc: float = Field(default=1.0, ge=0.01, le=10, description="integration time in power-line cycles")
    current_range_A: float | None = Field(default=None, gt=0, description="measure range in A; None = auto")
    voltage_range_V: float = Field(default=20.0, gt=0, le=210, description="source range in V")
    voltage_limits_V: tuple[float, float] = Field(
        default=(-5.0, 5.0), description="safety window (low, high) for any source level, in V"
    )
    output_off_mode: Literal["HIMP", "NORM", "ZERO", "GUAR"] = Field(
        default="HIMP",
        description="state of the output when off; HIMP opens the relay so a charged cell is not shorted",
    )
    line_frequency_Hz: float = Field(default=60.0, description="mains frequency (sets 1 PLC)")
    source_mode: Literal["voltage", "current"] = Field(
        default="voltage",
        description="voltage: potentiostatic (set_voltage, compliance_A limits the current); "
        "current: galvanostatic (set_current, |current| <= compliance_A, voltage_limit_V limits the voltage)",
    )
    voltage_limit_V: float | None = Field(
        default=None,
        gt=0,
        le=210,
        description="voltage limit (compliance) in V while sourcing current; required in current mode, "
        "at most the larger magnitude of the safety window voltage_limits_V",
    )

    @model_validator(mode="after")
    def _window_ordered(self) -> "PotentiostatConfig":
        lo, hi = self.voltage_limits_V
        if not lo < hi:
            raise ValueError(f"voltage_limits_V: low {lo} V must be below high {hi} V")
        if self.source_mode == "current":
            if self.voltage_limit_V is None:
                raise ValueError("voltage_limit_V: required when source_mode is 'current' (the current source's voltage compliance)")
            if self.voltage_limit_V > max(abs(lo), abs(hi)):
                raise ValueError(
                    f"voltage_limit_V: {self.voltage_limit_V} V exceeds the safety window [{lo}, {hi}] V; lower it"
                )
        return self


@dataclass(frozen=True)
class Reading:
    """One source-measure point.

    t_s is the time of the measurement on the rig clock (or the instrument's own timestamp
    translated to it for instrument-timed sweeps).
    """

    t_s: float
    voltage_V: float
    current_A: float
    compliance_tripped: bool = False
    source_V: float = math.nan
    source_A: float = math.nan  # programmed source current (current mode); NaN when sourcing voltage


class Potentiostat(abc.ABC):
    """A SourceMeter used as a two-electrode potentiostat (voltage source, current measure) or,
    with `PotentiostatConfig.source_mode` "current", as a galvanostat (current source with a
    voltage limit, voltage measure)."""

    resource: str = ""

    def __init__(self) -> None:
        self._config: PotentiostatConfig | None = None
        self._output_on = False

    # -- public API (shared checks live here) --------------------------------------------------
    @property
    def config(self) -> PotentiostatConfig | None:
        return self._config

    @property
    def output_on(self) -> bool:
        """Whether the runner last switched the output on (the instrument may be queried too)."""
        return self._output_on

    def configure(self, config: PotentiostatConfig) -> None:
        """Set source function (V), compliance, ranges and NPLC; raise on any instrument error."""
        self._configure(config)
        self._config = config

    def set_voltage(self, voltage_V: float) -> None:
        """Program the source level. Refuses levels outside the configured safety window."""
        if self._config is None:
            raise SafetyLimitError("set_voltage before configure: compliance is not set")
        if self._config.source_mode != "voltage":
            raise SafetyLimitError("set_voltage in current mode: configure with source_mode='voltage'")
        lo, hi = self._config.voltage_limits_V
        if not (lo <= voltage_V <= hi) or not math.isfinite(voltage_V):
            raise SafetyLimitError(f"set_voltage: {voltage_V} V outside the safety window [{lo}, {hi}] V")
        self._set_voltage(voltage_V)

    def set_current(self, current_A: float) -> None:
        """Program the source current (current mode). Refuses |current| above compliance_A."""
        if self._config is None:
            raise SafetyLimitError("set_current before configure: the voltage limit is not set")
        if self._config.source_mode != "current":
            raise SafetyLimitError("set_current in voltage mode: configure with source_mode='current'")
        limit = self._config.compliance_A
        if not math.isfinite(current_A) or abs(current_A) > limit:
            raise SafetyLimitError(f"set_current: {current_A} A outside the window [-{limit}, {limit}] A (compliance_A)")
        self._set_current(current_A)

    def set_output(self, on: bool) -> None:
        """Switch the output on or off (off mode from the configuration)."""
        if on and self._config is None:
            raise SafetyLimitError("set_output(True) before configure: compliance is not set")
        self._set_output(on)
        self._output_on = on

    @property
    def supports_sweep(self) -> bool:
        """True when `run_sweep` runs an instrument-timed staircase."""
        return False

    def run_sweep(self, points_V: Sequence[float], dwell_s: float) -> list[Reading]:
        """Run an instrument-timed staircase through `points_V`, `dwell_s` per point."""
        raise NotImplementedError(f"{type(self).__name__} has no instrument-timed sweep")

    def safe_state(self) -> None:
        """Output off. Must not raise for a device that still answers; tries even if it does not."""
        self._set_output(False)
        self._output_on = False

    # -- backend hooks --------------------------------------------------------------------------
    @abc.abstractmethod
    def identify(self) -> InstrumentIdentity: ...

    @abc.abstractmethod
    def reset(self) -> None:
        """Return the instrument to a known default state (output off)."""

    @abc.abstractmethod
    def measure(self) -> Reading:
        """Take one reading at the present source level."""

    @abc.abstractmethod
    def errors(self) -> list[tuple[int, str]]:
        """Drain the instrument error queue: [(code, message), ...], empty when clean."""

    @abc.abstractmethod
    def _configure(self, config: PotentiostatConfig) -> None: ...

    @abc.abstractmethod
    def _set_voltage(self, voltage_V: float) -> None: ...

    @abc.abstractmethod
    def _set_output(self, on: bool) -> None: ...

    def _set_current(self, current_A: float) -> None:
        """Backends that can source current override this."""
        raise NotImplementedError(f"{type(self).__name__} cannot source current")

    def close(self) -> None:
        """Release the transport. Does not change the output state."""


# ---------------------------------------------------------------------------------------------
# Camera (GIF CCD + spectrometer)

Processing = Literal["unprocessed", "dark_subtracted", "gain_normalized"]


class CameraSettings(BaseModel):
    """Everything that defines one spectrum-image exposure.

    Rows are position along the slit (y), columns energy loss (x). `readout_area` is
    (top, left, bottom, right) in unbinned pixels, bottom/right exclusive. `binning` is
    (rows, columns).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    exposure_s: float = Field(gt=0, le=3600, description="exposure time in s")
    binning: tuple[int, int] = Field(default=(1, 1), description="(row, column) binning")
    readout_area: tuple[int, int, int, int] | None = Field(
        default=None, description="(top, left, bottom, right) unbinned pixels; None = full chip"
    )
    energy_offset_eV: float = Field(default=0.0, description="energy loss at the first column (drift tube), eV")
    dispersion_eV_per_px: float = Field(default=0.1, gt=0, description="eV per unbinned column")
    processing: Processing = "gain_normalized"

    @model_validator(mode="after")
    def _check(self) -> "CameraSettings":
        by, bx = self.binning
        if by < 1 or bx < 1:
            raise ValueError(f"binning must be >= 1, got {self.binning}")
        if self.readout_area is not None:
            top, left, bottom, right = self.readout_area
            if not (0 <= top < bottom and 0 <= left < right):
                raise ValueError(f"readout_area {self.readout_area} is not (top, left, bottom, right)")
        return self

    def area(self, sensor_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """Readout area resolved against the sensor size."""
        return self.readout_area or (0, 0, sensor_shape[0], sensor_shape[1])

    def frame_shape(self, sensor_shape: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) of the binned frame this exposure returns."""
        top, left, bottom, right = self.area(sensor_shape)
        return (bottom - top) // self.binning[0], (right - left) // self.binning[1]

    def energy_axis_eV(self, sensor_shape: tuple[int, int]) -> np.ndarray:
        """Energy loss at the centre of each binned column, in eV."""
        _, left, _, right = self.area(sensor_shape)
        n = (right - left) // self.binning[1]
        step = self.dispersion_eV_per_px * self.binning[1]
        return self.energy_offset_eV + self.dispersion_eV_per_px * left + step * (np.arange(n) + 0.5)


@dataclass(frozen=True)
class Frame:
    """One read-out exposure with the settings it was taken with."""

    data: np.ndarray  # (rows, columns), uint16 raw counts, or float32 when processed
    t_start_s: float
    settings: CameraSettings
    saturated_px: int = 0  # readout pixels at full scale
    metadata: dict[str, float | str] = field(default_factory=dict)

    @property
    def exposure_s(self) -> float:
        return self.settings.exposure_s

    @property
    def t_end_s(self) -> float:
        return self.t_start_s + self.settings.exposure_s


class Camera(abc.ABC):
    """A GIF spectrometer camera. `start_exposure` returns at once; `read_frame` blocks."""

    resource: str = ""
    sensor_shape: tuple[int, int] = (2048, 2048)
    bit_depth: int = 16

    def __init__(self) -> None:
        self._settings: CameraSettings | None = None

    @property
    def settings(self) -> CameraSettings | None:
        return self._settings

    def configure(self, settings: CameraSettings) -> None:
        """Apply exposure, binning, readout area, energy offset and dispersion."""
        top, left, bottom, right = settings.area(self.sensor_shape)
        rows, cols = self.sensor_shape
        if bottom > rows or right > cols:
            raise ValueError(f"readout_area {settings.readout_area} exceeds the {rows}x{cols} sensor")
        self._configure(settings)
        self._settings = settings

    def start_exposure(self) -> float:
        """Start an exposure with the present settings; return its start time (rig clock, s)."""
        if self._settings is None:
            raise RuntimeError("start_exposure before configure")
        return self._start_exposure()

    @abc.abstractmethod
    def identify(self) -> InstrumentIdentity: ...

    @abc.abstractmethod
    def _configure(self, settings: CameraSettings) -> None: ...

    @abc.abstractmethod
    def _start_exposure(self) -> float: ...

    @abc.abstractmethod
    def read_frame(self) -> Frame:
        """Wait for the running exposure to end, read it out and return it."""

    @abc.abstractmethod
    def dark_reference(self, exposure_s: float, n_frames: int = 10) -> np.ndarray:
        """Mean of `n_frames` dark frames (beam blanked by the caller) at `exposure_s`, float32."""

    @abc.abstractmethod
    def gain_reference(self) -> np.ndarray:
        """Present gain reference (flat field normalised to mean 1), float32, unbinned."""

    def abort(self) -> None:
        """Abandon a running exposure (best effort)."""

    def safe_state(self) -> None:
        """Stop acquiring."""
        self.abort()

    def close(self) -> None:
        """Release the transport."""


# ---------------------------------------------------------------------------------------------
# Microscope (beam, lens, slit)


class Beam(abc.ABC):
    """Illumination: high tension, blanker, current and illuminated area."""

    @property
    @abc.abstractmethod
    def high_tension_V(self) -> float: ...

    @property
    @abc.abstractmethod
    def blanked(self) -> bool:
        """Read back from the instrument, not remembered."""

    @abc.abstractmethod
    def set_blanked(self, blanked: bool) -> None: ...

    @property
    @abc.abstractmethod
    def current_A(self) -> float:
        """Beam current on the specimen when unblanked, in A."""

    @property
    @abc.abstractmethod
    def illuminated_area_m2(self) -> float:
        """Area of the illuminated disc on the specimen, in m²."""

    @property
    def dose_rate_e_per_m2_s(self) -> float:
        """Electrons per m² per second while unblanked (divide by 1e20 for e/Å²/s)."""
        return dose_rate_e_per_m2_s(self.current_A, self.illuminated_area_m2)

    # optional: backends without beam-shift control keep these defaults
    @property
    def shift_m(self) -> tuple[float, float]:
        """Beam shift (x, y) at the specimen, in m (optional: NotImplementedError if absent)."""
        raise NotImplementedError(f"{type(self).__name__} has no beam-shift control")

    def set_shift(self, x_m: float, y_m: float) -> None:
        """Set the beam shift (x, y) in m; out of range raises InstrumentError (-222)."""
        raise NotImplementedError(f"{type(self).__name__} has no beam-shift control")


class Lens(abc.ABC):
    """Imaging lens system state relevant to SR-EELS."""

    @property
    @abc.abstractmethod
    def mode(self) -> str:
        """'TEM' (imaging) or 'DIFF' (diffraction)."""

    @property
    @abc.abstractmethod
    def magnification(self) -> float: ...

    @abc.abstractmethod
    def set_magnification(self, magnification: float) -> None: ...

    @property
    @abc.abstractmethod
    def defocus_m(self) -> float: ...

    @abc.abstractmethod
    def set_defocus(self, defocus_m: float) -> None: ...

    # optional: backends without image-shift control keep these defaults
    @property
    def image_shift_m(self) -> tuple[float, float]:
        """Image shift (x, y) referred to the specimen, in m (optional: NotImplementedError if absent)."""
        raise NotImplementedError(f"{type(self).__name__} has no image-shift control")

    def set_image_shift(self, x_m: float, y_m: float) -> None:
        """Set the image shift (x, y) in m; out of range raises InstrumentError (-222)."""
        raise NotImplementedError(f"{type(self).__name__} has no image-shift control")


@dataclass(frozen=True)
class StagePosition:
    """Specimen stage position: x, y, z in m, alpha tilt in rad."""

    x_m: float
    y_m: float
    z_m: float
    alpha_rad: float


class Stage(abc.ABC):
    """Specimen stage (an optional part of a `Microscope`): absolute moves of x, y, z and alpha."""

    @property
    @abc.abstractmethod
    def position(self) -> StagePosition:
        """Read back from the instrument."""

    @abc.abstractmethod
    def move_to(
        self, x_m: float | None = None, y_m: float | None = None, z_m: float | None = None, alpha_rad: float | None = None
    ) -> None:
        """Drive the axes given (absolute); the others stay. Out of range raises InstrumentError
        (-222) before anything moves."""

    @property
    def moving(self) -> bool:
        """True while the stage is still travelling (backends whose moves block answer False)."""
        return False


class Slit(abc.ABC):
    """Rectangular slit in front of the spectrometer: selects the strip across the layers."""

    @property
    @abc.abstractmethod
    def inserted(self) -> bool: ...

    @abc.abstractmethod
    def set_inserted(self, inserted: bool) -> None: ...

    @property
    @abc.abstractmethod
    def width_m(self) -> float:
        """Width across the strip (the integrated x direction), at the specimen, in m."""

    @abc.abstractmethod
    def set_width(self, width_m: float) -> None: ...

    @property
    @abc.abstractmethod
    def height_m(self) -> float:
        """Length along the strip (the spatial y axis of the spectrum image), at the specimen, in m."""

    @abc.abstractmethod
    def set_height(self, height_m: float) -> None: ...

    @property
    @abc.abstractmethod
    def centre_m(self) -> tuple[float, float]:
        """(x, y) of the strip centre on the specimen, in m."""

    @abc.abstractmethod
    def set_centre(self, x_m: float, y_m: float) -> None: ...

    @property
    @abc.abstractmethod
    def angle_rad(self) -> float: ...

    @abc.abstractmethod
    def set_angle(self, angle_rad: float) -> None: ...


class Microscope(abc.ABC):
    """A TEM seen through its beam, lens and slit."""

    resource: str = ""

    @property
    @abc.abstractmethod
    def beam(self) -> Beam: ...

    @property
    @abc.abstractmethod
    def lens(self) -> Lens: ...

    @property
    @abc.abstractmethod
    def slit(self) -> Slit: ...

    @abc.abstractmethod
    def identify(self) -> InstrumentIdentity: ...

    @property
    def stage(self) -> Stage:
        """The specimen stage (optional: NotImplementedError when the backend has none)."""
        raise NotImplementedError(f"{type(self).__name__} has no stage control")

    def errors(self) -> list[tuple[int, str]]:
        """Drain the microscope's error queue."""
        return []

    def safe_state(self) -> None:
        """Blank the beam."""
        self.beam.set_blanked(True)

    def close(self) -> None:
        """Release the transport."""


# ---------------------------------------------------------------------------------------------
# The rig


@dataclass
class Rig:
    """The three devices a run talks to, and the clock they share."""

    potentiostat: Potentiostat
    camera: Camera
    microscope: Microscope
    clock: Clock

    def safe_state(self) -> list[str]:
        """Potentiostat output off, beam blanked, camera stopped; every step tried.

        Returns a message for each device that failed to reach its safe state (empty = all safe).
        """
        failures: list[str] = []
        for name, action in (
            ("potentiostat", self.potentiostat.safe_state),
            ("microscope", self.microscope.safe_state),
            ("camera", self.camera.safe_state),
        ):
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - every device must be tried whatever fails
                failures.append(f"{name}: {exc}")
        return failures

    def close(self) -> None:
        for dev in (self.potentiostat, self.camera, self.microscope):
            try:
                dev.close()
            except Exception:  # noqa: BLE001 - closing is best effort after safe_state
                pass


def dose_rate_e_per_m2_s(current_A: float, area_m2: float) -> float:
    """Dose rate I / (e A) in electrons per m² per second."""
    if area_m2 <= 0:
        raise ValueError(f"illuminated area must be > 0 m², got {area_m2}")
    return current_A / (ELEMENTARY_CHARGE_C * area_m2)


def disc_area_m2(diameter_m: float) -> float:
    """Area of an illuminated disc of the given diameter."""
    return math.pi * (diameter_m / 2) ** 2
