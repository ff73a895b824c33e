"""Emulated Keithley SourceMeters: SMU physics (physics.md §4.4, §4.5), command-set fidelity,
and the servers (port 0, TCP_NODELAY, malformed input, many clients)."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest

from insitem.drivers.clock import VirtualClock
from insitem.simulators.emulators import LineServer, PtyServer, serve
from insitem.simulators.emulators.keithley2400 import Keithley2400Emulator
from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
from insitem.simulators.emulators.smu import K2400_SPEC, RCLoad, ResistorLoad, SmuModel


def smu(load: object, nplc: float = 1.0, seed: int = 0) -> tuple[SmuModel, VirtualClock]:
    clock = VirtualClock()
    m = SmuModel(K2400_SPEC, load, clock, seed=seed)  # type: ignore[arg-type]
    m.compliance_A = 1e-3
    m.nplc = nplc
    return m, clock


def test_ohms_law_and_compliance_clamp() -> None:
    m, _ = smu(ResistorLoad(1e3))
    m.set_source(0.5)
    m.set_output(True)
    r = m.measure()
    assert r.current_A == pytest.approx(0.5e-3, abs=3 * 60e-9 + 60e-9)  # 1 mA range offset 60 nA (§4.4)
    assert not r.compliance_tripped
    m.set_source(2.0)  # wants 2 mA > 1 mA compliance: the source clamps at the compliance
    r = m.measure()
    assert r.compliance_tripped and r.voltage_V == pytest.approx(1.0) and abs(r.current_A) == pytest.approx(1e-3, rel=1e-3)


def test_noise_sigma_is_offset_over_three_scaled_by_sqrt_inverse_nplc() -> None:
    # physics.md §4.4 [est]: sigma = offset/3 at 1 NPLC, x sqrt(1/NPLC) below 1 NPLC; 10 uA range offset 700 pA
    for nplc, expect in ((1.0, 700e-12 / 3), (0.01, 700e-12 / 3 * 10)):
        m, _ = smu(ResistorLoad(1e6), nplc=nplc, seed=3)
        m.set_source(5.0)
        m.set_output(True)
        values = np.array([m.measure().current_A for _ in range(400)])
        assert values.std(ddof=1) == pytest.approx(expect, rel=0.15)
        assert abs(values.mean() - 5e-6) < 700e-12 + 4 * expect / 20  # fixed offset within the accuracy offset


def test_point_time_follows_nplc_over_line_frequency() -> None:
    # physics.md §4.5: PC-driven point = 12.3 ms + NPLC / f_line (+ 0.25 ms settling) on a virtual clock
    for nplc in (0.01, 0.1, 1.0):
        m, clock = smu(ResistorLoad(1e4), nplc=nplc)
        m.set_output(True)
        t0 = clock.now()
        m.measure()
        assert clock.now() - t0 == pytest.approx(12.3e-3 + nplc / 60 + 0.25e-3, rel=1e-9)
        t0 = clock.now()
        m.run_list([0.1])  # in-instrument: no host overhead
        assert clock.now() - t0 == pytest.approx(nplc / 60 + 0.25e-3, rel=1e-9)


def test_rc_load_reading_is_the_mean_current_over_the_integration_window() -> None:
    # V_C(t) = V (1 - exp(-t/RC)); an integrating A/D reports C [V_C(t_b) - V_C(t_a)] / (t_b - t_a)
    load = RCLoad(resistance_ohm=1e3, capacitance_F=1e-5)  # tau = 10 ms
    m, clock = smu(load)
    m.set_source(1.0)
    m.set_output(True)
    r = m.measure()
    t_a = 12.3e-3  # host overhead (§4.5) passes before the window opens
    t_b = clock.now()

    def v_c(t: float) -> float:
        return 1.0 - math.exp(-t / 10e-3)

    expect = 1e-5 * (v_c(t_b) - v_c(t_a)) / (t_b - t_a)
    assert r.current_A == pytest.approx(expect, abs=60e-9 + 4 * 20e-9)  # 1 mA range: offset 60 nA, sigma 20 nA (§4.4)
    # charge conservation: every coulomb the source delivered sits on the capacitor
    assert load.total_charge_C == pytest.approx(1e-5 * load.capacitor_V, rel=1e-12)


def test_output_off_modes() -> None:
    load = RCLoad(resistance_ohm=1e3, capacitance_F=1e-5, capacitor_V=1.0)
    m, clock = smu(load)
    m.off_mode = "HIMP"
    clock.advance(1.0)
    m.sync()
    assert load.capacitor_V == 1.0  # relay open: a charged cell keeps its charge
    m.off_mode = "ZERO"
    clock.advance(1.0)
    m.sync()
    assert load.capacitor_V < 1e-3  # 0 V source discharges it (tau = 10 ms)


@pytest.mark.parametrize(
    ("emulator", "rejected", "accepted"),
    [
        (Keithley2400Emulator, [":SOUR:VOLT:ILIM 1e-3", ":SYST:ERR:NEXT:COUN?", ':TRAC:MAKE "b", 100', ":SOUR:SWE:VOLT:LIN 0,1,3"], [":SENS:CURR:PROT 1e-3", ":FORM:ELEM VOLT,CURR"]),
        (Keithley2450Emulator, [":SENS:CURR:PROT 1e-3", ":FORM:ELEM VOLT,CURR", ":SOUR:VOLT:MODE LIST", ":SYST:TIME:RES"], [":SOUR:VOLT:ILIM 1e-3", ':TRAC:MAKE "b", 100']),
    ],
)
def test_each_model_rejects_the_other_models_headers(emulator: type, rejected: list[str], accepted: list[str]) -> None:
    e = emulator(ResistorLoad(), VirtualClock())
    for line in rejected:
        e.handle(line)
        assert e.parser.pop_error()[0] == -113, line
    for line in accepted:
        e.handle(line)
        assert e.parser.pop_error() == (0, "No error"), line


def test_2400_list_limits_100_per_command_2500_total() -> None:
    e = Keithley2400Emulator(ResistorLoad(), VirtualClock())
    e.handle(":SOUR:LIST:VOLT " + ",".join(["0.1"] * 101))
    assert e.parser.pop_error()[0] == -223
    e.handle(":SOUR:LIST:VOLT " + ",".join(["0.1"] * 100))
    for _ in range(24):
        e.handle(":SOUR:LIST:VOLT:APP " + ",".join(["0.1"] * 100))
    assert e.handle(":SOUR:LIST:VOLT:POIN?") == "2500" and not e.parser.errors
    e.handle(":SOUR:LIST:VOLT:APP 0.1")
    assert e.parser.pop_error()[0] == -223


def test_2450_dual_linear_sweep_fills_the_named_buffer() -> None:
    e = Keithley2450Emulator(ResistorLoad(1e4), VirtualClock())
    e.handle(':TRAC:MAKE "cv", 100;:SOUR:VOLT:ILIM 1e-3;:SOUR:SWE:VOLT:LIN 0, 1, 3, 0.1, 2, BEST, OFF, ON, "cv";:INIT')
    assert not e.parser.errors
    assert e.handle(':TRAC:ACT? "cv"') == "10"  # (0, .5, 1, .5, 0) x 2
    sources = [float(x) for x in e.handle(':TRAC:DATA? 1, 5, "cv", SOUR').split(",")]
    assert sources == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_2450_rel_counts_from_the_first_reading_in_the_buffer() -> None:
    """2450 Reference Manual (`bufferVar.relativetimestamps`): REL is relative to the timestamp of
    buffer entry number 1, so the first reading after a clear reads 0 however long after the clear
    it is taken; later ones read the time since that first reading."""
    clock = VirtualClock()
    e = Keithley2450Emulator(ResistorLoad(1e4), clock)
    e.handle(':SOUR:VOLT:ILIM 1e-3;:OUTP ON;:TRAC:CLE "defbuffer1"')
    clock.sleep_until(clock.now() + 30.0)
    first = float(e.handle(':READ? "defbuffer1", REL'))
    t_first = clock.now()
    clock.sleep_until(t_first + 5.0)
    second = float(e.handle(':READ? "defbuffer1", REL'))
    assert first == 0.0
    assert second == pytest.approx(clock.now() - t_first, abs=0.05)  # within one reading's integration
    e.handle(':TRAC:CLE "defbuffer1"')
    assert float(e.handle(':READ? "defbuffer1", REL')) == 0.0


def test_2400_trace_timestamps_count_from_the_first_stored_reading() -> None:
    """2400 manual, :TRACe:TSTamp:FORMat ABSolute (the default): "each timestamp is referenced to
    the first reading stored in the buffer"; :READ? keeps the :SYST:TIME:RES origin."""
    clock = VirtualClock()
    e = Keithley2400Emulator(ResistorLoad(1e4), clock)
    e.handle(":SENS:CURR:PROT 1e-3;:FORM:ELEM VOLT,CURR,TIME,STAT;:SYST:TIME:RES;:OUTP ON")
    clock.sleep_until(clock.now() + 100.0)
    e.handle(":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT 0.1,0.2,0.3;:TRIG:COUN 3;:TRAC:CLE;:TRAC:POIN 3;:TRAC:FEED SENS")
    e.handle(":TRAC:FEED:CONT NEXT;:INIT")
    times = [float(x) for x in e.handle(":TRAC:DATA?").split(",")[2::4]]
    assert times[0] == 0.0 and 0 < times[1] < times[2] < 5
    e.handle(":SOUR:VOLT:MODE FIX;:TRIG:COUN 1")
    assert float(e.handle(":READ?").split(",")[2]) > 100.0


