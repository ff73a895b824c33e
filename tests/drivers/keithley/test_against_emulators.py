"""The Keithley drivers against the emulators over TCP and a pseudo-terminal serial line, and
the same suite against a real instrument given with --resource potentiostat=... (hardware)."""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator

import pytest

from insitem.drivers.clock import RealClock
from insitem.drivers.errors import (
    CommunicationError,
    DeviceTimeoutError,
    InstrumentError,
    ResourceError,
    WrongInstrumentError,
)
from insitem.drivers.interfaces import PotentiostatConfig
from insitem.drivers.keithley import Keithley2400, Keithley2450
from insitem.simulators.emulators import LineServer
from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
from insitem.simulators.emulators.smu import ResistorLoad
from insitem.drivers.clock import VirtualClock

from .conftest import LOAD_OHM, Bench

DRIVERS = {"2400": Keithley2400, "2450": Keithley2450}
CONFIG = PotentiostatConfig(compliance_A=1e-3, nplc=1.0, voltage_range_V=20.0, output_off_mode="HIMP")


def run_suite(drv: Any, expect_ohm: float | None) -> None:
    """Behaviour any Keithley behind any transport must show (Ohm's law on the emulator's load)."""
    drv.reset()
    drv.configure(CONFIG)
    assert drv.errors() == []
    drv.set_voltage(0.5)
    drv.set_output(True)
    r = drv.measure()
    assert r.source_V == 0.5 and not r.compliance_tripped
    if expect_ohm is not None:  # Ohm's law through the whole stack, within the 1 mA-range accuracy
        assert r.current_A == pytest.approx(0.5 / expect_ohm, abs=1e-6)
        assert r.voltage_V == pytest.approx(0.5)
    r2 = drv.measure()
    assert r2.t_s > r.t_s  # instrument timestamps advance
    readings = drv.run_sweep([0.1, 0.2, 0.3, 0.4], dwell_s=0.05)
    assert [x.source_V for x in readings] == [0.1, 0.2, 0.3, 0.4]
    if expect_ohm is not None:
        for x in readings:
            assert x.current_A == pytest.approx(x.source_V / expect_ohm, abs=1e-6)
        dt = [b.t_s - a.t_s for a, b in zip(readings, readings[1:])]
        assert dt == pytest.approx([0.05] * 3, rel=0.05)  # instrument-timed dwell
    drv.safe_state()
    assert drv.output_enabled is False


@pytest.mark.wire
def test_driver_suite_on_emulator(bench: Bench) -> None:
    drv = DRIVERS[bench.model](bench.resource, clock=bench.clock, timeout_s=2.0)
    try:
        assert bench.model in drv.identity.model
        run_suite(drv, LOAD_OHM)
        assert not bench.emulator.smu.output_on
    finally:
        drv.close()


@pytest.mark.wire
def test_driver_over_visa_asrl_on_a_pty() -> None:
    b = Bench("2400", "pty-visa")
    try:
        drv = Keithley2400(b.resource, clock=b.clock)
        drv.reset()
        drv.configure(CONFIG)
        drv.set_voltage(1.0)
        drv.set_output(True)
        assert drv.measure().current_A == pytest.approx(1e-4, abs=1e-6)
        drv.safe_state()
        drv.close()
    finally:
        b.stop()


@pytest.mark.hardware("potentiostat")
def test_driver_suite_on_hardware(hardware_resources: dict[str, str]) -> None:
    """Same suite on a real SourceMeter; connect a resistor or nothing (Ohm's law not checked)."""
    resource = hardware_resources["potentiostat"]
    drv: Any
    try:
        drv = Keithley2450(resource, clock=RealClock())
    except WrongInstrumentError:
        drv = Keithley2400(resource, clock=RealClock())
    try:
        run_suite(drv, None)
    finally:
        drv.safe_state()
        drv.close()


# ---------------------------------------------------------------------------------------------
# Connection problems


def test_malformed_resource_is_refused_naming_it() -> None:
    with pytest.raises(ResourceError, match="GPIB-zero::twenty-four': board '-zero' must be an integer"):
        Keithley2400("GPIB-zero::twenty-four")
    with pytest.raises(ResourceError, match="not a VISA resource"):
        Keithley2400("COM3")
    with pytest.raises(ResourceError, match="serial:///dev/ttyX"):
        Keithley2400("serial://host/dev/ttyS0")


@pytest.mark.wire
def test_nothing_listening_is_a_communication_error() -> None:
    server = LineServer(Keithley2450Emulator(ResistorLoad(), VirtualClock()))
    port = server.port
    server.stop()
    with pytest.raises(CommunicationError, match=f"TCPIP0::127.0.0.1::{port}::SOCKET"):
        Keithley2450(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=0.5)


@pytest.mark.wire
def test_wrong_model_on_the_wire(model: str) -> None:
    other = "2450" if model == "2400" else "2400"
    b = Bench(other, "tcp")
    try:
        with pytest.raises(WrongInstrumentError, match=b.resource):
            DRIVERS[model](b.resource, clock=b.clock)
    finally:
        b.stop()


@pytest.mark.wire
def test_2450_emulator_in_2400_mode_is_refused() -> None:
    clock = VirtualClock()
    emu = Keithley2450Emulator(ResistorLoad(), clock, language="SCPI2400")
    with LineServer(emu) as server:
        with pytest.raises(WrongInstrumentError, match="SCPI2400"):
            Keithley2450(server.resource_string, clock=clock)


