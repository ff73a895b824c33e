"""The experiment protocol schema (pydantic v2).

A protocol file (YAML) holds: name and description; the sample/cell; the instruments; safety
limits; the beam; the spectrometer windows; and ordered steps (the kinds registered in
protocols/steps.py: `cv`, `hold`, `rest`,
`galvanostatic`, `ocv`), each with exposures attached. Quantities are written
with units and stored in SI (protocols/units.py); every number has physical bounds, and the
source limits must lie within the declared potentiostat's range. Unknown keys are errors
everywhere. The format reference (docs/protocol-format.md) is generated from this module.
"""

from __future__ import annotations

import difflib
import math
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    Tag,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from insitem.protocols.units import (
    CHARGE,
    CURRENT,
    DISPERSION,
    DOSE,
    DOSE_RATE,
    DRIFT_RATE,
    E_PER_A2,
    ENERGY,
    LENGTH,
    SWEEP_RATE,
    TIME,
    VOLTAGE,
    Bounds,
    quantity,
    quote,
)

ELEMENTARY_CHARGE_C = 1.602176634e-19


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def problems_error(problems: list[str]) -> ValueError:
    """Several problems found by one model validator: one `field: message` per line.

    The loader (protocols/loader.py) reports each line as its own error, with the file line of
    the field it names.
    """
    return ValueError("\n".join(problems))


# ---------------------------------------------------------------------------------------------
# Bounds of every quantity, in SI. Where an instrument sets the limit, the number is the
# instrument's; elsewhere the bound is the physical scale of the experiment, wide enough for
# any in-situ TEM-EELS experiment and narrow enough that a typo (1e308, 1e-30, a parsec) fails.

DAY_S = 86400.0
MAX_STEP_S = 30 * DAY_S  # a step or a whole run: in-situ experiments last hours to days (ex-situ-lasgtp: 83 h)
MIN_STEP_S = 1e-3  # shortest hold, rest or exposure interval: one potentiostat reading (~1-30 ms, physics.md 4.5)
MIN_EXPOSURE_S = 1e-3  # shortest camera (sub-)exposure of a CCD behind a GIF [est]; the shipped windows use >= 50 ms
MAX_EXPOSURE_S = 3600.0  # one spectrum image: an hour is beyond any drift-limited EELS exposure
MIN_DWELL_S = 1e-3  # staircase point of a CV: source settling < 250 us plus a reading (physics.md 4.4-4.5)


class SourceEnvelope:
    """The voltage source of a potentiostat model: what its specification allows."""

    def __init__(self, label: str, v_max_V: float, i_max_A: float, v_full_current_V: float, i_max_high_v_A: float,
                 i_min_A: float, source: str) -> None:
        self.label = label
        self.v_max_V = v_max_V  # widest source range, either polarity
        self.i_max_A = i_max_A  # highest current limit up to v_full_current_V
        self.v_full_current_V = v_full_current_V
        self.i_max_high_v_A = i_max_high_v_A  # highest current limit above v_full_current_V
        self.i_min_A = i_min_A  # lowest current limit the instrument accepts
        self.source = source


#: Keithley 2400 [S:K2400SPEC] and 2450 [S:K2450SPEC] (physics.md section 4): +-21 V at up to
#: +-1.05 A, +-210 V at up to +-105 mA; current limit from 1 nA (drivers/keithley: compliance_A).
POTENTIOSTATS: dict[str, SourceEnvelope] = {
    "keithley2400": SourceEnvelope("Keithley 2400", 210.0, 1.05, 21.0, 0.105, 1e-9, "2400 specifications [S:K2400SPEC]"),
    "keithley2450": SourceEnvelope("Keithley 2450", 210.0, 1.05, 21.0, 0.105, 1e-9, "SPEC-2450 [S:K2450SPEC]"),
}
_V_MAX = max(e.v_max_V for e in POTENTIOSTATS.values())
_I_MAX = max(e.i_max_A for e in POTENTIOSTATS.values())
_I_MIN = min(e.i_min_A for e in POTENTIOSTATS.values())