# ---------------------------------------------------------------------------------------------
# Servers


def _query(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "server closed the connection"
        data += chunk
    return data


@pytest.mark.wire
def test_tcp_server_port_zero_nodelay_garbage_and_two_clients() -> None:
    with serve("keithley2400", port=0, clock=VirtualClock()) as server:
        assert server.port > 0 and server.resource_string == f"TCPIP0::127.0.0.1::{server.port}::SOCKET"
        a = socket.create_connection(("127.0.0.1", server.port))
        b = socket.create_connection(("127.0.0.1", server.port))
        try:
            a.sendall(b"\xff\xfe\x00 __import__('os')\n:SOUR:VOLT:LEV 1e999\n" + b"x" * 5000 + b"\n")
            assert _query(a, b":SYST:ERR?").startswith(b"-102,")  # non-ASCII line
            assert _query(a, b":SYST:ERR?").startswith(b"-222,")  # 1e999 is out of range
            assert _query(a, b":SYST:ERR?").startswith(b"-113,")  # the long junk header
            assert _query(b, b"*IDN?").startswith(b"KEITHLEY INSTRUMENTS INC.,MODEL 2400")
            a.close()
            assert _query(b, b"*OPC?") == b"1\n"  # still serving after a client left
        finally:
            b.close()


@pytest.mark.wire
def test_server_sockets_have_nodelay() -> None:
    emu = Keithley2450Emulator(ResistorLoad(), VirtualClock())
    with LineServer(emu) as server:
        c = socket.create_connection(("127.0.0.1", server.port))
        try:
            assert _query(c, b"*LANG?") == b"SCPI\n"
            srv_sock = next(iter(server._clients))
            assert srv_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            c.close()


@pytest.mark.wire
def test_pty_server_answers_on_the_slave_path() -> None:
    import serial

    with serve("keithley2450-serial", clock=VirtualClock()) as server:
        assert isinstance(server, PtyServer)
        with serial.Serial(server.slave_path, 9600, timeout=1.0) as port:
            port.write(b"*IDN?;*LANG?\r\n")
            assert port.read_until(b"\n") == b"KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b;SCPI\n"


def test_serve_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="keithley2400"):
        serve("keithley6430")
    assert math.isfinite(K2400_SPEC.point_overhead_s)


