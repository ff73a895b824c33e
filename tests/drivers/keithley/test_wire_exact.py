"""Exact wire tests: the (command sent, reply) pairs of every driver action, transport mocked."""

from __future__ import annotations

import math
from typing import Any

import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import (
    CommunicationError,
    DeviceTimeoutError,
    InstrumentError,
    SafetyLimitError,
    WrongInstrumentError,
)
from insitem.drivers.interfaces import PotentiostatConfig
from insitem.drivers.keithley import Keithley2400, Keithley2450
from insitem.drivers.transport import Transport

IDN_2400 = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4096331,C32   Oct  4 2010 14:20:11/A02  /S/K"
IDN_2450 = "KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b"
OK = '0,"No error"'
CONFIG = PotentiostatConfig(compliance_A=1e-3, nplc=1.0, voltage_range_V=20.0, output_off_mode="HIMP")


class Script:
    """Replays an expected conversation; any other command fails the test."""

    def __init__(self, mocker: Any, steps: list[tuple[str, ...]]) -> None:
        self.steps = list(steps)
        self.transport = mocker.create_autospec(Transport, instance=True)
        self.transport.resource = "GPIB0::24::INSTR"
        self.transport.timeout_s = 2.0
        self.transport.write.side_effect = self._write
        self.transport.query.side_effect = self._query

    def _next(self, kind: str, line: str) -> tuple[str, ...]:
        assert self.steps, f"unexpected {kind} {line!r} after the script ended"
        step = self.steps.pop(0)
        assert (step[0], step[1]) == (kind, line), f"expected {step[:2]}, driver sent {(kind, line)}"
        return step

    def _write(self, line: str, **kw: Any) -> None:
        self._next("w", line)

    def _query(self, line: str, **kw: Any) -> str:
        step = self._next("q", line)
        reply = step[2]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def add(self, *steps: tuple[str, ...]) -> None:
        self.steps.extend(steps)

    def done(self) -> None:
        assert not self.steps, f"driver did not send {self.steps}"


def make(mocker: Any, model: str) -> tuple[Any, Script]:
    if model == "2400":
        script = Script(mocker, [("q", "*IDN?", IDN_2400)])
        drv = Keithley2400(script.transport, clock=VirtualClock())
    else:
        script = Script(mocker, [("q", "*IDN?", IDN_2450), ("q", "*LANG?", "SCPI")])
        drv = Keithley2450(script.transport, clock=VirtualClock())
    script.done()
    return drv, script


def test_2400_configure_sends_the_manual_commands_and_drains_errors(mocker: Any) -> None:
    drv, s = make(mocker, "2400")
    s.add(
        ("q", ":SYST:ERR?", OK),  # stale entries are drained (and logged) first
        ("w", ":SOUR:FUNC VOLT"),
        ("w", ":SOUR:VOLT:MODE FIX"),
        ("w", ":SOUR:VOLT:RANG 20"),
        ("w", ':SENS:FUNC "CURR"'),
        ("w", ":SENS:CURR:PROT 0.001"),
        ("w", ":SENS:CURR:RANG:AUTO ON"),
        ("w", ":SENS:CURR:NPLC 1"),
        ("w", ":FORM:ELEM VOLT,CURR,TIME,STAT"),
        ("w", ":OUTP:SMOD HIMP"),
        ("q", ":SYST:ERR?", OK),
    )
    drv.configure(CONFIG)
    s.done()
    assert drv.config == CONFIG


def test_2450_configure_uses_ilim_and_error_next(mocker: Any) -> None:
    drv, s = make(mocker, "2450")
    s.add(
        ("q", ":SYST:ERR:NEXT?", OK),
        ("w", ":SOUR:FUNC VOLT"),
        ("w", ":SOUR:VOLT:RANG 20"),
        ("w", ":SOUR:VOLT:ILIM 1e-07"),
        ("w", ':SENS:FUNC "CURR"'),
        ("w", ":SENS:CURR:RANG 1e-06"),
        ("w", ":SENS:CURR:NPLC 0.1"),
        ("w", ":OUTP:SMOD ZERO"),
        ("q", ":SYST:ERR:NEXT?", OK),
    )
    drv.configure(PotentiostatConfig(compliance_A=1e-7, nplc=0.1, current_range_A=1e-6, output_off_mode="ZERO"))
    s.done()


