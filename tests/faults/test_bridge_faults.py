"""Fault cells of the TEM beam lease: the bridge (or the emulator) blanks by itself.

Each cell unblanks through a client, takes that client away - it disconnects, it goes silent
(SIGSTOP of its process, or a socket that just stops sending), or the server shuts down (SIGTERM
/ SIGINT of `insitem bridge tem`, stop() of the emulator) - and asserts that ``BEAM:BLAN?`` reads
1 from the emulator over a fresh connection, or from the vendor API's own state (the
temscript-shaped fake in tests/drivers/tem/fakevendor keeps it in a file that outlives the
bridge process). Bounds are generous (`BOUND_S`): these cells prove *that* the beam is blanked
without the client's help; how fast is the lease length (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from insitem.drivers.tem.client import TemMicroscope
from insitem.simulators.emulators.tem import TemEmulator

pytestmark = [pytest.mark.faults, pytest.mark.wire]

BOUND_S = 30.0  # generous: the leases below are 0.5-1 s
FAKE_VENDOR = Path(__file__).parents[1] / "drivers" / "tem" / "fakevendor"
POSIX = os.name == "posix"


def wait_for(cond: Callable[[], bool], what: str, bound_s: float = BOUND_S) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < bound_s, f"not within {bound_s} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - t0


def ask(port: int, line: str) -> str:
    """One query over a fresh connection (what an operator's terminal would see)."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as s:
        s.sendall(line.encode("ascii") + b"\n")
        with s.makefile("rb") as f:
            return f.readline().decode("ascii").strip()


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN", raising=False)
    monkeypatch.delenv("INSITEM_BRIDGE_TOKEN_FILE", raising=False)


@pytest.fixture
def emu() -> Iterator[TemEmulator]:
    with TemEmulator() as e:
        yield e


CLIENT = textwrap.dedent(
    """
    import sys, time
    from insitem.drivers.tem.client import TemMicroscope
    scope = TemMicroscope(sys.argv[1], lease_s=float(sys.argv[2]))
    scope.beam.set_blanked(False)
    print("unblanked", flush=True)
    time.sleep(600)  # the renewal thread keeps the lease while the main thread sleeps
    """
)


def start_client(resource: str, lease_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, resource, str(lease_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the client unblanked (or died)
    if line.strip() != "unblanked":
        proc.kill()
        raise AssertionError(f"client did not unblank: {line!r} {proc.communicate(timeout=BOUND_S)}")
    return proc


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=BOUND_S)


# -- the client goes away -----------------------------------------------------------------------


def test_unblanking_client_killed_beam_blanked_at_disconnect(emu: TemEmulator) -> None:
    """SIGKILL (or a crash) of the process that unblanked: the kernel closes its connection and
    the emulator blanks at once - no lease needs to run out (the lease here is 60 s)."""
    proc = start_client(emu.resource, 60.0)
    try:
        assert ask(emu.server.port, "BEAM:BLAN?") == "0"  # type: ignore[union-attr]
        proc.kill()
        wait_for(lambda: emu.microscope.beam.blanked, "blank after the client's connection closed")
        assert ask(emu.server.port, "BEAM:BLAN?") == "1"  # type: ignore[union-attr]
    finally:
        finish(proc)


@pytest.mark.skipif(not POSIX, reason="SIGSTOP is POSIX")
def test_unblanking_client_stopped_lease_runs_out(emu: TemEmulator) -> None:
    """SIGSTOP of the whole client process (its renewal thread too): the connection stays open,
    the renewals stop, the 1 s lease runs out and the emulator blanks."""
    proc = start_client(emu.resource, 1.0)
    try:
        lease = emu.instrument.service.lease
        assert lease is not None
        first = lease.expires_at
        wait_for(lambda: lease.expires_at > first, "a renewal while the client runs")
        assert not emu.microscope.beam.blanked
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: emu.microscope.beam.blanked, "blank after the stopped client's lease ran out")
        assert ask(emu.server.port, "BEAM:BLAN?") == "1"  # type: ignore[union-attr]
        assert proc.poll() is None  # still alive, only silent: the lease did it, not a disconnect
    finally:
        if POSIX and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        finish(proc)


def test_socket_that_stops_sending_lease_runs_out(emu: TemEmulator) -> None:
    """A connection that unblanks with a 0.5 s lease and then says nothing more, kept open."""
    port = emu.server.port  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND_S) as s:
        s.sendall(b"BEAM:LEAS 0.5;:BEAM:BLAN 0;:BEAM:BLAN?\n")
        with s.makefile("rb") as f:
            assert f.readline().strip() == b"0"
        wait_for(lambda: emu.microscope.beam.blanked, "blank after the silent connection's lease ran out")
        assert ask(port, "BEAM:BLAN?;:BEAM:LEAS:HOLD?") == "1;NONE"