def test_current_source_into_the_battery_cell_passes_exactly_i_t() -> None:
    """`:SOUR:FUNC CURR` with the simulated cell as the load (Cell.advance_current): below the
    voltage limit the charge through the SMU is I t, the reading's current is I and the cell
    voltage rises while charging; with a limit just above the open-circuit voltage the source
    holds the limit and flags the clamp."""
    from insitem.simulators.electrochemistry import Cell, CellParameters

    cell = Cell(CellParameters.lasgtp_bulk())
    clock = VirtualClock()
    emu = Keithley2400Emulator(cell, clock, seed=2)
    q0 = cell.charge_passed_C
    assert emu.handle(":SOUR:FUNC CURR;:SOUR:CURR 2e-6;:SENS:VOLT:PROT 4.5;:FORM:ELEM VOLT,CURR,STAT;:OUTP ON;:SYST:ERR?") == '0,"No error"'
    v_start, _, _ = (float(x) for x in emu.handle(":READ?").split(","))
    clock.sleep(120.0)
    v, i, stat = (float(x) for x in emu.handle(":READ?").split(","))
    assert i == pytest.approx(2e-6, abs=4 * 700e-12)  # 10 uA range: offset 700 pA (physics.md §4.4)
    assert v > v_start and not int(stat) & 8  # charging raises the voltage; no compliance
    assert int(stat) & (1 << 15)  # I-source bit of the status word
    assert cell.charge_passed_C - q0 == pytest.approx(2e-6 * (clock.now()), rel=1e-2)
    limit = round(v + 0.01, 4)
    emu.handle(f":SENS:VOLT:PROT {limit};:SOUR:CURR 1e-3")
    clock.sleep(20.0)
    v2, i2, stat2 = (float(x) for x in emu.handle(":READ?").split(","))
    assert int(stat2) & 8 and v2 == pytest.approx(limit, abs=1e-6) and i2 < 1e-3
    assert emu.handle(":SENS:VOLT:PROT:TRIP?;:SYST:ERR?") == '1;0,"No error"'


@pytest.mark.parametrize(("emulator", "driver"), [(Keithley2400Emulator, "Keithley2400"), (Keithley2450Emulator, "Keithley2450")])
def test_driver_reset_leaves_a_connected_cell_charged(emulator: type, driver: str) -> None:
    """`*RST` sets the NORMAL output-off state (0 V source behind the open output): the driver's reset
    puts HIMP back at once, so a cell on the terminals keeps its charge through reset and setup."""
    from insitem.drivers import keithley

    lines = object.__new__(getattr(keithley, driver))._reset_lines()
    load = RCLoad(resistance_ohm=1e3, capacitance_F=1e-5, capacitor_V=1.0)
    clock = VirtualClock()
    e = emulator(load, clock)
    for line in lines:
        e.handle(line)
    clock.advance(1.0)
    e.smu.sync()
    assert e.smu.off_mode == "HIMP"
    assert load.capacitor_V == 1.0
    e.handle("*RST")  # without the driver's second line the off state drains the cell
    clock.advance(1.0)
    e.smu.sync()
    assert load.capacitor_V < 0.99
