"""TemMicroscope (the real driver) against the TEM emulator over loopback TCP and a pseudo-terminal.

Also the hardware variant: the same checks against a real bridge given with
``--resource tem=TCPIP0::tem-pc::5025::SOCKET`` (skipped otherwise).
"""

from __future__ import annotations

import socket
import time
from typing import Any, Iterator

import pytest

from insitem.drivers.clock import VirtualClock
from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, InstrumentError
from insitem.drivers.tem.client import TemMicroscope
from insitem.simulators.emulators.tem import TemEmulator, TemInstrument
from insitem.simulators.microscope import SimMicroscope
from insitem.simulators.optics import MicroscopeState, OpticsParameters

pytestmark = pytest.mark.wire


def make_instrument() -> tuple[TemInstrument, VirtualClock]:
    clock = VirtualClock()
    return TemInstrument(SimMicroscope(MicroscopeState(OpticsParameters(), clock))), clock


@pytest.fixture(params=["tcp", "pty-pyserial", "pty-visa"])
def rig(request: pytest.FixtureRequest) -> Iterator[tuple[TemEmulator, TemMicroscope, VirtualClock]]:
    instrument, clock = make_instrument()
    serial = request.param != "tcp"
    with TemEmulator(instrument, serial=serial) as emu:
        resource = emu.server.visa_resource_string if request.param == "pty-visa" else emu.resource  # type: ignore[union-attr]
        mic = TemMicroscope(resource, timeout_s=1.0)
        try:
            yield emu, mic, clock
        finally:
            mic.close()


def test_blanking_round_trip_records_dose_on_the_world_clock(rig: Any) -> None:
    emu, mic, clock = rig
    state = emu.microscope.state
    assert mic.beam.blanked
    clock.advance(5.0)
    mic.beam.set_blanked(False)
    assert not mic.beam.blanked
    clock.advance(30.0)
    mic.safe_state()
    assert mic.beam.blanked
    assert state.blank_intervals() == [(5.0, 35.0)]
    assert state.total_dose_e_per_m2() == pytest.approx(30.0 * mic.beam.dose_rate_e_per_m2_s, rel=1e-12)


def test_every_setting_round_trips_exactly(rig: Any) -> None:
    emu, mic, _ = rig
    mic.beam.set_current(1e-9)
    mic.beam.set_illuminated_diameter(1e-6)
    mic.lens.set_mode("DIFF")
    mic.lens.set_magnification(12345.678)
    mic.lens.set_defocus(-3.3e-7)
    mic.slit.set_inserted(False)
    mic.slit.set_width(123.4e-9)
    mic.slit.set_height(1.5e-6)
    mic.slit.set_centre(1e-8, -2e-8)
    mic.slit.set_angle(0.25)
    assert mic.beam.dose_rate_e_per_m2_s / 1e20 == pytest.approx(79.5, abs=0.05)  # physics.md §7 check 10
    assert (mic.lens.mode, mic.lens.magnification, mic.lens.defocus_m) == ("DIFF", 12345.678, -3.3e-7)
    assert (mic.slit.inserted, mic.slit.width_m, mic.slit.height_m) == (False, 123.4e-9, 1.5e-6)
    assert (mic.slit.centre_m, mic.slit.angle_rad) == ((1e-8, -2e-8), 0.25)
    st = emu.microscope.state
    assert (st.slit_width_m, st.magnification, st.beam_current_A) == (123.4e-9, 12345.678, 1e-9)
    assert mic.beam.high_tension_V == 300e3
    ident = mic.identify()
    assert (ident.vendor, ident.model) == ("insitem", "TEM emulator")
    assert mic.errors() == []


def test_out_of_range_on_the_server_side_leaves_state_and_raises(rig: Any) -> None:
    emu, mic, _ = rig
    with pytest.raises(InstrumentError) as info:
        mic.lens.set_magnification(0.5)  # below 1: refused by the client table
    assert info.value.code == -222
    assert mic.lens.magnification == emu.microscope.state.magnification


def test_stage_and_shifts_round_trip_and_refuse_out_of_range(rig: Any) -> None:
    emu, mic, _ = rig
    mic.stage.move_to(x_m=1.5e-5, y_m=-2.5e-5, z_m=1e-6, alpha_rad=0.2)
    mic.lens.set_image_shift(1e-7, -3e-7)
    mic.beam.set_shift(-4e-8, 5e-8)
    pos = mic.stage.position
    assert (pos.x_m, pos.y_m, pos.z_m, pos.alpha_rad) == (1.5e-5, -2.5e-5, 1e-6, 0.2)
    assert mic.lens.image_shift_m == (1e-7, -3e-7) and mic.beam.shift_m == (-4e-8, 5e-8)
    assert not mic.stage.moving
    assert emu.microscope.stage.position == pos  # the simulated microscope's own state
    with pytest.raises(InstrumentError, match="stage limits") as info:
        mic.stage.move_to(z_m=5e-4)  # inside the wire's bound, beyond the emulated stage's +-0.3 mm
    assert info.value.code == -222
    with pytest.raises(InstrumentError) as info:
        mic.lens.set_image_shift(5e-6, 0.0)  # beyond the emulated +-2 um
    assert info.value.code == -222
    assert mic.stage.position == pos and mic.lens.image_shift_m == (1e-7, -3e-7)
    assert mic.errors() == []


