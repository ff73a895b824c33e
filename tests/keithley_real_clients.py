"""Third-party Keithley clients (PyMeasure, QCoDeS) against the emulators: a table of public calls
per driver, run over pyvisa-py on loopback, and a count of the calls that work.

A call *works* when it returns (or sets) without raising and leaves the emulator's error queue
empty (read from the emulator itself, not through the client). Every call's queue is emptied
before the next one, so one failure does not spill into the next call's verdict.

Run as a script to print the count per driver (the measurement reported for issue 19):

    .venv/bin/python tests/keithley_real_clients.py

tests/emulators/test_keithley_real_clients.py runs the same tables and asserts every call works,
plus the values they return (Ohm's law on the emulator's resistor, sweep levels, statistics).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from insitem.drivers.clock import VirtualClock
from insitem.simulators.emulators import LineServer
from insitem.simulators.emulators.keithley2400 import Keithley2400Emulator
from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
from insitem.simulators.emulators.smu import ResistorLoad

LOAD_OHM = 10e3
Call = tuple[str, Callable[[Any], Any]]


@dataclass
class Outcome:
    name: str
    ok: bool
    value: Any = None
    detail: str = ""


class Rig:
    """One emulator on a free loopback port (raw TCP socket, as pyvisa-py TCPIP SOCKET reaches it)."""

    def __init__(self, model: str) -> None:
        self.clock = VirtualClock()
        self.load = ResistorLoad(LOAD_OHM)
        maker = {"2400": Keithley2400Emulator, "2450": Keithley2450Emulator}[model]
        self.emulator = maker(self.load, self.clock, seed=1)
        self.server = LineServer(self.emulator).start()
        self.resource = self.server.resource_string

    def drain(self) -> list[tuple[int, str]]:
        """Empty the emulator's error queue and return what was in it."""
        errs = list(self.emulator.parser.errors)
        self.emulator.parser.errors.clear()
        return errs

    def stop(self) -> None:
        self.server.stop()


def run_calls(calls: list[Call], inst: Any, rig: Rig) -> list[Outcome]:
    out = []
    rig.drain()
    for name, fn in calls:
        try:
            value = fn(inst)
            inst.ask("*OPC?")  # a round trip on the client's own connection: every write is processed
        except Exception as exc:  # a client call failing is what is counted
            with contextlib.suppress(Exception):
                inst.ask("*OPC?")
            rig.drain()
            out.append(Outcome(name, False, None, f"{type(exc).__name__}: {exc}"[:160]))
            continue
        errs = rig.drain()
        out.append(Outcome(name, not errs, value, "; ".join(f"{c} {m}" for c, m in errs)[:160]))
    return out


# ---------------------------------------------------------------------------------------------
# PyMeasure


def _pm_buffer(p: Any, n: int = 5) -> Any:
    p.config_buffer(n)
    p.start_buffer()
    p.wait_for_buffer(timeout=20, interval=0.005)
    return p.buffer_data