Potential = quantity(VOLTAGE, Bounds(ge=-_V_MAX, le=_V_MAX, why="the widest source range of the supported potentiostats"))
Compliance = quantity(CURRENT, Bounds(ge=_I_MIN, le=_I_MAX, why="the current limits the supported potentiostats accept"))
StepDuration = quantity(TIME, Bounds(ge=MIN_STEP_S, le=MAX_STEP_S, why="one reading to 30 days"))
SourceCurrent = quantity(
    CURRENT, Bounds(ge=-_I_MAX, le=_I_MAX, why="the supported potentiostats source up to +-1.05 A; + charges")
)
Capacity = quantity(CHARGE, Bounds(ge=1e-12, le=1e5, why="1 pC (a FIB lamella) to 1e5 C (28 Ah, a large cell)"))
ReadingInterval = quantity(TIME, Bounds(ge=MIN_STEP_S, le=3600.0, why="one reading (~1-30 ms) to an hour"))
Interval = quantity(
    TIME,
    Bounds(ge=MIN_STEP_S, le=MAX_STEP_S, why="one reading to 30 days"),
    count_hint="`every` takes a time such as '300 s'; to expose after given cycles of a cv step write `after_cycles: [2, 4]`",
)
ExposureTime = quantity(
    TIME,
    Bounds(ge=MIN_EXPOSURE_S, le=MAX_EXPOSURE_S, why="1 ms (camera) to 1 h"),
    count_hint="the exposure is a time such as '30 s'; summed sub-exposures are set with `frames: 4`",
)
TrackInterval = quantity(TIME, Bounds(ge=1.0, le=MAX_STEP_S, why="1 s (a frame, its read-out and a correction) to 30 days"))
DeadTime = quantity(TIME, Bounds(ge=0.0, le=60.0, why="clear + readout + energy switch of a CCD: seconds at most"))
SweepRate = quantity(SWEEP_RATE, Bounds(ge=1e-7, le=100.0, why="0.006 mV/min (1 V in 4 months) to 100 V/s"))
StepHeight = quantity(VOLTAGE, Bounds(ge=1e-6, le=10.0, why="1 uV (below the 2400's 5 uV resolution on 200 mV) to 10 V"))
DriftRate = quantity(DRIFT_RATE, Bounds(ge=0.0, le=1e-7, why="0 to 6 um/min: far beyond any holder that can be used"))
HighTension = quantity(VOLTAGE, Bounds(ge=1e4, le=3e6, why="10 kV to 3 MV: every electron microscope built"))
BeamCurrent = quantity(CURRENT, Bounds(ge=1e-15, le=1e-6, why="1 fA to 1 uA: TEM probes carry pA to a few hundred nA"))
SpecimenLength = quantity(LENGTH, Bounds(ge=1e-10, le=1e-3, why="0.1 nm to 1 mm: the scale of a TEM specimen"))
EnergyLoss = quantity(ENERGY, Bounds(ge=-200.0, le=20000.0, why="zero-loss to high-energy EELS (20 keV)"))
Dispersion = quantity(DISPERSION, Bounds(ge=1e-3, le=10.0, why="1 meV to 10 eV per channel"))
DoseRate = quantity(DOSE_RATE, Bounds(ge=1e-6 * E_PER_A2, le=1e12 * E_PER_A2, why="1e-6 to 1e12 e/Å^2/s (a focused probe)"))
Dose = quantity(DOSE, Bounds(ge=1e-3 * E_PER_A2, le=1e10 * E_PER_A2, why="1e-3 to 1e10 e/Å^2: any specimen is destroyed long before"))
MaxExposure = quantity(TIME, Bounds(ge=MIN_EXPOSURE_S, le=MAX_EXPOSURE_S, why="1 ms (camera) to 1 h"))


def _bare_number(lo: float, hi: float, unit: str) -> Any:
    """A dimensionless number (degrees, mrad) within [lo, hi]: no booleans, no strings, finite."""

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number in {unit}, got {quote(v)}")
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"must be within [{lo:g}, {hi:g}] {unit}, got {quote(v)}")
        return float(v)

    return Annotated[float, BeforeValidator(check), Field(json_schema_extra={"minimum": lo, "maximum": hi})]


def _count(lo: int, hi: int) -> Any:
    """A whole number within [lo, hi]; `true`/`false` and `2.0` are refused (no bool-as-int)."""
    return Annotated[int, Field(strict=True, ge=lo, le=hi)]


def _text(max_length: int, pattern: str | None = None) -> Any:
    return Annotated[str, StringConstraints(strict=True, max_length=max_length, pattern=pattern)]