# ---------------------------------------------------------------------------------------------
# Fault injection: each fault gives its error, and safe_state still leaves the output off


@pytest.fixture
def live(bench: Bench) -> Iterator[tuple[Bench, Any]]:
    drv = DRIVERS[bench.model](bench.resource, clock=bench.clock, timeout_s=0.3)
    drv.reset()
    drv.configure(CONFIG)
    drv.set_voltage(0.5)
    drv.set_output(True)
    assert drv.output_enabled  # a query: the emulator has run every write before it
    assert bench.emulator.smu.output_on
    yield bench, drv
    drv.close()


@pytest.mark.wire
@pytest.mark.parametrize(
    ("fault", "error"),
    [("timeout", DeviceTimeoutError), ("garble", CommunicationError), ("truncate", CommunicationError)],
)
def test_reply_faults_raise_and_safe_state_recovers(live: tuple[Bench, Any], fault: str, error: type) -> None:
    bench, drv = live
    bench.server.faults.inject(fault)
    with pytest.raises(error):
        drv.measure()
    drv.safe_state()
    assert not bench.emulator.smu.output_on


@pytest.mark.wire
def test_dropped_connection_reconnects_once(live: tuple[Bench, Any]) -> None:
    bench, drv = live
    if bench.path != "tcp":
        pytest.skip("a serial line cannot be dropped")
    bench.server.faults.inject("drop")
    r = drv.measure()  # transport reconnects and re-sends once
    assert r.source_V == 0.5
    bench.server.faults.inject("drop", 2)
    with pytest.raises(CommunicationError, match="connection lost"):
        drv.measure()
    drv.safe_state()
    assert not bench.emulator.smu.output_on


@pytest.mark.wire
def test_errors_caused_by_configuring_raise_instrument_error(live: tuple[Bench, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    bench, drv = live
    lines = drv.configure_lines(CONFIG)
    monkeypatch.setattr(drv, "configure_lines", lambda config: [*lines, ":SOUR:VOLT 999"])  # outside +-210 V: -222
    with pytest.raises(InstrumentError, match="-222") as info:
        drv.configure(CONFIG)
    assert info.value.code == -222
    drv.safe_state()
    assert not bench.emulator.smu.output_on


@pytest.mark.wire
def test_stale_errors_left_by_another_client_are_logged_not_fatal(
    live: tuple[Bench, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Junk another client left in the shared error queue (here more than the queue holds, so
    it ends in -350 Queue overflow) is drained and logged in one line; configure succeeds."""
    bench, drv = live
    for _ in range(12):
        bench.emulator.handle(":BOGus:HEADer 1")  # -113 from another session
    with caplog.at_level(logging.WARNING, logger="insitem.drivers.keithley.k2400"):
        drv.configure(CONFIG)
    assert drv.config == CONFIG
    stale = [r for r in caplog.records if "stale error-queue entries" in r.getMessage()]
    assert len(stale) == 1
    assert "10 stale error-queue entries cleared before configure" in stale[0].getMessage()
    assert "-113" in stale[0].getMessage() and "-350 Queue overflow" in stale[0].getMessage()
    assert drv.errors() == []
    drv.set_voltage(0.5)
    drv.set_output(True)
    assert drv.measure().current_A == pytest.approx(0.5 / LOAD_OHM, abs=1e-6)
    drv.safe_state()


@pytest.mark.wire
def test_compliance_trip_is_reported(live: tuple[Bench, Any]) -> None:
    bench, drv = live
    bench.emulator.smu.force_compliance(1)
    assert drv.measure().compliance_tripped
    assert not drv.measure().compliance_tripped
    drv.set_voltage(4.0)  # 4 V / 10 kOhm = 400 uA < 1 mA: no trip; lower the load to trip for real
    bench.load.resistance_ohm = 1e3  # 4 mA wanted > 1 mA compliance
    r = drv.measure()
    assert r.compliance_tripped and r.current_A == pytest.approx(1e-3, rel=1e-3)
    assert not math.isnan(r.current_A)
    drv.safe_state()
    assert not bench.emulator.smu.output_on


@pytest.mark.wire
def test_current_sourcing_with_a_voltage_limit(live: tuple[Bench, Any]) -> None:
    """Galvanostatic control through each driver: I R on the emulator's resistor below the
    voltage limit; at the limit the voltage is held and the compliance flag is set."""
    bench, drv = live
    drv.configure(PotentiostatConfig(compliance_A=1e-3, nplc=1.0, source_mode="current", voltage_limit_V=2.0))
    assert drv.errors() == []
    drv.set_current(1e-4)
    drv.set_output(True)
    r = drv.measure()
    assert r.voltage_V == pytest.approx(1e-4 * LOAD_OHM, rel=1e-6) and not r.compliance_tripped
    assert r.current_A == pytest.approx(1e-4, rel=1e-3) and r.source_A == 1e-4
    drv.set_current(-5e-4)  # wants -5 V on 10 kOhm: held at -2 V
    r = drv.measure()
    assert r.compliance_tripped and r.voltage_V == pytest.approx(-2.0, rel=1e-6)
    assert r.current_A == pytest.approx(-2.0 / LOAD_OHM, rel=1e-3)
    assert drv.errors() == []
    drv.safe_state()
    assert not bench.emulator.smu.output_on
