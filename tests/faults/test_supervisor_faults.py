"""Fault matrix, the safety supervisor and signals at any moment (acquisition/supervisor.py).

`insitem run --hardware` runs as a child in a session of its own, as a shell runs a foreground
job; signals go to its whole process group (`os.killpg`), as a terminal sends Ctrl-C, Ctrl-Z and
the hang-up of a closed terminal. The run's supervisor is in another session and must not see
them. The instruments' state is read from the emulators (in this process, or over their own
sockets when they run in a separate `insitem serve` that the test freezes), never from the run.

Safe state is awaited by polling within a generous bound (`SAFE_WITHIN_S`), not against a
wall-clock threshold: the measured times are in bench/bench_supervisor.py and docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from faultkit import N_EXPOSURES, file_record, instruments_safe, resource_args, resume_to_completion, serve, state_text, write_protocol

from insitem.acquisition.runfile_read import RunFileReader

pytestmark = [pytest.mark.wire, pytest.mark.faults, pytest.mark.skipif(os.name != "posix", reason="process groups and POSIX signals")]

SAFE_WITHIN_S = 30.0  # generous bound for "the instruments reach their safe state"
EXIT_WITHIN_S = 120.0
INSITEM = Path(sys.executable).with_name("insitem")


def _command(*argv: str) -> list[str]:
    """The installed console script (what a user types), or the module when there is none."""
    if INSITEM.exists():
        return [str(INSITEM), *argv]
    return [sys.executable, "-m", "insitem.cli", *argv]


class Run:
    """`insitem run --hardware` as a foreground job: its own process group; stderr collected."""

    def __init__(self, protocol_path: Path, out: Path, resources: list[str]) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            _command("run", str(protocol_path), "--hardware", "--out", str(out), *resources, "--no-progress", "--no-figures"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        with stream:
            for line in stream:
                into.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def killpg(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def supervisor_pid(self, timeout_s: float = 60.0) -> int:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            for line in list(self.stderr_lines):
                m = re.search(r"safety supervisor pid (\d+)", line)
                if m:
                    return int(m.group(1))
            time.sleep(0.02)
        raise AssertionError(f"no supervisor pid announced: {self.stderr}")

    def wait(self, timeout_s: float = EXIT_WITHIN_S) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        # the supervisor inherits stderr: it may hold the pipe a little longer than the run
        for t in self._readers:
            t.join(timeout=SAFE_WITHIN_S)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.killpg(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    actions: list[Callable[[], None]] = []
    yield actions
    for action in reversed(actions):
        try:
            action()
        except Exception:  # noqa: BLE001 - best effort
            pass


def _wait_for(cond: Callable[[], bool], timeout_s: float = SAFE_WITHIN_S, poll_s: float = 0.02) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return True
        time.sleep(poll_s)
    return cond()


def on_beam(servers: Any, unblanked: int, delay_s: float, action: Callable[[], None], after_blank: bool = False) -> threading.Event:
    """Run `action` `delay_s` after the TEM emulator's `unblanked`-th unblank (or, `after_blank`,
    after the blank that ends that exposure). Returns an Event set once the action ran."""
    inst = servers.servers["tem"].instrument
    orig = inst.set
    count = [0, 0]
    done = threading.Event()

    def fire() -> None:
        action()
        done.set()

    def set_(name: str, value: Any) -> None:
        orig(name, value)
        if name != "beam_blanked":
            return
        if not value:
            count[0] += 1
            if count[0] == unblanked and not after_blank:
                threading.Timer(delay_s, fire).start()
        elif count[0] == unblanked and after_blank and count[1] == 0:
            count[1] = 1
            threading.Timer(delay_s, fire).start()

    inst.set = set_
    return done


def _events(path: Path) -> list[tuple[str, str]]:
    with RunFileReader(path) as r:
        return [(e.level, e.message) for e in r.events()]


def _interrupted_beam_on_s(events: list[tuple[str, str]]) -> float | None:
    for _, message in events:
        m = re.search(r"image at t = .* cut short \(\w+\): ([0-9.eE+-]+) s of beam", message)
        if m:
            return float(m.group(1))
    return None


# ---------------------------------------------------------------------------------------------
# Ctrl-Z (SIGTSTP) and a closed terminal (SIGHUP), to the run's whole process group


@pytest.mark.parametrize(
    "sig,moment",
    [
        pytest.param("SIGTSTP", "mid-exposure", id="SIGTSTP_mid_exposure"),
        pytest.param("SIGTSTP", "mid-CV", id="SIGTSTP_mid_CV", marks=pytest.mark.slow),
        pytest.param("SIGHUP", "mid-exposure", id="SIGHUP_mid_exposure", marks=pytest.mark.slow),
    ],
)
def test_terminal_signal_to_the_process_group(sig: str, moment: str, tmp_path: Path, cleanup: list[Callable[[], None]],
                                              record_cell: Callable[[str, str, str], None]) -> None:
    """Ctrl-Z or a closed terminal stops a hardware run at once and safely (a paused run with the
    beam on is never safe); the supervisor, in its own session, is not stopped with it."""
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        run: list[Run] = []
        signum = getattr(signal, sig)
        fired = on_beam(servers, 2 if moment == "mid-exposure" else 1, 0.1 if moment == "mid-exposure" else 0.3,
                        lambda: run[0].killpg(signum), after_blank=moment == "mid-CV")
        run.append(Run(protocol_path, out, resource_args(servers)))
        cleanup.append(run[0].kill)
        sup = run[0].supervisor_pid()
        rc = run[0].wait()
        assert fired.is_set(), "the signal never fired: " + run[0].stderr
        assert _wait_for(lambda: instruments_safe(servers) == (True, True)), state_text(servers)
        rec = file_record(out)
        record_cell(f"supervisor {sig} {moment}", "safe stop (interrupted)", f"{rec['exposures']} img, {rec['ec']} pts kept; {state_text(servers)}")
        assert rc == 4, run[0].stderr  # stopped at once
        assert "Traceback" not in run[0].stderr
        assert rec["status"] == "interrupted" and sig in rec["reason"], rec["reason"]
        # the supervisor was released (the run confirmed its own safe state), it was not stopped
        assert _wait_for(lambda: not Path(f"/proc/{sup}").exists() or "zombie" in _proc_state(sup), 30.0)
        if moment == "mid-exposure":
            # the exposure cut short is recorded with its true beam-on time, not as a full image
            on_s = _interrupted_beam_on_s(rec["events"])
            assert on_s is not None and 0.05 < on_s < 5.0, rec["events"]
            assert rec["exposures"] == 1
        after = resume_to_completion(servers, out)
        assert after["exposures"] >= N_EXPOSURES - 1


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


# ---------------------------------------------------------------------------------------------
# A stalled run: SIGSTOP


def test_stopped_run_is_made_safe_by_the_supervisor_and_stops_on_sigcont(tmp_path: Path, cleanup: list[Callable[[], None]],
                                                                          record_cell: Callable[[str, str, str], None]) -> None:
    """SIGSTOP (cannot be caught) of the run mid-exposure: its lease lapses and the supervisor
    switches the output off and blanks the beam while the run is still frozen. After SIGCONT the
    run learns of the lapse, records the interrupted exposure's true beam-on time and stops
    (``interrupted``, "lease lapsed"); the file resumes."""
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        run: list[Run] = []
        stopped_at = [0.0]

        def stop() -> None:
            stopped_at[0] = time.monotonic()
            os.kill(run[0].proc.pid, signal.SIGSTOP)

        fired = on_beam(servers, 2, 0.1, stop)
        run.append(Run(protocol_path, out, resource_args(servers)))
        cleanup.append(run[0].kill)
        assert _wait_for(fired.is_set, EXIT_WITHIN_S), run[0].stderr
        assert instruments_safe(servers)[1] is False  # frozen with the beam on
        assert _wait_for(lambda: instruments_safe(servers) == (True, True)), state_text(servers)
        assert run[0].proc.poll() is None and "stopped" in _proc_state(run[0].proc.pid)  # the supervisor did it
        frozen_s = time.monotonic() - stopped_at[0]
        os.kill(run[0].proc.pid, signal.SIGCONT)
        rc = run[0].wait()
        rec = file_record(out)
        record_cell("supervisor SIGSTOP mid-exposure", "safe stop (interrupted, lease lapsed)",
                    f"{rec['exposures']} img, {rec['ec']} pts kept; {state_text(servers)} (by the supervisor)")
        assert rc == 4 and "Traceback" not in run[0].stderr, run[0].stderr
        assert rec["status"] == "interrupted" and "lease lapsed" in rec["reason"], rec["reason"]
        on_s = _interrupted_beam_on_s(rec["events"])
        # the beam was on from the unblank until the supervisor's blank: longer than the 0.3 s
        # exposure (the lease had to lapse), shorter than the time the run was frozen
        assert on_s is not None and 0.3 < on_s <= frozen_s + 1.0, (on_s, frozen_s, rec["events"])
        assert instruments_safe(servers) == (True, True)
        log = out.with_name(out.name + ".supervisor.log").read_text()
        assert "the lease lapsed" in log and "beam blanked (BEAM:BLANK? read 1)" in log
        resume_to_completion(servers, out)


# ---------------------------------------------------------------------------------------------
# The supervisor dies mid-run


def test_supervisor_killed_mid_run_stops_the_run_safely(tmp_path: Path, cleanup: list[Callable[[], None]],
                                                         record_cell: Callable[[str, str, str], None]) -> None:
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        run: list[Run] = []
        fired = on_beam(servers, 1, 0.1, lambda: os.kill(run[0].supervisor_pid(), signal.SIGKILL), after_blank=True)
        run.append(Run(protocol_path, out, resource_args(servers)))
        cleanup.append(run[0].kill)
        rc = run[0].wait()
        assert fired.is_set(), run[0].stderr
        rec = file_record(out)
        record_cell("supervisor killed mid-CV", "safe stop (failed)", f"{rec['exposures']} img, {rec['ec']} pts kept; {state_text(servers)}")
        assert rc == 1 and "Traceback" not in run[0].stderr, run[0].stderr
        assert rec["status"] == "failed" and "supervisor" in rec["reason"], rec["reason"]
        assert instruments_safe(servers) == (True, True), state_text(servers)
        assert rec["exposures"] >= 1
        assert sum("supervisor" in ln for ln in run[0].stderr_lines if ln.startswith("run failed")) == 1, run[0].stderr


# ---------------------------------------------------------------------------------------------
# The instrument hangs, the run is killed, the instrument answers again 25 s later


def _scpi(resource: str, line: str, timeout_s: float = 2.0) -> str:
    """One query over the instrument's own socket (TCPIP0::host::port::SOCKET)."""
    _, host, port, _ = resource.split("::")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        s.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def _state_over_sockets(res: dict[str, str]) -> tuple[str, str]:
    try:
        return _scpi(res["potentiostat"], ":OUTP?"), _scpi(res["microscope"], "BEAM:BLAN?")
    except OSError as exc:
        return f"no answer ({exc})", "?"