Name = _text(64, r"^[A-Za-z0-9_.-]+$")
ShortText = _text(256)
LongText = _text(2000)
MAX_SENSOR_PX = 16384

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

    description: LongText = ""
    preset: Literal["lasgtp_bulk", "lfp_lamella", "si_nanoparticle"] | None = Field(
        default=None, description="simulator parameter set (required for --sim runs)"
    )
    initial_state: Literal["pristine", "cycled"] = Field(
        default="pristine", description="pristine cell, or the electrode formed by prior ex-situ cycling"
    )
    seed: _count(0, 2**32 - 1) = Field(default=0, description="random seed of the simulated world")
    drift_rate: DriftRate = Field(
        default=0.0,
        description="simulated runs: the specimen's settled drift along the slit (a typical biasing holder, "
        "simulators/drift.py `typical_holder`; 0 = a still specimen)",
    )


class InstrumentEntry(Strict):
    model: ShortText = Field(description="instrument model, e.g. keithley2400")
    resource: ShortText | None = Field(default=None, description="VISA resource or socket URL for hardware runs")


class Instruments(Strict):
    backend: Literal["sim", "hardware"] = "sim"
    potentiostat: InstrumentEntry = InstrumentEntry(model="keithley2400")
    camera: InstrumentEntry = InstrumentEntry(model="gif")
    microscope: InstrumentEntry = InstrumentEntry(model="insitem-tem")

    @field_validator("potentiostat")
    @classmethod
    def _known_potentiostat(cls, v: InstrumentEntry) -> InstrumentEntry:
        if v.model not in POTENTIOSTATS:
            raise ValueError(f"model {quote(v.model)}: expected {' or '.join(repr(m) for m in POTENTIOSTATS)}")
        return v

    @model_validator(mode="after")
    def _resources_for_hardware(self) -> "Instruments":
        if self.backend == "hardware":
            missing = [f"{n}.resource: a hardware backend needs a resource string"
                       for n in ("potentiostat", "camera", "microscope") if not getattr(self, n).resource]
            if missing:
                raise problems_error(missing)
        return self

    @property
    def source(self) -> SourceEnvelope:
        return POTENTIOSTATS[self.potentiostat.model]


# ---------------------------------------------------------------------------------------------
# Safety, beam, spectrometer


class Safety(Strict):
    voltage_min: Potential = Field(description="lowest potential any step may apply")
    voltage_max: Potential = Field(description="highest potential any step may apply")
    current_compliance: Compliance = Field(description="current limit of the source")
    max_dose_rate: DoseRate = Field(description="highest electron dose rate on the sample")
    max_total_dose: Dose = Field(description="electron dose budget for the whole run")
    max_exposure: MaxExposure = Field(default=120.0, description="longest single exposure")
    max_compliance_trips: _count(0, 1_000_000) = Field(default=10, description="compliance trips tolerated before stopping")

    @model_validator(mode="after")
    def _check(self) -> "Safety":
        if not self.voltage_min < self.voltage_max:
            raise ValueError(f"voltage_min: {self.voltage_min:g} V must be below voltage_max {self.voltage_max:g} V")
        return self


class Beam(Strict):
    """Illumination during exposures: dose rate = current / (e x disc area)."""

    high_tension: HighTension = Field(default=300e3, description="accelerating voltage")
    current: BeamCurrent = Field(description="beam current on the sample when unblanked")
    illuminated_diameter: SpecimenLength = Field(description="diameter of the illuminated disc")
    policy: Literal["blanked_between", "always_on"] = Field(
        default="blanked_between", description="beam blanked except during exposures (default), or always on"
    )

    @property
    def dose_rate_e_per_m2_s(self) -> float:
        area = math.pi * (self.illuminated_diameter / 2) ** 2
        return self.current / (ELEMENTARY_CHARGE_C * area)


class Slit(Strict):
    length: SpecimenLength = Field(default=1880e-9, description="extent along the spectrum image's position axis")
    width: SpecimenLength = Field(default=200e-9, description="extent across, integrated by the spectrometer")
    angle: _bare_number(-360.0, 360.0, "degrees") = Field(default=0.0, description="rotation in degrees (a bare number)")