PYMEASURE_2400: list[Call] = [
    ("reset", lambda p: p.reset()),
    ("clear", lambda p: p.clear()),
    ("id", lambda p: p.id),
    ("reset_data_format", lambda p: p.reset_data_format()),
    ("source_mode=voltage", lambda p: setattr(p, "source_mode", "voltage")),
    ("source_mode", lambda p: p.source_mode),
    ("source_voltage_range=20", lambda p: setattr(p, "source_voltage_range", 20)),
    ("source_voltage_range", lambda p: p.source_voltage_range),
    ("source_voltage_range_auto_enabled=True", lambda p: setattr(p, "source_voltage_range_auto_enabled", True)),
    ("compliance_current=1e-3", lambda p: setattr(p, "compliance_current", 1e-3)),
    ("compliance_current", lambda p: p.compliance_current),
    ("measure_current()", lambda p: p.measure_current(nplc=1, current=1e-3, auto_range=True)),
    ("current_range=1e-3", lambda p: setattr(p, "current_range", 1e-3)),
    ("current_range", lambda p: p.current_range),
    ("current_range_auto_enabled=True", lambda p: setattr(p, "current_range_auto_enabled", True)),
    ("current_nplc=1", lambda p: setattr(p, "current_nplc", 1)),
    ("current_nplc", lambda p: p.current_nplc),
    ("source_voltage=0.5", lambda p: setattr(p, "source_voltage", 0.5)),
    ("source_voltage", lambda p: p.source_voltage),
    ("enable_source()", lambda p: p.enable_source()),
    ("source_enabled", lambda p: p.source_enabled),
    ("current", lambda p: p.current),
    ("voltage", lambda p: p.voltage),
    ("resistance", lambda p: p.resistance),
    ("measure_all()", lambda p: p.measure_all()),
    ("ramp_to_voltage(0.2)", lambda p: p.ramp_to_voltage(0.2, steps=3, pause=0)),
    ("config_buffer+wait_for_buffer+buffer_data", lambda p: _pm_buffer(p)),
    ("means", lambda p: p.means),
    ("maximums", lambda p: p.maximums),
    ("minimums", lambda p: p.minimums),
    ("standard_devs", lambda p: p.standard_devs),
    ("mean_current", lambda p: p.mean_current),
    ("reset_buffer()", lambda p: p.reset_buffer()),
    ("stop_buffer()", lambda p: p.stop_buffer()),
    ("disable_buffer()", lambda p: p.disable_buffer()),
    ("buffer_points", lambda p: p.buffer_points),
    ("filter_type=REP", lambda p: setattr(p, "filter_type", "REP")),
    ("filter_count=4", lambda p: setattr(p, "filter_count", 4)),
    ("filter_enabled=True", lambda p: setattr(p, "filter_enabled", True)),
    ("filter_enabled", lambda p: p.filter_enabled),
    ("filter_enabled=False", lambda p: setattr(p, "filter_enabled", False)),
    ("trigger_on_bus()", lambda p: p.trigger_on_bus()),
    ("trigger()", lambda p: p.trigger()),
    ("trigger_immediately()", lambda p: p.trigger_immediately()),
    ("set_trigger_counts(1,1)", lambda p: p.set_trigger_counts(1, 1)),
    ("trigger_count", lambda p: p.trigger_count),
    ("trigger_delay=0", lambda p: setattr(p, "trigger_delay", 0)),
    ("sample_continuously()", lambda p: p.sample_continuously()),
    ("source_delay=0.001", lambda p: setattr(p, "source_delay", 0.001)),
    ("source_delay_auto_enabled", lambda p: p.source_delay_auto_enabled),
    ("auto_zero_enabled", lambda p: p.auto_zero_enabled),
    ("output_off_state=HIMP", lambda p: setattr(p, "output_off_state", "disconnected")),
    ("output_off_state", lambda p: p.output_off_state),
    ("wires", lambda p: p.wires),
    ("display_enabled", lambda p: p.display_enabled),
    ("display_enabled=True", lambda p: setattr(p, "display_enabled", True)),
    ("beep(440,0.05)", lambda p: p.beep(440, 0.05)),
    ("line_frequency", lambda p: p.line_frequency),
    ("line_frequency_auto_enabled", lambda p: p.line_frequency_auto_enabled),
    ("front_terminals_enabled=False", lambda p: setattr(p, "front_terminals_enabled", False)),
    ("front_terminals_enabled", lambda p: p.front_terminals_enabled),
    ("front_terminals_enabled=True", lambda p: setattr(p, "front_terminals_enabled", True)),
    ("voltage_range=20", lambda p: setattr(p, "voltage_range", 20)),
    ("voltage_range_auto_enabled=True", lambda p: setattr(p, "voltage_range_auto_enabled", True)),
    ("voltage_nplc=1", lambda p: setattr(p, "voltage_nplc", 1)),
    ("resistance_mode_auto_enabled=False", lambda p: setattr(p, "resistance_mode_auto_enabled", False)),
    # current source, voltage measure
    ("source_mode=current", lambda p: setattr(p, "source_mode", "current")),
    ("compliance_voltage=2", lambda p: setattr(p, "compliance_voltage", 2)),
    ("compliance_voltage", lambda p: p.compliance_voltage),
    ("source_current_range=1e-3", lambda p: setattr(p, "source_current_range", 1e-3)),
    ("source_current_range_auto_enabled=True", lambda p: setattr(p, "source_current_range_auto_enabled", True)),
    ("source_current=1e-4", lambda p: setattr(p, "source_current", 1e-4)),
    ("source_current", lambda p: p.source_current),
    ("measure_voltage()", lambda p: p.measure_voltage(nplc=1, voltage=21, auto_range=True)),
    ("voltage (I source)", lambda p: p.voltage),
    ("ramp_to_current(0)", lambda p: p.ramp_to_current(0.0, steps=3, pause=0)),
    ("status", lambda p: p.status),
    ("complete", lambda p: p.complete),
    ("shutdown()", lambda p: p.shutdown()),
    ("check_errors()", lambda p: p.check_errors()),
]