@pytest.mark.slow
def test_instrument_hangs_then_the_run_dies_then_it_answers_again(tmp_path: Path, cleanup: list[Callable[[], None]],
                                                                   record_cell: Callable[[str, str, str], None]) -> None:
    """`insitem serve` frozen (SIGSTOP) mid-exposure, the run SIGKILLed 0.5 s later, the
    instruments answering again 25 s later: the supervisor keeps retrying with backoff, says so,
    and ends with `:OUTP?` 0 and `BEAM:BLAN?` 1 read over the instruments' own sockets."""
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    srv = subprocess.Popen(_command("serve", "keithley2450", "gif", "tem", "--protocol", str(protocol_path)),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    cleanup.append(lambda: (os.killpg(srv.pid, signal.SIGCONT), srv.terminate(), srv.wait(timeout=30), srv.stdout and srv.stdout.close()))
    assert srv.stdout is not None
    res: dict[str, str] = {}
    while len(res) < 3:
        line = srv.stdout.readline()
        assert line, "insitem serve ended"
        role, _, value = line.strip().partition("=")
        res[role] = value
    run = Run(protocol_path, out, [a for role, value in res.items() for a in ("--resource", f"{role}={value}")])
    cleanup.append(run.kill)
    # mid-exposure: the beam on, read from the TEM emulator's socket
    assert _wait_for(lambda: _state_over_sockets(res)[1] == "0", EXIT_WITHIN_S, poll_s=0.01), run.stderr
    os.kill(srv.pid, signal.SIGSTOP)
    time.sleep(0.5)
    run.killpg(signal.SIGKILL)
    run.proc.wait(timeout=30)
    time.sleep(25.0)
    os.kill(srv.pid, signal.SIGCONT)
    assert _wait_for(lambda: _state_over_sockets(res) == ("0", "1"), 60.0, poll_s=0.2), _state_over_sockets(res)
    log = out.with_name(out.name + ".supervisor.log").read_text()
    record_cell("supervisor instrument hang + SIGKILL", "safe after the instrument came back",
                f"output off, beam blanked ({log.count('NOT confirmed safe yet')} retries said)")
    assert "the run process ended without releasing the lease" in log
    assert "potentiostat NOT confirmed safe yet" in log and "microscope NOT confirmed safe yet" in log
    assert "output off (:OUTP? read 0)" in log and "beam blanked (BEAM:BLANK? read 1)" in log


# ---------------------------------------------------------------------------------------------
# SIGINT at any moment of the first 2 s

#: 20 moments over the first 2 s after launch, from 0.15 s: before that the interpreter itself is
#: starting and no code of ours runs yet (docs/reliability.md, "Known limits")
SIGINT_MOMENTS_S = [round(float(t), 3) for t in np.linspace(0.15, 2.0, 20)]
OUTCOME = re.compile(r"^(insitem run: SIGINT .*|run (stopped|interrupted|completed).*)$")


@pytest.mark.parametrize("moment_s", [pytest.param(t, marks=() if i == 12 else (pytest.mark.slow,)) for i, t in enumerate(SIGINT_MOMENTS_S)])
def test_sigint_at_any_moment_of_the_first_two_seconds(moment_s: float, tmp_path: Path, cleanup: list[Callable[[], None]]) -> None:
    """Ctrl-C (SIGINT to the process group) `moment_s` after launch - during the imports, the
    supervisor's start, connecting, the file's creation, the setup or the first stairs: the run
    ends in the safe state with no traceback and one line saying how it ended, and its file (if
    any) resumes to completion."""
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        run = Run(protocol_path, out, resource_args(servers))
        cleanup.append(run.kill)
        time.sleep(moment_s)
        run.killpg(signal.SIGINT)
        rc = run.wait()
        assert "Traceback" not in run.stderr, run.stderr
        assert _wait_for(lambda: instruments_safe(servers) == (True, True)), state_text(servers)
        outcomes = [ln for ln in run.stderr_lines if OUTCOME.match(ln)]
        assert len(outcomes) == 1, run.stderr
        if outcomes[0].startswith("insitem run: SIGINT"):  # stopped before the run started
            assert rc == 1
            if not out.exists():
                assert "no run file written" in outcomes[0], outcomes[0]
                return
        else:
            assert rc in (0, 3, 4)
        rec = file_record(out)
        assert rec["status"] in ("stopped", "interrupted", "completed"), rec
        if rec["status"] != "completed":
            resume_to_completion(servers, out)
