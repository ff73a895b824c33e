"""The experiment protocol schema (pydantic v2).

A protocol file (YAML) holds: name and description; the sample/cell; the instruments; safety
limits; the beam; the spectrometer windows; and ordered steps (`cv`, `hold`, `rest`), each with
exposures attached. Quantities are written with units and stored in SI (protocols/units.py).
Unknown keys are errors everywhere.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from insitem.protocols.units import (
    E_PER_A2,
    Current,
    Dispersion,
    Dose,
    DoseRate,
    Duration,
    Energy,
    Length,
    SweepRate,
    Voltage,
)

ELEMENTARY_CHARGE_C = 1.602176634e-19


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Edges a window can name: onset and the energy span the window must cover (pre-edge background
# window through the near-edge structure the analysis reads), in eV. Onsets: physics.md §1.6/§1.8.
EDGES: dict[str, tuple[float, float, float]] = {
    # name: (onset, must cover from, must cover to)
    "Li-K": (55.0, 44.0, 80.0),  # pre-edge 44-53 eV; main peak 61.5 eV
    "Ti-L23": (456.0, 425.0, 475.0),  # pre-edge window 425-450 eV; L2 eg at 465 eV
    "O-K": (529.0, 485.0, 570.0),  # pre-edge 485-525 eV; peak b up to 565 eV
    "Fe-L23": (708.0, 650.0, 730.0),
    "V-L23": (513.0, 480.0, 530.0),
    "Si-L23": (99.2, 85.0, 130.0),
    "Zero-loss": (0.0, -5.0, 5.0),
}


# ---------------------------------------------------------------------------------------------
# Sample, instruments


class Sample(Strict):
    """The cell under test. `preset` selects a simulator parameter set; free text for hardware."""

    description: str = ""
    preset: Literal["lasgtp_bulk", "lfp_lamella", "si_nanoparticle"] | None = Field(
        default=None, description="simulator parameter set (required for --sim runs)"
    )
    initial_state: Literal["pristine", "cycled"] = Field(
        default="pristine", description="pristine cell, or the electrode formed by prior ex-situ cycling"
    )
    seed: int = Field(default=0, description="random seed of the simulated world")


class InstrumentEntry(Strict):
    model: str
    resource: str | None = Field(default=None, description="VISA resource or socket URL for hardware runs")


class Instruments(Strict):
    backend: Literal["sim", "hardware"] = "sim"
    potentiostat: InstrumentEntry = InstrumentEntry(model="keithley2400")
    camera: InstrumentEntry = InstrumentEntry(model="gif")
    microscope: InstrumentEntry = InstrumentEntry(model="insitem-tem")

    @field_validator("potentiostat")
    @classmethod
    def _known_potentiostat(cls, v: InstrumentEntry) -> InstrumentEntry:
        if v.model not in ("keithley2400", "keithley2450"):
            raise ValueError(f"model {v.model!r}: expected 'keithley2400' or 'keithley2450'")
        return v

    @model_validator(mode="after")
    def _resources_for_hardware(self) -> "Instruments":
        if self.backend == "hardware":
            for name in ("potentiostat", "camera", "microscope"):
                if not getattr(self, name).resource:
                    raise ValueError(f"{name}.resource: a hardware backend needs a resource string")
        return self


# ---------------------------------------------------------------------------------------------
# Safety, beam, spectrometer


class Safety(Strict):
    voltage_min: Voltage = Field(description="lowest potential any step may apply")
    voltage_max: Voltage = Field(description="highest potential any step may apply")
    current_compliance: Current = Field(description="current limit of the source")
    max_dose_rate: DoseRate = Field(description="highest electron dose rate on the sample")
    max_total_dose: Dose = Field(description="electron dose budget for the whole run")
    max_exposure: Duration = Field(default=120.0, description="longest single exposure")
    max_compliance_trips: int = Field(default=10, ge=0, description="compliance trips tolerated before stopping")

    @model_validator(mode="after")
    def _check(self) -> "Safety":
        if not self.voltage_min < self.voltage_max:
            raise ValueError("voltage_min must be below voltage_max")
        if self.current_compliance <= 0:
            raise ValueError("current_compliance: must be > 0")
        if self.max_dose_rate <= 0 or self.max_total_dose <= 0 or self.max_exposure <= 0:
            raise ValueError("max_dose_rate, max_total_dose and max_exposure must be > 0")
        return self


class Beam(Strict):
    """Illumination during exposures: dose rate = current / (e x disc area)."""

    high_tension: Voltage = 300e3
    current: Current = Field(description="beam current on the sample when unblanked")
    illuminated_diameter: Length = Field(description="diameter of the illuminated disc")
    policy: Literal["blanked_between", "always_on"] = Field(
        default="blanked_between", description="beam blanked except during exposures (default), or always on"
    )

    @model_validator(mode="after")
    def _check(self) -> "Beam":
        if self.current <= 0 or self.illuminated_diameter <= 0:
            raise ValueError("current and illuminated_diameter must be > 0")
        try:
            rate = self.dose_rate_e_per_m2_s
        except (OverflowError, ZeroDivisionError):  # a disc area beyond the float range
            rate = math.nan
        if not math.isfinite(rate):
            raise ValueError(
                f"illuminated_diameter: {self.illuminated_diameter:g} m with current {self.current:g} A "
                "gives no finite dose rate"
            )
        return self

    @property
    def dose_rate_e_per_m2_s(self) -> float:
        area = math.pi * (self.illuminated_diameter / 2) ** 2
        return self.current / (ELEMENTARY_CHARGE_C * area)


class Slit(Strict):
    length: Length = Field(default=1880e-9, description="extent along the spectrum image's position axis")
    width: Length = Field(default=200e-9, description="extent across, integrated by the spectrometer")
    angle: float = Field(default=0.0, description="rotation in degrees (dimensionless number allowed)")


class Window(Strict):
    """One spectrometer energy window: a spectrum image exposure setting."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    edges: list[str] = Field(default_factory=list, description="edges the window must contain")
    energy_offset: Energy = Field(description="energy loss at the first channel")
    dispersion: Dispersion = Field(default=0.1, description="energy per channel")
    channels: int = Field(default=2048, ge=16, le=8192)
    exposure: Duration = Field(description="total exposure of one spectrum image")
    frames: int = Field(
        default=1, ge=1, le=1000, description="summed sub-exposures of exposure/frames each (keeps bright windows below 16-bit saturation)"
    )
    binning: tuple[int, int] = Field(default=(1, 1), description="(rows, channels) on-chip binning")
    readout_rows: tuple[int, int] | None = Field(default=None, description="first and last+1 sensor row read")

    @field_validator("edges")
    @classmethod
    def _known_edges(cls, v: list[str]) -> list[str]:
        for e in v:
            if e not in EDGES:
                raise ValueError(f"unknown edge {e!r}: expected one of {', '.join(EDGES)}")
        return v

    @model_validator(mode="after")
    def _contains_edges(self) -> "Window":
        if self.exposure <= 0:
            raise ValueError("exposure: must be > 0")
        if self.dispersion <= 0:
            raise ValueError("dispersion: must be > 0")
        lo, hi = self.energy_range_eV
        for e in self.edges:
            _, need_lo, need_hi = EDGES[e]
            if need_lo < lo or need_hi > hi:
                raise ValueError(
                    f"edges: {e} needs {need_lo:g}-{need_hi:g} eV but the window covers "
                    f"{lo:g}-{hi:g} eV (energy_offset {self.energy_offset:g} eV, "
                    f"{self.channels} x {self.dispersion:g} eV)"
                )
        if min(self.binning) < 1:
            raise ValueError("binning: must be >= 1")
        return self

    @property
    def energy_range_eV(self) -> tuple[float, float]:
        return self.energy_offset, self.energy_offset + self.channels * self.dispersion


