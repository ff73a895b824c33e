"""Emulated Keithley 2400 SourceMeter: the 2400's own SCPI (physics.md §4.2, 2400 User's Manual
ch. 15 status model, ch. 18 SCPI reference) in front of an `SmuModel`.

What is emulated: voltage and current sourcing (`:SOUR:FUNC VOLT|CURR`, `:SOUR:VOLT`,
`:SOUR:CURR`) with current compliance `:SENS:CURR:PROT` and voltage compliance
`:SENS:VOLT:PROT`; source and measure ranges with auto-range; sense functions (`:SENS:FUNC`,
`:SENS:FUNC:ALL`/`:OFF:ALL`, concurrent), `:SENS:RES:MODE`, NPLC, the averaging filter settings
(`:SENS:AVER`); `:FORM:ELEM` (elements always returned in the fixed order VOLT,CURR,RES,TIME,STAT);
`:READ?` / `:INIT` / `:FETC?` / `:MEAS[:VOLT|:CURR|:RES]?` with trigger and arm count, arm/trigger
sources, `*TRG`; fixed and list source modes (`:SOUR:LIST:VOLT` <= 100 values per command,
`:APP` up to 2500); the 2500-reading trace buffer (`:TRAC:...`) and its statistics
(`:CALC3:FORM MEAN|SDEV|MAX|MIN|PKPK`, `:CALC3:DATA?`); the status model (`*STB?`, `*SRE`,
`*ESE`, `*ESR?`, `:STAT:MEAS|OPER|QUES` event/enable/condition registers, `:STAT:PRES`,
`:STAT:QUE`); `:ROUT:TERM`, `:SYST:LFR`, `:SYST:BEEP`, `:DISP:ENAB`, output on/off and
`:OUTP:SMOD`, the error queue. A colon before a common command (`:*RST`) is accepted
(docs/decisions/0016). Anything else (including 2450-only headers such as `:SOUR:VOLT:ILIM`)
queues -113 Undefined header.

Output off: `:READ?`, `:INIT` and `:MEAS?`'s trigger need the output on (auto output-off
`:SOUR:CLE:AUTO` is off after *RST); otherwise the instrument queues +803 "Output disabled" and
takes no reading (a query gets no answer), as QCoDeS users know from the real 2400. `:MEAS?`
itself switches the output on (its implied :CONF does).

Status word (the STAT element), 2400 manual `:FORMat:ELEMents`: bit 0 OFLO, 1 filter, 3
compliance, 11 V-measure, 12 I-measure, 13 ohms-measure, 14 V-source, 15 I-source.
Measurement event register (manual ch. 15): bit 5 reading available, bit 7 buffer available,
bit 9 buffer full; its summary is bit 0 (MSB) of the status byte, bit 2 is the error queue
(EAV), bit 6 the master summary (MSS, any enabled summary bit).

Simplifications: RES is V/I when the ohms function is on (manual ohms), otherwise 9.91e37; the
averaging filter is accepted and reported but does not change readings; `:SOUR:VOLT:MODE SWE`
staircases are not emulated (-221; use LIST); `:MEAS?` does not restore the *RST compliance the
real instrument's implied :CONF does.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from insitem.drivers.clock import Clock
from insitem.drivers.scpi import (
    SCPI_NAN,
    ScpiError,
    ScpiParser,
    arg_bool,
    arg_choice,
    arg_float,
    arg_int,
    format_error,
    format_nr3,
    unquote,
)
from insitem.simulators.emulators import ScpiEmulator
from insitem.simulators.emulators.smu import K2400_SPEC, SmuLoad, SmuModel, SmuReading, SourceModeUnavailable

ELEMENTS_2400 = ("VOLTage", "CURRent", "RESistance", "TIME", "STATus")
OFF_MODES = ("HIMPedance", "NORMal", "ZERO", "GUARd")
STATUS_OFLO = 1 << 0
STATUS_FILTER = 1 << 1
STATUS_COMPLIANCE = 1 << 3
STATUS_V_MEAS = 1 << 11
STATUS_I_MEAS = 1 << 12
STATUS_R_MEAS = 1 << 13
STATUS_V_SOUR = 1 << 14
STATUS_I_SOUR = 1 << 15
MEAS_READING_AVAILABLE = 1 << 5
MEAS_BUFFER_AVAILABLE = 1 << 7
MEAS_BUFFER_FULL = 1 << 9
STB_MSB, STB_EAV, STB_QSB, STB_MAV, STB_ESB, STB_MSS, STB_OSB = (1 << b for b in range(7 + 1) if b != 1)
OUTPUT_DISABLED = 803  # 2400 manual, SCPI error list: +803 "Output disabled"
MAX_LIST_PER_COMMAND = 100
MAX_POINTS = 2500
SENSE_FUNCTIONS = ("VOLTage", "CURRent", "RESistance")


def float_setter(obj: Any, attr: str, lo: float, hi: float) -> Callable[[list[str]], None]:
    """A SCPI set handler that range-checks its number (-222 outside [lo, hi]) into `obj.attr`."""

    def handler(args: list[str]) -> None:
        setattr(obj, attr, arg_float(args[0], lo, hi))

    return handler


def bool_text(value: bool) -> str:
    return "1" if value else "0"


@dataclass
class EventRegister:
    """One SCPI status register set: condition, latched event, enable (SCPI-1999 vol. 1 §9)."""

    event: int = 0
    enable: int = 0
    condition: int = 0

    def set(self, bits: int) -> None:
        self.event |= bits

    def read_event(self) -> int:
        """:EVENt? reads and clears."""
        value, self.event = self.event, 0
        return value

    @property
    def summary(self) -> bool:
        return bool(self.event & self.enable)


class StatusModel:
    """IEEE 488.2 status byte with the Keithley register sets (measurement, operation,
    questionable, standard event) and the service request enable register."""

    def __init__(self, parser: ScpiParser, registers: Sequence[str] = ("MEAS", "OPER", "QUES")) -> None:
        self.parser = parser
        self.registers = {name: EventRegister() for name in registers}
        self.standard = EventRegister()
        self.sre = 0

    def preset(self) -> None:
        """:STAT:PRES: enable registers of the SCPI register sets to their preset (0)."""
        for reg in self.registers.values():
            reg.enable = 0

    def clear(self) -> None:
        """*CLS: every event register and the error queue."""
        for reg in self.registers.values():
            reg.event = 0
        self.standard.event = 0
        self.parser.errors.clear()

    def stb(self) -> int:
        value = 0
        if "MEAS" in self.registers and self.registers["MEAS"].summary:
            value |= STB_MSB
        if self.parser.errors:
            value |= STB_EAV
        if "QUES" in self.registers and self.registers["QUES"].summary:
            value |= STB_QSB
        if self.standard.summary:
            value |= STB_ESB
        if "OPER" in self.registers and self.registers["OPER"].summary:
            value |= STB_OSB
        if value & self.sre & ~STB_MSS:
            value |= STB_MSS
        return value

    def rows(self, prefix: str = ":STATus") -> list[tuple]:
        """Command-tree rows: *STB?, *SRE, *ESE, *ESR?, :STAT:<reg>[:EVEN]?/:ENAB/:COND?, :STAT:PRES."""
        rows: list[tuple] = [
            ("*STB", None, lambda a: str(self.stb())),
            ("*SRE", lambda a: setattr(self, "sre", arg_int(a[0], 0, 255) & ~STB_MSS), lambda a: str(self.sre)),
            ("*ESE", lambda a: setattr(self.standard, "enable", arg_int(a[0], 0, 255)), lambda a: str(self.standard.enable)),
            ("*ESR", None, lambda a: str(self.standard.read_event())),
            ("*CLS", lambda a: self.clear(), None, (0, 0)),
            (f"{prefix}:PRESet", lambda a: self.preset(), None, (0, 0)),
        ]
        long = {"MEAS": "MEASurement", "OPER": "OPERation", "QUES": "QUEStionable"}
        for name, reg in self.registers.items():
            node = f"{prefix}:{long[name]}"
            rows += [
                (f"{node}[:EVENt]", None, lambda a, r=reg: str(r.read_event())),
                (f"{node}:ENABle", lambda a, r=reg: setattr(r, "enable", arg_int(a[0], 0, 65535)), lambda a, r=reg: str(r.enable)),
                (f"{node}:CONDition", None, lambda a, r=reg: str(r.condition)),
            ]
        return rows


class Keithley2400Emulator(ScpiEmulator):
    """SCPI front end of a 2400 around an `SmuModel`."""

    identity = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4096331,C32   Oct  4 2010 14:20:11/A02  /S/K"

    def __init__(self, load: SmuLoad, clock: Clock, seed: int = 0, smu: SmuModel | None = None) -> None:
        self.smu = smu or SmuModel(K2400_SPEC, load, clock, seed=seed)
        self.clock = clock
        self._defaults()
        super().__init__()
        self.parser.colon_common = True

    def _defaults(self) -> None:
        self.elements = ["VOLT", "CURR", "RES", "TIME", "STAT"]
        self.trigger_count = 1
        self.arm_count = 1
        self.arm_source = "IMM"
        self.trigger_source = "IMM"
        self.arm_timer_s = 0.1
        self.trigger_delay_s = 0.0
        self.trigger_output = "NONE"
        self.arm_output = "NONE"
        self.lines = {"TRIG:ILIN": 1, "TRIG:OLIN": 2, "ARM:ILIN": 1, "ARM:OLIN": 2}
        self.bus_pending = False
        self.source_mode = "FIX"
        self.current_source_mode = "FIX"
        self.trace_points = 100
        self.trace_feed = "SENS"
        self.trace_control = "NEV"
        self.time_base_s = self.clock.now()
        self.last_readings: list[SmuReading] = []
        self.concurrent = True
        self.sense_on = {"CURR"}  # *RST: "CURR:DC" (2400 manual, :SENSe:FUNCtion)
        self.resistance_mode = "MAN"
        self.resistance_range_ohm = 2.1e5
        self.resistance_autorange = True
        self.voltage_sense_range_V = 21.0
        self.voltage_sense_autorange = True
        self.source_autorange_V = True
        self.source_current_range_A = 1.05e-4
        self.source_current_autorange = True
        self.filter_on = False
        self.filter_type = "REP"
        self.filter_count = 10
        self.calc3_format = "MEAN"
        self.terminals = "FRON"
        self.display_enabled = True
        self.line_frequency_Hz = 60
        self.line_frequency_auto = False
        self.auto_zero = "1"
        self.source_delay_auto = True
        self.auto_output_off = False
        self.remote_sense = False
        self.beeper = True

    def reset(self) -> None:
        self.smu.reset()
        self.smu.compliance_A = 105e-6
        self.smu.off_mode = "NORM"
        self._defaults()

    # -- formatting ------------------------------------------------------------------------------
    def _status(self, r: SmuReading) -> int:
        word = STATUS_I_SOUR if r.source_function == "CURR" else STATUS_V_SOUR
        for fn, bit in (("VOLT", STATUS_V_MEAS), ("CURR", STATUS_I_MEAS), ("RES", STATUS_R_MEAS)):
            if fn in self.sense_on:
                word |= bit
        if self.filter_on:
            word |= STATUS_FILTER
        if r.overflow:
            word |= STATUS_OFLO
        if r.compliance_tripped:
            word |= STATUS_COMPLIANCE
        return word

    def _resistance(self, r: SmuReading) -> float:
        if "RES" not in self.sense_on or r.overflow or r.current_A == 0:
            return SCPI_NAN
        return r.voltage_V / r.current_A

    def format_readings(self, readings: Sequence[SmuReading], time_base_s: float | None = None) -> str:
        """Readings in the :FORM:ELEM order. TIME counts from `time_base_s` (default the timestamp
        zero of :SYST:TIME:RES)."""
        base = self.time_base_s if time_base_s is None else time_base_s
        values: list[str] = []
        for r in readings:
            for el in ("VOLT", "CURR", "RES", "TIME", "STAT"):  # fixed order (2400 manual)
                if el not in self.elements:
                    continue
                if el == "VOLT":
                    values.append(format_nr3(r.voltage_V))
                elif el == "CURR":
                    values.append(format_nr3(r.current_A))
                elif el == "RES":
                    values.append(format_nr3(self._resistance(r)))
                elif el == "TIME":
                    values.append(format_nr3(r.t_s - base))
                else:
                    values.append(format_nr3(float(self._status(r))))
        return ",".join(values)

    # -- actions ----------------------------------------------------------------------------------
    def _require_output(self) -> None:
        if not self.smu.output_on and not self.auto_output_off:
            raise ScpiError(OUTPUT_DISABLED)

    def _acquire(self) -> list[SmuReading]:
        self._require_output()
        if self.auto_output_off and not self.smu.output_on:
            self.smu.set_output(True)
        n = self.trigger_count * self.arm_count
        list_mode = self.source_mode == "LIST" and self.smu.source_function == "VOLT"
        if list_mode:
            pts = self.smu.source_list_V
            if not pts:
                raise ScpiError(-221, "source list is empty")
            levels = [pts[i % len(pts)] for i in range(n)]
            readings = self.smu.run_list(levels, store=False)
        else:
            readings = []
            for _ in range(n):
                if self.trigger_delay_s > 0:
                    self.clock.sleep(self.trigger_delay_s)
                readings.append(self.smu.measure(host_point=True))
        meas = self.status.registers["MEAS"]
        meas.set(MEAS_READING_AVAILABLE)
        if self.trace_control == "NEXT":
            room = self.trace_points - len(self.smu.buffer)
            self.smu.buffer.extend(readings[: max(room, 0)])
            if len(self.smu.buffer) >= 2:
                meas.set(MEAS_BUFFER_AVAILABLE)
            if len(self.smu.buffer) >= self.trace_points:
                self.trace_control = "NEV"
                meas.set(MEAS_BUFFER_FULL)
        if self.auto_output_off:
            self.smu.set_output(False)
        self.last_readings = readings
        return readings

    def _read(self, args: list[str]) -> str:
        if args:
            raise ScpiError(-108)
        return self.format_readings(self._acquire())

    def _fetch(self, args: list[str]) -> str:
        if not self.last_readings:
            raise ScpiError(-230, "no readings to fetch")
        return self.format_readings(self.last_readings)

    def _measure(self, function: str | None) -> Callable[[list[str]], str]:
        def handler(args: list[str]) -> str:
            if function is not None:  # the implied :CONF:<function>: that function alone, concurrent off
                self.sense_on = {function}
                self.concurrent = False
            self.smu.set_output(True)
            return self.format_readings(self._acquire())

        return handler

    def _init(self, args: list[str]) -> None:
        if self.arm_source == "BUS":
            self._require_output()
            self.bus_pending = True  # waits in the arm layer for *TRG
            return
        self._acquire()

    def _trigger(self, args: list[str]) -> None:
        """*TRG: a bus trigger; starts an :INIT that waits on ARM:SOUR BUS, otherwise ignored."""
        if self.bus_pending:
            self.bus_pending = False
            self._acquire()

    def _set_list(self, args: list[str], append: bool) -> None:
        if len(args) > MAX_LIST_PER_COMMAND:
            raise ScpiError(-223, f"at most {MAX_LIST_PER_COMMAND} values per command")
        values = [arg_float(a, -210.0, 210.0) for a in args]
        new = (self.smu.source_list_V if append else []) + values
        if len(new) > MAX_POINTS:
            raise ScpiError(-223, f"source list holds at most {MAX_POINTS} points")
        self.smu.source_list_V = new

    def _set_source_function(self, args: list[str]) -> None:
        fn = arg_choice(args[0], ("VOLTage", "CURRent", "MEMory"))
        if fn == "MEM":
            raise ScpiError(-221, "source memory sweeps not emulated")
        try:
            self.smu.set_source_function(fn)
        except SourceModeUnavailable as exc:
            raise ScpiError(-221, str(exc)) from None

    def _set_mode(self, args: list[str]) -> None:
        mode = arg_choice(args[0], ("FIXed", "LIST", "SWEep"))
        if mode == "SWE":
            raise ScpiError(-221, "staircase sweep mode not emulated; use LIST")
        self.source_mode = mode

    def _set_current_mode(self, args: list[str]) -> None:
        mode = arg_choice(args[0], ("FIXed", "LIST", "SWEep"))
        if mode != "FIX":
            raise ScpiError(-221, "current list and sweep modes not emulated")
        self.current_source_mode = mode

    def _sense_names(self, args: list[str]) -> list[str]:
        out = []
        for a in args:
            name = unquote(a).upper().split(":")[0]
            try:
                out.append(arg_choice(name, SENSE_FUNCTIONS))
            except ScpiError:
                raise ScpiError(-224, f"sense function {a} not one of VOLT, CURR, RES") from None
        return out

    def _set_sense_function(self, args: list[str]) -> None:
        names = self._sense_names(args)
        if self.concurrent:
            self.sense_on |= set(names)
        else:
            self.sense_on = {names[-1]}

    def _sense_off(self, args: list[str]) -> None:
        self.sense_on -= set(self._sense_names(args))

    def _sense_query(self, args: list[str]) -> str:
        order = [f for f in ("VOLT", "CURR", "RES") if f in self.sense_on]
        return ",".join(f'"{f}:DC"' if f != "RES" else '"RES"' for f in order) or '""'

    def _set_elements(self, args: list[str]) -> None:
        self.elements = [arg_choice(a, ELEMENTS_2400) for a in args]

    def _set_trigger_count(self, args: list[str]) -> None:
        n = arg_int(args[0], 1, MAX_POINTS)
        if n * self.arm_count > MAX_POINTS:
            raise ScpiError(-222, "arm count x trigger count > 2500")
        self.trigger_count = n

    def _set_arm_count(self, args: list[str]) -> None:
        n = arg_int(args[0], 1, MAX_POINTS)
        if n * self.trigger_count > MAX_POINTS:
            raise ScpiError(-222, "arm count x trigger count > 2500")
        self.arm_count = n

    def _set_current_range(self, args: list[str]) -> None:
        self.smu.current_autorange = False
        self.smu.current_range_A = self.smu.range_for(arg_float(args[0], -1.05, 1.05))

    def _set_source_current_range(self, args: list[str]) -> None:
        self.source_current_autorange = False
        self.source_current_range_A = self.smu.range_for(arg_float(args[0], -1.05, 1.05))

    def _set_voltage_sense_range(self, args: list[str]) -> None:
        v = abs(arg_float(args[0], -210.0, 210.0))
        self.voltage_sense_autorange = False
        self.voltage_sense_range_V = next((r * 1.05 for r in self.smu.spec.voltage_ranges_V if v <= r * 1.05), 210.0)

    def _set_trace_control(self, args: list[str]) -> None:
        self.trace_control = arg_choice(args[0], ("NEXT", "NEVer"))

    def _set_trace_feed(self, args: list[str]) -> None:
        self.trace_feed = arg_choice(args[0], ("SENSe", "SENSe1", "CALCulate", "CALCulate1", "CALCulate2"))

    def _set_trace_points(self, args: list[str]) -> None:
        self.trace_points = arg_int(args[0], 1, MAX_POINTS)

    def _trace_clear(self, args: list[str]) -> None:
        if self.trace_control == "NEXT":
            raise ScpiError(800)  # 2400 manual error +800 "Illegal with storage active"
        self.smu.buffer.clear()

    def _trace_data(self, args: list[str]) -> str:
        # :TRAC:TST:FORM ABS (the default): "each timestamp is referenced to the first reading
        # stored in the buffer" (2400 manual, TRACe subsystem), so the first reads 0
        base = self.smu.buffer[0].t_s if self.smu.buffer else None
        return self.format_readings(self.smu.buffer, base)

    def _calc3_data(self, args: list[str]) -> str:
        """Buffer statistics per measured element (V, I, R in :FORM:ELEM order)."""
        buf = self.smu.buffer
        if not buf:
            raise ScpiError(-230, "buffer is empty")
        columns = []
        for el, get in (("VOLT", lambda r: r.voltage_V), ("CURR", lambda r: r.current_A), ("RES", self._resistance)):
            if el in self.elements:
                columns.append([get(r) for r in buf])
        fmt = self.calc3_format
        out = []
        for col in columns:
            if any(abs(v) >= 9.9e37 for v in col):
                out.append(SCPI_NAN)
            elif fmt == "MEAN":
                out.append(statistics.fmean(col))
            elif fmt == "SDEV":
                out.append(statistics.stdev(col) if len(col) > 1 else 0.0)
            elif fmt == "MAX":
                out.append(max(col))
            elif fmt == "MIN":
                out.append(min(col))
            else:
                out.append(max(col) - min(col))
        return ",".join(format_nr3(v) for v in out)

    def _errors_all(self, args: list[str]) -> str:
        out = []
        while True:
            code, msg = self.parser.pop_error()
            out.append(format_error(code, msg))
            if code == 0:
                return ",".join(out)

    def _set_off_mode(self, args: list[str]) -> None:
        self.smu.off_mode = arg_choice(args[0], OFF_MODES)

    def _beep(self, args: list[str]) -> None:
        arg_float(args[0], 65.0, 2e6)
        arg_float(args[1], 0.0, 7.9)

    def _set_lfr(self, args: list[str]) -> None:
        f = arg_int(args[0], 50, 60)
        if f not in (50, 60):
            raise ScpiError(-224, "line frequency is 50 or 60")
        self.line_frequency_Hz = f
        self.smu.line_frequency_Hz = float(f)

    def _set_source_voltage_range(self, args: list[str]) -> None:
        self.smu.source_range_V = arg_float(args[0], -210.0, 210.0)
        self.source_autorange_V = False

    # -- command tree -------------------------------------------------------------------------------
    def _build(self, p: ScpiParser) -> None:
        smu = self.smu
        num = format_nr3
        self.status = StatusModel(p)

        def setter(attr: str, lo: float, hi: float) -> Callable[[list[str]], None]:
            return float_setter(smu, attr, lo, hi)

        def flag(attr: str) -> tuple[Callable[[list[str]], None], Callable[[list[str]], str]]:
            return (lambda a: setattr(self, attr, arg_bool(a[0])), lambda a: bool_text(getattr(self, attr)))

        def choice(attr: str, choices: tuple[str, ...]) -> tuple[Callable[[list[str]], None], Callable[[list[str]], str]]:
            return (lambda a: setattr(self, attr, arg_choice(a[0], choices)), lambda a: str(getattr(self, attr)))

        def line(key: str) -> tuple[Callable[[list[str]], None], Callable[[list[str]], str]]:
            return (lambda a: self.lines.__setitem__(key, arg_int(a[0], 1, 4)), lambda a: str(self.lines[key]))

        p.add_many(self.status.rows())
        p.add_many(
            [
                ("*TRG", self._trigger, None, (0, 0)),
                # SYSTem / STATus
                (":SYSTem:ERRor[:NEXT]", None, lambda a: self.error_reply()),
                (":SYSTem:ERRor:ALL", None, self._errors_all),
                (":SYSTem:ERRor:COUNt", None, lambda a: str(len(self.parser.errors))),
                (":SYSTem:CLEar", lambda a: self.parser.errors.clear(), None, (0, 0)),
                (":SYSTem:TIME:RESet", lambda a: setattr(self, "time_base_s", self.clock.now()), None, (0, 0)),
                (":SYSTem:AZERo[:STATe]", lambda a: setattr(self, "auto_zero", arg_choice(a[0], ("ON", "OFF", "ONCE", "1", "0"))), lambda a: "0" if self.auto_zero in ("OFF", "0") else "1"),
                (":SYSTem:BEEPer:STATe", *flag("beeper")),
                (":SYSTem:BEEPer[:IMMediate]", self._beep, None, (2, 2)),
                (":SYSTem:RSENse", *flag("remote_sense")),
                (":SYSTem:LFRequency", self._set_lfr, lambda a: str(self.line_frequency_Hz)),
                (":SYSTem:LFRequency:AUTO", *flag("line_frequency_auto")),
                (":STATus:QUEue[:NEXT]", None, lambda a: self.error_reply()),
                (":STATus:QUEue:CLEar", lambda a: self.parser.errors.clear(), None, (0, 0)),
                (":STATus:QUEue:ENABle", lambda a: None, lambda a: "(-440:+900)", (1, 100)),
                (":STATus:QUEue:DISable", lambda a: None, lambda a: "()", (1, 100)),
                # DISPlay / ROUTe
                (":DISPlay:ENABle", *flag("display_enabled")),
                (":ROUTe:TERMinals", *choice("terminals", ("FRONt", "REAR"))),
                # SOURce
                (":SOURce[1]:FUNCtion[:MODE]", self._set_source_function, lambda a: smu.source_function),
                (":SOURce[1]:VOLTage:MODE", self._set_mode, lambda a: self.source_mode),
                (
                    ":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
                    lambda a: smu.set_source(arg_float(a[0], -210.0, 210.0, 0.0)),
                    lambda a: num(smu.source_V),
                ),
                (":SOURce[1]:VOLTage:RANGe", self._set_source_voltage_range, lambda a: num(smu.source_range_V)),
                (":SOURce[1]:VOLTage:RANGe:AUTO", *flag("source_autorange_V")),
                (":SOURce[1]:CURRent:MODE", self._set_current_mode, lambda a: self.current_source_mode),
                (
                    ":SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]",
                    lambda a: smu.set_source_current(arg_float(a[0], -1.05, 1.05, 0.0)),
                    lambda a: num(smu.source_I),
                ),
                (":SOURce[1]:CURRent:RANGe", self._set_source_current_range, lambda a: num(self.source_current_range_A)),
                (":SOURce[1]:CURRent:RANGe:AUTO", *flag("source_current_autorange")),
                (":SOURce[1]:LIST:VOLTage", lambda a: self._set_list(a, False), lambda a: ",".join(num(v) for v in smu.source_list_V), (1, 10_000)),
                (":SOURce[1]:LIST:VOLTage:APPend", lambda a: self._set_list(a, True), None, (1, 10_000)),
                (":SOURce[1]:LIST:VOLTage:POINts", None, lambda a: str(len(smu.source_list_V))),
                (":SOURce[1]:DELay", setter("source_delay_s", 0.0, 9999.999), lambda a: num(smu.source_delay_s)),
                (":SOURce[1]:DELay:AUTO", *flag("source_delay_auto")),
                (":SOURce[1]:CLEar:AUTO", *flag("auto_output_off")),
                (":SOURce[1]:CLEar[:IMMediate]", lambda a: smu.set_output(False), None, (0, 0)),
                # SENSe
                (":SENSe[1]:FUNCtion:CONCurrent", *flag("concurrent")),
                (":SENSe[1]:FUNCtion[:ON]", self._set_sense_function, self._sense_query, (1, 3)),
                (":SENSe[1]:FUNCtion[:ON]:ALL", lambda a: self.sense_on.update({"VOLT", "CURR", "RES"}), None, (0, 0)),
                (":SENSe[1]:FUNCtion:OFF", self._sense_off, None, (1, 3)),
                (":SENSe[1]:FUNCtion:OFF:ALL", lambda a: self.sense_on.clear(), None, (0, 0)),
                (":SENSe[1]:FUNCtion:STATe", None, lambda a: bool_text(self._sense_names(a)[0] in self.sense_on) if a else "0"),
                (
                    ":SENSe[1]:CURRent[:DC]:PROTection[:LEVel]",
                    lambda a: setattr(smu, "compliance_A", abs(arg_float(a[0], -1.05, 1.05))),
                    lambda a: num(smu.compliance_A),
                ),
                (":SENSe[1]:CURRent[:DC]:PROTection:TRIPped", None, lambda a: bool_text(smu.source_function == "VOLT" and smu.tripped)),
                (":SENSe[1]:CURRent[:DC]:RANGe[:UPPer]", self._set_current_range, lambda a: num(smu.current_range_A)),
                (
                    ":SENSe[1]:CURRent[:DC]:RANGe:AUTO",
                    lambda a: setattr(smu, "current_autorange", arg_bool(a[0])),
                    lambda a: bool_text(smu.current_autorange),
                ),
                (":SENSe[1]:CURRent[:DC]:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc)),
                (
                    ":SENSe[1]:VOLTage[:DC]:PROTection[:LEVel]",
                    lambda a: setattr(smu, "voltage_limit_V", abs(arg_float(a[0], -210.0, 210.0))),
                    lambda a: num(smu.voltage_limit_V),
                ),
                (":SENSe[1]:VOLTage[:DC]:PROTection:TRIPped", None, lambda a: bool_text(smu.source_function == "CURR" and smu.tripped)),
                (":SENSe[1]:VOLTage[:DC]:RANGe[:UPPer]", self._set_voltage_sense_range, lambda a: num(self.voltage_sense_range_V)),
                (":SENSe[1]:VOLTage[:DC]:RANGe:AUTO", *flag("voltage_sense_autorange")),
                (":SENSe[1]:VOLTage[:DC]:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc)),
                (":SENSe[1]:RESistance:MODE", *choice("resistance_mode", ("MANual", "AUTO"))),
                (":SENSe[1]:RESistance:RANGe[:UPPer]", lambda a: setattr(self, "resistance_range_ohm", arg_float(a[0], 0.0, 2.1e8)), lambda a: num(self.resistance_range_ohm)),
                (":SENSe[1]:RESistance:RANGe:AUTO", *flag("resistance_autorange")),
                (":SENSe[1]:RESistance:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc)),
                (":SENSe[1]:AVERage[:STATe]", *flag("filter_on")),
                (":SENSe[1]:AVERage:TCONtrol", *choice("filter_type", ("REPeat", "MOVing"))),
                (":SENSe[1]:AVERage:COUNt", lambda a: setattr(self, "filter_count", arg_int(a[0], 1, 100)), lambda a: str(self.filter_count)),
                # FORMat
                (":FORMat:ELEMents[:SENSe[1]]", self._set_elements, lambda a: ",".join(self.elements), (1, 5)),
                (":FORMat[:DATA]", lambda a: arg_choice(a[0], ("ASCii",)), lambda a: "ASC"),
                # OUTPut
                (":OUTPut[1][:STATe]", lambda a: smu.set_output(arg_bool(a[0])), lambda a: bool_text(smu.output_on)),
                (":OUTPut[1]:SMODe", self._set_off_mode, lambda a: smu.off_mode),
                # measuring and triggering
                (":READ", None, self._read),
                (":FETCh", None, self._fetch),
                (":MEASure", None, self._measure(None)),
                (":MEASure:CURRent[:DC]", None, self._measure("CURR")),
                (":MEASure:VOLTage[:DC]", None, self._measure("VOLT")),
                (":MEASure:RESistance", None, self._measure("RES")),
                (":INITiate[:IMMediate]", self._init, None, (0, 0)),
                (":ABORt", lambda a: setattr(self, "bus_pending", False), None, (0, 0)),
                (":TRIGger:COUNt", self._set_trigger_count, lambda a: str(self.trigger_count)),
                (":TRIGger:DELay", lambda a: setattr(self, "trigger_delay_s", arg_float(a[0], 0, 999.9999)), lambda a: num(self.trigger_delay_s)),
                (":TRIGger:CLEar", lambda a: None, None, (0, 0)),
                (":TRIGger:SOURce", *choice("trigger_source", ("IMMediate", "TLINk"))),
                (":TRIGger:OUTPut", lambda a: setattr(self, "trigger_output", ",".join(arg_choice(x, ("SOURce", "DELay", "SENSe", "NONE")) for x in a)), lambda a: self.trigger_output, (1, 3)),
                (":TRIGger:ILINe", *line("TRIG:ILIN")),
                (":TRIGger:OLINe", *line("TRIG:OLIN")),
                (":ARM:COUNt", self._set_arm_count, lambda a: str(self.arm_count)),
                (":ARM:SOURce", *choice("arm_source", ("IMMediate", "TIMer", "BUS", "TLINk", "NSTest", "PSTest", "BSTest", "MANual"))),
                (":ARM:TIMer", lambda a: setattr(self, "arm_timer_s", arg_float(a[0], 0.001, 99999.99)), lambda a: num(self.arm_timer_s)),
                (":ARM:OUTPut", lambda a: setattr(self, "arm_output", ",".join(arg_choice(x, ("TENTer", "TEXit", "NONE")) for x in a)), lambda a: self.arm_output, (1, 2)),
                (":ARM:ILINe", *line("ARM:ILIN")),
                (":ARM:OLINe", *line("ARM:OLIN")),
                # TRACe and CALCulate3 (buffer statistics)
                (":TRACe:CLEar", self._trace_clear, None, (0, 0)),
                (":TRACe:POINts", self._set_trace_points, lambda a: str(self.trace_points)),
                (":TRACe:POINts:ACTual", None, lambda a: str(len(smu.buffer))),
                (":TRACe:FEED", self._set_trace_feed, lambda a: self.trace_feed),
                (":TRACe:FEED:CONTrol", self._set_trace_control, lambda a: self.trace_control),
                (":TRACe:DATA", None, self._trace_data),
                (":CALCulate3:FORMat", *choice("calc3_format", ("MEAN", "SDEViation", "MAXimum", "MINimum", "PKPK"))),
                (":CALCulate3:DATA", None, self._calc3_data),
            ]
        )
