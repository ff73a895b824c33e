"""Emulated Keithley 2450 SourceMeter in native SCPI mode (physics.md §4.3, 2450 Reference
Manual ch. 6) in front of an `SmuModel`.

Emulated: `:SOUR:FUNC VOLT`, `:SOUR:VOLT[:LEV]`, `:SOUR:VOLT:RANG`, `:SOUR:VOLT:ILIM[:LEV]` and
`:SOUR:VOLT:ILIM[:LEV]:TRIP?`, `:SOUR:VOLT:DEL`, `:SENS:FUNC "CURR"`, `:SENS:CURR:RANG[:AUTO]`,
`:SENS:CURR:NPLC`, `:OUTP[:STAT]`, `:OUTP[:<function>]:SMOD`, `:READ? ["buffer"[, elements]]`,
named reading buffers (`defbuffer1`, `defbuffer2`, `:TRAC:MAKE`, `:TRAC:CLE`, `:TRAC:ACT?`,
`:TRAC:POIN`, `:TRAC:DATA? start, end, "buffer", elements`), `:SOUR:LIST:VOLT` (<= 100 values per
command, `:APP` to extend), `:SOUR:SWE:VOLT:LIST` and `:SOUR:SWE:VOLT:LIN` sweeps run by `:INIT`,
`:SYST:ERR[:NEXT]?`, `*LANG`. 2400-only headers (`:SENS:CURR:PROT`, `:FORM:ELEM`, `:SOUR:VOLT:MODE`)
queue -113 Undefined header.

Buffer elements: READ, SOUR, REL, SEC, FRAC, STAT, SOURSTAT, UNIT, SOURUNIT. SOURSTAT bits follow
the 2450 buffer source-status table: 32 = source limited (STAT_LIMIT), 128 = output on.

Interpretations and simplifications (named): REL is the time since the first reading stored in
the buffer since it was created or last cleared (2450 Reference Manual, `bufferVar.relativetimestamps`:
"relative to the timestamp of reading buffer entry number 1", so entry 1 reads 0); it keeps
that origin when a full buffer overwrites its oldest readings. SEC/FRAC count from the emulator
clock's zero.
`*LANG SCPI2400` takes effect at the next `power_cycle()` (physics.md §4.3 [est]); in that mode
the emulator answers the 2400 command set (Keithley2400Emulator) while `*IDN?` still names the
2450. A sweep leaves the output on, as the built-in sweep trigger models do not switch it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from insitem.drivers.clock import Clock
from insitem.drivers.scpi import (
    ScpiError,
    ScpiParser,
    arg_bool,
    arg_choice,
    arg_float,
    arg_int,
    format_nr3,
    unquote,
)
from insitem.simulators.emulators import ScpiEmulator
from insitem.simulators.emulators.keithley2400 import OFF_MODES, Keithley2400Emulator, float_setter
from insitem.simulators.emulators.smu import K2450_SPEC, SmuLoad, SmuModel, SmuReading

BUFFER_ELEMENTS = ("READing", "SOURce", "RELative", "SEConds", "FRACtional", "STATus", "SOURSTATus", "UNIT", "SOURUNIT")
SOURSTAT_LIMIT = 32
SOURSTAT_OUTPUT = 128
MAX_LIST_PER_COMMAND = 100
MAX_LIST_POINTS = 100_000  # [est] - the manual gives no total for the source configuration list
DEFAULT_BUFFER_SIZE = 100_000


@dataclass
class ReadingBuffer:
    capacity: int
    t0_s: float | None = None  # time of the first reading stored since creation or clear (REL 0)
    readings: list[SmuReading] = field(default_factory=list)

    def add(self, r: SmuReading) -> None:
        if len(self.readings) >= self.capacity:  # fill-continuous: oldest overwritten
            self.readings.pop(0)
        if self.t0_s is None:
            self.t0_s = r.t_s
        self.readings.append(r)

    def clear(self) -> None:
        self.readings.clear()
        self.t0_s = None


class Keithley2450Emulator(ScpiEmulator):
    """SCPI front end of a 2450 around an `SmuModel`."""

    identity = "KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b"

    def __init__(self, load: SmuLoad, clock: Clock, seed: int = 0, language: str = "SCPI") -> None:
        self.smu = SmuModel(K2450_SPEC, load, clock, seed=seed)
        self.clock = clock
        self.language = language.upper()
        self.pending_language = self.language
        self._defaults()
        super().__init__()
        self._emulation = Keithley2400Emulator(load, clock, smu=self.smu)
        self._emulation.identity = self.identity
        self._emulation.parser.add("*LANG", self._set_lang, lambda a: self.language)

    def _defaults(self) -> None:
        self.buffers = {
            "DEFBUFFER1": ReadingBuffer(DEFAULT_BUFFER_SIZE),
            "DEFBUFFER2": ReadingBuffer(DEFAULT_BUFFER_SIZE),
        }
        self.sweep: tuple[list[float], int, str] | None = None  # (levels, count, buffer)

    def reset(self) -> None:
        self.smu.reset()
        self.smu.compliance_A = 105e-6
        self.smu.off_mode = "NORM"
        self._defaults()

    def power_cycle(self) -> None:
        """Apply a pending `*LANG` and return to power-on defaults."""
        self.language = self.pending_language
        self.parser.errors.clear()
        self.reset()

    def handle(self, line: str) -> str | None:
        if self.language == "SCPI2400":
            return self._emulation.handle(line)
        return self.parser.execute(line)

    def push_error(self, code: int, message: str | None = None) -> None:
        target = self._emulation.parser if self.language == "SCPI2400" else self.parser
        target.push_error(code, message)

    # -- helpers ---------------------------------------------------------------------------------
    def _buffer(self, token: str | None) -> tuple[str, ReadingBuffer]:
        name = unquote(token).upper() if token else "DEFBUFFER1"
        if name not in self.buffers:
            raise ScpiError(-224, f"no reading buffer {unquote(token or '')!r}")
        return name, self.buffers[name]

    def _format(self, buf: ReadingBuffer, readings: list[SmuReading], elements: list[str]) -> str:
        out: list[str] = []
        for r in readings:
            for el in elements:
                if el == "READ":
                    out.append(format_nr3(r.current_A, plus=False))
                elif el == "SOUR":
                    out.append(format_nr3(r.source_V, plus=False))
                elif el == "REL":
                    out.append(format_nr3(r.t_s - (r.t_s if buf.t0_s is None else buf.t0_s), plus=False))
                elif el == "SEC":
                    out.append(str(int(r.t_s)))
                elif el == "FRAC":
                    out.append(format_nr3(r.t_s - int(r.t_s), plus=False))
                elif el == "STAT":
                    out.append("0")
                elif el == "SOURSTAT":
                    out.append(str((SOURSTAT_LIMIT if r.compliance_tripped else 0) | (SOURSTAT_OUTPUT if r.output_on else 0)))
                elif el == "UNIT":
                    out.append("Amp DC")
                elif el == "SOURUNIT":
                    out.append("Volt DC")
        return ",".join(out)

    def _elements(self, tokens: list[str]) -> list[str]:
        return [arg_choice(t, BUFFER_ELEMENTS) for t in tokens] or ["READ"]

    # -- commands -----------------------------------------------------------------------------------
    def _set_lang(self, args: list[str]) -> None:
        self.pending_language = arg_choice(args[0], ("SCPI", "SCPI2400", "TSP"))

    def _read(self, args: list[str]) -> str:
        _, buf = self._buffer(args[0] if args else None)
        r = self.smu.measure(host_point=True)
        buf.add(r)
        return self._format(buf, [r], self._elements(args[1:]))

    def _trace_data(self, args: list[str]) -> str:
        if len(args) < 2:
            raise ScpiError(-109, "TRAC:DATA? start, end")
        _, buf = self._buffer(args[2] if len(args) > 2 else None)
        n = len(buf.readings)
        start = arg_int(args[0], 1, max(n, 1))
        end = arg_int(args[1], start, max(n, 1))
        if n == 0:
            raise ScpiError(-222, "buffer is empty")
        return self._format(buf, buf.readings[start - 1 : end], self._elements(args[3:]))

    def _trace_make(self, args: list[str]) -> None:
        name = unquote(args[0]).upper()
        if name in self.buffers:
            raise ScpiError(-224, f"buffer {unquote(args[0])!r} exists")
        self.buffers[name] = ReadingBuffer(arg_int(args[1], 10, 5_000_000))

    def _trace_clear(self, args: list[str]) -> None:
        _, buf = self._buffer(args[0] if args else None)
        buf.clear()

    def _trace_points(self, args: list[str]) -> None:
        _, buf = self._buffer(args[1] if len(args) > 1 else None)
        buf.capacity = arg_int(args[0], 10, 5_000_000)
        buf.clear()

    def _set_list(self, args: list[str], append: bool) -> None:
        if len(args) > MAX_LIST_PER_COMMAND:
            raise ScpiError(-223, f"at most {MAX_LIST_PER_COMMAND} values per command")
        values = [arg_float(a, -210.0, 210.0) for a in args]
        new = (self.smu.source_list_V if append else []) + values
        if len(new) > MAX_LIST_POINTS:
            raise ScpiError(-223, "source list too long")
        self.smu.source_list_V = new

    def _sweep_list(self, args: list[str]) -> None:
        # startIndex, delay[, count[, failAbort[, bufferName]]]
        if not self.smu.source_list_V:
            raise ScpiError(-221, "source list is empty")
        start = arg_int(args[0], 1, len(self.smu.source_list_V))
        delay = arg_float(args[1], 0.0, 10_000.0) if len(args) > 1 else 0.0
        count = arg_int(args[2], 1, 268_435_455) if len(args) > 2 else 1
        if len(args) > 3:
            arg_bool(args[3])
        name, _ = self._buffer(args[4] if len(args) > 4 else None)
        self.smu.source_delay_s = delay
        self.sweep = (self.smu.source_list_V[start - 1 :], count, name)

    def _sweep_linear(self, args: list[str]) -> None:
        # start, stop, points[, delay[, count[, rangeType[, failAbort[, dual[, bufferName]]]]]]
        v0 = arg_float(args[0], -210.0, 210.0)
        v1 = arg_float(args[1], -210.0, 210.0)
        n = arg_int(args[2], 2, 1_000_000)
        delay = arg_float(args[3], 0.0, 10_000.0) if len(args) > 3 else 0.0
        count = arg_int(args[4], 1, 268_435_455) if len(args) > 4 else 1
        if len(args) > 5:
            arg_choice(args[5], ("AUTO", "BEST", "FIXed"))
        if len(args) > 6:
            arg_bool(args[6])
        dual = arg_bool(args[7]) if len(args) > 7 else False
        name, _ = self._buffer(args[8] if len(args) > 8 else None)
        levels = [v0 + (v1 - v0) * i / (n - 1) for i in range(n)]
        if dual:
            levels = levels + levels[-2::-1]
        self.smu.source_delay_s = delay
        self.sweep = (levels, count, name)

    def _init(self, args: list[str]) -> None:
        if self.sweep is None:
            _, buf = self._buffer(None)
            buf.add(self.smu.measure(host_point=False))
            return
        levels, count, name = self.sweep
        buf = self.buffers[name]
        self.smu.set_output(True)
        for _ in range(count):
            for r in self.smu.run_list(levels, store=False):
                buf.add(r)

    # -- command tree -------------------------------------------------------------------------------
    def _build(self, p: ScpiParser) -> None:
        smu = self.smu
        num = format_nr3

        def setter(attr: str, lo: float, hi: float) -> Callable[[list[str]], None]:
            return float_setter(smu, attr, lo, hi)

        def set_range(a: list[str]) -> None:
            smu.current_autorange = False
            smu.current_range_A = smu.range_for(arg_float(a[0], -1.05, 1.05))

        def set_off_mode(a: list[str]) -> None:
            smu.off_mode = arg_choice(a[0], OFF_MODES)

        p.add_many(
            [
                ("*LANG", self._set_lang, lambda a: self.language),
                (":SYSTem:ERRor[:NEXT]", None, lambda a: self.error_reply()),
                (":SYSTem:ERRor:COUNt", None, lambda a: str(len(self.parser.errors))),
                (":SYSTem:CLEar", lambda a: self.parser.errors.clear(), None, (0, 0)),
                (":SOURce[1]:FUNCtion[:MODE]", lambda a: self._set_func(a), lambda a: "VOLT"),
                (
                    ":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
                    lambda a: smu.set_source(arg_float(a[0], -210.0, 210.0, 0.0)),
                    lambda a: num(smu.source_V, plus=False),
                ),
                (":SOURce[1]:VOLTage:RANGe", setter("source_range_V", -210.0, 210.0), lambda a: num(smu.source_range_V, plus=False)),
                (":SOURce[1]:VOLTage:RANGe:AUTO", lambda a: arg_bool(a[0]), lambda a: "0"),
                (
                    ":SOURce[1]:VOLTage:ILIMit[:LEVel]",
                    lambda a: setattr(smu, "compliance_A", abs(arg_float(a[0], -1.05, 1.05))),
                    lambda a: num(smu.compliance_A, plus=False),
                ),
                (":SOURce[1]:VOLTage:ILIMit[:LEVel]:TRIPped", None, lambda a: "1" if smu.tripped else "0"),
                (":SOURce[1]:VOLTage:DELay", setter("source_delay_s", 0.0, 10_000.0), lambda a: num(smu.source_delay_s, plus=False)),
                (":SOURce[1]:VOLTage:DELay:AUTO", lambda a: arg_bool(a[0]), lambda a: "0"),
                (":SOURce[1]:VOLTage:READ:BACK", lambda a: arg_bool(a[0]), lambda a: "1"),
                (":SOURce[1]:LIST:VOLTage", lambda a: self._set_list(a, False), lambda a: ",".join(num(v, plus=False) for v in smu.source_list_V), (1, 10_000)),
                (":SOURce[1]:LIST:VOLTage:APPend", lambda a: self._set_list(a, True), None, (1, 10_000)),
                (":SOURce[1]:LIST:VOLTage:POINts", None, lambda a: str(len(smu.source_list_V))),
                (":SOURce[1]:SWEep:VOLTage:LIST", self._sweep_list, None, (2, 5)),
                (":SOURce[1]:SWEep:VOLTage:LINear", self._sweep_linear, None, (3, 9)),
                (":SENSe[1]:FUNCtion[:ON]", self._set_sense, lambda a: '"CURR:DC"'),
                (":SENSe[1]:CURRent[:DC]:RANGe[:UPPer]", set_range, lambda a: num(smu.current_range_A, plus=False)),
                (
                    ":SENSe[1]:CURRent[:DC]:RANGe:AUTO",
                    lambda a: setattr(smu, "current_autorange", arg_bool(a[0])),
                    lambda a: "1" if smu.current_autorange else "0",
                ),
                (":SENSe[1]:CURRent[:DC]:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc, plus=False)),
                (":SENSe[1]:CURRent[:DC]:RSENse", lambda a: arg_bool(a[0]), lambda a: "0"),
                (":SENSe[1]:CURRent[:DC]:AZERo[:STATe]", lambda a: arg_bool(a[0]), lambda a: "1"),
                (":OUTPut[1][:STATe]", lambda a: smu.set_output(arg_bool(a[0])), lambda a: "1" if smu.output_on else "0"),
                (":OUTPut[1]:SMODe", set_off_mode, lambda a: smu.off_mode),
                (":OUTPut[1]:VOLTage:SMODe", set_off_mode, lambda a: smu.off_mode),
                (":OUTPut[1]:CURRent:SMODe", set_off_mode, lambda a: smu.off_mode),
                (":READ", None, self._read),
                (":MEASure[:CURRent[:DC]]", None, self._read),
                (":INITiate[:IMMediate]", self._init, None, (0, 0)),
                (":ABORt", lambda a: None, None, (0, 0)),
                (":TRACe:MAKE", self._trace_make, None, (2, 3)),
                (":TRACe:CLEar", self._trace_clear, None, (0, 1)),
                (":TRACe:ACTual", None, lambda a: str(len(self._buffer(a[0] if a else None)[1].readings))),
                (":TRACe:POINts", self._trace_points, lambda a: str(self._buffer(a[0] if a else None)[1].capacity), (1, 2)),
                (":TRACe:DATA", None, self._trace_data),
                (":FORMat[:DATA]", lambda a: arg_choice(a[0], ("ASCii",)), lambda a: "ASC"),
            ]
        )

    def _set_func(self, args: list[str]) -> None:
        if arg_choice(args[0], ("VOLTage", "CURRent")) != "VOLT":
            raise ScpiError(-221, "the emulated SMU sources voltage only")

    def _set_sense(self, args: list[str]) -> None:
        name = unquote(args[0]).upper().split(":")[0]
        if name not in ("CURR", "CURRENT"):
            raise ScpiError(-221, f"sense function {args[0]} not emulated")
