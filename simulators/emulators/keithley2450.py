"""Emulated Keithley 2450 SourceMeter in native SCPI mode (physics.md §4.3, 2450 Reference
Manual ch. 6 SCPI reference, appendix C status model) in front of an `SmuModel`.

Emulated: `:SOUR:FUNC VOLT|CURR`, `:SOUR:<f>[:LEV]`, `:SOUR:<f>:RANG[:AUTO]`,
`:SOUR:VOLT:ILIM[:LEV][:TRIP?]` and `:SOUR:CURR:VLIM[:LEV][:TRIP?]`, `:SOUR:<f>:DEL[:AUTO]`,
`:SOUR:<f>:READ:BACK`; one sense function at a time (`:SENS:FUNC "CURR"|"VOLT"|"RES"`) with
`:SENS:<f>:RANG[:AUTO]`, `:NPLC`, `:AZER`, `:RSEN`, `:AVER[:STAT]|:TCON|:COUN`,
`:DEL:USER<n>`, and `:SENS:COUN` (readings per :READ?/:MEAS?); `:OUTP[:STAT]`,
`:OUTP[:<f>]:SMOD`; `:READ?`/`:MEAS[:<f>]?`/`:FETC? ["buffer"[, elements]]`; named reading
buffers (`defbuffer1`, `defbuffer2`, `:TRAC:MAKE`, `:TRAC:DEL`, `:TRAC:CLE`, `:TRAC:ACT?`,
`:TRAC:POIN`, `:TRAC:TRIG`, `:TRAC:DATA? start, end, "buffer", elements`, `:TRAC:STAT:AVER?|
MAX?|MIN?|STDD?`, `:TRAC:STAT:CLE`); `:SOUR:LIST:VOLT` (<= 100 values per command, `:APP`
to extend), `:SOUR:SWE:<f>:LIST` and `:SOUR:SWE:<f>:LIN` sweeps run by `:INIT`; the status model
(`*STB?`, `*SRE`, `*ESE`, `*ESR?`, `:STAT:OPER|QUES[:EVEN]?|:ENAB|:COND?|:MAP`, `:STAT:PRES`,
`:STAT:CLE`), `*TRG`, `:ROUT:TERM`, `:SYST:LFR?`, `:SYST:BEEP`, `:SYST:ERR[:NEXT]?`, `:SYST:CLE`,
`*LANG`. A colon before a common command (`:*RST`) is accepted (docs/decisions/0016).
2400-only headers (`:SENS:CURR:PROT`, `:FORM:ELEM`, `:SOUR:VOLT:MODE`, `:STAT:MEAS`, `:CALC3`,
`:DISP:ENAB`) queue -113 Undefined header: the 2450's status model has no measurement register
(appendix C: questionable and operation register sets only), so PyMeasure's 2400-style
`config_buffer`/`wait_for_buffer` cannot work on a 2450 in SCPI mode, as its own docstring says.

Buffer elements: READ, SOUR (the measured source value while `:SOUR:<f>:READ:BACK` is on, the
*RST default; the programmed level otherwise), REL, SEC, FRAC, STAT, SOURSTAT, UNIT, SOURUNIT. SOURSTAT bits follow
the 2450 buffer source-status table: 32 = source limited (STAT_LIMIT), 128 = output on.

Interpretations and simplifications (named): REL is the time since the first reading stored in
the buffer since it was created or last cleared (2450 Reference Manual, `bufferVar.relativetimestamps`:
"relative to the timestamp of reading buffer entry number 1", so entry 1 reads 0); it keeps
that origin when a full buffer overwrites its oldest readings. SEC/FRAC count from the emulator
clock's zero. A sweep's trigger model starts with a buffer-clear block on the sweep's buffer
(`:TRIG:BLOC:LIST?` of a built-in sweep), so readings taken before `:INIT` are not part of the
sweep's data. Readings are taken with the output off too (the 2450's :READ? lists no output-off
condition; QCoDeS refuses that on the client side).
`*LANG SCPI2400` takes effect at the next `power_cycle()` (physics.md §4.3 [est]); in that mode
the emulator answers the 2400 command set (Keithley2400Emulator) while `*IDN?` still names the
2450. A sweep leaves the output on, as the built-in sweep trigger models do not switch it off.
"""

from __future__ import annotations