def test_emulator_stopped_while_unblanked_blanks(emu: TemEmulator) -> None:
    scope = TemMicroscope(emu.resource, lease_s=60.0)
    try:
        scope.beam.set_blanked(False)
        assert not emu.microscope.beam.blanked
        emu.stop()
        assert emu.microscope.beam.blanked
    finally:
        scope.close()


# -- the bridge process shuts down ------------------------------------------------------------------


class BridgeProcess:
    """`insitem bridge tem --vendor temscript` on a free port, against the temscript-shaped fake."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.state = tmp_path / "temscript-state.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FAKE_VENDOR), os.environ.get("PYTHONPATH", "")]),
                   FAKE_TEMSCRIPT_STATE=str(self.state))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "insitem.cli", "bridge", "tem", "--vendor", "temscript", "--port", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.resource = self._wait_resource()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def _wait_resource(self) -> str:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "listening:" in line:
                return line.split("listening:", 1)[1].split()[0]
        self.proc.kill()
        raise AssertionError(f"bridge did not start: {''.join(self.err)}")

    def blanked(self) -> bool:
        return bool(json.loads(self.state.read_text())["blanked"])

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=BOUND_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=BOUND_S)
        self._reader.join(timeout=BOUND_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.mark.skipif(not POSIX, reason="signals to a child process are POSIX here")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_bridge_shutdown_while_unblanked_blanks_and_reads_back(tmp_path: Path, sig: str) -> None:
    bridge = BridgeProcess(tmp_path)
    scope = TemMicroscope(bridge.resource, lease_s=60.0)  # the lease cannot be what blanks
    try:
        scope.beam.set_blanked(False)
        assert bridge.blanked() is False
        assert bridge.stop(getattr(signal, sig)) == 0
        assert bridge.blanked() is True  # the vendor API's own state, after the bridge exited
        err = "".join(bridge.err)
        assert "beam blanked by the bridge (the bridge is shutting down" in err and "BEAM:BLAN? reads 1" in err
        assert "Traceback" not in err
    finally:
        scope.close()
        bridge.close()


@pytest.mark.skipif(not POSIX, reason="SIGKILL of a child process is POSIX here")
def test_bridge_client_killed_blanks_through_the_vendor_api(tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path)
    try:
        proc = start_client(bridge.resource, 60.0)
        assert bridge.blanked() is False
        proc.kill()
        wait_for(bridge.blanked, "the bridge blanking through temscript after its client died")
        finish(proc)
    finally:
        bridge.close()


def test_bridge_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(FAKE_VENDOR))
    env.pop("INSITEM_BRIDGE_TOKEN", None)
    env.pop("INSITEM_BRIDGE_TOKEN_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "insitem.cli", "bridge", "tem", "--vendor", "temscript", "--bind", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, env=env, timeout=BOUND_S,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on '0.0.0.0'" in lines[0] and "token" in lines[0]


@pytest.mark.skipif(not POSIX, reason="signals to a child process are POSIX here")
def test_bridge_beyond_loopback_with_a_token_warns_and_guards(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-thirty-two-characters\n")
    bridge = BridgeProcess(tmp_path, "--bind", "0.0.0.0", "--token-file", str(token_file))
    try:
        assert any("WARNING" in line and "beyond loopback" in line for line in bridge.err)
        port = int(bridge.resource.split("::")[2])
        assert ask(port, "BEAM:BLAN 0;:SYST:ERR?").startswith("-203,")
        assert bridge.blanked() is True
        scope = TemMicroscope(f"TCPIP0::127.0.0.1::{port}::SOCKET", token="a-token-of-thirty-two-characters")
        try:
            scope.beam.set_blanked(False)
            assert bridge.blanked() is False
        finally:
            scope.close()
        wait_for(bridge.blanked, "blank after the authenticated client closed")
        assert bridge.stop(signal.SIGTERM) == 0
    finally:
        bridge.close()




@pytest.mark.skipif(not POSIX, reason="signals to a child process are POSIX here")
def test_bridge_mag_table_file_drives_lens_mag(tmp_path: Path) -> None:
    """`--mag-table` gives the NullMicroscope-shaped adapter its steps (index x 10000)."""
    table = tmp_path / "mags.csv"
    table.write_text("index,magnification\n1,10000\n2,20000\n3,30000\n")
    bridge = BridgeProcess(tmp_path, "--mag-table", str(table))
    scope = TemMicroscope(bridge.resource)
    try:
        scope.lens.set_magnification(30000.0)
        assert scope.lens.magnification == 30000.0
        assert json.loads(bridge.state.read_text())["magnification_index"] == 3
        assert bridge.stop(signal.SIGTERM) == 0
    finally:
        scope.close()
        bridge.close()