class Camera(Strict):
    sensor_rows: int = 2048
    sensor_channels: int = 2048
    dead_time: Duration = Field(default=0.6, description="clear + readout + energy switch per exposure")
    processing: Literal["unprocessed", "dark_subtracted", "gain_normalized"] = "gain_normalized"


class Spectrometer(Strict):
    camera: Camera = Camera()
    slit: Slit = Slit()
    convergence_semiangle: float = Field(default=0.5, description="mrad")
    collection_semiangle: float = Field(default=10.0, description="mrad")
    windows: list[Window] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Spectrometer":
        names = [w.name for w in self.windows]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"windows: duplicate name {sorted(dup)[0]!r}")
        for w in self.windows:
            if w.channels > self.camera.sensor_channels:
                raise ValueError(f"windows: {w.name} has {w.channels} channels, the camera {self.camera.sensor_channels}")
        return self

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Exposures and steps


class Exposures(Strict):
    """When to take spectrum images during a step: exactly one trigger per entry."""

    windows: list[str] = Field(min_length=1, description="window names, exposed one after the other")
    every: Duration | None = Field(default=None, description="period from the step start")
    at_start: bool = False
    at_end: bool = False
    at_vertices: bool = Field(default=False, description="cv only: at every vertex")
    after_cycles: list[int] | None = Field(default=None, description="cv only: at the end of these cycles (1-based)")
    at_potentials: list[Voltage] | None = Field(default=None, description="cv only: whenever the sweep crosses these")

    @model_validator(mode="after")
    def _one_trigger(self) -> "Exposures":
        set_ = [
            n
            for n in ("every", "at_start", "at_end", "at_vertices", "after_cycles", "at_potentials")
            if getattr(self, n) not in (None, False)
        ]
        if len(set_) != 1:
            raise ValueError(
                "give exactly one trigger of every, at_start, at_end, at_vertices, after_cycles, at_potentials"
                + (f" (got {', '.join(set_)})" if set_ else "")
            )
        if self.every is not None and self.every <= 0:
            raise ValueError("every: must be > 0")
        return self


