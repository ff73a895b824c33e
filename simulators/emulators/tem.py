"""Emulated TEM: the insitem TEM command set over TCP and a pseudo-terminal, backed by a SimMicroscope.

The parser is the command table's (`insitem.drivers.tem.commands.build_parser`), the same the
bridge runs on the microscope PC; only the backend differs (the simulated microscope here, a
vendor adapter there). The servers are the shared emulator servers (`LineServer`, `PtyServer`):
127.0.0.1 by default, port 0 = a free port read back, TCP_NODELAY, malformed input answered
with an error-queue entry, transport faults from `Faults` (latency, no answer, dropped
connection, garbled or truncated reply).

Instrument-level faults live in `TemInstrument`:

* ``blank_fault = "error"`` — ``BEAM:BLAN`` fails: the blanker keeps its state and -240
  "Hardware error" is queued (what a bridge reports when the vendor call raises);
* ``blank_fault = "silent"`` — the blanker ignores the command and nothing is queued (the
  case only the client's read-back can catch);
* ``push_error(code, message)`` — any entry in the error queue.

The beam lease and the token are the bridge's (`insitem.drivers.tem.session.TemService`): an
unblanking connection holds a lease it must renew, and the emulator blanks by itself when that
connection closes, goes silent, or the emulator stops - so tests of those rules run here too.

Usage::

    with TemEmulator() as emu:                      # TCP on a free loopback port
        mic = TemMicroscope(emu.resource)
    with TemEmulator(serial=True) as emu:           # pseudo-terminal pair
        mic = TemMicroscope(emu.resource)           # serial:///dev/pts/N?baud=9600
"""

from __future__ import annotations

from typing import Any, Literal

from insitem.drivers.scpi import ScpiError
from insitem.drivers.tem.session import Session, TemService
from insitem.simulators.emulators import Faults, LineServer, PtyServer
from insitem.simulators.microscope import SimMicroscope

BlankFault = Literal["error", "silent"] | None


class TemInstrument:
    """The command set served from a `SimMicroscope` (a `LineInstrument` for the servers)."""

    def __init__(
        self, microscope: SimMicroscope | None = None, serial_number: str = "0001", *, token: str | None = None
    ) -> None:
        self.microscope = microscope or SimMicroscope()
        self.serial_number = serial_number
        self.blank_fault: BlankFault = None
        self.service = TemService(self, token=token, name="TEM emulator")
        self.parser = self.service.parser

    # -- LineInstrument with sessions (the lease and token live in the service) ----------------------
    def handle(self, line: str) -> str | None:
        """One line as the current connection (fault hooks may wrap this method)."""
        return self.service.handle(line)

    def open_session(self, peer: str) -> Session:
        return self.service.open_session(peer)

    def handle_session(self, session: Session, line: str) -> str | None:
        with self.service.speaking_as(session):
            return self.handle(line)

    def close_session(self, session: Session) -> None:
        self.service.close_session(session)

    def push_error(self, code: int, message: str | None = None) -> None:
        """Queue an error-queue entry (fault injection)."""
        self.service.push_error(code, message)

    # -- TemBackend ------------------------------------------------------------------------------
    def identity(self) -> str:
        return f"insitem,TEM emulator,{self.serial_number},0.1"

    def get(self, name: str) -> Any:
        m = self.microscope
        st = m.state
        getters = {
            "beam_blanked": lambda: m.beam.blanked,
            "high_tension_V": lambda: m.beam.high_tension_V,
            "beam_current_A": lambda: m.beam.current_A,
            "illuminated_diameter_m": lambda: st.illuminated_diameter_m,
            "illuminated_area_m2": lambda: m.beam.illuminated_area_m2,
            "lens_mode": lambda: m.lens.mode,
            "magnification": lambda: m.lens.magnification,
            "defocus_m": lambda: m.lens.defocus_m,
            "slit_inserted": lambda: m.slit.inserted,
            "slit_width_m": lambda: m.slit.width_m,
            "slit_height_m": lambda: m.slit.height_m,
            "slit_centre_m": lambda: m.slit.centre_m,
            "slit_angle_rad": lambda: m.slit.angle_rad,
            "stage_x_m": lambda: m.position.stage["x_m"],
            "stage_y_m": lambda: m.position.stage["y_m"],
            "stage_z_m": lambda: m.position.stage["z_m"],
            "stage_alpha_rad": lambda: m.position.stage["alpha_rad"],
            "stage_moving": lambda: False,  # simulated moves are instantaneous
            "image_shift_m": lambda: m.position.image_shift_m,
            "beam_shift_m": lambda: m.position.beam_shift_m,
        }
        return getters[name]()

    def set(self, name: str, value: Any) -> None:
        st = self.microscope.state  # the state raises ValueError out of range -> -222
        pos = self.microscope.position
        if name == "beam_blanked":
            if self.blank_fault == "error":
                exc = ScpiError(-240)
                exc.message = "Hardware error; beam blanker did not respond"
                raise exc
            if self.blank_fault == "silent":
                return
            st.set_blanked(bool(value))
            return
        setters = {
            "beam_current_A": st.set_beam_current,
            "illuminated_diameter_m": st.set_illuminated_diameter,
            "lens_mode": st.set_mode,
            "magnification": st.set_magnification,
            "defocus_m": st.set_defocus,
            "slit_inserted": st.set_slit_inserted,
            "slit_width_m": st.set_slit_width,
            "slit_height_m": st.set_slit_height,
            "slit_centre_m": lambda v: st.set_slit_centre(*v),
            "slit_angle_rad": st.set_slit_angle,
            "stage_x_m": lambda v: pos.move_stage(x_m=v),
            "stage_y_m": lambda v: pos.move_stage(y_m=v),
            "stage_z_m": lambda v: pos.move_stage(z_m=v),
            "stage_alpha_rad": lambda v: pos.move_stage(alpha_rad=v),
            "image_shift_m": lambda v: pos.set_image_shift(*v),
            "beam_shift_m": lambda v: pos.set_beam_shift(*v),
        }
        setters[name](value)


class TemEmulator:
    """A `TemInstrument` behind a TCP (default) or pseudo-terminal server; a context manager."""

    def __init__(
        self,
        instrument: TemInstrument | None = None,
        *,
        serial: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.instrument = instrument or TemInstrument()
        self.server: LineServer | PtyServer = PtyServer(self.instrument) if serial else LineServer(
            self.instrument, host, port
        )

    @property
    def resource(self) -> str:
        """Resource string for `TemMicroscope`: VISA TCPIP SOCKET, or pyserial for the pty."""
        return self.server.resource_string

    @property
    def faults(self) -> Faults:
        return self.server.faults

    @property
    def microscope(self) -> SimMicroscope:
        return self.instrument.microscope

    def start(self) -> "TemEmulator":
        self.server.start()
        return self

    def stop(self) -> None:
        """Blank a leased beam (confirmed, or reported after 1 s of retries), then close."""
        self.instrument.service.shutdown(confirm_s=1.0)
        self.server.stop()

    def __enter__(self) -> "TemEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