PYMEASURE_2450: list[Call] = [
    ("reset", lambda p: p.reset()),
    ("clear", lambda p: p.clear()),
    ("id", lambda p: p.id),
    ("use_front_terminals()", lambda p: p.use_front_terminals()),
    ("apply_voltage()", lambda p: p.apply_voltage(voltage_range=20, compliance_current=1e-3)),
    ("source_mode", lambda p: p.source_mode),
    ("source_voltage_range", lambda p: p.source_voltage_range),
    ("compliance_current", lambda p: p.compliance_current),
    ("measure_current()", lambda p: p.measure_current(nplc=1, current=1e-3, auto_range=True)),
    ("current_range=1e-3", lambda p: setattr(p, "current_range", 1e-3)),
    ("current_range", lambda p: p.current_range),
    ("current_nplc=1", lambda p: setattr(p, "current_nplc", 1)),
    ("current_nplc", lambda p: p.current_nplc),
    ("source_voltage=0.5", lambda p: setattr(p, "source_voltage", 0.5)),
    ("source_voltage", lambda p: p.source_voltage),
    ("source_voltage_delay=0.001", lambda p: setattr(p, "source_voltage_delay", 0.001)),
    ("source_voltage_delay_auto", lambda p: p.source_voltage_delay_auto),
    ("buffer_points=100", lambda p: setattr(p, "buffer_points", 100)),
    ("buffer_points", lambda p: p.buffer_points),
    ("enable_source()", lambda p: p.enable_source()),
    ("source_enabled", lambda p: p.source_enabled),
    ("current", lambda p: p.current),
    ("ramp_to_voltage(0.2)", lambda p: p.ramp_to_voltage(0.2, steps=3, pause=0)),
    ("current_filter_type=REP", lambda p: setattr(p, "current_filter_type", "REP")),
    ("current_filter_count=4", lambda p: setattr(p, "current_filter_count", 4)),
    ("current_filter_state=ON", lambda p: setattr(p, "current_filter_state", "ON")),
    ("current_filter_state", lambda p: p.current_filter_state),
    ("current_filter_state=OFF", lambda p: setattr(p, "current_filter_state", "OFF")),
    ("voltage_output_off_state", lambda p: p.voltage_output_off_state),
    ("means", lambda p: p.means),
    ("maximums", lambda p: p.maximums),
    ("minimums", lambda p: p.minimums),
    ("standard_devs", lambda p: p.standard_devs),
    ("mean_current", lambda p: p.mean_current),
    ("trigger()", lambda p: p.trigger()),
    ("stop_buffer()", lambda p: p.stop_buffer()),
    ("beep(440,0.05)", lambda p: p.beep(440, 0.05)),
    ("use_rear_terminals()", lambda p: p.use_rear_terminals()),
    ("use_front_terminals() again", lambda p: p.use_front_terminals()),
    ("wires", lambda p: p.wires),
    ("measure_resistance()", lambda p: p.measure_resistance(nplc=1, resistance=2e4, auto_range=True)),
    ("resistance", lambda p: p.resistance),
    ("measure_voltage()", lambda p: p.measure_voltage(nplc=1, voltage=21, auto_range=True)),
    ("voltage", lambda p: p.voltage),
    ("voltage_range=20", lambda p: setattr(p, "voltage_range", 20)),
    ("voltage_nplc=1", lambda p: setattr(p, "voltage_nplc", 1)),
    # current source, voltage measure
    ("disable_source()", lambda p: p.disable_source()),
    ("apply_current()", lambda p: p.apply_current(current_range=1e-3, compliance_voltage=2)),
    ("compliance_voltage", lambda p: p.compliance_voltage),
    ("source_current=1e-4", lambda p: setattr(p, "source_current", 1e-4)),
    ("source_current", lambda p: p.source_current),
    ("source_current_range", lambda p: p.source_current_range),
    ("source_current_delay_auto", lambda p: p.source_current_delay_auto),
    ("current_output_off_state", lambda p: p.current_output_off_state),
    ("enable_source() (I)", lambda p: p.enable_source()),
    ("voltage (I source)", lambda p: p.voltage),
    ("ramp_to_current(0)", lambda p: p.ramp_to_current(0.0, steps=3, pause=0)),
    ("status", lambda p: p.status),
    ("complete", lambda p: p.complete),
    ("shutdown()", lambda p: p.shutdown()),
    ("check_errors()", lambda p: p.check_errors()),
]