import statistics
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
from insitem.simulators.emulators.keithley2400 import OFF_MODES, Keithley2400Emulator, StatusModel, bool_text, float_setter
from insitem.simulators.emulators.smu import K2450_SPEC, SmuLoad, SmuModel, SmuReading, SourceModeUnavailable

BUFFER_ELEMENTS = ("READing", "SOURce", "RELative", "SEConds", "FRACtional", "STATus", "SOURSTATus", "UNIT", "SOURUNIT")
SENSE_FUNCTIONS = ("CURRent", "VOLTage", "RESistance")
UNITS = {"CURR": "Amp DC", "VOLT": "Volt DC", "RES": "Ohm"}
SOURSTAT_LIMIT = 32
SOURSTAT_OUTPUT = 128
MAX_LIST_PER_COMMAND = 100
MAX_LIST_POINTS = 100_000  # [est] - the manual gives no total for the source configuration list
DEFAULT_BUFFER_SIZE = 100_000


@dataclass(frozen=True)
class BufferEntry:
    """A stored reading with the function it measured."""

    reading: SmuReading
    function: str  # "CURR", "VOLT" or "RES"

    @property
    def value(self) -> float:
        r = self.reading
        if self.function == "VOLT":
            return r.voltage_V
        if self.function == "RES":
            return r.voltage_V / r.current_A if r.current_A and not r.overflow else 9.91e37
        return r.current_A

    @property
    def t_s(self) -> float:
        return self.reading.t_s


