"""Emulated Keithley 2400 SourceMeter: the 2400's own SCPI (physics.md §4.2, 2400 User's Manual
ch. 18) in front of an `SmuModel`.

What is emulated: voltage source with current compliance (`:SENS:CURR:PROT`), source and
measure ranges, NPLC, `:FORM:ELEM` (elements always returned in the fixed order
VOLT,CURR,RES,TIME,STAT), `:READ?` / `:INIT` / `:FETC?` / `:MEAS:CURR?` with trigger count,
fixed and list source modes (`:SOUR:LIST:VOLT` <= 100 values per command, `:APP` up to 2500),
the 2500-reading trace buffer (`:TRAC:...`), output on/off and `:OUTP:SMOD`, the error queue
(`:SYST:ERR?`), `:SYST:TIME:RES`. Anything else (including 2450-only headers such as
`:SOUR:VOLT:ILIM`) queues -113 Undefined header.

Status word (the STAT element), 2400 manual `:FORMat:ELEMents` description: bit 0 OFLO
(measurement overflow), bit 3 compliance, bit 12 I-measure, bit 14 V-source.

Simplifications: the emulated SMU sources voltage only (`:SOUR:FUNC CURR` queues -221 Settings
conflict); RES is always 9.91e37 (resistance not measured); `:SOUR:VOLT:MODE SWE` staircases are
not emulated (-221; use LIST); `:MEAS:CURR?` switches the output on and reads, without the
auto-range reconfiguration the real instrument does.
"""

from __future__ import annotations

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
from insitem.simulators.emulators.smu import K2400_SPEC, SmuLoad, SmuModel, SmuReading

ELEMENTS_2400 = ("VOLTage", "CURRent", "RESistance", "TIME", "STATus")
OFF_MODES = ("HIMPedance", "NORMal", "ZERO", "GUARd")
STATUS_OFLO = 1 << 0
STATUS_COMPLIANCE = 1 << 3
STATUS_I_MEAS = 1 << 12
STATUS_V_SOUR = 1 << 14
MAX_LIST_PER_COMMAND = 100
MAX_POINTS = 2500


def float_setter(obj: Any, attr: str, lo: float, hi: float) -> Callable[[list[str]], None]:
    """A SCPI set handler that range-checks its number (-222 outside [lo, hi]) into `obj.attr`."""

    def handler(args: list[str]) -> None:
        setattr(obj, attr, arg_float(args[0], lo, hi))

    return handler


