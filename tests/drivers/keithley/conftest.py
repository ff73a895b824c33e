"""Fixtures: emulated Keithley SourceMeters on free loopback ports and pseudo-terminals."""

from __future__ import annotations

from typing import Iterator

import pytest

from insitem.drivers.clock import VirtualClock
from insitem.simulators.emulators import LineServer, PtyServer
from insitem.simulators.emulators.keithley2400 import Keithley2400Emulator
from insitem.simulators.emulators.keithley2450 import Keithley2450Emulator
from insitem.simulators.emulators.smu import ResistorLoad

EMULATORS = {"2400": Keithley2400Emulator, "2450": Keithley2450Emulator}
LOAD_OHM = 10e3


class Bench:
    """An emulator behind a server, and how a driver reaches it."""

    def __init__(self, model: str, path: str) -> None:
        self.model = model
        self.path = path
        self.clock = VirtualClock()
        self.load = ResistorLoad(LOAD_OHM)
        self.emulator = EMULATORS[model](self.load, self.clock, seed=1)
        self.server: LineServer | PtyServer = LineServer(self.emulator) if path == "tcp" else PtyServer(self.emulator)
        self.server.start()

    @property
    def resource(self) -> str:
        if self.path == "pty-visa":
            assert isinstance(self.server, PtyServer)
            return self.server.visa_resource_string
        return self.server.resource_string

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(params=["2400", "2450"])
def model(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["tcp", "pty-serial"])
def bench(request: pytest.FixtureRequest, model: str) -> Iterator[Bench]:
    b = Bench(model, request.param)
    yield b
    b.stop()