@dataclass
class ReadingBuffer:
    capacity: int
    t0_s: float | None = None  # time of the first reading stored since creation or clear (REL 0)
    readings: list[BufferEntry] = field(default_factory=list)

    def add(self, r: BufferEntry) -> None:
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
        self.parser.colon_common = True
        self._emulation = Keithley2400Emulator(load, clock, smu=self.smu)
        self._emulation.identity = self.identity
        self._emulation.parser.add("*LANG", self._set_lang, lambda a: self.language)

    def _defaults(self) -> None:
        self.buffers = {
            "DEFBUFFER1": ReadingBuffer(DEFAULT_BUFFER_SIZE),
            "DEFBUFFER2": ReadingBuffer(DEFAULT_BUFFER_SIZE),
        }
        self.sweep: tuple[list[float], int, str, str] | None = None  # (levels, count, buffer, function)
        self.sense_function = "CURR"
        self.count = 1
        self.terminals = "FRON"
        self.line_frequency_Hz = 60
        self.source_autorange = {"VOLT": True, "CURR": True}
        self.source_current_range_A = 1e-8
        self.source_delay_auto = {"VOLT": True, "CURR": True}
        self.read_back = {"VOLT": True, "CURR": True}
        self.sense_range = {"VOLT": 0.02, "RES": 2e5}
        self.sense_autorange = {"VOLT": True, "RES": True}
        self.azero = {f: True for f in ("CURR", "VOLT", "RES")}
        self.rsense = {f: False for f in ("CURR", "VOLT", "RES")}
        self.filter_on = {f: False for f in ("CURR", "VOLT", "RES")}
        self.filter_type = {f: "REP" for f in ("CURR", "VOLT", "RES")}
        self.filter_count = {f: 10 for f in ("CURR", "VOLT", "RES")}
        self.user_delay = {(f, n): 0.0 for f in ("CURR", "VOLT", "RES") for n in range(1, 6)}

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

    def _format(self, buf: ReadingBuffer, entries: list[BufferEntry], elements: list[str]) -> str:
        out: list[str] = []
        for e in entries:
            r = e.reading
            for el in elements:
                if el == "READ":
                    out.append(format_nr3(e.value, plus=False))
                elif el == "SOUR":  # source readback on (the default): the measured source value
                    curr = r.source_function == "CURR"
                    if self.read_back[r.source_function]:
                        out.append(format_nr3(r.current_A if curr else r.voltage_V, plus=False))
                    else:
                        out.append(format_nr3(r.source_I if curr else r.source_V, plus=False))
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
                    out.append(UNITS[e.function])
                elif el == "SOURUNIT":
                    out.append("Amp DC" if r.source_function == "CURR" else "Volt DC")
        return ",".join(out)

    def _elements(self, tokens: list[str]) -> list[str]:
        return [arg_choice(t, BUFFER_ELEMENTS) for t in tokens] or ["READ"]

    def _measure_into(self, buf: ReadingBuffer, host_point: bool = True) -> BufferEntry:
        entry = BufferEntry(self.smu.measure(host_point=host_point), self.sense_function)
        buf.add(entry)
        return entry

    # -- commands -----------------------------------------------------------------------------------
    def _set_lang(self, args: list[str]) -> None:
        self.pending_language = arg_choice(args[0], ("SCPI", "SCPI2400", "TSP"))

    def _read(self, args: list[str]) -> str:
        """:READ? ["buffer"[, elements]]: :SENS:COUN readings into the buffer, the last returned."""
        _, buf = self._buffer(args[0] if args else None)
        elements = self._elements(args[1:])
        entry = None
        for _ in range(self.count):
            entry = self._measure_into(buf)
        assert entry is not None
        return self._format(buf, [entry], elements)

    def _measure(self, function: str | None) -> Callable[[list[str]], str]:
        def handler(args: list[str]) -> str:
            if function is not None:
                self.sense_function = function
            return self._read(args)

        return handler

    def _fetch(self, args: list[str]) -> str:
        _, buf = self._buffer(args[0] if args else None)
        if not buf.readings:
            raise ScpiError(-230, "buffer is empty")
        return self._format(buf, buf.readings[-1:], self._elements(args[1:]))

    def _trace_data(self, args: list[str]) -> str:
        if len(args) < 2:
            raise ScpiError(-109, "TRAC:DATA? start, end")
        _, buf = self._buffer(args[2] if len(args) > 2 else None)
        n = len(buf.readings)
        if n == 0:
            raise ScpiError(-222, "buffer is empty")
        start = arg_int(args[0], 1, n)
        end = arg_int(args[1], start, n)
        return self._format(buf, buf.readings[start - 1 : end], self._elements(args[3:]))

    def _trace_make(self, args: list[str]) -> None:
        name = unquote(args[0]).upper()
        if name in self.buffers:
            raise ScpiError(-224, f"buffer {unquote(args[0])!r} exists")
        if len(args) > 2:
            arg_choice(args[2], ("STANdard", "FULL", "COMPact", "WRITable", "FULLWRITable"))
        self.buffers[name] = ReadingBuffer(arg_int(args[1], 10, 5_000_000))

    def _trace_delete(self, args: list[str]) -> None:
        name, _ = self._buffer(args[0])
        if name in ("DEFBUFFER1", "DEFBUFFER2"):
            raise ScpiError(-224, "the default buffers cannot be deleted")
        del self.buffers[name]

    def _trace_clear(self, args: list[str]) -> None:
        _, buf = self._buffer(args[0] if args else None)
        buf.clear()

    def _trace_points(self, args: list[str]) -> None:
        _, buf = self._buffer(args[1] if len(args) > 1 else None)
        buf.capacity = arg_int(args[0], 10, 5_000_000)
        buf.clear()

    def _trace_statistic(self, kind: str) -> Callable[[list[str]], str]:
        def handler(args: list[str]) -> str:
            _, buf = self._buffer(args[0] if args else None)
            values = [e.value for e in buf.readings]
            if not values:
                raise ScpiError(-230, "buffer is empty")
            if kind == "AVER":
                v = statistics.fmean(values)
            elif kind == "STDD":
                v = statistics.stdev(values) if len(values) > 1 else 0.0
            elif kind == "MAX":
                v = max(values)
            elif kind == "MIN":
                v = min(values)
            else:
                v = max(values) - min(values)
            return format_nr3(v, plus=False)

        return handler

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
        self.sweep = (self.smu.source_list_V[start - 1 :], count, name, "VOLT")

    def _sweep_linear(self, function: str) -> Callable[[list[str]], None]:
        limit = 210.0 if function == "VOLT" else 1.05

        def handler(args: list[str]) -> None:
            # start, stop, points[, delay[, count[, rangeType[, failAbort[, dual[, bufferName]]]]]]
            v0 = arg_float(args[0], -limit, limit)
            v1 = arg_float(args[1], -limit, limit)
            n = arg_int(args[2], 2, 1_000_000)
            delay = arg_float(args[3], -1.0, 10_000.0) if len(args) > 3 else -1.0
            count = arg_int(args[4], 1, 268_435_455) if len(args) > 4 else 1
            if len(args) > 5:
                arg_choice(args[5], ("AUTO", "BEST", "FIXed"))
            if len(args) > 6:
                arg_bool(args[6])
            dual = arg_bool(args[7]) if len(args) > 7 else False
            name, _ = self._buffer(args[8] if len(args) > 8 else None)
            if function != self.smu.source_function:
                raise ScpiError(-221, f"the source function is {self.smu.source_function}, not {function}")
            levels = [v0 + (v1 - v0) * i / (n - 1) for i in range(n)]
            if dual:
                levels = levels + levels[-2::-1]
            self.smu.source_delay_s = max(delay, 0.0)  # -1 = auto delay, taken as none [est]
            self.sweep = (levels, count, name, function)

        return handler

    def _init(self, args: list[str]) -> None:
        if self.sweep is None:
            _, buf = self._buffer(None)
            for _ in range(self.count):
                self._measure_into(buf, host_point=False)
            return
        levels, count, name, function = self.sweep
        buf = self.buffers[name]
        buf.clear()  # the sweep trigger model's first block clears its buffer
        self.smu.set_output(True)
        for _ in range(count):
            for r in self.smu.run_list(levels, store=False, function=function):
                buf.add(BufferEntry(r, self.sense_function))

    def _set_func(self, args: list[str]) -> None:
        fn = arg_choice(args[0], ("VOLTage", "CURRent"))
        try:
            self.smu.set_source_function(fn)
        except SourceModeUnavailable as exc:
            raise ScpiError(-221, str(exc)) from None

    def _set_sense(self, args: list[str]) -> None:
        name = unquote(args[0]).upper().split(":")[0]
        try:
            self.sense_function = arg_choice(name, SENSE_FUNCTIONS)
        except ScpiError:
            raise ScpiError(-224, f"sense function {args[0]} not one of CURR, VOLT, RES") from None

    def _sense_query(self, args: list[str]) -> str:
        return '"RES"' if self.sense_function == "RES" else f'"{self.sense_function}:DC"'

    def _set_lfr_query(self, args: list[str]) -> str:
        return str(self.line_frequency_Hz)

    def _beep(self, args: list[str]) -> None:
        arg_float(args[0], 20.0, 8000.0)
        arg_float(args[1], 0.001, 100.0)

    def _map(self, args: list[str]) -> None:
        arg_int(args[0], 0, 14)
        for a in args[1:]:
            arg_int(a, 0, 65535)

    # -- command tree -------------------------------------------------------------------------------
    def _build(self, p: ScpiParser) -> None:
        smu = self.smu
        num = format_nr3
        self.status = StatusModel(p, ("OPER", "QUES"))

        def setter(attr: str, lo: float, hi: float) -> Callable[[list[str]], None]:
            return float_setter(smu, attr, lo, hi)

        def set_range(a: list[str]) -> None:
            smu.current_autorange = False
            smu.current_range_A = smu.range_for(arg_float(a[0], -1.05, 1.05))

        def set_off_mode(a: list[str]) -> None:
            smu.off_mode = arg_choice(a[0], OFF_MODES)

        def per_function(table: dict, fn: str, parse: Callable[[str], object], fmt: Callable[[object], str] = str) -> tuple:
            return (lambda a: table.__setitem__(fn, parse(a[0])), lambda a: fmt(table[fn]))

        def source_current_range(a: list[str]) -> None:
            self.source_autorange["CURR"] = False
            self.source_current_range_A = smu.range_for(arg_float(a[0], -1.05, 1.05))

        def sense_range(fn: str, lo: float, hi: float) -> Callable[[list[str]], None]:
            def handler(a: list[str]) -> None:
                self.sense_autorange[fn] = False
                self.sense_range[fn] = abs(arg_float(a[0], lo, hi))

            return handler

        rows: list[tuple] = [
            ("*LANG", self._set_lang, lambda a: self.language),
            ("*TRG", lambda a: None, None, (0, 0)),
            (":STATus:CLEar", lambda a: self.status.clear(), None, (0, 0)),
            (":STATus:OPERation:MAP", self._map, None, (2, 3)),
            (":STATus:QUEStionable:MAP", self._map, None, (2, 3)),
            (":SYSTem:ERRor[:NEXT]", None, lambda a: self.error_reply()),
            (":SYSTem:ERRor:COUNt", None, lambda a: str(len(self.parser.errors))),
            (":SYSTem:CLEar", lambda a: self.parser.errors.clear(), None, (0, 0)),
            (":SYSTem:LFRequency", None, self._set_lfr_query),
            (":SYSTem:BEEPer[:IMMediate]", self._beep, None, (2, 2)),
            (":ROUTe:TERMinals", lambda a: setattr(self, "terminals", arg_choice(a[0], ("FRONt", "REAR"))), lambda a: self.terminals),
            (":SOURce[1]:FUNCtion[:MODE]", self._set_func, lambda a: smu.source_function),
            (
                ":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
                lambda a: smu.set_source(arg_float(a[0], -210.0, 210.0, 0.0)),
                lambda a: num(smu.source_V, plus=False),
            ),
            (":SOURce[1]:VOLTage:RANGe", setter("source_range_V", -210.0, 210.0), lambda a: num(smu.source_range_V, plus=False)),
            (
                ":SOURce[1]:VOLTage:ILIMit[:LEVel]",
                lambda a: setattr(smu, "compliance_A", abs(arg_float(a[0], -1.05, 1.05))),
                lambda a: num(smu.compliance_A, plus=False),
            ),
            (":SOURce[1]:VOLTage:ILIMit[:LEVel]:TRIPped", None, lambda a: bool_text(smu.source_function == "VOLT" and smu.tripped)),
            (":SOURce[1]:VOLTage:DELay", setter("source_delay_s", 0.0, 10_000.0), lambda a: num(smu.source_delay_s, plus=False)),
            (
                ":SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]",
                lambda a: smu.set_source_current(arg_float(a[0], -1.05, 1.05, 0.0)),
                lambda a: num(smu.source_I, plus=False),
            ),
            (":SOURce[1]:CURRent:RANGe", source_current_range, lambda a: num(self.source_current_range_A, plus=False)),
            (
                ":SOURce[1]:CURRent:VLIMit[:LEVel]",
                lambda a: setattr(smu, "voltage_limit_V", abs(arg_float(a[0], -210.0, 210.0))),
                lambda a: num(smu.voltage_limit_V, plus=False),
            ),
            (":SOURce[1]:CURRent:VLIMit[:LEVel]:TRIPped", None, lambda a: bool_text(smu.source_function == "CURR" and smu.tripped)),
            (":SOURce[1]:CURRent:DELay", setter("source_delay_s", 0.0, 10_000.0), lambda a: num(smu.source_delay_s, plus=False)),
            (":SOURce[1]:LIST:VOLTage", lambda a: self._set_list(a, False), lambda a: ",".join(num(v, plus=False) for v in smu.source_list_V), (1, 10_000)),
            (":SOURce[1]:LIST:VOLTage:APPend", lambda a: self._set_list(a, True), None, (1, 10_000)),
            (":SOURce[1]:LIST:VOLTage:POINts", None, lambda a: str(len(smu.source_list_V))),
            (":SOURce[1]:SWEep:VOLTage:LIST", self._sweep_list, None, (2, 5)),
            (":SOURce[1]:SWEep:VOLTage:LINear", self._sweep_linear("VOLT"), None, (3, 9)),
            (":SOURce[1]:SWEep:CURRent:LINear", self._sweep_linear("CURR"), None, (3, 9)),
            (":SENSe[1]:FUNCtion[:ON]", self._set_sense, self._sense_query),
            (":SENSe[1]:COUNt", lambda a: setattr(self, "count", arg_int(a[0], 1, 300_000)), lambda a: str(self.count)),
            (":SENSe[1]:CURRent[:DC]:RANGe[:UPPer]", set_range, lambda a: num(smu.current_range_A, plus=False)),
            (
                ":SENSe[1]:CURRent[:DC]:RANGe:AUTO",
                lambda a: setattr(smu, "current_autorange", arg_bool(a[0])),
                lambda a: bool_text(smu.current_autorange),
            ),
            (":SENSe[1]:VOLTage[:DC]:RANGe[:UPPer]", sense_range("VOLT", -210.0, 210.0), lambda a: num(self.sense_range["VOLT"], plus=False)),
            (":SENSe[1]:VOLTage[:DC]:RANGe:AUTO", *per_function(self.sense_autorange, "VOLT", arg_bool, bool_text)),
            (":SENSe[1]:RESistance:RANGe[:UPPer]", sense_range("RES", 0.0, 2e8), lambda a: num(self.sense_range["RES"], plus=False)),
            (":SENSe[1]:RESistance:RANGe:AUTO", *per_function(self.sense_autorange, "RES", arg_bool, bool_text)),
            (":OUTPut[1][:STATe]", lambda a: smu.set_output(arg_bool(a[0])), lambda a: bool_text(smu.output_on)),
            (":OUTPut[1]:SMODe", set_off_mode, lambda a: smu.off_mode),
            (":OUTPut[1]:VOLTage:SMODe", set_off_mode, lambda a: smu.off_mode),
            (":OUTPut[1]:CURRent:SMODe", set_off_mode, lambda a: smu.off_mode),
            (":READ", None, self._read),
            (":MEASure", None, self._measure(None)),
            (":MEASure:CURRent[:DC]", None, self._measure("CURR")),
            (":MEASure:VOLTage[:DC]", None, self._measure("VOLT")),
            (":MEASure:RESistance", None, self._measure("RES")),
            (":FETCh", None, self._fetch),
            (":INITiate[:IMMediate]", self._init, None, (0, 0)),
            (":ABORt", lambda a: None, None, (0, 0)),
            (":TRACe:MAKE", self._trace_make, None, (2, 3)),
            (":TRACe:DELete", self._trace_delete, None, (1, 1)),
            (":TRACe:CLEar", self._trace_clear, None, (0, 1)),
            (":TRACe:ACTual", None, lambda a: str(len(self._buffer(a[0] if a else None)[1].readings))),
            (":TRACe:POINts", self._trace_points, lambda a: str(self._buffer(a[0] if a else None)[1].capacity), (1, 2)),
            (":TRACe:TRIGger", lambda a: self._measure_into(self._buffer(a[0] if a else None)[1]) and None, None, (0, 1)),
            (":TRACe:DATA", None, self._trace_data),
            (":TRACe:STATistics:AVERage", None, self._trace_statistic("AVER")),
            (":TRACe:STATistics:MAXimum", None, self._trace_statistic("MAX")),
            (":TRACe:STATistics:MINimum", None, self._trace_statistic("MIN")),
            (":TRACe:STATistics:STDDev", None, self._trace_statistic("STDD")),
            (":TRACe:STATistics:CLEar", lambda a: self._buffer(a[0] if a else None) and None, None, (0, 1)),
            (":FORMat[:DATA]", lambda a: arg_choice(a[0], ("ASCii",)), lambda a: "ASC"),
        ]
        for fn, long in (("VOLT", "VOLTage"), ("CURR", "CURRent")):
            rows += [
                (f":SOURce[1]:{long}:RANGe:AUTO", *per_function(self.source_autorange, fn, arg_bool, bool_text)),
                (f":SOURce[1]:{long}:DELay:AUTO", *per_function(self.source_delay_auto, fn, arg_bool, bool_text)),
                (f":SOURce[1]:{long}:READ:BACK", *per_function(self.read_back, fn, arg_bool, bool_text)),
            ]
        for fn, long in (("CURR", "CURRent[:DC]"), ("VOLT", "VOLTage[:DC]"), ("RES", "RESistance")):
            rows += [
                (f":SENSe[1]:{long}:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc, plus=False)),
                (f":SENSe[1]:{long}:AZERo[:STATe]", *per_function(self.azero, fn, arg_bool, bool_text)),
                (f":SENSe[1]:{long}:RSENse", *per_function(self.rsense, fn, arg_bool, bool_text)),
                (f":SENSe[1]:{long}:AVERage[:STATe]", *per_function(self.filter_on, fn, arg_bool, bool_text)),
                (f":SENSe[1]:{long}:AVERage:TCONtrol", *per_function(self.filter_type, fn, lambda t: arg_choice(t, ("REPeat", "MOVing")))),
                (f":SENSe[1]:{long}:AVERage:COUNt", *per_function(self.filter_count, fn, lambda t: arg_int(t, 1, 100))),
            ]
            for n in range(1, 6):
                rows.append(
                    (
                        f":SENSe[1]:{long}:DELay:USER{n}",
                        lambda a, k=(fn, n): self.user_delay.__setitem__(k, arg_float(a[0], 0.0, 10_000.0)),
                        lambda a, k=(fn, n): num(self.user_delay[k], plus=False),
                    )
                )
        p.add_many(self.status.rows())
        p.add_many(rows)
