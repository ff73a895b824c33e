"""Fault matrix, signals: `insitem run --hardware` in a child process, signalled at each moment.

The emulators run in this (the test) process, so the instruments' state after the child ended is
read from them, not from anything the child believed. The child (signal_child.py) is the real
CLI with one hook that signals the process at the moment.

* SIGINT (first Ctrl-C): the running exposure is finished, then a clean stop - status
  ``stopped``, exit 3, instruments safe.
* SIGTERM: stop at once - status ``interrupted`` naming SIGTERM, exit 4, instruments safe.
* SIGKILL: nothing of the run's own code runs on the way out; its safety supervisor
  (acquisition/supervisor.py) sees its end of the lease close and puts the potentiostat and the
  beam in their safe state. The file (SWMR) holds every committed exposure and flushed point, and `insitem run
  --resume --hardware` finishes the run and ends safe.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from fault_matrix import Cell, cells
from faultkit import N_EXPOSURES, file_record, instruments_safe, resource_args, resume_to_completion, serve, state_text, write_protocol


pytestmark = [pytest.mark.wire, pytest.mark.faults]

CHILD = Path(__file__).with_name("signal_child.py")


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=() if c.fast else (pytest.mark.slow,)) for c in cells("signal")]


def _wait_safe(servers: Any, timeout_s: float = 20.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s and instruments_safe(servers) != (True, True):
        time.sleep(0.05)


@pytest.mark.parametrize("cell", _params())
def test_signal(cell: Cell, tmp_path: Path, record_cell: Callable[[str, str, str], None]) -> None:
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        argv = ["run", str(protocol_path), "--hardware", "--out", str(out), *resource_args(servers), "--no-progress", "--no-figures"]
        proc = subprocess.run([sys.executable, str(CHILD), cell.moment, cell.fault, *argv],
                              capture_output=True, text=True, timeout=120)
        if cell.fault == "SIGKILL":
            _wait_safe(servers)  # the run's supervisor acts once the kernel closed the lease socket
        off, blanked = instruments_safe(servers)
        rec = file_record(out)
        state = state_text(servers) + (" (by the supervisor)" if cell.fault == "SIGKILL" else "")
        outcome = {3: "safe stop (stopped)", 4: "safe stop (interrupted)"}.get(proc.returncode, f"killed (exit {proc.returncode})")
        record_cell(cell.id, outcome, f"{rec['exposures']} img, {rec['ec']} pts kept; {state}"
                    + ("; resumed to completed" if cell.resume else ""))
        assert "Traceback" not in proc.stderr, proc.stderr

        if cell.fault == "SIGINT":
            assert proc.returncode == 3, proc.stderr  # stopped after Ctrl-C
            assert rec["status"] == "stopped" and "Ctrl-C" in rec["reason"]
            # the exposure running when Ctrl-C came was finished and kept
            assert rec["exposures"] >= {"configuration": 0, "mid-CV step": 1}.get(cell.moment, 2)
        elif cell.fault == "SIGTERM":
            assert proc.returncode == 4, proc.stderr  # stopped at once
            assert rec["status"] == "interrupted" and "SIGTERM" in rec["reason"]
        else:
            assert proc.returncode == -9
            assert rec["status"] == "running"  # nobody closed it
        assert off and blanked, state
        if cell.fault != "SIGKILL":
            assert any("safe state: potentiostat output off, beam blanked" in m for _, m in rec["events"])
        # exposures completed before the signal are in the file, each with its record
        before = {"configuration": 0, "mid-CV step": 1}.get(cell.moment, 1)
        assert rec["exposures"] >= before
        assert len(rec["records"]["t_start_s"]) == rec["exposures"]
        if cell.moment != "configuration":
            assert rec["ec"] > 0

        if cell.resume:
            after = resume_to_completion(servers, out)
            assert after["exposures"] >= max(rec["exposures"], 1) and after["exposures"] >= N_EXPOSURES - 2
            assert after["ec"] > rec["ec"]
