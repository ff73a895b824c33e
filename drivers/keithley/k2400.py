"""Keithley 2400-series SourceMeter as a potentiostat, over GPIB / RS-232 / any transport.

SCPI from the 2400 User's Manual ch. 18 as summarised in physics.md §4.2: compliance is
`:SENS:CURR:PROT`; readings are `:FORM:ELEM VOLT,CURR,TIME,STAT` (the five-element form with RES
is parsed too); 9.91e37 marks an overflow (-> NaN, compliance flagged); the compliance bit of the
status word is bit 3; the error queue is `:SYST:ERR?`; instrument-timed staircases are list
sweeps (`:SOUR:LIST:VOLT`, <= 100 values per command, `:APP` up to 2500 points) into the trace
buffer, whose timestamps count from the first stored reading (:TRAC:TST:FORM ABS, the default),
mapped to the rig clock at :INIT plus the source delay. With `source_mode` "current" the 2400
sources current (`:SOUR:FUNC CURR`, `:SOUR:CURR`) with the voltage compliance `:SENS:VOLT:PROT`
(status word bit 3 then flags the voltage limit).

`ScpiSourceMeter` holds what the 2400 and 2450 drivers share: connection and identity check,
settings declared once as `Setting` rows (PyMeasure-style, style.md), error-queue draining before
reset and configuration (stale entries from other clients are logged, never fatal) and after them
(new entries fail the call), reading parsing, safe_state.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from insitem.drivers.clock import Clock, RealClock
from insitem.drivers.errors import (
    CommunicationError,
    DeviceError,
    DeviceTimeoutError,
    InstrumentError,
    SafetyLimitError,
    WrongInstrumentError,
)
from insitem.drivers.interfaces import InstrumentIdentity, Potentiostat, PotentiostatConfig, Reading
from insitem.drivers.scpi import OVERFLOW_THRESHOLD, format_number, parse_bool, parse_error, parse_floats
from insitem.drivers.transport import Transport, open_transport

log = logging.getLogger(__name__)

MAX_ERRORS_DRAINED = 50  # a queue is 10 deep on a 2400; more means the reply is not an error queue


@dataclass(frozen=True)
class Setting:
    """One instrument setting, declared once: its command, its query, what it means.

    Used as a class attribute; reading the attribute queries the instrument, assigning writes.
    """

    command: str  # with one "{}" for the encoded value
    query: str
    doc: str
    encode: Callable[[Any], str] = format_number
    decode: Callable[[str], Any] = float

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._decode(self.query, self.decode)

    def __set__(self, obj: Any, value: Any) -> None:
        obj._write(self.command.format(self.encode(value)))

    def wire(self, value: Any) -> str:
        """The command line that sets `value`."""
        return self.command.format(self.encode(value))


def on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def _text(reply: str) -> str:
    return reply.strip().strip('"')


class ScpiSourceMeter(Potentiostat):
    """Shared machinery of the Keithley SCPI SourceMeter drivers (not used directly)."""

    #: models accepted in the *IDN? model field (e.g. "MODEL 2400")
    accepted_models: ClassVar[tuple[str, ...]] = ()
    expected: ClassVar[str] = ""
    error_query: ClassVar[str] = ":SYST:ERR?"
    max_sweep_points: ClassVar[int] = 2500
    list_chunk: ClassVar[int] = 100  # values per :SOUR:LIST:VOLT command (physics.md §4.2/§4.3)

    # settings common to both models (table rows; model classes add their own)
    source_V = Setting(":SOUR:VOLT {}", ":SOUR:VOLT?", "source level in V (float, within the source range)")
    source_A = Setting(":SOUR:CURR {}", ":SOUR:CURR?", "source current in A when sourcing current (-1.05 to 1.05)")
    nplc = Setting(":SENS:CURR:NPLC {}", ":SENS:CURR:NPLC?", "integration time in power-line cycles (0.01-10)")
    current_autorange = Setting(":SENS:CURR:RANG:AUTO {}", ":SENS:CURR:RANG:AUTO?", "measure autorange (bool)", on_off, parse_bool)
    current_range_A = Setting(":SENS:CURR:RANG {}", ":SENS:CURR:RANG?", "measure range in A (fixed range)")
    voltage_range_V = Setting(":SOUR:VOLT:RANG {}", ":SOUR:VOLT:RANG?", "source range in V")
    output_enabled = Setting(":OUTP {}", ":OUTP?", "source output on (bool)", on_off, parse_bool)
    off_mode = Setting(":OUTP:SMOD {}", ":OUTP:SMOD?", "output-off state HIMP|NORM|ZERO|GUAR", str, _text)

    def __init__(
        self,
        resource: str | Transport,
        *,
        timeout_s: float = 2.0,
        clock: Clock | None = None,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(resource, Transport):
            self.transport = resource
        else:
            self.transport = open_transport(resource, timeout_s=timeout_s, **(transport_options or {}))
        self.resource = self.transport.resource
        self.clock: Clock = clock or RealClock()
        self._t0_s = self.clock.now()  # rig time of the instrument's time zero
        self._source_V = math.nan
        self._source_A = math.nan
        try:
            self.identity = self.identify()
            self._check_language()
        except DeviceError:
            self.transport.close()
            raise

    # -- low level ------------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        self.transport.write(line)

    def _query(self, line: str, timeout_s: float | None = None) -> str:
        return self.transport.query(line, timeout_s=timeout_s)

    def _decode(self, query: str, decode: Callable[[str], Any]) -> Any:
        reply = self._query(query)
        try:
            return decode(reply)
        except ValueError:
            raise CommunicationError(f"garbled reply {reply!r} to {query}", self.resource) from None

    # -- identity ---------------------------------------------------------------------------------
    def identify(self) -> InstrumentIdentity:
        try:
            reply = self._query("*IDN?")
        except DeviceTimeoutError:
            raise DeviceTimeoutError(f"no answer to *IDN?; expected {self.expected}", self.resource) from None
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) < 2:
            raise WrongInstrumentError(f"*IDN? answered {reply!r}; expected {self.expected}", self.resource)
        vendor, model = parts[0], parts[1]
        if "KEITHLEY" not in vendor.upper() or not any(m in model.upper() for m in self.accepted_models):
            raise WrongInstrumentError(f"found {vendor} {model}; expected {self.expected}", self.resource)
        return InstrumentIdentity(
            vendor=vendor,
            model=model,
            serial=parts[2] if len(parts) > 2 else "",
            firmware=parts[3] if len(parts) > 3 else "",
            resource=self.resource,
        )

    def _check_language(self) -> None:
        """2450 only: refuse an instrument that is not in native SCPI mode."""

    # -- errors -------------------------------------------------------------------------------------
    def errors(self) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for _ in range(MAX_ERRORS_DRAINED):
            reply = self._query(self.error_query)
            try:
                code, message = parse_error(reply)
            except ValueError:
                raise CommunicationError(f"garbled reply {reply!r} to {self.error_query}", self.resource) from None
            if code == 0:
                return found
            found.append((code, message))
        raise CommunicationError(f"error queue did not empty after {MAX_ERRORS_DRAINED} reads", self.resource)

    def clear_stale_errors(self, before: str) -> list[tuple[int, str]]:
        """Drain what earlier sessions or other clients left in the error queue, log it in one
        line, and return it. Stale entries are not this run's errors and never fail it."""
        stale = self.errors()
        if stale:
            listed = "; ".join(f"{c} {m}" for c, m in stale)
            log.warning("%s: %d stale error-queue entries cleared before %s: %s", self.resource, len(stale), before, listed)
        return stale

    def check_errors(self, during: str) -> None:
        """Drain the error queue; raise InstrumentError listing every entry if there was any."""
        errs = self.errors()
        if errs:
            listed = "; ".join(f"{c} {m}" for c, m in errs)
            raise InstrumentError(f"instrument errors during {during}: {listed}", self.resource, code=errs[0][0])

    # -- Potentiostat ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self.clear_stale_errors("reset")
        for line in self._reset_lines():
            self._write(line)
        self._t0_s = self.clock.now()
        self._output_on = False
        self._source_V = 0.0
        self._source_A = math.nan
        self.check_errors("reset")

    def _reset_lines(self) -> Sequence[str]:
        """`*RST` leaves the output-off state NORMAL, which clamps a connected cell at 0 V while the
        output is off; the off state goes back to HIMP (relay open) in the very next command."""
        return ("*RST", ":OUTP:SMOD HIMP", "*CLS")

    def _configure(self, config: PotentiostatConfig) -> None:
        self.clear_stale_errors("configure")
        for line in self.configure_lines(config):
            self._write(line)
        self.check_errors("configure")

    def configure_lines(self, config: PotentiostatConfig) -> list[str]:
        """The commands `configure` sends, in order (before the error-queue check)."""
        raise NotImplementedError

    def _measure_range_lines(self, config: PotentiostatConfig) -> list[str]:
        cls = type(self)
        if config.current_range_A is None:
            return [cls.current_autorange.wire(True)]
        return [cls.current_range_A.wire(config.current_range_A)]

    def _set_voltage(self, voltage_V: float) -> None:
        self._write(type(self).source_V.wire(voltage_V))
        self._source_V = voltage_V

    def _set_current(self, current_A: float) -> None:
        self._write(type(self).source_A.wire(current_A))
        self._source_A = current_A

    def _current_mode(self) -> bool:
        return self._config is not None and self._config.source_mode == "current"

    def _set_output(self, on: bool) -> None:
        self._write(type(self).output_enabled.wire(on))

    def safe_state(self) -> None:
        """Output off in the configured output-off state (HIMP, the relay open, if not configured:
        a NORMAL off state would clamp the cell at 0 V), verified with `:OUTP?`; one
        reconnect-and-retry on a flaky transport."""
        off_mode = self._config.output_off_mode if self._config is not None else "HIMP"
        last: Exception | None = None
        for attempt in range(2):
            try:
                if attempt:
                    self.transport.reconnect()
                self._write(type(self).off_mode.wire(off_mode))
                self._set_output(False)
                self._output_on = False
                if not self.output_enabled:
                    return
                last = DeviceError("output still on after :OUTP OFF", self.resource)
            except (CommunicationError, DeviceError) as exc:
                last = exc
        assert last is not None
        raise last

    def close(self) -> None:
        self.transport.close()

    # -- sweeps ---------------------------------------------------------------------------------------
    @property
    def supports_sweep(self) -> bool:
        return True

    def _check_sweep(self, points_V: Sequence[float], dwell_s: float) -> float:
        """Validate a staircase; return the source delay per point (dwell minus integration)."""
        if self._config is None:
            raise SafetyLimitError("run_sweep before configure: compliance is not set")
        if self._config.source_mode != "voltage":
            raise SafetyLimitError("run_sweep is a voltage staircase: configure with source_mode='voltage'")
        if not self._output_on:
            raise SafetyLimitError("run_sweep with the output off: call set_output(True) first")
        if len(points_V) == 0:
            raise ValueError("run_sweep: no points")
        lo, hi = self._config.voltage_limits_V
        bad = [v for v in points_V if not (lo <= v <= hi) or not math.isfinite(v)]
        if bad:
            raise SafetyLimitError(f"run_sweep: {bad[0]} V outside the safety window [{lo}, {hi}] V")
        t_int = self._config.nplc / self._config.line_frequency_Hz
        if dwell_s < t_int:
            raise ValueError(f"dwell_s {dwell_s} s is shorter than the integration time {t_int:.4g} s")
        return dwell_s - t_int

    def run_sweep(self, points_V: Sequence[float], dwell_s: float) -> list[Reading]:
        delay_s = self._check_sweep(points_V, dwell_s)
        out: list[Reading] = []
        for i in range(0, len(points_V), self.max_sweep_points):
            out.extend(self._run_sweep_chunk(list(points_V[i : i + self.max_sweep_points]), delay_s, dwell_s))
        self._source_V = points_V[-1]
        return out

    def _run_sweep_chunk(self, points_V: list[float], delay_s: float, dwell_s: float) -> list[Reading]:
        raise NotImplementedError

    def _list_lines(self, header: str, points_V: Sequence[float]) -> list[str]:
        lines = []
        for i in range(0, len(points_V), self.list_chunk):
            chunk = ",".join(format_number(v) for v in points_V[i : i + self.list_chunk])
            lines.append(f"{header}{':APP' if i else ''} {chunk}")
        return lines

    def _sweep_timeout_s(self, n: int, dwell_s: float) -> float:
        return self.transport.timeout_s + 2.0 * n * (dwell_s + 0.02)

    def _parse_values(self, reply: str, what: str, per_point: int | tuple[int, ...]) -> list[float]:
        try:
            values = parse_floats(reply)
        except ValueError:
            raise CommunicationError(f"garbled reply {reply[:60]!r} to {what}", self.resource) from None
        sizes = per_point if isinstance(per_point, tuple) else (per_point,)
        if not any(len(values) % s == 0 and values for s in sizes):
            raise CommunicationError(f"truncated reply to {what}: {len(values)} values in {reply[:60]!r}", self.resource)
        return values