def test_blank_failing_with_error_raises_and_beam_stays_on(rig: Any) -> None:
    emu, mic, _ = rig
    mic.beam.set_blanked(False)
    emu.instrument.blank_fault = "error"
    with pytest.raises(InstrumentError, match="did not take effect") as info:
        mic.safe_state()
    assert info.value.code == -240
    assert not emu.microscope.state.blanked
    assert mic.errors() == []  # drained by the failed blank
    emu.instrument.blank_fault = None
    mic.safe_state()
    assert emu.microscope.state.blanked


def test_silent_blank_failure_is_caught_by_the_read_back(rig: Any) -> None:
    emu, mic, _ = rig
    mic.beam.set_blanked(False)
    emu.instrument.blank_fault = "silent"
    with pytest.raises(InstrumentError, match="reads 0"):
        mic.beam.set_blanked(True)


def test_queued_instrument_errors_surface_on_next_set(rig: Any) -> None:
    emu, mic, _ = rig
    emu.instrument.push_error(-240, "Hardware error; stigmator")
    with pytest.raises(InstrumentError) as info:
        mic.slit.set_width(2e-7)
    assert info.value.code == -240


def test_no_answer_times_out_then_recovers(rig: Any) -> None:
    emu, mic, _ = rig
    emu.faults.inject("timeout")
    with pytest.raises(DeviceTimeoutError):
        _ = mic.beam.blanked
    assert mic.beam.blanked is True  # the next query gets its own answer, not a stale one


def test_garbled_and_truncated_replies(rig: Any) -> None:
    emu, mic, _ = rig
    emu.faults.inject("garble")
    with pytest.raises(CommunicationError):
        _ = mic.slit.centre_m
    emu.faults.inject("truncate")
    with pytest.raises(CommunicationError):
        _ = mic.slit.centre_m  # "0.0,0.0" cut to "0.0" is not a pair
    assert mic.slit.centre_m == (0.0, 0.0)


def test_latency_is_applied(rig: Any) -> None:
    emu, mic, _ = rig
    emu.faults.latency_s = 0.05
    t0 = time.perf_counter()
    _ = mic.beam.blanked
    assert time.perf_counter() - t0 >= 0.05


def test_dropped_tcp_connection_is_reconnected_once() -> None:
    instrument, _ = make_instrument()
    with TemEmulator(instrument) as emu:
        mic = TemMicroscope(emu.resource, timeout_s=0.5)
        try:
            mic.beam.set_blanked(False)
            emu.faults.inject("drop")
            mic.safe_state()  # dropped, reconnected, re-sent once (idempotent), read-back agrees
            assert emu.microscope.state.blanked
            emu.faults.inject("drop", 2)
            with pytest.raises(CommunicationError):
                _ = mic.beam.blanked
            assert mic.beam.blanked  # a later call gets a fresh connection
        finally:
            mic.close()


def test_malformed_input_gets_errors_not_a_crash() -> None:
    instrument, _ = make_instrument()
    with TemEmulator(instrument) as emu:
        with socket.create_connection((emu.server.host, emu.server.port), timeout=2) as s:  # type: ignore[union-attr]
            s.sendall(b"\xff\xfe\x00garbage\n;;;\n:::?\n" + b"A" * 70000 + b"\nSYST:ERR:COUN?\n")
            f = s.makefile("rb")
            count = int(f.readline())
            assert count >= 2
            s.sendall(b"*IDN?\n")
            assert f.readline().startswith(b"insitem,TEM emulator")


def test_bound_to_loopback_with_nodelay() -> None:
    instrument, _ = make_instrument()
    with TemEmulator(instrument) as emu:
        assert emu.server.host == "127.0.0.1" and emu.server.port > 0  # type: ignore[union-attr]
        assert emu.resource == f"TCPIP0::127.0.0.1::{emu.server.port}::SOCKET"  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", emu.server.port), timeout=2) as s:  # type: ignore[union-attr]
            s.sendall(b"*OPC?\n")
            assert s.makefile("rb").readline() == b"1\n"
            (served,) = emu.server._clients  # type: ignore[union-attr]
            assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.hardware("tem")
def test_real_bridge_blank_round_trip(hardware_resources: dict[str, str]) -> None:
    """On a real microscope: identify, read the optics, blank (and leave it blanked)."""
    mic = TemMicroscope(hardware_resources["tem"], timeout_s=5.0)
    try:
        ident = mic.identify()
        assert ident.vendor and ident.model
        assert 10e3 <= mic.beam.high_tension_V <= 1.5e6
        assert mic.lens.mode in ("TEM", "DIFF")
        mic.safe_state()
        assert mic.beam.blanked
        assert mic.errors() == []
    finally:
        mic.close()
