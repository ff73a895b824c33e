"""The safety supervisor's lease (acquisition/supervisor.py), against the emulators.

State is read from the emulators (the SMU model's output and the world's applied level, the TEM
emulator's blanker), never from the supervisor's messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from insitem.acquisition.supervisor import Lease, LeasedClock, LeaseLapsed, SupervisorLost
from insitem.drivers.clock import RealClock
from insitem.drivers.interfaces import PotentiostatConfig
from insitem.drivers.keithley.k2450 import Keithley2450
from insitem.drivers.tem.client import TemMicroscope
from insitem.simulators.serve import ServerSet, start_servers

pytestmark = pytest.mark.wire

WITHIN_S = 30.0  # generous bound for anything a process does


def _wait_for(cond: Callable[[], bool], timeout_s: float = WITHIN_S) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture
def unsafe() -> Iterator[tuple[ServerSet, Callable[[], bool]]]:
    """Keithley 2450 and TEM emulators over one world: output on, beam unblanked through the
    drivers; with `safe()` reading both back from the emulators."""
    with start_servers("si-nanoparticle-hold", ["keithley2450", "tem"]) as servers:
        pot = Keithley2450(servers.resources["potentiostat"])
        pot.configure(PotentiostatConfig(compliance_A=1e-6))
        pot.set_output(True)
        scope = TemMicroscope(servers.resources["microscope"])
        scope.beam.set_blanked(False)
        smu, tem = servers.smu, servers.servers["tem"].microscope
        assert smu is not None and smu.output_on and not tem.beam.blanked

        def safe() -> bool:
            return (not smu.output_on) and servers.world.applied_V is None and bool(tem.beam.blanked)

        yield servers, safe
        pot.close()
        scope.close()


def _lease(servers: ServerSet, tmp_path: Path, **kw: float) -> Lease:
    return Lease("keithley2450", servers.resources["potentiostat"], servers.resources["microscope"],
                 log_path=tmp_path / "supervisor.log", **kw)  # type: ignore[arg-type]


def test_released_lease_leaves_the_instruments_alone(unsafe: tuple[ServerSet, Callable[[], bool]], tmp_path: Path) -> None:
    servers, safe = unsafe
    lease = _lease(servers, tmp_path)
    lease.arm()
    lease.require_live("the test")
    for _ in range(5):
        lease.renew(force=True)
        time.sleep(0.05)
    lease.release(confirmed=True)
    assert lease._proc.wait(timeout=WITHIN_S) == 0
    assert not safe()  # released: the run's own code owns the instruments


def test_a_dead_run_leaves_the_instruments_safe(unsafe: tuple[ServerSet, Callable[[], bool]], tmp_path: Path) -> None:
    """The run's end of the lease closes without a release (what the kernel does when the run
    dies): the supervisor switches the output off (relay open) and blanks the beam."""
    servers, safe = unsafe
    lease = _lease(servers, tmp_path)
    lease._sock.close()  # the run process "dies"
    assert lease._proc.wait(timeout=WITHIN_S) == 0
    assert safe()
    log = (tmp_path / "supervisor.log").read_text()
    assert "ended without releasing the lease" in log and "beam blanked (BEAM:BLANK? read 1)" in log


def test_the_lease_lapses_when_the_controlling_thread_stalls_even_if_another_thread_renews(
    unsafe: tuple[ServerSet, Callable[[], bool]], tmp_path: Path
) -> None:
    """Only the thread that owns the lease renews it: a busy background thread calling `renew`
    (an I/O thread sleeping on the leased clock) does not keep a stalled main loop's lease
    alive. The supervisor makes everything safe; the owner learns it at its next renewal, with
    the time the beam was read back blanked."""
    servers, safe = unsafe
    lease = _lease(servers, tmp_path, ttl_s=0.5)
    lease.arm()
    lease.require_live("the test")
    clock = LeasedClock(RealClock(), lease)
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            clock.sleep(0.01)  # renews nothing: not the owner

    t = threading.Thread(target=background, daemon=True)
    t.start()
    try:
        assert _wait_for(safe)  # the owner (this thread) renews nothing while it waits here
    finally:
        stop.set()
        t.join()
    with pytest.raises(LeaseLapsed, match="lease lapsed") as info:
        lease.renew()
    assert info.value.beam_blanked_mono_s <= time.monotonic()
    lease.release(confirmed=True)
    assert lease._proc.wait(timeout=WITHIN_S) == 0


def test_a_renewing_run_keeps_its_lease(unsafe: tuple[ServerSet, Callable[[], bool]], tmp_path: Path) -> None:
    """Sleeping on the leased clock renews: 3 s of sleeps on a 0.5 s lease do not lapse it."""
    servers, safe = unsafe
    lease = _lease(servers, tmp_path, ttl_s=0.5)
    lease.arm()
    lease.require_live("the test")
    clock = LeasedClock(RealClock(), lease)
    clock.sleep(3.0)
    lease.renew(force=True)
    assert not safe()
    lease.release(confirmed=True)
    assert lease._proc.wait(timeout=WITHIN_S) == 0


@pytest.mark.skipif(os.name != "posix", reason="sessions and terminal signals are POSIX")
def test_the_supervisor_ignores_the_terminal_and_its_death_stops_the_run(unsafe: tuple[ServerSet, Callable[[], bool]], tmp_path: Path) -> None:
    servers, safe = unsafe
    lease = _lease(servers, tmp_path)
    lease.arm()
    lease.require_live("the test")
    pid = lease.pid
    assert os.getsid(pid) == pid != os.getsid(0)  # a session of its own: no terminal signals reach it
    for sig in (signal.SIGINT, signal.SIGTSTP, signal.SIGHUP):
        os.kill(pid, sig)
    time.sleep(0.5)
    lease.renew(force=True)
    assert lease._proc.poll() is None and not safe()
    os.kill(pid, signal.SIGKILL)
    lease._proc.wait(timeout=WITHIN_S)
    with pytest.raises(SupervisorLost, match="supervisor died"):
        _wait_for(lambda: lease.renew(force=True) is not None)
    with pytest.raises(SupervisorLost):
        lease.require_live("to unblank the beam")
    lease.release(confirmed=True)


def test_unarmed_lease_refuses_to_switch_anything_on(unsafe: tuple[ServerSet, Callable[[], bool]], tmp_path: Path) -> None:
    servers, _ = unsafe
    lease = _lease(servers, tmp_path)
    with pytest.raises(SupervisorLost, match="refusing to unblank the beam: the safety lease is not armed"):
        lease.require_live("to unblank the beam")
    lease.release(confirmed=True)
    lease._proc.wait(timeout=WITHIN_S)


def test_an_unreachable_instrument_is_retried_and_said(tmp_path: Path) -> None:
    """No instrument answers: the supervisor retries each with backoff, one line per try saying
    what is not confirmed yet, and gives up (here after 1 s) with a CRITICAL line; no traceback."""
    dead = "TCPIP0::127.0.0.1::1::SOCKET"
    lease = Lease("keithley2450", dead, dead, log_path=tmp_path / "supervisor.log", give_up_s=1.0)
    lease._sock.close()
    assert lease._proc.wait(timeout=WITHIN_S) == 1
    log = (tmp_path / "supervisor.log").read_text()
    assert log.count("potentiostat NOT confirmed safe yet") >= 2 and log.count("microscope NOT confirmed safe yet") >= 2
    assert "CRITICAL: potentiostat NOT confirmed safe" in log and "CRITICAL: microscope NOT confirmed safe" in log
    assert "Traceback" not in log


def test_usage_error_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "insitem.acquisition.supervisor", "--model", "keithley2450",
                           "--potentiostat", "x", "--microscope", "y"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("give --fd N or --share")
