"""SourceMeter model shared by the Keithley 2400 and 2450 emulators.

The SMU sources a voltage into a *load* (anything with the `SmuLoad.advance` signature: the
battery cell `insitem.simulators.electrochemistry.Cell`, or `ResistorLoad` / `RCLoad` here) and
measures the current. Time comes from an injected `Clock`: before every action the load is
advanced by the clock time elapsed since the last call, so with a `VirtualClock` everything is
deterministic and with a `RealClock` it runs in real time.

Physics and numbers (physics.md):
* ranges and noise, §4.4: Gaussian current noise, sigma = (accuracy offset of the active range)/3
  per reading at 1 NPLC, scaled by sqrt(1/NPLC) for NPLC < 1 [est]; plus a fixed offset drawn
  once per range within the accuracy offset [est]. Offsets: 2400 table [S:K2400SPEC], 2450 table
  [S:K2450SPEC] (ranges not listed there - 10 mA .. 1 A - use 0.035 % + 600 nA scaled x10 per
  decade, a named simplification).
* timing, §4.5: integration time NPLC / f_line x autozero multiplier (default 1); a PC-driven
  point additionally costs 12.3 ms of host/firmware overhead [derived from S:K6430], applied
  only on a virtual clock (on a real clock the wire supplies the real overhead); settling
  0.25 ms [S:K2400SPEC] after a source change.
* a reading is the *mean* current over its integration window (charge / time), which is what an
  integrating A/D converter reports. The measured voltage is the terminal voltage at the end of
  the window, without noise (a named simplification).
* current sourcing (`source_function` "CURR"): the load's `advance_current` forces the programmed
  current unless the terminal voltage would pass the voltage limit (2400 :SENS:VOLT:PROT, 2450
  :SOUR:CURR:VLIM), where the source holds the limit and the reading is flagged as clamped.
* compliance: the load reports whether the source had to clamp; overflow (|I| above the
  measure range x 1.05 on a fixed range) is reported as 9.91e37 (physics.md §4.2).
* output-off modes (2400 manual §13 / 2450 manual "Output-off state"): HIMP and GUAR leave the
  load open (applied_V None); NORM sources 0 V with compliance cut to 0.5 % (2400) / 10 %
  (2450) of the current range; ZERO sources 0 V with the programmed compliance.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.drivers.clock import Clock
from insitem.drivers.scpi import SCPI_NAN


# ---------------------------------------------------------------------------------------------
# Loads


class LoadStep(Protocol):
    current_A: float
    terminal_V: float
    compliance_tripped: bool
    charge_C: float | None


class SmuLoad(Protocol):
    """What an SMU drives. `applied_V` None = output off / open circuit.

    A load that can also be driven by a current source has `advance_current(current_A, dt_s,
    voltage_limit_V, beam_current_A) -> LoadStep` (the signature of the battery cell's
    `Cell.advance_current`): the SMU forces `current_A` unless the terminal voltage would pass
    `voltage_limit_V` (signed like the current: the side the current drives the load towards);
    then it holds the limit and reports the clamp.
    """

    def advance(
        self, dt_s: float, applied_V: float | None, compliance_A: float, beam_current_A: float = 0.0
    ) -> LoadStep: ...


class SourceModeUnavailable(RuntimeError):
    """The load cannot be driven by a current source."""


@dataclass(frozen=True)
class Step:
    """Result of one `advance`: current at the end of the step, terminal voltage, clamp flag,
    charge passed during the step (None when the output is open)."""

    current_A: float
    terminal_V: float
    compliance_tripped: bool
    charge_C: float | None


@dataclass
class ResistorLoad:
    """An ideal resistor (Ohm's law I = V / R) with the SMU's current clamp.

    When |V/R| exceeds the compliance the SMU becomes a current source at ±compliance and the
    terminal voltage drops to I R.
    """

    resistance_ohm: float = 1e4
    total_charge_C: float = 0.0

    def advance(
        self, dt_s: float, applied_V: float | None, compliance_A: float, beam_current_A: float = 0.0
    ) -> Step:
        if applied_V is None:
            return Step(0.0, 0.0, False, None)
        i = applied_V / self.resistance_ohm + beam_current_A
        tripped = abs(i) > compliance_A
        if tripped:
            i = math.copysign(compliance_A, i)
        q = i * dt_s
        self.total_charge_C += q
        return Step(i, (i - beam_current_A) * self.resistance_ohm if tripped else applied_V, tripped, q)

    def advance_current(
        self, current_A: float, dt_s: float, voltage_limit_V: float | None = None, beam_current_A: float = 0.0
    ) -> Step:
        """Current source into the resistor: V = (I - I_beam) R, clamped at |voltage_limit_V|."""
        v = (current_A - beam_current_A) * self.resistance_ohm
        limit = math.inf if voltage_limit_V is None else abs(voltage_limit_V)
        tripped = abs(v) > limit
        if tripped:
            v = math.copysign(limit, v)
        i = v / self.resistance_ohm + beam_current_A
        q = i * dt_s
        self.total_charge_C += q
        return Step(i, v, tripped, q)


@dataclass
class RCLoad:
    """Series resistor R and capacitor C (a cell's double layer without Faradaic current).

    Exact solution for a constant applied voltage over the step: the capacitor voltage relaxes
    as V_C(t) = V + (V_C0 - V) exp(-t / RC). Simplification: while the current clamp is active
    the capacitor charges at constant ±compliance (linear ramp) for the whole step.
    """

    resistance_ohm: float = 1e3
    capacitance_F: float = 1e-6
    capacitor_V: float = 0.0
    total_charge_C: float = 0.0

    def advance(
        self, dt_s: float, applied_V: float | None, compliance_A: float, beam_current_A: float = 0.0
    ) -> Step:
        if applied_V is None:
            return Step(0.0, self.capacitor_V, False, None)
        r, c = self.resistance_ohm, self.capacitance_F
        i0 = (applied_V - self.capacitor_V) / r
        if abs(i0) > compliance_A:
            i = math.copysign(compliance_A, i0)
            q = i * dt_s
            self.capacitor_V += q / c
            self.total_charge_C += q
            return Step(i, self.capacitor_V + i * r, True, q)
        tau = r * c
        v_end = applied_V + (self.capacitor_V - applied_V) * math.exp(-dt_s / tau)
        q = c * (v_end - self.capacitor_V)
        self.capacitor_V = v_end
        self.total_charge_C += q
        return Step((applied_V - v_end) / r, applied_V, False, q)

    def advance_current(
        self, current_A: float, dt_s: float, voltage_limit_V: float | None = None, beam_current_A: float = 0.0
    ) -> Step:
        """Current source: the capacitor charges at I (V_C += I dt / C), terminal V = V_C + I R.
        Where that would pass |voltage_limit_V| the source holds the limit for the whole step
        (the voltage-source solution above with no current clamp), flagged as clamped."""
        i = current_A
        limit = math.inf if voltage_limit_V is None else abs(voltage_limit_V)
        v_end = self.capacitor_V + i * dt_s / self.capacitance_F
        if abs(v_end + i * self.resistance_ohm) > limit:
            step = self.advance(dt_s, math.copysign(limit, i), math.inf)
            return Step(step.current_A, step.terminal_V, True, step.charge_C)
        q = i * dt_s
        self.capacitor_V = v_end
        self.total_charge_C += q
        return Step(i, v_end + i * self.resistance_ohm, False, q)


# ---------------------------------------------------------------------------------------------
# Instrument specification tables (physics.md §4.4, §4.5)


class SmuSpec(BaseModel):
    """Static description of one SourceMeter model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: (range_A, accuracy offset_A); physics.md §4.4
    current_ranges: tuple[tuple[float, float], ...]
    voltage_ranges_V: tuple[float, ...]
    max_compliance_A: float = 1.05
    normal_off_compliance_fraction: float = Field(description="NORM off-mode current limit / range")
    point_overhead_s: float = 12.3e-3  # physics.md §4.5 [derived from S:K6430]
    settle_s: float = 0.25e-3  # physics.md §4.5 [S:K2400SPEC]
    buffer_size: int = 2500


def _extend(table: list[tuple[float, float]], up_to: float) -> tuple[tuple[float, float], ...]:
    """Extend a range table by decades (offset x10 per decade) - the named simplification above."""
    while table[-1][0] < up_to:
        r, off = table[-1]
        table.append((r * 10, off * 10))
    return tuple(table)


K2400_SPEC = SmuSpec(
    # [S:K2400SPEC] 1 uA .. 10 mA; 100 mA and 1 A extended
    current_ranges=_extend([(1e-6, 300e-12), (10e-6, 700e-12), (100e-6, 6e-9), (1e-3, 60e-9), (10e-3, 600e-9)], 1.0),
    voltage_ranges_V=(0.2, 2.0, 20.0, 200.0),
    normal_off_compliance_fraction=0.005,  # 2400 manual: 0.5 % of the current range
)
K2450_SPEC = SmuSpec(
    # [S:K2450SPEC] 10 nA .. 100 uA; 1 mA .. 1 A extended
    current_ranges=_extend([(10e-9, 50e-12), (100e-9, 100e-12), (1e-6, 300e-12), (10e-6, 700e-12), (100e-6, 6e-9)], 1.0),
    voltage_ranges_V=(0.02, 0.2, 2.0, 20.0, 200.0),
    normal_off_compliance_fraction=0.10,  # 2450 manual: 10 % of the current range
    buffer_size=100_000,
)


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class SmuReading:
    """One reading as the instrument stores it."""

    t_s: float  # instrument timestamp (clock time at the end of integration)
    voltage_V: float  # measured terminal voltage
    current_A: float  # mean current over the integration window; SCPI_NAN on overflow
    source_V: float  # programmed source level
    compliance_tripped: bool
    overflow: bool
    output_on: bool
    source_function: str = "VOLT"  # what was sourced: "VOLT" or "CURR"
    source_I: float = 0.0  # programmed source current when sourcing current


@dataclass
class SmuModel:
    """The state of one SourceMeter channel sourcing voltage into a load."""

    spec: SmuSpec
    load: SmuLoad
    clock: Clock
    seed: int = 0
    line_frequency_Hz: float = 60.0
    autozero_multiplier: float = 1.0
    beam_current_A: float = 0.0

    # programmed state
    source_function: str = "VOLT"  # "VOLT" (compliance_A applies) or "CURR" (voltage_limit_V applies)
    source_I: float = 0.0
    voltage_limit_V: float = 21.0  # 2400 :SENS:VOLT:PROT / 2450 :SOUR:CURR:VLIM *RST default
    source_V: float = 0.0
    source_range_V: float = 20.0
    compliance_A: float = 105e-6
    current_range_A: float = 105e-6
    current_autorange: bool = True
    nplc: float = 1.0
    output_on: bool = False
    off_mode: str = "NORM"
    source_delay_s: float = 0.0
    source_list_V: list[float] = field(default_factory=list)
    buffer: list[SmuReading] = field(default_factory=list)

    _forced_trips: int = 0
    _last_t: float = 0.0
    _tripped: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        # fixed offset per range, drawn once within the accuracy offset [est]
        self._range_offset_A = {r: float(self._rng.uniform(-off, off)) for r, off in self.spec.current_ranges}
        self._last_t = self.clock.now()

    # -- state changes --------------------------------------------------------------------------
    def reset(self) -> None:
        """*RST defaults: output off, 0 V, auto range, 1 PLC, empty list and buffer."""
        with self._lock:
            self.sync()
            self.output_on = False
            self.source_function = "VOLT"
            self.source_V = 0.0
            self.source_I = 0.0
            self.voltage_limit_V = 21.0
            self.nplc = 1.0
            self.current_autorange = True
            self.source_delay_s = 0.0
            self.source_list_V = []
            self.buffer = []
            self._tripped = False

    def sync(self) -> LoadStep | None:
        """Advance the load to the clock's now with the output as it is."""
        now = self.clock.now()
        dt = now - self._last_t
        self._last_t = now
        if dt <= 0:
            return None
        step = self._advance(dt)
        # latched until the next reading: `tripped` is 'at the last reading or since'
        self._tripped = (self._tripped or bool(step.compliance_tripped)) if self.output_on else False
        return step

    def set_source(self, voltage_V: float) -> None:
        with self._lock:
            self.sync()
            self.source_V = voltage_V

    def set_source_current(self, current_A: float) -> None:
        with self._lock:
            self.sync()
            self.source_I = current_A

    def set_source_function(self, function: str) -> None:
        """"VOLT" or "CURR"; SourceModeUnavailable when the load cannot take a current source."""
        with self._lock:
            if function == "CURR" and not hasattr(self.load, "advance_current"):
                raise SourceModeUnavailable(f"{type(self.load).__name__} cannot be driven by a current source")
            self.sync()
            self.source_function = function

    def set_output(self, on: bool) -> None:
        with self._lock:
            self.sync()
            self.output_on = on
            if not on:
                self._tripped = False

    def force_compliance(self, count: int = 1) -> None:
        """Fault injection: the next `count` readings report a compliance trip."""
        with self._lock:
            self._forced_trips += count

    @property
    def tripped(self) -> bool:
        """Whether the source was clamped at the last reading (or since)."""
        with self._lock:
            self.sync()
            return self._tripped

    # -- measuring ------------------------------------------------------------------------------
    def integration_s(self) -> float:
        """NPLC / f_line x autozero multiplier (physics.md §4.5)."""
        return self.nplc / self.line_frequency_Hz * self.autozero_multiplier

    def measure(self, host_point: bool = True) -> SmuReading:
        """One source-measure point: settle, integrate, return the mean current.

        `host_point`: a PC-triggered point, which on a virtual clock also costs the 12.3 ms
        host/firmware overhead of physics.md §4.5; in-instrument sweeps pass False.
        """
        with self._lock:
            self.sync()
            if host_point and self.clock.is_virtual:
                self.clock.sleep(self.spec.point_overhead_s)
                self.sync()
            t_int = self.integration_s()
            self.clock.sleep(self.spec.settle_s + t_int)
            now = self.clock.now()
            dt = now - self._last_t
            self._last_t = now
            applied = self._applied_V()
            step = self._advance(max(dt, 1e-12))
            if step.charge_C is None:
                mean_i = 0.0
            else:
                mean_i = step.charge_C / max(dt, 1e-12)
            tripped = bool(step.compliance_tripped) and self.output_on
            if self._forced_trips > 0:
                self._forced_trips -= 1
                tripped = True
                mean_i = math.copysign(self.compliance_A, mean_i or 1.0)
            self._tripped = tripped
            rng_A = self._active_range(mean_i)
            offset = dict(self.spec.current_ranges)[rng_A]
            sigma = offset / 3 * math.sqrt(max(1.0, 1.0 / self.nplc))
            measured = mean_i + self._range_offset_A[rng_A] + float(self._rng.normal(0.0, sigma))
            overflow = not self.current_autorange and abs(mean_i) > 1.05 * self.current_range_A
            voltage = step.terminal_V if self.output_on else (applied if applied is not None else step.terminal_V)
            reading = SmuReading(
                t_s=now,
                voltage_V=float(voltage),
                current_A=SCPI_NAN if overflow else measured,
                source_V=self.source_V,
                compliance_tripped=tripped,
                overflow=overflow,
                output_on=self.output_on,
                source_function=self.source_function if self.output_on else "VOLT",
                source_I=self.source_I,
            )
            return reading

    def run_list(self, points_V: Sequence[float], store: bool = True, function: str = "VOLT") -> list[SmuReading]:
        """Instrument-timed list sweep: per point source, wait the source delay, measure.
        `function` "CURR": the points are source currents in A (a current sweep)."""
        out = []
        with self._lock:
            for v in points_V:
                if function == "CURR":
                    self.set_source_current(v)
                else:
                    self.set_source(v)
                if self.source_delay_s > 0:
                    self.clock.sleep(self.source_delay_s)
                out.append(self.measure(host_point=False))
            if store:
                room = self.spec.buffer_size - len(self.buffer)
                self.buffer.extend(out[: max(room, 0)])
        return out

    # -- internals ------------------------------------------------------------------------------
    def _advance(self, dt_s: float) -> LoadStep:
        """Advance the load by dt_s under the present source (current source when sourcing
        current with the output on; otherwise the voltage source or the output-off state)."""
        if self.output_on and self.source_function == "CURR":
            limit = math.copysign(self.voltage_limit_V, self.source_I)  # the side the current drives towards
            return self.load.advance_current(self.source_I, dt_s, limit, self.beam_current_A)  # type: ignore[attr-defined]
        return self.load.advance(dt_s, self._applied_V(), self._effective_compliance(), self.beam_current_A)

    def _applied_V(self) -> float | None:
        if self.output_on:
            return self.source_V
        if self.off_mode in ("NORM", "ZERO"):
            return 0.0
        return None  # HIMP: relay open; GUAR: 0 A current source

    def _effective_compliance(self) -> float:
        if not self.output_on and self.off_mode == "NORM":
            return self.spec.normal_off_compliance_fraction * self.current_range_A
        return self.compliance_A

    def _active_range(self, current_A: float) -> float:
        ranges = [r for r, _ in self.spec.current_ranges]
        if not self.current_autorange:
            return min(ranges, key=lambda r: abs(r - self.current_range_A))
        for r in ranges:
            if abs(current_A) <= 1.05 * r:
                return r
        return ranges[-1]

    def range_for(self, value_A: float) -> float:
        """The smallest range that holds `value_A` (how the instruments round a range request)."""
        for r, _ in self.spec.current_ranges:
            if abs(value_A) <= r * 1.0000001:
                return r
        return self.spec.current_ranges[-1][0]
