"""Emulated instruments: line-based servers over loopback TCP and pseudo-terminal serial pairs.

Shared by every emulator (Keithley SourceMeters, the TEM command set); the servers live in
`insitem.drivers.lineserver` (the TEM bridge serves with them too) and are re-exported here:

* `LineServer` - TCP: binds 127.0.0.1 by default, port 0 picks a free port (read back in
  `.port`), `TCP_NODELAY` on every client socket and on Linux `TCP_QUICKACK` re-armed after each
  read (design.md §5 "Socket latency": otherwise pyvisa-py clients stall ~40 ms per query), one
  thread per client, malformed input answered with an instrument error and never a crash,
  nothing received is ever eval'd or unpickled.
* `PtyServer` - the same over `os.openpty()`: the client opens `.slave_path` with pyserial
  (``serial:///dev/pts/N``) or VISA (``ASRL/dev/pts/N::INSTR``).
* `Faults` - fault injection on request: latency, timeout (no answer), dropped connection,
  garbled reply, truncated reply; instrument-level faults (error-queue entries, compliance trips)
  live in the instrument (`ScpiEmulator.push_error`, `SmuModel.force_compliance`).

An instrument is any object with ``handle(line: str) -> str | None`` (the response to one
received line, or None) - the servers serialise calls to it with one lock, so the instrument's
state is shared by every client as on a real instrument.
"""

from __future__ import annotations

from typing import Any

from insitem.drivers.lineserver import (  # noqa: F401 - re-exported for the emulators and tests
    GARBLED,
    MAX_LINE_BYTES,
    Faults,
    LineInstrument,
    LineServer,
    PtyServer,
)
from insitem.drivers.scpi import ScpiParser, format_error

# ---------------------------------------------------------------------------------------------
# SCPI instrument base


class ScpiEmulator:
    """An instrument whose input is SCPI: a `ScpiParser` plus the IEEE 488.2 common commands.

    Subclasses register their subsystems in `_build(parser)`; `identity` is the *IDN? answer.
    """

    identity = "INSITEM,EMULATOR,0,0"

    def __init__(self) -> None:
        self.parser = ScpiParser()
        self.parser.add_many(
            [
                ("*IDN", None, lambda a: self.identity),
                ("*RST", lambda a: self.reset(), None, (0, 0)),
                ("*CLS", lambda a: self.parser.errors.clear(), None, (0, 0)),
                ("*OPC", lambda a: None, lambda a: "1", (0, 0)),
                ("*WAI", lambda a: None, None, (0, 0)),
                ("*ESR", None, lambda a: "0"),
                ("*STB", None, lambda a: "0"),
            ]
        )
        self._build(self.parser)

    def _build(self, parser: ScpiParser) -> None:
        """Register the instrument's own commands."""

    def reset(self) -> None:
        """*RST: instrument defaults."""

    def handle(self, line: str) -> str | None:
        return self.parser.execute(line)

    def push_error(self, code: int, message: str | None = None) -> None:
        """Queue an instrument error (fault injection or internal)."""
        self.parser.push_error(code, message)

    def error_reply(self) -> str:
        return format_error(*self.parser.pop_error())


# ---------------------------------------------------------------------------------------------
# Factory for `insitem serve`

EMULATOR_KINDS = ("keithley2400", "keithley2450", "keithley2400-serial", "keithley2450-serial")


def serve(kind: str, host: str = "127.0.0.1", port: int = 0, load: Any = None, clock: Any = None) -> Any:
    """Start an emulated instrument; return the running server (`.resource_string`, `.stop()`).

    `kind`: one of EMULATOR_KINDS; the ``-serial`` variants serve a pseudo-terminal instead of
    TCP (host/port ignored). `load` defaults to a 10 kOhm `ResistorLoad`, `clock` to a RealClock.
    """
    from insitem.drivers.clock import RealClock
    from insitem.simulators.emulators.keithley2400 import Keithley2400Emulator
    from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
    from insitem.simulators.emulators.smu import ResistorLoad

    base, _, variant = kind.lower().partition("-")
    makers = {"keithley2400": Keithley2400Emulator, "keithley2450": Keithley2450Emulator}
    if base not in makers or variant not in ("", "serial"):
        raise ValueError(f"unknown emulator {kind!r}; expected one of {', '.join(EMULATOR_KINDS)}")
    instrument = makers[base](load if load is not None else ResistorLoad(), clock if clock is not None else RealClock())
    server: LineServer | PtyServer
    if variant == "serial":
        server = PtyServer(instrument)
    else:
        server = LineServer(instrument, host=host, port=port)
    return server.start()