@pytest.mark.parametrize("model", ["2400", "2450"])
def test_configure_raises_every_queued_error(mocker: Any, model: str) -> None:
    drv, s = make(mocker, model)
    err = ":SYST:ERR?" if model == "2400" else ":SYST:ERR:NEXT?"
    s.add(("q", err, OK), *[("w", line) for line in drv.configure_lines(CONFIG)])
    s.add(("q", err, '-222,"Data out of range"'), ("q", err, '-113,"Undefined header;1;2024/01/01 10:00:00.000"'), ("q", err, OK))
    with pytest.raises(InstrumentError, match=r"-222 Data out of range; -113 Undefined header") as info:
        drv.configure(CONFIG)
    s.done()
    assert info.value.code == -222
    assert drv.config is None  # a failed configuration is not recorded


def test_2400_set_voltage_output_and_measure(mocker: Any) -> None:
    drv, s = make(mocker, "2400")
    s.add(("q", ":SYST:ERR?", OK), *[("w", line) for line in drv.configure_lines(CONFIG)], ("q", ":SYST:ERR?", OK))
    drv.configure(CONFIG)
    s.add(
        ("w", ":SOUR:VOLT 1.5"),
        ("w", ":OUTP ON"),
        ("q", ":READ?", "+1.500000E+00,+1.234000E-04,+2.500000E+00,+2.048000E+04"),
        ("q", ":READ?", "+1.500000E+00,+9.910000E+37,+9.910000E+37,+2.600000E+00,+2.048900E+04"),
        ("q", ":READ?", "+2.000000E-01,+1.000000E-03,+2.700000E+00,+2.048800E+04"),
        ("w", ":OUTP OFF"),
    )
    drv.set_voltage(1.5)
    drv.set_output(True)
    r = drv.measure()
    assert (r.voltage_V, r.current_A, r.t_s, r.compliance_tripped, r.source_V) == (1.5, 1.234e-4, 2.5, False, 1.5)
    r = drv.measure()  # five-element form with overflow -> NaN and compliance
    assert math.isnan(r.current_A) and r.compliance_tripped and r.t_s == 2.6
    r = drv.measure()  # status word bit 3 (8) = compliance
    assert r.compliance_tripped and r.current_A == 1e-3
    drv.set_output(False)
    s.done()


def test_2450_measure_is_one_round_trip_with_trip_query(mocker: Any) -> None:
    drv, s = make(mocker, "2450")
    s.add(
        ("q", ':READ? "defbuffer1",SOUR,READ,REL;:SOUR:VOLT:ILIM:TRIP?', "1.500000E+00,9.990000E-08,3.000000E-01;1"),
        ("q", ':READ? "defbuffer1",SOUR,READ,REL;:SOUR:VOLT:ILIM:TRIP?', "1.500000E+00,1.000000E-08,3.100000E-01;0"),
        ("q", ':READ? "defbuffer1",SOUR,READ,REL;:SOUR:VOLT:ILIM:TRIP?', "1.500000E+00,1.0"),
    )
    drv.clock.sleep_until(7.0)
    r = drv.measure()
    # REL counts from the buffer's entry 1, whose rig time is unknown until a reading arrives:
    # the first reading is placed at its query's round trip, later ones REL seconds after it
    assert r.compliance_tripped and r.current_A == 9.99e-8 and r.voltage_V == 1.5 and r.t_s == pytest.approx(7.0)
    r2 = drv.measure()
    assert not r2.compliance_tripped and r2.t_s == pytest.approx(7.01)
    with pytest.raises(CommunicationError, match="truncated"):
        drv.measure()
    s.done()