def overflow_to_nan(value: float) -> tuple[float, bool]:
    """(value or NaN, overflowed) for the 9.91e37 overflow marker (physics.md §4.2)."""
    if abs(value) >= OVERFLOW_THRESHOLD:
        return math.nan, True
    return value, False


class Keithley2400(ScpiSourceMeter):
    """Keithley 2400-series SourceMeter (2400/2401/2410/2420/2425/2430/2440)."""

    accepted_models = ("2400", "2401", "2410", "2420", "2425", "2430", "2440")
    expected = "a Keithley 2400-series SourceMeter (*IDN? model 2400/2401/2410/2420/2425/2430/2440)"
    error_query = ":SYST:ERR?"
    #: reading elements requested with :FORM:ELEM (TIME is the instrument clock, STAT the status word)
    elements: ClassVar[tuple[str, ...]] = ("VOLT", "CURR", "TIME", "STAT")
    STATUS_COMPLIANCE = 1 << 3  # 2400 manual, :FORMat:ELEMents status word bit 3

    compliance_A = Setting(":SENS:CURR:PROT {}", ":SENS:CURR:PROT?", "current compliance in A (1e-9 to 1.05)")
    compliance_tripped = Setting("{}", ":SENS:CURR:PROT:TRIP?", "source in compliance now (bool, query only)", str, parse_bool)
    source_mode = Setting(":SOUR:VOLT:MODE {}", ":SOUR:VOLT:MODE?", "FIX|LIST|SWE", str, _text)
    trigger_count = Setting(":TRIG:COUN {}", ":TRIG:COUN?", "readings per :READ?/:INIT (1-2500)", format_number, lambda r: int(float(r)))
    source_delay_s = Setting(":SOUR:DEL {}", ":SOUR:DEL?", "delay between source change and measurement, s")

    def _reset_lines(self) -> Sequence[str]:
        return ("*RST", ":OUTP:SMOD HIMP", "*CLS", ":STAT:PRES", ":SYST:TIME:RES")

    compliance_V = Setting(":SENS:VOLT:PROT {}", ":SENS:VOLT:PROT?", "voltage compliance in V while sourcing current (0.2 to 210)")

    def configure_lines(self, config: PotentiostatConfig) -> list[str]:
        cls = type(self)
        if config.source_mode == "current":
            assert config.voltage_limit_V is not None  # PotentiostatConfig requires it in current mode
            source = [
                ":SOUR:FUNC CURR",
                ":SOUR:CURR:MODE FIX",
                ":SOUR:CURR:RANG:AUTO ON",
                ':SENS:FUNC "VOLT","CURR"',
                cls.compliance_V.wire(config.voltage_limit_V),
            ]
        else:
            source = [
                ":SOUR:FUNC VOLT",
                cls.source_mode.wire("FIX"),
                cls.voltage_range_V.wire(config.voltage_range_V),
                ':SENS:FUNC "CURR"',
                cls.compliance_A.wire(config.compliance_A),
            ]
        return [
            *source,
            *self._measure_range_lines(config),
            cls.nplc.wire(config.nplc),
            ":FORM:ELEM " + ",".join(self.elements),
            cls.off_mode.wire(config.output_off_mode),
        ]

    def measure(self) -> Reading:
        reply = self._query(":READ?")
        values = self._parse_values(reply, ":READ?", (4, 5))
        return self._readings(values)[-1]

    def _readings(self, values: list[float], t_base_s: float | None = None) -> list[Reading]:
        """Readings from VOLT,CURR[,RES],TIME,STAT groups; TIME counts from `t_base_s` (rig clock),
        default the instrument's timestamp zero (:SYST:TIME:RES at reset)."""
        base = self._t0_s if t_base_s is None else t_base_s
        n = 5 if len(values) % 4 else 4  # four-element form unless only five divides
        if len(values) % 4 == 0 and len(values) % 5 == 0:
            n = len(self.elements)
        out = []
        for k in range(0, len(values), n):
            row = values[k : k + n]
            if n == 5:
                volt, curr, _res, t, stat = row
            else:
                volt, curr, t, stat = row
            current, overflow = overflow_to_nan(curr)
            voltage, _ = overflow_to_nan(volt)
            tripped = overflow or bool(int(stat) & self.STATUS_COMPLIANCE)
            if self._current_mode():
                out.append(Reading(base + t, voltage, current, tripped, math.nan, self._source_A))
            else:
                out.append(Reading(base + t, voltage, current, tripped, self._source_V))
        return out

    def _run_sweep_chunk(self, points_V: list[float], delay_s: float, dwell_s: float) -> list[Reading]:
        cls = type(self)
        n = len(points_V)
        setup = [
            cls.source_mode.wire("LIST"),
            *self._list_lines(":SOUR:LIST:VOLT", points_V),
            cls.source_delay_s.wire(delay_s),
            cls.trigger_count.wire(n),
            ":TRAC:CLE",
            f":TRAC:POIN {n}",
            ":TRAC:FEED SENS",
            ":TRAC:FEED:CONT NEXT",
        ]
        for line in setup:
            self._write(line)
        self.check_errors("sweep setup")
        t_init = self.clock.now()
        self._write(":INIT")
        self._query("*OPC?", timeout_s=self._sweep_timeout_s(n, dwell_s))
        reply = self._query(":TRAC:DATA?")
        for line in (cls.source_mode.wire("FIX"), cls.source_V.wire(points_V[-1]), cls.trigger_count.wire(1)):
            self._write(line)
        self.check_errors("sweep")
        values = self._parse_values(reply, ":TRAC:DATA?", len(self.elements))
        # buffer timestamps (:TRAC:TST:FORM ABS, the default) count from the first stored reading,
        # taken one source delay after :INIT
        readings = self._readings(values, t_init + delay_s)
        if len(readings) != n:
            raise CommunicationError(f"sweep returned {len(readings)} of {n} readings", self.resource)
        return [Reading(r.t_s, r.voltage_V, r.current_A, r.compliance_tripped, v) for r, v in zip(readings, points_V)]
