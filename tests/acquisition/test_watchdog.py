"""The dead-man watchdog of hardware runs (acquisition/watchdog.py), against the emulators."""

from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

from insitem.acquisition.watchdog import Watchdog
from insitem.drivers.interfaces import PotentiostatConfig
from insitem.drivers.keithley.k2450 import Keithley2450
from insitem.drivers.tem.client import TemMicroscope
from insitem.simulators.serve import ServerSet, start_servers

pytestmark = pytest.mark.wire


@pytest.fixture
def output_on() -> Iterator[tuple[ServerSet, Keithley2450]]:
    """Keithley 2450 and TEM emulators over one world, the 2450's output switched on through its driver."""
    with start_servers("si-nanoparticle-hold", ["keithley2450", "tem"]) as servers:
        assert servers.smu is not None
        pot = Keithley2450(servers.resources["potentiostat"])
        pot.configure(PotentiostatConfig(compliance_A=1e-6))
        pot.set_output(True)
        yield servers, pot


def test_done_releases_the_watchdog_without_touching_anything(output_on: tuple[ServerSet, Keithley2450]) -> None:
    servers, pot = output_on
    smu = servers.smu
    assert smu is not None
    dog = Watchdog("keithley2450", servers.resources["potentiostat"], servers.resources["microscope"])
    proc = dog._proc
    assert proc is not None
    dog.done()
    assert proc.returncode == 0
    assert smu.output_on  # released: the run's own code owns the instruments
    pot.safe_state()
    pot.close()


def test_a_dead_run_leaves_the_instruments_safe(output_on: tuple[ServerSet, Keithley2450]) -> None:
    """The run process dies: the kernel closes the pipe, the watchdog switches the output off
    (relay open) and blanks the beam - read back from the emulators."""
    servers, pot = output_on
    smu = servers.smu
    assert smu is not None
    scope = TemMicroscope(servers.resources["microscope"])
    scope.beam.set_blanked(False)
    tem = servers.servers["tem"].microscope
    assert smu.output_on and not tem.beam.blanked
    proc = subprocess.Popen(
        [sys.executable, "-m", "insitem.acquisition.watchdog", "keithley2450",
         servers.resources["potentiostat"], servers.resources["microscope"]],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None
    proc.stdin.close()  # what the kernel does when the run process is killed
    proc.wait(timeout=60)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 0, err
    assert "potentiostat put in its safe state" in err and "microscope put in its safe state" in err
    assert not smu.output_on and servers.world.applied_V is None
    assert tem.beam.blanked
    pot.close()
    scope.close()


def test_an_unreachable_instrument_is_reported_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "insitem.acquisition.watchdog", "keithley2450", "TCPIP0::127.0.0.1::1::SOCKET", "TCPIP0::127.0.0.1::1::SOCKET"],
        input="", capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all("NOT confirmed safe" in ln for ln in lines)
    assert "Traceback" not in proc.stderr