# ---------------------------------------------------------------------------------------------
# QCoDeS

QCODES_2400: list[Call] = [
    ("reset", lambda q: q.reset()),
    ("mode(VOLT)", lambda q: q.mode("VOLT")),
    ("mode()", lambda q: q.mode()),
    ("sense()", lambda q: q.sense()),
    ("compliancei(1e-3)", lambda q: q.compliancei(1e-3)),
    ("compliancei()", lambda q: q.compliancei()),
    ("rangev(20)", lambda q: q.rangev(20)),
    ("rangev()", lambda q: q.rangev()),
    ("rangei()", lambda q: q.rangei()),
    ("nplci(1)", lambda q: q.nplci(1)),
    ("nplci()", lambda q: q.nplci()),
    ("volt(0.5)", lambda q: q.volt(0.5)),
    ("output(1)", lambda q: q.output(1)),
    ("output()", lambda q: q.output()),
    ("curr()", lambda q: q.curr()),
    ("volt()", lambda q: q.volt()),
    ("resistance()", lambda q: q.resistance()),
    ("output(0)", lambda q: q.output(0)),
    ("mode(CURR)", lambda q: q.mode("CURR")),
    ("compliancev(2)", lambda q: q.compliancev(2)),
    ("compliancev()", lambda q: q.compliancev()),
    ("rangei(1e-3)", lambda q: q.rangei(1e-3)),
    ("nplcv(1)", lambda q: q.nplcv(1)),
    ("nplcv()", lambda q: q.nplcv()),
    ("curr(1e-4)", lambda q: q.curr(1e-4)),
    ("output(1) (I)", lambda q: q.output(1)),
    ("volt() (I source)", lambda q: q.volt()),
    ("curr() (I source)", lambda q: q.curr()),
    ("output(0) again", lambda q: q.output(0)),
]


def _q_sweep(q: Any) -> Any:
    q.source.sweep_setup(0.0, 0.4, 5)
    return q.sense.sweep()


QCODES_2450: list[Call] = [
    ("reset", lambda q: q.reset()),
    ("terminals(front)", lambda q: q.terminals("front")),
    ("terminals()", lambda q: q.terminals()),
    ("line_frequency()", lambda q: q.line_frequency()),
    ("source_function(voltage)", lambda q: q.source_function("voltage")),
    ("source_function()", lambda q: q.source_function()),
    ("sense_function(current)", lambda q: q.sense_function("current")),
    ("sense_function()", lambda q: q.sense_function()),
    ("source.range(2)", lambda q: q.source.range(2)),
    ("source.range()", lambda q: q.source.range()),
    ("source.auto_range(True)", lambda q: q.source.auto_range(True)),
    ("source.limit(1e-3)", lambda q: q.source.limit(1e-3)),
    ("source.limit()", lambda q: q.source.limit()),
    ("source.delay(0)", lambda q: q.source.delay(0)),
    ("source.auto_delay()", lambda q: q.source.auto_delay()),
    ("source.read_back_enabled()", lambda q: q.source.read_back_enabled()),
    ("source.voltage(0.5)", lambda q: q.source.voltage(0.5)),
    ("source.voltage()", lambda q: q.source.voltage()),
    ("sense.range(1e-3)", lambda q: q.sense.range(1e-3)),
    ("sense.auto_range(True)", lambda q: q.sense.auto_range(True)),
    ("sense.nplc(1)", lambda q: q.sense.nplc(1)),
    ("sense.nplc()", lambda q: q.sense.nplc()),
    ("sense.four_wire_measurement()", lambda q: q.sense.four_wire_measurement()),
    ("sense.auto_zero_enabled()", lambda q: q.sense.auto_zero_enabled()),
    ("sense.count(1)", lambda q: q.sense.count(1)),
    ("sense.count()", lambda q: q.sense.count()),
    ("output_enabled(True)", lambda q: q.output_enabled(True)),
    ("output_enabled()", lambda q: q.output_enabled()),
    ("sense.current()", lambda q: q.sense.current()),
    ("source.limit_tripped()", lambda q: q.source.limit_tripped()),
    ("sense.sweep()", _q_sweep),
    ("buffer.size()", lambda q: q.buffer("defbuffer1").size()),
    ("buffer.number_of_readings()", lambda q: q.buffer("defbuffer1").number_of_readings()),
    ("sense.current() again", lambda q: q.sense.current()),
    ("buffer.get_last_reading()", lambda q: q.buffer("defbuffer1").get_last_reading()),
    ("buffer.get_data(1,1)", lambda q: q.buffer("defbuffer1").get_data(1, 1)),
    ("buffer.clear_buffer()", lambda q: q.buffer("defbuffer1").clear_buffer()),
    ("buffer(mybuf, 100, STANdard)", lambda q: q.buffer("mybuf", 100, "STANdard")),
    ("buffer(mybuf).delete()", lambda q: q.buffer("mybuf").delete()),
    ("abort()", lambda q: q.abort()),
    ("clear_event_register()", lambda q: q.clear_event_register()),
    ("clear_event_log()", lambda q: q.clear_event_log()),
    # current source, voltage measure
    ("output_enabled(False)", lambda q: q.output_enabled(False)),
    ("source_function(current)", lambda q: q.source_function("current")),
    ("sense_function(voltage)", lambda q: q.sense_function("voltage")),
    ("source.limit(2) (VLIM)", lambda q: q.source.limit(2)),
    ("source.current(1e-4)", lambda q: q.source.current(1e-4)),
    ("output_enabled(True) (I)", lambda q: q.output_enabled(True)),
    ("sense.voltage()", lambda q: q.sense.voltage()),
    ("output_enabled(False) again", lambda q: q.output_enabled(False)),
]