@pytest.mark.parametrize("model", ["2400", "2450"])
def test_reset_sequence(mocker: Any, model: str) -> None:
    drv, s = make(mocker, model)
    if model == "2400":
        s.add(("q", ":SYST:ERR?", OK), ("w", "*RST"), ("w", ":OUTP:SMOD HIMP"), ("w", "*CLS"), ("w", ":STAT:PRES"), ("w", ":SYST:TIME:RES"), ("q", ":SYST:ERR?", OK))
    else:
        s.add(("q", ":SYST:ERR:NEXT?", OK), ("w", "*RST"), ("w", ":OUTP:SMOD HIMP"), ("w", "*CLS"), ("w", ':TRAC:CLE "defbuffer1"'), ("q", ":SYST:ERR:NEXT?", OK))
    drv.reset()
    s.done()


def test_2400_list_sweep_chunks_of_100_into_trace_buffer(mocker: Any) -> None:
    drv, s = make(mocker, "2400")
    s.add(("q", ":SYST:ERR?", OK), *[("w", line) for line in drv.configure_lines(CONFIG)], ("q", ":SYST:ERR?", OK), ("w", ":OUTP ON"))
    drv.configure(CONFIG)
    drv.set_output(True)
    points = [round(0.01 * i, 2) for i in range(150)]
    first = ",".join(f"{p:.10g}" if p else "0" for p in points[:100])
    second = ",".join(f"{p:.10g}" for p in points[100:])
    data = ",".join(f"{p:+.6E},+1.000000E-06,{0.1 * i:+.6E},+2.048000E+04" for i, p in enumerate(points))
    s.add(
        ("w", ":SOUR:VOLT:MODE LIST"),
        ("w", ":SOUR:LIST:VOLT " + first),
        ("w", ":SOUR:LIST:VOLT:APP " + second),
        ("w", ":SOUR:DEL 0.08333333333"),
        ("w", ":TRIG:COUN 150"),
        ("w", ":TRAC:CLE"),
        ("w", ":TRAC:POIN 150"),
        ("w", ":TRAC:FEED SENS"),
        ("w", ":TRAC:FEED:CONT NEXT"),
        ("q", ":SYST:ERR?", OK),
        ("w", ":INIT"),
        ("q", "*OPC?", "1"),
        ("q", ":TRAC:DATA?", data),
        ("w", ":SOUR:VOLT:MODE FIX"),
        ("w", ":SOUR:VOLT 1.49"),
        ("w", ":TRIG:COUN 1"),
        ("q", ":SYST:ERR?", OK),
    )
    drv.clock.sleep_until(50.0)
    readings = drv.run_sweep(points, dwell_s=0.1)
    s.done()
    assert [r.source_V for r in readings] == points
    # trace-buffer timestamps count from the first stored reading (:TRAC:TST:FORM ABS), taken one
    # source delay after :INIT at t = 50 s, not from the reset's :SYST:TIME:RES at t = 0
    assert readings[0].t_s == pytest.approx(50.0 + 1 / 12)
    assert readings[10].t_s == pytest.approx(51.0 + 1 / 12)
    # the *OPC? wait is given enough time for the whole sweep
    opc_call = [c for c in s.transport.query.call_args_list if c.args[0] == "*OPC?"][0]
    assert opc_call.kwargs["timeout_s"] > 150 * 0.1


