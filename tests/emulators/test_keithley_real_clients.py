"""PyMeasure and QCoDeS Keithley drivers against the emulators over pyvisa-py on loopback.

Every public call of tests/keithley_real_clients.py must return without error and leave the
emulator's error queue empty (except the calls listed in CLIENT_LIMITS, which cannot work on the
real instrument either and must fail); the values they return must be the physics of the
emulator's 10 kOhm resistor.
"""

from __future__ import annotations

import logging
import socket

import pytest

from keithley_real_clients import CLIENT_LIMITS, LOAD_OHM, TABLES, Outcome, Rig, measure

pytestmark = [pytest.mark.wire]


def by_name(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.name: o for o in outcomes}


@pytest.fixture(autouse=True)
def _quiet_client_logs() -> None:
    logging.getLogger("pymeasure").setLevel(logging.CRITICAL)


@pytest.mark.parametrize("client,model", list(TABLES))
def test_every_public_call_works_with_an_empty_error_queue(client: str, model: str) -> None:
    outcomes = measure(client, model)
    limits = CLIENT_LIMITS.get((client, model), {})
    failed = {o.name: o.detail for o in outcomes if not o.ok}
    assert set(failed) == set(limits), f"unexpected failures: { {k: v for k, v in failed.items() if k not in limits} }"
    got = by_name(outcomes)
    i_expect = 0.5 / LOAD_OHM  # 0.5 V on 10 kOhm
    if client == "pymeasure" and model == "2400":
        assert got["current"].value == pytest.approx(i_expect, rel=1e-3)
        assert got["voltage"].value == pytest.approx(0.5, abs=1e-6)
        assert got["resistance"].value == pytest.approx(LOAD_OHM, rel=1e-3)
        data = got["config_buffer+wait_for_buffer+buffer_data"].value
        assert len(data) == 5 * 5  # five readings of VOLT,CURR,RES,TIME,STAT
        currents = data[1::5]
        assert got["means"].value[1] == pytest.approx(sum(currents) / 5, rel=1e-6)
        assert got["maximums"].value[1] == pytest.approx(max(currents), rel=1e-6)
        assert got["voltage (I source)"].value == pytest.approx(1e-4 * LOAD_OHM, rel=1e-6)  # 100 uA into 10 kOhm
        assert got["check_errors()"].value == []
    if client == "pymeasure" and model == "2450":
        assert got["current"].value == pytest.approx(i_expect, rel=1e-3)
        assert got["voltage (I source)"].value == pytest.approx(1e-4 * LOAD_OHM, rel=1e-6)
        assert got["resistance"].value == pytest.approx(LOAD_OHM, rel=1e-3)
    if client == "qcodes" and model == "2400":
        assert got["curr()"].value == pytest.approx(i_expect, rel=1e-3)
        assert got["volt() (I source)"].value == pytest.approx(1.0, rel=1e-6)
        assert got["curr() (I source)"].value == pytest.approx(1e-4, rel=1e-3)
    if client == "qcodes" and model == "2450":
        assert got["sense.current()"].value == pytest.approx(i_expect, rel=1e-3)
        # the sweep 0..0.4 V in 5 points: no stale reading from before the sweep, no point dropped
        sweep = list(got["sense.sweep()"].value)
        # within the 100 uA range's accuracy offset 6 nA plus 4 sigma (2 nA) of noise (physics.md §4.4)
        assert sweep == pytest.approx([v / LOAD_OHM for v in (0.0, 0.1, 0.2, 0.3, 0.4)], abs=6e-9 + 4 * 2e-9)
        assert got["buffer.size()"].value == 100_000
        assert got["sense.voltage()"].value == pytest.approx(1e-4 * LOAD_OHM, rel=1e-6)


def _ask(sock: socket.socket, line: str, timeout_s: float = 20.0) -> str:
    sock.settimeout(timeout_s)
    sock.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(4096)
    return data.decode().strip()


def test_2400_read_with_the_output_off_is_error_803_and_no_reading() -> None:
    rig = Rig("2400")
    try:
        with socket.create_connection((rig.server.host, rig.server.port), timeout=20) as s:
            # the read gets no answer: the *OPC? behind it is the first reply on the line
            assert _ask(s, ":OUTP OFF;:READ?;*OPC?") == "1"
            assert _ask(s, ":SYST:ERR?").startswith('803,"Output disabled')
            assert _ask(s, ":INIT;:SYST:ERR?").startswith('803,')
            assert _ask(s, ":OUTP ON;:READ?").count(",") == 4  # the five elements
            assert _ask(s, ":SYST:ERR?") == '0,"No error"'
    finally:
        rig.stop()


def test_2400_buffer_full_sets_the_measurement_summary_and_service_request_bits() -> None:
    rig = Rig("2400")
    try:
        with socket.create_connection((rig.server.host, rig.server.port), timeout=20) as s:
            _ask(s, ":STAT:PRES;*CLS;*SRE 1;:STAT:MEAS:ENAB 512;:TRAC:POIN 3;:TRIG:COUN 2;:TRAC:FEED:CONT NEXT;:OUTP ON;*OPC?")
            assert int(_ask(s, "*STB?")) & 65 == 0
            _ask(s, ":INIT;*OPC?")  # 2 of 3 readings: not full
            assert int(_ask(s, "*STB?")) & 65 == 0
            _ask(s, ":INIT;*OPC?")  # full at 3 (storage stops there)
            assert int(_ask(s, "*STB?")) & 65 == 65
            assert int(_ask(s, ":TRAC:POIN:ACT?")) == 3
            assert int(_ask(s, ":STAT:MEAS?")) & 512  # reading the event register clears it ...
            assert int(_ask(s, "*STB?")) & 65 == 0  # ... and with it the summary bits
            assert _ask(s, ":SYST:ERR?") == '0,"No error"'
    finally:
        rig.stop()


@pytest.mark.parametrize("model", ["2400", "2450"])
def test_a_colon_before_a_common_command_is_accepted(model: str) -> None:
    rig = Rig(model)
    try:
        with socket.create_connection((rig.server.host, rig.server.port), timeout=20) as s:
            assert _ask(s, ":OUTP ON;:*RST;:OUTP?") == "0"  # the reset happened
            assert _ask(s, ":*IDN?").startswith("KEITHLEY")
            assert _ask(s, ":SYST:ERR?") == '0,"No error"'
    finally:
        rig.stop()


def test_2450_has_no_measurement_status_register() -> None:
    """The 2450's status model has only the questionable and operation sets (Reference Manual
    appendix C): the 2400's :STAT:MEAS is an undefined header there."""
    rig = Rig("2450")
    try:
        with socket.create_connection((rig.server.host, rig.server.port), timeout=20) as s:
            assert _ask(s, ":STAT:MEAS:ENAB 512;:SYST:ERR?").startswith("-113,")
            assert _ask(s, ":STAT:OPER:ENAB 1;:STAT:OPER:ENAB?;:SYST:ERR?") == '1;0,"No error"'
    finally:
        rig.stop()