# ---------------------------------------------------------------------------------------------
# Opening the clients


@contextlib.contextmanager
def open_client(client: str, model: str, rig: Rig, timeout_s: float = 20.0) -> Iterator[Any]:
    """A PyMeasure or QCoDeS driver for `model` connected over pyvisa-py to the rig."""
    if client == "pymeasure":
        from pymeasure.instruments.keithley import Keithley2400 as P2400
        from pymeasure.instruments.keithley import Keithley2450 as P2450

        cls = {"2400": P2400, "2450": P2450}[model]
        inst = cls(rig.resource, visa_library="@py", read_termination="\n", write_termination="\n", timeout=int(timeout_s * 1000))
        try:
            yield inst
        finally:
            inst.adapter.close()
    else:
        from qcodes.instrument_drivers.Keithley import Keithley2400 as Q2400
        from qcodes.instrument_drivers.Keithley import Keithley2450 as Q2450

        qcls: Any = {"2400": Q2400, "2450": Q2450}[model]
        inst = qcls(f"k{model}_{id(rig)}", rig.resource, visalib="@py", timeout=timeout_s)
        try:
            yield inst
        finally:
            inst.close()


#: calls that cannot work on the real instrument either, with the reason (the tests expect them to fail)
CLIENT_LIMITS: dict[tuple[str, str], dict[str, str]] = {
    ("pymeasure", "2450"): {
        "mean_current": "PyMeasure reads means[1], but the 2450's :TRAC:STAT:AVER? answers one value (the mean "
        "of the buffer's readings), so the client cannot index it",
    },
}

TABLES: dict[tuple[str, str], list[Call]] = {
    ("pymeasure", "2400"): PYMEASURE_2400,
    ("pymeasure", "2450"): PYMEASURE_2450,
    ("qcodes", "2400"): QCODES_2400,
    ("qcodes", "2450"): QCODES_2450,
}


def measure(client: str, model: str, timeout_s: float = 20.0) -> list[Outcome]:
    rig = Rig(model)
    try:
        with open_client(client, model, rig, timeout_s) as inst:
            return run_calls(TABLES[client, model], inst, rig)
    finally:
        rig.stop()


def main() -> int:
    logging.disable(logging.CRITICAL)  # the clients log every instrument error they read
    warnings.simplefilter("ignore")  # deprecation notices of the clients' own API
    total_ok = total = 0
    for client, model in TABLES:
        outcomes = measure(client, model, timeout_s=2.0)
        ok = sum(o.ok for o in outcomes)
        total_ok += ok
        total += len(outcomes)
        print(f"{client} Keithley{model}: {ok}/{len(outcomes)} calls work", flush=True)
        for o in outcomes:
            if not o.ok:
                print(f"    FAIL {o.name}: {o.detail}", flush=True)
    print(f"all: {total_ok}/{total}")
    return 0 if total_ok == total else 1


if __name__ == "__main__":
    sys.exit(main())