def test_2450_linear_and_list_sweeps(mocker: Any) -> None:
    drv, s = make(mocker, "2450")
    s.add(("q", ":SYST:ERR:NEXT?", OK), *[("w", line) for line in drv.configure_lines(CONFIG)], ("q", ":SYST:ERR:NEXT?", OK), ("w", ":OUTP ON"))
    drv.configure(CONFIG)
    drv.set_output(True)
    data = "1.000000E-01,1.0E-05,1.0E-01,128,2.000000E-01,1.0E-03,2.0E-01,160,3.000000E-01,1.0E-03,3.0E-01,160"
    tail = [
        ("q", ":SYST:ERR:NEXT?", OK),
        ("w", ":INIT"),
        ("q", "*OPC?", "1"),
        ("q", ':TRAC:DATA? 1, 3, "defbuffer1", SOUR, READ, REL, SOURSTAT', data),
        ("w", ":SOUR:VOLT 0.3"),
        ("q", ":SYST:ERR:NEXT?", OK),
    ]
    s.add(("w", ':SOUR:SWE:VOLT:LIN 0.1, 0.3, 3, 0.08333333333, 1, BEST, OFF, OFF, "defbuffer1"'), ("w", ':TRAC:CLE "defbuffer1"'), *tail)
    lin = drv.run_sweep([0.1, 0.2, 0.3], dwell_s=0.1)
    assert [r.compliance_tripped for r in lin] == [False, True, True]  # SOURSTAT bit 32
    s.add(
        ("w", ":SOUR:LIST:VOLT 0.1,0.3,0.2"),
        ("w", ':SOUR:SWE:VOLT:LIST 1, 0.08333333333, 1, OFF, "defbuffer1"'),
        ("w", ':TRAC:CLE "defbuffer1"'),
        *tail[:4],
        ("w", ":SOUR:VOLT 0.2"),
        tail[5],
    )
    drv.run_sweep([0.1, 0.3, 0.2], dwell_s=0.1)
    s.done()


@pytest.mark.parametrize("model", ["2400", "2450"])
def test_safe_state_turns_output_off_and_verifies(mocker: Any, model: str) -> None:
    drv, s = make(mocker, model)
    s.add(("w", ":OUTP:SMOD HIMP"), ("w", ":OUTP OFF"), ("q", ":OUTP?", "0"))
    drv.safe_state()
    s.done()
    assert not drv.output_on


def test_safe_state_retries_once_after_reconnect_on_a_flaky_transport(mocker: Any) -> None:
    drv, s = make(mocker, "2400")
    s.add(
        ("w", ":OUTP:SMOD HIMP"), ("w", ":OUTP OFF"), ("q", ":OUTP?", DeviceTimeoutError("no answer", "GPIB0::24::INSTR")),
        ("w", ":OUTP:SMOD HIMP"), ("w", ":OUTP OFF"), ("q", ":OUTP?", "0"),
    )
    drv.safe_state()
    s.done()
    s.transport.reconnect.assert_called_once()


def test_safe_state_reports_a_dead_instrument(mocker: Any) -> None:
    drv, s = make(mocker, "2450")
    dead = CommunicationError("connection lost", "GPIB0::24::INSTR")
    s.add(("q", ":OUTP?", dead))
    s.transport.write.side_effect = dead
    with pytest.raises(CommunicationError):
        drv.safe_state()


def test_wrong_instrument_is_refused_naming_the_resource(mocker: Any) -> None:
    s = Script(mocker, [("q", "*IDN?", "Agilent Technologies,34401A,0,1.0")])
    with pytest.raises(WrongInstrumentError, match=r"GPIB0::24::INSTR: found Agilent Technologies 34401A; expected a Keithley 2400"):
        Keithley2400(s.transport)
    s = Script(mocker, [("q", "*IDN?", IDN_2400)])
    with pytest.raises(WrongInstrumentError, match="expected a Keithley 2450"):
        Keithley2450(s.transport)
    s.transport.close.assert_called_once()


def test_2450_in_2400_emulation_mode_is_refused(mocker: Any) -> None:
    s = Script(mocker, [("q", "*IDN?", IDN_2450), ("q", "*LANG?", "SCPI2400")])
    with pytest.raises(WrongInstrumentError, match=r"SCPI2400 command-set mode.*\*LANG SCPI"):
        Keithley2450(s.transport)


def test_silent_instrument_gives_one_timeout_error(mocker: Any) -> None:
    s = Script(mocker, [("q", "*IDN?", DeviceTimeoutError("no answer within 2 s", "GPIB0::24::INSTR"))])
    with pytest.raises(DeviceTimeoutError, match=r"GPIB0::24::INSTR: no answer to \*IDN\?; expected a Keithley 2400"):
        Keithley2400(s.transport)


