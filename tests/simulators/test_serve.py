"""`insitem serve` / `start_servers` and `insitem bridge`: coupling to the world, the command as a
process, and bad input."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

from insitem.cli.main import main
from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import ResourceError
from insitem.protocols.loader import load
from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
from insitem.simulators.emulators.smu import K2450_SPEC, SmuModel
from insitem.simulators.serve import CoupledSmuInstrument, WorldLoad, start_servers
from insitem.simulators.world import SimWorld

PROTOCOL = "si-nanoparticle-hold"


def _world(clock: VirtualClock) -> SimWorld:
    return SimWorld.from_protocol(load(PROTOCOL), clock)


# ---------------------------------------------------------------------------------------------
# WorldLoad: the SourceMeter model and the camera share one cell


def test_world_load_steps_every_interval_once_when_the_camera_interleaves() -> None:
    """The 2450 emulator (through `CoupledSmuInstrument`, as served) advances the cell from its
    own bookkeeping, the camera through `advance_to`; each interval must be stepped once (the
    cell's time equals the clock's) at the level the SMU sources then, so the cell passes the
    same charge as a world held at that level directly (difference: time partition only)."""
    clock = VirtualClock()
    world = _world(clock)
    emulator = Keithley2450Emulator(WorldLoad(world), clock, seed=1)
    smu = CoupledSmuInstrument(emulator, emulator.smu, world)
    for line in ("*RST", ":SOUR:FUNC VOLT", ":SOUR:VOLT:ILIM 1e-6", ":OUTP:SMOD HIMP", ":SOUR:VOLT -0.2", ":OUTP ON"):
        assert smu.handle(line) is None
    assert world.applied_V == -0.2  # copied at once, before any SMU time step
    for _ in range(5):
        clock.advance(2.0)
        world.advance_to()  # an exposure starting or ending in between (SimCamera does this)
        clock.advance(2.0)
        reply = smu.handle(':READ? "defbuffer1",SOUR,READ,REL')
        assert reply is not None and float(reply.split(",")[0]) == pytest.approx(-0.2)
    assert world.cell.time_s == pytest.approx(clock.now())

    ref_clock = VirtualClock()
    ref = _world(ref_clock)
    ref.compliance_A = 1e-6
    ref.applied_V = -0.2
    ref_clock.advance(clock.now())
    ref.advance_to()
    assert world.cell.charge_passed_C == pytest.approx(ref.cell.charge_passed_C, rel=1e-2)
    assert world.cell.V_term_V == pytest.approx(ref.cell.V_term_V, abs=1e-3)

    smu.handle(":OUTP OFF")
    assert world.applied_V is None  # HIMP: the relay opens the cell


def test_smu_reading_is_the_charge_the_cell_passed_over_the_integration() -> None:
    """Integrating A/D: the mean current of a reading times its window is the cell's charge in it
    (charge conservation between the instrument and the cell's Faraday record)."""
    clock = VirtualClock()
    world = _world(clock)
    load_ = WorldLoad(world)
    smu = SmuModel(K2450_SPEC, load_, clock, seed=2)
    smu.off_mode = "HIMP"
    smu.compliance_A = 1e-6
    smu.set_source(-0.5)
    smu.set_output(True)
    clock.advance(30.0)
    q0 = world.cell.charge_passed_C
    smu.sync()
    q_sync = world.cell.charge_passed_C
    assert q_sync != q0  # 30 s at -0.5 V passed charge through the SMU
    t0 = clock.now()
    world.advance_to(t0)
    q1 = world.cell.charge_passed_C
    step = load_.advance(1.0, -0.5, 1e-6)  # called as the SMU would after 1 s (clock not moved)
    assert world.cell.charge_passed_C == q1  # nothing left to step: no double count
    assert step.current_A == pytest.approx(world.cell.last_current_A)  # the cell's present current
    clock.advance(1.0)
    step = load_.advance(1.0, -0.5, 1e-6)
    assert step.charge_C == pytest.approx(world.cell.charge_passed_C - q1)
    assert step.current_A == pytest.approx(step.charge_C / 1.0)


def test_smu_reading_of_a_current_source_is_the_source_current_when_the_world_ran_ahead() -> None:
    """The SMU reads its clock, then the load takes the world's lock and advances the world to the
    clock's now: on a loaded machine (or with the camera holding the lock) 50 ms later. The reading
    is the mean current over the world's span (2 uA exactly), not its charge over the SMU's 0.95 s
    (2.105 uA, which failed the galvanostatic wire test under load)."""
    clock = VirtualClock()
    world = SimWorld.from_protocol(load("ex-situ-lasgtp"), clock)  # takes 2 uA below 2.5 V
    load_ = WorldLoad(world)
    load_.advance_current(2e-6, 1e-3, 2.5)
    clock.advance(1.0)
    step = load_.advance_current(2e-6, 0.95, 2.5)  # the SMU's window ended 50 ms before the world's
    assert not step.compliance_tripped
    assert step.current_A == pytest.approx(2e-6, rel=1e-9)
    assert step.charge_C == pytest.approx(2e-6 * 0.95, rel=1e-9)  # what the A/D integrated in its window


def test_output_off_himp_opens_the_cell() -> None:
    clock = VirtualClock()
    world = _world(clock)
    load_ = WorldLoad(world)
    clock.advance(1.0)
    step = load_.advance(1.0, None, 1e-6)
    assert world.applied_V is None
    assert step.charge_C is None and step.current_A == 0.0


# ---------------------------------------------------------------------------------------------
# start_servers over the wire


def test_served_instruments_share_one_world() -> None:
    """Keithley through its driver moves the world's source; TEM through its driver blanks the
    world's beam - the same state the camera emulator synthesises from."""
    from insitem.drivers.interfaces import PotentiostatConfig
    from insitem.drivers.keithley.k2450 import Keithley2450
    from insitem.drivers.tem.client import TemMicroscope

    with start_servers(PROTOCOL, ["keithley2450", "tem"]) as servers:
        assert servers.world.applied_V is None or servers.world.applied_V == 0.0
        pot = Keithley2450(servers.resources["potentiostat"])
        try:
            pot.reset()
            pot.configure(PotentiostatConfig(compliance_A=1e-6, voltage_limits_V=(-1.0, 1.0)))
            pot.set_voltage(-0.3)
            pot.set_output(True)
            reading = pot.measure()  # a query: the writes before it have been executed
            assert servers.world.applied_V == pytest.approx(-0.3)
            assert reading.voltage_V == pytest.approx(-0.3)
            pot.safe_state()  # output off, verified with :OUTP?
            assert servers.world.applied_V is None  # HIMP: relay open
        finally:
            pot.close()
        tem = TemMicroscope(servers.resources["microscope"])
        try:
            tem.beam.set_blanked(False)
            assert tem.beam.blanked is False  # read back over the wire (also orders the commands)
            assert servers.world.optics.blanked is False
            tem.beam.set_blanked(True)
            assert tem.beam.blanked is True
            assert servers.world.optics.blanked is True
            assert servers.world.optics.total_dose_e_per_m2() > 0
        finally:
            tem.close()


def _two_free_ports() -> int:
    """A port p with p and p + 1 both free just now (another process may still take one)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            if base >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
        return base
    raise AssertionError("no two consecutive free ports found")


def test_consecutive_ports_from_port() -> None:
    # the ports are free when chosen, but this machine is shared: retry if one is taken meanwhile
    for attempt in range(5):
        base = _two_free_ports()
        try:
            servers = start_servers(PROTOCOL, ["tem", "gif"], port=base)  # stops what it started on failure
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
            continue
        with servers:
            assert servers.resources["microscope"] == f"TCPIP0::127.0.0.1::{base}::SOCKET"
            assert servers.resources["camera"] == f"TCPIP0::127.0.0.1::{base + 1}::SOCKET"
            assert servers.lines() == [f"microscope=TCPIP0::127.0.0.1::{base}::SOCKET", f"camera=TCPIP0::127.0.0.1::{base + 1}::SOCKET"]
        return


def test_serial_serves_the_same_smu_on_a_pty() -> None:
    from insitem.drivers.keithley.k2400 import Keithley2400

    with start_servers(PROTOCOL, ["keithley2400"], serial=True) as servers:
        (role, res), = servers.extra_resources
        assert role == "potentiostat" and res.startswith("serial:///dev/")
        smu = Keithley2400(res)
        try:
            assert smu.identify().model == "MODEL 2400"
        finally:
            smu.close()


@pytest.mark.parametrize(
    ("kinds", "message"),
    [(["keithley2400", "keithley2450"], "one SourceMeter"), (["gif", "gif"], "twice"), (["scope"], "unknown instrument")],
)
def test_bad_instrument_lists_are_refused(kinds: list[str], message: str) -> None:
    with pytest.raises(ResourceError, match=message):
        start_servers(PROTOCOL, kinds)


def test_serve_command_bad_protocol_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "gif", "--protocol", "no-such-protocol"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-protocol" in err and "\n" not in err and "Traceback" not in err


def test_serve_command_port_taken_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "tem", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"port {port}" in err and "\n" not in err


# ---------------------------------------------------------------------------------------------
# `insitem serve` as a process


def _insitem() -> list[str]:
    exe = Path(sys.executable).with_name("insitem")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "insitem.cli"]


def _read_lines(stream: Any, n: int, timeout_s: float) -> list[str]:
    lines: list[str] = []

    def reader() -> None:
        while len(lines) < n:
            line = stream.readline()
            if not line:
                return
            lines.append(line.strip())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout_s)
    return lines


@pytest.mark.wire
def test_serve_process_prints_resources_and_stops_on_sigint() -> None:
    from insitem.drivers.keithley.k2450 import Keithley2450

    proc = subprocess.Popen(
        [*_insitem(), "serve", "keithley2450", "gif", "tem", "--protocol", PROTOCOL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = _read_lines(proc.stdout, 3, timeout_s=30)
        assert len(lines) == 3, lines
        resources = dict(line.split("=", 1) for line in lines)
        assert set(resources) == {"potentiostat", "camera", "microscope"}
        assert all(r.startswith("TCPIP0::127.0.0.1::") and r.endswith("::SOCKET") for r in resources.values())
        smu = Keithley2450(resources["potentiostat"])
        try:
            ident = smu.identify()
            assert ident.model == "MODEL 2450" and ident.vendor.startswith("KEITHLEY")
        finally:
            smu.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in err


# ---------------------------------------------------------------------------------------------
# `insitem bridge`


def test_bridge_without_vendor_package_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "temscript", None)  # import fails as on a PC without it
    assert main(["bridge", "tem", "--vendor", "temscript", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'temscript'" in err and "\n" not in err and "Traceback" not in err


def test_bridge_command_runs_serve_bridge_with_the_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from insitem.cli.bridge import bridge_command
    from insitem.drivers.tem import bridge

    fake = types.ModuleType("PyJEM")
    monkeypatch.setitem(sys.modules, "PyJEM", fake)
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN_FILE", raising=False)
    monkeypatch.setenv("INSITEM_BRIDGE_TOKEN", "a-token-for-the-lan-0123")  # beyond loopback needs one
    calls: list[tuple[Any, ...]] = []

    def fake_serve(vendor: str, host: str, port: int, **kw: Any) -> None:
        calls.append((vendor, host, port, kw["token"]))
        raise KeyboardInterrupt  # as Ctrl-C would end it

    monkeypatch.setattr(bridge, "serve_bridge", fake_serve)
    assert bridge_command(Namespace(vendor="pyjem", bind="0.0.0.0", port=6000)) == 0
    assert calls == [("pyjem", "0.0.0.0", 6000, "a-token-for-the-lan-0123")]


def test_bridge_adapter_failure_is_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import types

    from insitem.cli.bridge import bridge_command

    fake = types.ModuleType("temscript")

    def no_com() -> None:
        raise OSError("COM server not registered")

    fake.Microscope = no_com  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "temscript", fake)
    assert bridge_command(Namespace(vendor="temscript", bind="127.0.0.1", port=0)) == 1
    err = capsys.readouterr().err.strip()
    assert "COM server not registered" in err and "\n" not in err