class Window(Strict):
    """One spectrometer energy window: a spectrum image exposure setting."""

    name: Name = Field(description="window name, used by the steps' exposures")
    edges: list[Literal[tuple(EDGES)]] = Field(default_factory=list, max_length=len(EDGES), description="edges the window must contain")  # type: ignore[valid-type]
    energy_offset: EnergyLoss = Field(description="energy loss at the first channel")
    dispersion: Dispersion = Field(default=0.1, description="energy per channel")
    channels: _count(16, 8192) = Field(default=2048, description="energy channels read")
    exposure: ExposureTime = Field(description="total exposure of one spectrum image")
    frames: _count(1, 1000) = Field(
        default=1, description="summed sub-exposures of exposure/frames each (keeps bright windows below 16-bit saturation)"
    )
    binning: tuple[_count(1, 4096), _count(1, 4096)] = Field(default=(1, 1), description="(rows, channels) on-chip binning")
    readout_rows: tuple[_count(0, MAX_SENSOR_PX), _count(1, MAX_SENSOR_PX)] | None = Field(
        default=None, description="first and last+1 sensor row read"
    )

    @model_validator(mode="after")
    def _check(self) -> "Window":
        problems = []
        lo, hi = self.energy_range_eV
        for e in self.edges:
            _, need_lo, need_hi = EDGES[e]
            if need_lo < lo or need_hi > hi:
                problems.append(
                    f"edges: {e} needs {need_lo:g}-{need_hi:g} eV but the window covers "
                    f"{lo:g}-{hi:g} eV (energy_offset {self.energy_offset:g} eV, "
                    f"{self.channels} x {self.dispersion:g} eV)"
                )
        if self.exposure / self.frames < MIN_EXPOSURE_S:
            problems.append(f"frames: {self.frames} sub-exposures of {self.exposure:g} s are shorter than the camera's {MIN_EXPOSURE_S:g} s")
        if self.readout_rows is not None and not self.readout_rows[0] < self.readout_rows[1]:
            problems.append(f"readout_rows: the first row {self.readout_rows[0]} must be below the last+1 {self.readout_rows[1]}")
        if self.binning[1] > self.channels:
            problems.append(f"binning: {self.binning[1]} channels per bin exceeds the window's {self.channels} channels")
        if problems:
            raise problems_error(problems)
        return self

    @property
    def energy_range_eV(self) -> tuple[float, float]:
        return self.energy_offset, self.energy_offset + self.channels * self.dispersion


class Camera(Strict):
    sensor_rows: _count(16, MAX_SENSOR_PX) = Field(default=2048, description="sensor rows (position axis)")
    sensor_channels: _count(16, MAX_SENSOR_PX) = Field(default=2048, description="sensor columns (energy axis)")
    dead_time: DeadTime = Field(default=0.6, description="clear + readout + energy switch per exposure")
    processing: Literal["unprocessed", "dark_subtracted", "gain_normalized"] = "gain_normalized"


class Spectrometer(Strict):
    camera: Camera = Camera()
    slit: Slit = Slit()
    convergence_semiangle: _bare_number(1e-3, 500.0, "mrad") = Field(default=0.5, description="mrad (a bare number)")
    collection_semiangle: _bare_number(1e-3, 500.0, "mrad") = Field(default=10.0, description="mrad (a bare number)")
    windows: list[Window] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> "Spectrometer":
        problems = []
        names = [w.name for w in self.windows]
        for n in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"windows: duplicate name {n!r}")
        cam = self.camera
        for i, w in enumerate(self.windows):
            if w.channels > cam.sensor_channels:
                problems.append(f"windows[{i}].channels: {w.name} has {w.channels} channels, the camera {cam.sensor_channels}")
            r0, r1 = w.readout_rows or (0, cam.sensor_rows)
            if r1 > cam.sensor_rows:
                problems.append(f"windows[{i}].readout_rows: row {r1} is beyond the camera's {cam.sensor_rows} rows")
            elif w.binning[0] > r1 - r0:
                problems.append(f"windows[{i}].binning: {w.binning[0]} rows per bin exceeds the {r1 - r0} rows read")
        if problems:
            raise problems_error(problems)
        return self

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Exposures and steps

TRIGGERS = ("every", "at_start", "at_end", "at_vertices", "after_cycles", "at_potentials")
CV_ONLY_TRIGGERS = ("at_vertices", "at_potentials")