class CV(Strict):
    kind: ClassVar[str] = "cv"
    start: Voltage
    vertices: list[Voltage] = Field(min_length=1, description="turning potentials of each cycle")
    end: Voltage | None = Field(default=None, description="final potential (default: start)")
    sweep_rate: SweepRate
    step: Voltage = Field(default=1e-3, description="staircase step height")
    cycles: int = Field(default=1, ge=1, le=100000)
    exposures: list[Exposures] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "CV":
        if self.sweep_rate <= 0:
            raise ValueError(f"sweep_rate: must be > 0, got {self.sweep_rate:g} V/s")
        if self.step <= 0:
            raise ValueError(f"step: must be > 0, got {self.step:g} V")
        return self

    @property
    def potentials(self) -> list[float]:
        return [self.start, *self.vertices, self.end if self.end is not None else self.start]


class Hold(Strict):
    kind: ClassVar[str] = "hold"
    potential: Voltage
    duration: Duration
    exposures: list[Exposures] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "Hold":
        if self.duration <= 0:
            raise ValueError("duration: must be > 0")
        return self


class Rest(Strict):
    """Open circuit (potentiostat output off)."""

    kind: ClassVar[str] = "rest"
    duration: Duration
    exposures: list[Exposures] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "Rest":
        if self.duration <= 0:
            raise ValueError("duration: must be > 0")
        return self


class Step(Strict):
    """One entry of `steps`: a mapping with exactly one of the keys cv, hold, rest."""

    cv: CV | None = None
    hold: Hold | None = None
    rest: Rest | None = None

    @model_validator(mode="after")
    def _one(self) -> "Step":
        given = [k for k in ("cv", "hold", "rest") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each step needs exactly one of cv, hold, rest" + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def body(self) -> CV | Hold | Rest:
        return self.cv or self.hold or self.rest  # type: ignore[return-value]

    @property
    def kind(self) -> str:
        return self.body.kind


# ---------------------------------------------------------------------------------------------
# The protocol


class Protocol(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    reference: str = Field(default="", description="the publication the protocol reproduces")
    sample: Sample
    instruments: Instruments = Instruments()
    safety: Safety
    beam: Beam
    spectrometer: Spectrometer
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Protocol":
        s = self.safety
        if self.beam.dose_rate_e_per_m2_s > s.max_dose_rate * (1 + 1e-9):
            raise ValueError(
                f"beam: dose rate {self.beam.dose_rate_e_per_m2_s / E_PER_A2:.3g} e/Å^2/s exceeds "
                f"safety.max_dose_rate {s.max_dose_rate / E_PER_A2:.3g} e/Å^2/s"
            )
        for w in self.spectrometer.windows:
            if w.exposure > s.max_exposure:
                raise ValueError(
                    f"spectrometer.windows: {w.name} exposure {w.exposure:g} s exceeds safety.max_exposure {s.max_exposure:g} s"
                )
        names = {w.name for w in self.spectrometer.windows}
        for i, step in enumerate(self.steps):
            body = step.body
            where = f"steps[{i}].{body.kind}"
            if isinstance(body, CV):
                for j, v in enumerate(body.potentials):
                    if not s.voltage_min <= v <= s.voltage_max:
                        raise ValueError(
                            f"{where}: potential {v:g} V outside the safety window "
                            f"[{s.voltage_min:g}, {s.voltage_max:g}] V"
                        )
            if isinstance(body, Hold) and not s.voltage_min <= body.potential <= s.voltage_max:
                raise ValueError(
                    f"{where}.potential: {body.potential:g} V outside the safety window "
                    f"[{s.voltage_min:g}, {s.voltage_max:g}] V"
                )
            for k, ex in enumerate(body.exposures):
                for w in ex.windows:
                    if w not in names:
                        raise ValueError(f"{where}.exposures[{k}].windows: unknown window {w!r} (have {', '.join(sorted(names))})")
                if not isinstance(body, CV) and (ex.at_vertices or ex.after_cycles or ex.at_potentials):
                    raise ValueError(f"{where}.exposures[{k}]: at_vertices/after_cycles/at_potentials apply to cv steps only")
                if isinstance(body, CV) and ex.after_cycles and max(ex.after_cycles) > body.cycles:
                    raise ValueError(f"{where}.exposures[{k}].after_cycles: cycle {max(ex.after_cycles)} > cycles {body.cycles}")
        return self
