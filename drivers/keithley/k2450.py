"""Keithley 2450 SourceMeter (native SCPI mode) as a potentiostat, over LAN / USB-TMC / GPIB.

SCPI from the 2450 Reference Manual ch. 6 as summarised in physics.md §4.3: the current limit is
`:SOUR:VOLT:ILIM`, tripping is read with `:SOUR:VOLT:ILIM:TRIP?`, the error queue with
`:SYST:ERR:NEXT?`, readings go to named buffers (`"defbuffer1"`), and a 2450 left in 2400
emulation (`*LANG?` answers `SCPI2400`) is refused with a clear message.

A reading is one program message, `:READ? "defbuffer1",SOUR,READ,REL;:SOUR:VOLT:ILIM:TRIP?`,
answered as one response message `source,current,reltime;tripped` (IEEE 488.2 joins the answers
of one message with `;`), so a measurement is one round trip. The voltage reported is the SOUR
element (the source readback). REL counts from the buffer's entry number 1 (2450 Reference
Manual, buffer elements / `bufferVar.relativetimestamps`: the first reading after a clear reads
0), so its rig-clock origin is set by the first reading after each clear: the midpoint of that
query's round trip, or for a sweep the rig time of :INIT plus the source delay.

Instrument-timed staircases: uniform staircases use `:SOUR:SWE:VOLT:LIN`, any other list
`:SOUR:LIST:VOLT` (100 values per command, `:APP` for more) with `:SOUR:SWE:VOLT:LIST`; then
`:INIT`, `*OPC?`, `:TRAC:DATA? 1, n, "defbuffer1", SOUR, READ, REL, SOURSTAT`. The compliance
flag of a sweep point is the source-limited bit (32) of SOURSTAT.

Current sourcing (`source_mode` "current"): `:SOUR:FUNC CURR` with the voltage limit
`:SOUR:CURR:VLIM` and `:SENS:FUNC "VOLT"`; a reading is then `:READ? "defbuffer1",SOUR,READ,REL;
:SOUR:CURR:VLIM:TRIP?`, SOUR being the source current (readback) and READ the measured voltage.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import numpy as np

from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, WrongInstrumentError
from insitem.drivers.interfaces import PotentiostatConfig, Reading
from insitem.drivers.keithley.k2400 import ScpiSourceMeter, Setting, _text, overflow_to_nan
from insitem.drivers.scpi import format_number, parse_bool

BUFFER = '"defbuffer1"'
SOURSTAT_LIMIT = 32  # 2450 buffer source status: source function was limited


class Keithley2450(ScpiSourceMeter):
    """Keithley 2450 Interactive SourceMeter in native SCPI mode."""

    accepted_models = ("2450",)
    expected = "a Keithley 2450 SourceMeter in SCPI mode (*IDN? model 2450, *LANG? SCPI)"
    error_query = ":SYST:ERR:NEXT?"
    max_sweep_points = 100_000

    compliance_A = Setting(":SOUR:VOLT:ILIM {}", ":SOUR:VOLT:ILIM?", "current limit in A while sourcing voltage (1e-9 to 1.05)")
    compliance_tripped = Setting("{}", ":SOUR:VOLT:ILIM:TRIP?", "the source was clamped at the limit (bool, query only)", str, parse_bool)
    compliance_V = Setting(":SOUR:CURR:VLIM {}", ":SOUR:CURR:VLIM?", "voltage limit in V while sourcing current (0.02 to 210)")
    nplc_voltage = Setting(":SENS:VOLT:NPLC {}", ":SENS:VOLT:NPLC?", "voltage-measure integration time in power-line cycles (0.01-10)")
    language = Setting("*LANG {}", "*LANG?", "command set SCPI|SCPI2400|TSP (takes effect after a power cycle)", str, _text)

    READ_QUERY: ClassVar[str] = f":READ? {BUFFER},SOUR,READ,REL;:SOUR:VOLT:ILIM:TRIP?"
    #: current mode: SOUR is the source current, READ the measured voltage
    READ_QUERY_CURRENT: ClassVar[str] = f":READ? {BUFFER},SOUR,READ,REL;:SOUR:CURR:VLIM:TRIP?"

    def _check_language(self) -> None:
        try:
            lang = self.language
        except DeviceTimeoutError:
            raise WrongInstrumentError(f"no answer to *LANG?; expected {self.expected}", self.resource) from None
        if lang.upper() != "SCPI":
            raise WrongInstrumentError(
                f"2450 is in {lang} command-set mode, not SCPI; send *LANG SCPI and power-cycle it "
                "(or set Menu > System > Settings > Command Set = SCPI)",
                self.resource,
            )

    _rel_origin_s: float | None = None  # rig time of REL = 0 in defbuffer1; None until its first reading

    def _reset_lines(self) -> Sequence[str]:
        return ("*RST", ":OUTP:SMOD HIMP", "*CLS", f":TRAC:CLE {BUFFER}")

    def reset(self) -> None:
        super().reset()
        self._rel_origin_s = None

    def configure_lines(self, config: PotentiostatConfig) -> list[str]:
        cls = type(self)
        if config.source_mode == "current":
            assert config.voltage_limit_V is not None  # PotentiostatConfig requires it in current mode
            return [
                ":SOUR:FUNC CURR",
                ":SOUR:CURR:RANG:AUTO ON",
                cls.compliance_V.wire(config.voltage_limit_V),
                ':SENS:FUNC "VOLT"',
                cls.nplc_voltage.wire(config.nplc),
                cls.off_mode.wire(config.output_off_mode),
            ]
        return [
            ":SOUR:FUNC VOLT",
            cls.voltage_range_V.wire(config.voltage_range_V),
            cls.compliance_A.wire(config.compliance_A),
            ':SENS:FUNC "CURR"',
            *self._measure_range_lines(config),
            cls.nplc.wire(config.nplc),
            cls.off_mode.wire(config.output_off_mode),
        ]

    def measure(self) -> Reading:
        query = self.READ_QUERY_CURRENT if self._current_mode() else self.READ_QUERY
        t_sent = self.clock.now()
        reply = self._query(query)
        t_back = self.clock.now()
        data, sep, trip = reply.rpartition(";")
        values = self._parse_values(data if sep else reply, ":READ?", 3)
        if not sep or len(values) != 3:
            raise CommunicationError(f"truncated reply {reply!r} to {query}", self.resource)
        try:
            tripped = parse_bool(trip)
        except ValueError:
            raise CommunicationError(f"garbled reply {reply!r} to {query}", self.resource) from None
        source, value, rel = values
        value, overflow = overflow_to_nan(value)
        if self._rel_origin_s is None:
            self._rel_origin_s = 0.5 * (t_sent + t_back) - rel
        if self._current_mode():  # SOUR = source current (readback), READ = measured voltage
            return Reading(self._rel_origin_s + rel, value, source, tripped or overflow, math.nan, self._source_A)
        return Reading(self._rel_origin_s + rel, source, value, tripped or overflow, source)

    @staticmethod
    def _linear(points_V: Sequence[float]) -> bool:
        if len(points_V) < 2:
            return False
        d = np.diff(np.asarray(points_V, dtype=float))
        return bool(d[0] != 0 and np.allclose(d, d[0], rtol=1e-9, atol=1e-12))

    def sweep_lines(self, points_V: Sequence[float], delay_s: float) -> list[str]:
        """Commands that program the staircase (before the error check and :INIT)."""
        d = format_number(delay_s)
        if self._linear(points_V):
            start, stop, n = format_number(points_V[0]), format_number(points_V[-1]), len(points_V)
            sweep = [f":SOUR:SWE:VOLT:LIN {start}, {stop}, {n}, {d}, 1, BEST, OFF, OFF, {BUFFER}"]
        else:
            sweep = [*self._list_lines(":SOUR:LIST:VOLT", points_V), f":SOUR:SWE:VOLT:LIST 1, {d}, 1, OFF, {BUFFER}"]
        return [*sweep, f":TRAC:CLE {BUFFER}"]

    def _run_sweep_chunk(self, points_V: list[float], delay_s: float, dwell_s: float) -> list[Reading]:
        n = len(points_V)
        for line in self.sweep_lines(points_V, delay_s):
            self._write(line)
        self.check_errors("sweep setup")
        self._rel_origin_s = t0 = self.clock.now() + delay_s  # the first sweep point is entry 1
        self._write(":INIT")
        self._query("*OPC?", timeout_s=self._sweep_timeout_s(n, dwell_s))
        reply = self._query(f":TRAC:DATA? 1, {n}, {BUFFER}, SOUR, READ, REL, SOURSTAT")
        self._write(type(self).source_V.wire(points_V[-1]))
        self.check_errors("sweep")
        values = self._parse_values(reply, ":TRAC:DATA?", 4)
        if len(values) != 4 * n:
            raise CommunicationError(f"sweep returned {len(values) // 4} of {n} readings", self.resource)
        out = []
        for k, v in enumerate(points_V):
            source, current, rel, stat = values[4 * k : 4 * k + 4]
            current, overflow = overflow_to_nan(current)
            out.append(Reading(t0 + rel, source, current, overflow or bool(int(stat) & SOURSTAT_LIMIT), v))
        return out