#: one exposure entry per trigger, for the format reference (a test plans each one)
TRIGGER_EXAMPLES: dict[str, str] = {
    "every": "windows: [li-k]\nevery: 300 s",
    "at_start": "windows: [li-k]\nat_start: true",
    "at_end": "windows: [li-k]\nat_end: true",
    "at_vertices": "windows: [li-k]\nat_vertices: true",
    "after_cycles": "windows: [li-k]\nafter_cycles: [1, 2]",
    "at_potentials": "windows: [li-k]\nat_potentials: [2.0 V]",
}


class Exposures(Strict):
    """When to take spectrum images during a step: exactly one trigger per entry."""

    windows: list[Name] = Field(min_length=1, max_length=32, description="window names, exposed one after the other")
    every: Interval | None = Field(default=None, description="period from the step start")
    at_start: bool = Field(default=False, strict=True, description="once, at the step start")
    at_end: bool = Field(default=False, strict=True, description="once, at the step end")
    at_vertices: bool = Field(default=False, strict=True, description="cv only: at every vertex")
    after_cycles: list[_count(1, 100_000)] | None = Field(
        default=None, max_length=100_000, description="cv and galvanostatic: at the end of these cycles (1-based)"
    )
    at_potentials: list[Potential] | None = Field(
        default=None, max_length=1000, description="cv only: whenever the sweep crosses these"
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> "Exposures":
        set_ = [n for n in TRIGGERS if getattr(self, n) not in (None, False)]
        if len(set_) != 1:
            raise ValueError(
                "give exactly one trigger of " + ", ".join(TRIGGERS) + (f" (got {', '.join(set_)})" if set_ else "")
            )
        return self

    @property
    def trigger(self) -> str:
        return next(n for n in TRIGGERS if getattr(self, n) not in (None, False))


StepExposures = Annotated[list[Exposures], Field(max_length=100)]


class StepEntry(Strict):
    """One entry of `steps`: a mapping with one key, the step kind, holding the step's fields.

    Each registered kind (protocols/steps.py) gets a subclass with that one field; the union of
    them, tagged by the key, is the type of `Protocol.steps`.
    """

    @property
    def kind(self) -> str:
        return next(iter(type(self).model_fields))

    @property
    def body(self) -> Any:
        return getattr(self, self.kind)

    def __getattr__(self, name: str) -> Any:
        if name in _ENTRIES:  # another kind's key: this step is not of that kind
            return None
        return super().__getattr__(name)  # type: ignore[misc]


_ENTRIES: dict[str, type[StepEntry]] = {}  # kind -> entry model, in registration order


def register_step_kind(cls: type[BaseModel]) -> None:
    """Make `cls` (a step kind of protocols/steps.py) a member of the steps union."""
    kind = cls.kind  # type: ignore[attr-defined]
    entry = create_model(f"{cls.__name__}Step", __base__=StepEntry, __doc__=cls.__doc__, __module__=__name__,
                         **{kind: (cls, Field(description=(cls.__doc__ or "").strip().splitlines()[0]))})
    globals()[entry.__name__] = entry  # found by name here, so a validated protocol pickles
    _ENTRIES[kind] = entry
    _rebuild()


def unregister_step_kind(kind: str) -> None:
    entry = _ENTRIES.pop(kind, None)
    if entry is not None:
        globals().pop(entry.__name__, None)
    _rebuild()


def _rebuild() -> None:
    # Protocol builds its validator on first use (defer_build); once built, a new kind rebuilds it
    if "Protocol" in globals() and Protocol.__pydantic_complete__:
        Protocol.model_rebuild(force=True)


class _UnknownStep(Strict):
    """Stands for a steps entry that names no registered kind: explains what is wrong."""

    @model_validator(mode="before")
    @classmethod
    def _explain(cls, data: Any) -> Any:
        kinds = ", ".join(_ENTRIES)
        if not isinstance(data, dict) or not data:
            raise ValueError(f"each step is a mapping with one key, the step kind ({kinds})")
        keys = [str(k) for k in data]
        if len(keys) > 1:
            known = [k for k in keys if k in _ENTRIES]
            raise ValueError(f"each step needs exactly one of {kinds}" + (f" (got {', '.join(known)})" if known else f" (got {', '.join(map(quote, keys[:3]))})"))
        near = difflib.get_close_matches(keys[0], list(_ENTRIES), n=1, cutoff=0.6)
        raise ValueError(f"unknown step kind {quote(keys[0])}" + (f": did you mean {near[0]}?" if near else "") + f" (kinds: {kinds})")


def _step_tag(value: Any) -> str:
    if isinstance(value, StepEntry):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        if key in _ENTRIES:
            return str(key)
    return UNKNOWN_STEP


UNKNOWN_STEP = "__unknown__"
UNKNOWN_STEP_MODEL = _UnknownStep


class Steps:
    """The type of one `steps` entry: the union of the registered kinds, tagged by the key."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        members = [Annotated[entry, Tag(kind)] for kind, entry in _ENTRIES.items()]
        members.append(Annotated[_UnknownStep, Tag(UNKNOWN_STEP)])
        return handler.generate_schema(Annotated[Union[tuple(members)], Discriminator(_step_tag)])


# ---------------------------------------------------------------------------------------------
# The protocol


#: the run file's group (and the drift table's window) of the drift-tracking exposures
TRACKING_WINDOW = "drift-tracking"


class DriftCorrection(Strict):
    """Specimen drift along the slit: measured from one window's images (or from tracking
    exposures of their own, with that window's settings) and, with `correct`, taken back by image
    shift between exposures, by the stage beyond `max_shift` (acquisition/drift_control.py,
    docs/drift.md)."""

    mode: Literal["off", "measure", "correct"] = Field(default="off", description="off, measure only, or measure and correct")
    window: Name | None = Field(default=None, description="the window whose images (or whose settings, for tracking exposures) track the Pt/electrolyte step (default: the first)")
    dead_band: SpecimenLength = Field(default=5.7e-9, description="no correction while the measured drift is within this")
    max_shift: SpecimenLength = Field(default=2e-6, description="the largest image shift the correction may set")
    on_refusal: Literal["continue", "stop"] = Field(
        default="continue", description="when the microscope refuses a correction: go on measuring, or stop the run safely"
    )
    track_every: TrackInterval | None = Field(
        default=None, description="a one-frame drift-tracking exposure of its own this often (from the run start); "
        "the drift is then measured from these alone"
    )
    track_groups: bool = Field(
        default=False, strict=True, description="a drift-tracking exposure just before each group of exposures (the windows of one trigger)"
    )
    track_exposure: ExposureTime = Field(
        default=0.05, description="exposure of one tracking frame (at most the tracking window's frame, exposure/frames)"
    )
    track_max_dose: Dose | None = Field(default=None, description="the most dose the tracking exposures may deliver (counted in safety.max_total_dose too)")
    use_stage: bool = Field(
        default=True, strict=True, description="correct: move the stage when the image shift would pass max_shift, and recentre the image shift"
    )
    max_stage_travel: SpecimenLength = Field(
        default=10e-6, description="the farthest the correction may move the stage from where the run found it"
    )

    @property
    def tracking_exposures(self) -> bool:
        """True when the protocol asks for tracking exposures of their own."""
        return self.mode != "off" and (self.track_every is not None or self.track_groups)


class Protocol(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # built once the step kinds are registered

    name: Name = Field(description="protocol name (letters, digits, _ . -)")
    description: LongText = ""
    reference: ShortText = Field(default="", description="the publication the protocol reproduces")
    sample: Sample
    instruments: Instruments = Instruments()
    safety: Safety
    beam: Beam
    spectrometer: Spectrometer
    drift: DriftCorrection = DriftCorrection()
    steps: list[Steps] = Field(min_length=1, max_length=10_000, description="what to do, in order: each entry one step kind")

    @model_validator(mode="after")
    def _cross_checks(self) -> "Protocol":
        problems = [*self._source_problems(), *self._beam_problems(), *self._step_problems(), *self._drift_problems()]
        if problems:
            raise problems_error(problems)
        return self

    def _source_problems(self) -> list[str]:
        """Safety limits within what the declared potentiostat can do."""
        s, src = self.safety, self.instruments.source
        out = []
        for name in ("voltage_min", "voltage_max"):
            v = getattr(s, name)
            if abs(v) > src.v_max_V:
                out.append(f"safety.{name}: {v:g} V is beyond the {src.label}'s +-{src.v_max_V:g} V source range ({src.source})")
        if s.current_compliance > src.i_max_A:
            out.append(f"safety.current_compliance: {s.current_compliance:g} A is above the {src.label}'s {src.i_max_A:g} A limit ({src.source})")
        elif max(abs(s.voltage_min), abs(s.voltage_max)) > src.v_full_current_V and s.current_compliance > src.i_max_high_v_A:
            out.append(
                f"safety.current_compliance: {s.current_compliance:g} A is above the {src.i_max_high_v_A:g} A the {src.label} "
                f"sources beyond +-{src.v_full_current_V:g} V (the voltage window reaches "
                f"{max(abs(s.voltage_min), abs(s.voltage_max)):g} V; {src.source})"
            )
        if s.current_compliance < src.i_min_A:
            out.append(f"safety.current_compliance: {s.current_compliance:g} A is below the {src.label}'s lowest limit {src.i_min_A:g} A")
        return out

    def _beam_problems(self) -> list[str]:
        s = self.safety
        out = []
        if self.beam.dose_rate_e_per_m2_s > s.max_dose_rate * (1 + 1e-9):
            out.append(
                f"beam: dose rate {self.beam.dose_rate_e_per_m2_s / E_PER_A2:.3g} e/Å^2/s exceeds "
                f"safety.max_dose_rate {s.max_dose_rate / E_PER_A2:.3g} e/Å^2/s"
            )
        for i, w in enumerate(self.spectrometer.windows):
            if w.exposure > s.max_exposure:
                out.append(
                    f"spectrometer.windows[{i}].exposure: {w.name} exposure {w.exposure:g} s exceeds safety.max_exposure {s.max_exposure:g} s"
                )
        return out

    def _drift_problems(self) -> list[str]:
        d = self.drift
        names = [w.name for w in self.spectrometer.windows]
        if d.window is not None and d.window not in names:
            return [f"drift.window: {d.window!r} is not a window; choose one of {', '.join(names)}"]
        if d.dead_band >= d.max_shift:
            return [f"drift.dead_band: {d.dead_band * 1e9:g} nm must be below drift.max_shift ({d.max_shift * 1e9:g} nm)"]
        out = []
        asked = [n for n in ("track_every", "track_groups") if getattr(d, n) not in (None, False)]
        if len(asked) > 1:
            out.append("drift.track_groups: give drift.track_every or drift.track_groups, not both")
        if asked and d.mode == "off":
            out.append(f"drift.{asked[0]}: tracking exposures need drift.mode measure or correct (it is off)")
        if asked and d.mode != "off":
            w = self.spectrometer.window(d.window or names[0])
            if d.track_exposure > w.exposure / w.frames * (1 + 1e-9):
                out.append(f"drift.track_exposure: {d.track_exposure:g} s is longer than one {w.name} frame "
                           f"({w.exposure / w.frames:g} s = exposure/frames, the most the window exposes at once)")
            if d.track_exposure > self.safety.max_exposure:
                out.append(f"drift.track_exposure: {d.track_exposure:g} s exceeds safety.max_exposure {self.safety.max_exposure:g} s")
            if TRACKING_WINDOW in names:
                out.append(f"drift.track_every: the window name {TRACKING_WINDOW!r} is taken by the tracking exposures; rename that window")
        return out

    def _step_problems(self) -> list[str]:
        names = {w.name for w in self.spectrometer.windows}
        out = []
        for i, step in enumerate(self.steps):
            body = step.body
            where = f"steps[{i}].{body.kind}"
            out += [f"{where}.{p}" for p in body.safety_problems(self)]
            for k, ex in enumerate(body.exposures):
                for j, w in enumerate(ex.windows):
                    if w not in names:
                        out.append(f"{where}.exposures[{k}].windows[{j}]: unknown window {w!r} (have {', '.join(sorted(names))})")
                if ex.trigger not in body.triggers:
                    out.append(f"{where}.exposures[{k}].{ex.trigger}: a {body.kind} step takes {', '.join(body.triggers)}")
        return out


# the built-in step kinds register themselves (steps.py imports this module's field types)
from insitem.protocols.steps import CV, OCV, STEP_KINDS, Galvanostatic, Hold, Rest, StepKind  # noqa: E402

__all__ = ["CV", "OCV", "STEP_KINDS", "Galvanostatic", "Hold", "Protocol", "Rest", "StepKind"]