@pytest.mark.parametrize("model", ["2400", "2450"])
def test_safety_window_is_enforced_before_anything_is_sent(mocker: Any, model: str) -> None:
    drv, s = make(mocker, model)
    with pytest.raises(SafetyLimitError):
        drv.set_voltage(1.0)  # not configured
    s.add(("q", drv.error_query, OK), *[("w", line) for line in drv.configure_lines(CONFIG)], ("q", drv.error_query, OK))
    drv.configure(CONFIG)
    with pytest.raises(SafetyLimitError):
        drv.set_voltage(5.5)
    with pytest.raises(SafetyLimitError, match="output off"):
        drv.run_sweep([0.1], 0.1)
    s.done()


@pytest.mark.parametrize("reply", ["+1.5E+00,garbage,+1,+2", "\x00\x01", "+1.5E+00,+1.0E-6,+2.0"])
def test_garbled_or_truncated_reading_is_a_communication_error(mocker: Any, reply: str) -> None:
    drv, s = make(mocker, "2400")
    s.add(("q", ":READ?", reply))
    with pytest.raises(CommunicationError):
        drv.measure()


CURRENT_CONFIG = PotentiostatConfig(compliance_A=1e-3, nplc=1.0, source_mode="current", voltage_limit_V=4.2)


def test_2400_current_mode_configure_set_current_and_measure(mocker: Any) -> None:
    drv, s = make(mocker, "2400")
    s.add(
        ("q", ":SYST:ERR?", OK),
        ("w", ":SOUR:FUNC CURR"),
        ("w", ":SOUR:CURR:MODE FIX"),
        ("w", ":SOUR:CURR:RANG:AUTO ON"),
        ("w", ':SENS:FUNC "VOLT","CURR"'),
        ("w", ":SENS:VOLT:PROT 4.2"),
        ("w", ":SENS:CURR:RANG:AUTO ON"),
        ("w", ":SENS:CURR:NPLC 1"),
        ("w", ":FORM:ELEM VOLT,CURR,TIME,STAT"),
        ("w", ":OUTP:SMOD HIMP"),
        ("q", ":SYST:ERR?", OK),
        ("w", ":SOUR:CURR 2e-06"),
        ("w", ":OUTP ON"),
        ("q", ":READ?", "+3.912000E+00,+2.000000E-06,+1.000000E+00,+5.000000E+00"),  # bit 3: at the voltage limit
    )
    drv.configure(CURRENT_CONFIG)
    drv.set_current(2e-6)
    drv.set_output(True)
    r = drv.measure()
    assert (r.voltage_V, r.current_A, r.source_A, r.compliance_tripped) == (3.912, 2e-6, 2e-6, False)
    assert math.isnan(r.source_V)
    s.done()
    with pytest.raises(SafetyLimitError, match="compliance_A"):
        drv.set_current(5e-3)  # refused before anything is sent
    with pytest.raises(SafetyLimitError, match="voltage staircase"):
        drv.run_sweep([0.1, 0.2], 0.1)
    s.done()


def test_2450_current_mode_reads_source_current_and_measured_voltage(mocker: Any) -> None:
    drv, s = make(mocker, "2450")
    s.add(
        ("q", ":SYST:ERR:NEXT?", OK),
        ("w", ":SOUR:FUNC CURR"),
        ("w", ":SOUR:CURR:RANG:AUTO ON"),
        ("w", ":SOUR:CURR:VLIM 4.2"),
        ("w", ':SENS:FUNC "VOLT"'),
        ("w", ":SENS:VOLT:NPLC 1"),
        ("w", ":OUTP:SMOD HIMP"),
        ("q", ":SYST:ERR:NEXT?", OK),
        ("w", ":SOUR:CURR -1e-06"),
        ("q", ':READ? "defbuffer1",SOUR,READ,REL;:SOUR:CURR:VLIM:TRIP?', "-1.000000E-06,3.100000E+00,0.000000E+00;1"),
    )
    drv.configure(CURRENT_CONFIG)
    drv.set_current(-1e-6)
    r = drv.measure()
    assert (r.voltage_V, r.current_A, r.source_A, r.compliance_tripped) == (3.1, -1e-6, -1e-6, True)
    s.done()