class Keithley2400Emulator(ScpiEmulator):
    """SCPI front end of a 2400 around an `SmuModel`."""

    identity = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4096331,C32   Oct  4 2010 14:20:11/A02  /S/K"

    def __init__(self, load: SmuLoad, clock: Clock, seed: int = 0, smu: SmuModel | None = None) -> None:
        self.smu = smu or SmuModel(K2400_SPEC, load, clock, seed=seed)
        self.clock = clock
        self._defaults()
        super().__init__()

    def _defaults(self) -> None:
        self.elements = ["VOLT", "CURR", "RES", "TIME", "STAT"]
        self.trigger_count = 1
        self.arm_count = 1
        self.source_mode = "FIX"
        self.trace_points = 100
        self.trace_feed = "SENS"
        self.trace_control = "NEV"
        self.time_base_s = self.clock.now()
        self.last_readings: list[SmuReading] = []
        self.concurrent = True

    def reset(self) -> None:
        self.smu.reset()
        self.smu.compliance_A = 105e-6
        self.smu.off_mode = "NORM"
        self._defaults()

    # -- formatting ------------------------------------------------------------------------------
    def _status(self, r: SmuReading) -> int:
        word = STATUS_I_MEAS | STATUS_V_SOUR
        if r.overflow:
            word |= STATUS_OFLO
        if r.compliance_tripped:
            word |= STATUS_COMPLIANCE
        return word

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
                    values.append(format_nr3(SCPI_NAN))
                elif el == "TIME":
                    values.append(format_nr3(r.t_s - base))
                else:
                    values.append(format_nr3(float(self._status(r))))
        return ",".join(values)

    # -- actions ----------------------------------------------------------------------------------
    def _acquire(self) -> list[SmuReading]:
        n = self.trigger_count * self.arm_count
        if self.source_mode == "LIST":
            pts = self.smu.source_list_V
            if not pts:
                raise ScpiError(-221, "source list is empty")
            levels = [pts[i % len(pts)] for i in range(n)]
            readings = self.smu.run_list(levels, store=False)
        else:
            readings = [self.smu.measure(host_point=True) for _ in range(n)]
        if self.trace_control == "NEXT":
            room = self.trace_points - len(self.smu.buffer)
            self.smu.buffer.extend(readings[: max(room, 0)])
            if len(self.smu.buffer) >= self.trace_points:
                self.trace_control = "NEV"
        self.last_readings = readings
        return readings

    def _read(self, args: list[str]) -> str:
        if args:
            raise ScpiError(-108)
        return self.format_readings(self._acquire())

    def _fetch(self, args: list[str]) -> str:
        if not self.last_readings:
            raise ScpiError(-200, "no readings to fetch")
        return self.format_readings(self.last_readings)

    def _measure(self, args: list[str]) -> str:
        self.smu.set_output(True)
        return self.format_readings(self._acquire())

    def _set_list(self, args: list[str], append: bool) -> None:
        if len(args) > MAX_LIST_PER_COMMAND:
            raise ScpiError(-223, f"at most {MAX_LIST_PER_COMMAND} values per command")
        values = [arg_float(a, -210.0, 210.0) for a in args]
        new = (self.smu.source_list_V if append else []) + values
        if len(new) > MAX_POINTS:
            raise ScpiError(-223, f"source list holds at most {MAX_POINTS} points")
        self.smu.source_list_V = new

    def _set_source_function(self, args: list[str]) -> None:
        if arg_choice(args[0], ("VOLTage", "CURRent", "MEMory")) != "VOLT":
            raise ScpiError(-221, "the emulated SMU sources voltage only")

    def _set_mode(self, args: list[str]) -> None:
        mode = arg_choice(args[0], ("FIXed", "LIST", "SWEep"))
        if mode == "SWE":
            raise ScpiError(-221, "staircase sweep mode not emulated; use LIST")
        self.source_mode = mode

    def _set_sense_function(self, args: list[str]) -> None:
        for a in args:
            name = unquote(a).upper().split(":")[0]
            if name not in ("CURR", "CURRENT", "VOLT", "VOLTAGE"):
                raise ScpiError(-224, f"sense function {a} not emulated")

    def _set_elements(self, args: list[str]) -> None:
        self.elements = [arg_choice(a, ELEMENTS_2400) for a in args]

    def _set_trigger_count(self, args: list[str]) -> None:
        n = arg_int(args[0], 1, MAX_POINTS)
        if n * self.arm_count > MAX_POINTS:
            raise ScpiError(-222, "arm count x trigger count > 2500")
        self.trigger_count = n

    def _set_current_range(self, args: list[str]) -> None:
        self.smu.current_autorange = False
        self.smu.current_range_A = self.smu.range_for(arg_float(args[0], -1.05, 1.05))

    def _set_trace_control(self, args: list[str]) -> None:
        self.trace_control = arg_choice(args[0], ("NEXT", "NEVer"))

    def _set_trace_feed(self, args: list[str]) -> None:
        self.trace_feed = arg_choice(args[0], ("SENSe", "CALCulate", "CALCulate1", "CALCulate2"))

    def _set_trace_points(self, args: list[str]) -> None:
        self.trace_points = arg_int(args[0], 1, MAX_POINTS)

    def _init(self, args: list[str]) -> None:
        self._acquire()

    def _trace_data(self, args: list[str]) -> str:
        # :TRAC:TST:FORM ABS (the default): "each timestamp is referenced to the first reading
        # stored in the buffer" (2400 manual, TRACe subsystem), so the first reads 0
        base = self.smu.buffer[0].t_s if self.smu.buffer else None
        return self.format_readings(self.smu.buffer, base)

    def _errors_all(self, args: list[str]) -> str:
        out = []
        while True:
            code, msg = self.parser.pop_error()
            out.append(format_error(code, msg))
            if code == 0:
                return ",".join(out)

    def _set_off_mode(self, args: list[str]) -> None:
        self.smu.off_mode = arg_choice(args[0], OFF_MODES)

    # -- command tree -------------------------------------------------------------------------------
    def _build(self, p: ScpiParser) -> None:
        smu = self.smu
        num = format_nr3

        def setter(attr: str, lo: float, hi: float) -> Callable[[list[str]], None]:
            return float_setter(smu, attr, lo, hi)

        p.add_many(
            [
                # SYSTem / STATus
                (":SYSTem:ERRor[:NEXT]", None, lambda a: self.error_reply()),
                (":SYSTem:ERRor:ALL", None, self._errors_all),
                (":SYSTem:ERRor:COUNt", None, lambda a: str(len(self.parser.errors))),
                (":SYSTem:CLEar", lambda a: self.parser.errors.clear(), None, (0, 0)),
                (":SYSTem:TIME:RESet", lambda a: setattr(self, "time_base_s", self.clock.now()), None, (0, 0)),
                (":SYSTem:AZERo[:STATe]", lambda a: arg_choice(a[0], ("ON", "OFF", "ONCE", "1", "0")), lambda a: "1"),
                (":SYSTem:BEEPer:STATe", lambda a: arg_bool(a[0]), lambda a: "1"),
                (":SYSTem:RSENse", lambda a: arg_bool(a[0]), lambda a: "0"),
                (":STATus:PRESet", lambda a: None, None, (0, 0)),
                (":STATus:QUEue[:NEXT]", None, lambda a: self.error_reply()),
                # SOURce
                (":SOURce[1]:FUNCtion[:MODE]", self._set_source_function, lambda a: "VOLT"),
                (":SOURce[1]:VOLTage:MODE", self._set_mode, lambda a: self.source_mode),
                (
                    ":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
                    lambda a: smu.set_source(arg_float(a[0], -210.0, 210.0, 0.0)),
                    lambda a: num(smu.source_V),
                ),
                (":SOURce[1]:VOLTage:RANGe", setter("source_range_V", -210.0, 210.0), lambda a: num(smu.source_range_V)),
                (":SOURce[1]:VOLTage:RANGe:AUTO", lambda a: arg_bool(a[0]), lambda a: "0"),
                (":SOURce[1]:LIST:VOLTage", lambda a: self._set_list(a, False), lambda a: ",".join(num(v) for v in smu.source_list_V), (1, 10_000)),
                (":SOURce[1]:LIST:VOLTage:APPend", lambda a: self._set_list(a, True), None, (1, 10_000)),
                (":SOURce[1]:LIST:VOLTage:POINts", None, lambda a: str(len(smu.source_list_V))),
                (":SOURce[1]:DELay", setter("source_delay_s", 0.0, 9999.999), lambda a: num(smu.source_delay_s)),
                (":SOURce[1]:DELay:AUTO", lambda a: arg_bool(a[0]), lambda a: "0"),
                (":SOURce[1]:CLEar:AUTO", lambda a: arg_bool(a[0]), lambda a: "0"),
                (":SOURce[1]:CLEar[:IMMediate]", lambda a: smu.set_output(False), None, (0, 0)),
                # SENSe
                (":SENSe[1]:FUNCtion:CONCurrent", lambda a: setattr(self, "concurrent", arg_bool(a[0])), lambda a: "1" if self.concurrent else "0"),
                (":SENSe[1]:FUNCtion[:ON]", self._set_sense_function, lambda a: '"CURR:DC"', (1, 3)),
                (
                    ":SENSe[1]:CURRent[:DC]:PROTection[:LEVel]",
                    lambda a: setattr(smu, "compliance_A", abs(arg_float(a[0], -1.05, 1.05))),
                    lambda a: num(smu.compliance_A),
                ),
                (":SENSe[1]:CURRent[:DC]:PROTection:TRIPped", None, lambda a: "1" if smu.tripped else "0"),
                (":SENSe[1]:CURRent[:DC]:RANGe[:UPPer]", self._set_current_range, lambda a: num(smu.current_range_A)),
                (
                    ":SENSe[1]:CURRent[:DC]:RANGe:AUTO",
                    lambda a: setattr(smu, "current_autorange", arg_bool(a[0])),
                    lambda a: "1" if smu.current_autorange else "0",
                ),
                (":SENSe[1]:CURRent[:DC]:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc)),
                (":SENSe[1]:VOLTage[:DC]:NPLCycles", setter("nplc", 0.01, 10.0), lambda a: num(smu.nplc)),
                # FORMat
                (":FORMat:ELEMents[:SENSe[1]]", self._set_elements, lambda a: ",".join(self.elements), (1, 5)),
                (":FORMat[:DATA]", lambda a: arg_choice(a[0], ("ASCii",)), lambda a: "ASC"),
                # OUTPut
                (":OUTPut[1][:STATe]", lambda a: smu.set_output(arg_bool(a[0])), lambda a: "1" if smu.output_on else "0"),
                (":OUTPut[1]:SMODe", self._set_off_mode, lambda a: smu.off_mode),
                # measuring and triggering
                (":READ", None, self._read),
                (":FETCh", None, self._fetch),
                (":MEASure[:CURRent[:DC]]", None, self._measure),
                (":INITiate[:IMMediate]", self._init, None, (0, 0)),
                (":ABORt", lambda a: None, None, (0, 0)),
                (":TRIGger:COUNt", self._set_trigger_count, lambda a: str(self.trigger_count)),
                (":TRIGger:DELay", lambda a: arg_float(a[0], 0, 999.9999), lambda a: num(0.0)),
                (":TRIGger:CLEar", lambda a: None, None, (0, 0)),
                (":ARM:COUNt", lambda a: setattr(self, "arm_count", arg_int(a[0], 1, MAX_POINTS)), lambda a: str(self.arm_count)),
                (":ARM:SOURce", lambda a: arg_choice(a[0], ("IMMediate", "TIMer", "BUS", "TLINk", "NSTest", "PSTest", "BSTest", "MANual")), lambda a: "IMM"),
                # TRACe
                (":TRACe:CLEar", lambda a: smu.buffer.clear(), None, (0, 0)),
                (":TRACe:POINts", self._set_trace_points, lambda a: str(self.trace_points)),
                (":TRACe:POINts:ACTual", None, lambda a: str(len(smu.buffer))),
                (":TRACe:FEED", self._set_trace_feed, lambda a: self.trace_feed),
                (":TRACe:FEED:CONTrol", self._set_trace_control, lambda a: self.trace_control),
                (":TRACe:DATA", None, self._trace_data),
            ]
        )
