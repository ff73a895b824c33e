"""Fault matrix, signals: `insitem run --hardware` in a child process, signalled at each moment.

The emulators run in this (the test) process, so the instruments' state after the child ended is
read from them, not from anything the child believed. The child (signal_child.py) is the real
CLI with one hook that signals the process at the moment.

* SIGINT (first Ctrl-C): the running exposure is finished, then a clean stop - status
  ``stopped``, exit 0, instruments safe.
* SIGTERM: stop at once - status ``interrupted`` naming SIGTERM, exit 1, instruments safe.
* SIGKILL: nothing runs on the way out. The file (SWMR) holds every committed exposure and
  flushed point; the instruments are left as they were (the report records it). `insitem run
  --resume --hardware` then puts them in their safe state at setup, finishes the run, and ends safe.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from fault_matrix import Cell, cells
from faultkit import N_EXPOSURES, file_record, instruments_safe, resource_args, serve, state_text, write_protocol

from insitem.acquisition.cli import main

pytestmark = [pytest.mark.wire, pytest.mark.faults]

CHILD = Path(__file__).with_name("signal_child.py")


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=() if c.fast else (pytest.mark.slow,)) for c in cells("signal")]


@pytest.mark.parametrize("cell", _params())
def test_signal(cell: Cell, tmp_path: Path, record_cell: Callable[[str, str, str], None]) -> None:
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        argv = ["run", str(protocol_path), "--hardware", "--out", str(out), *resource_args(servers), "--no-progress", "--no-figures"]
        proc = subprocess.run([sys.executable, str(CHILD), cell.moment, cell.fault, *argv],
                              capture_output=True, text=True, timeout=120)
        off, blanked = instruments_safe(servers)
        rec = file_record(out)
        state = state_text(servers)
        outcome = {0: "safe stop (stopped)", 1: "safe stop (interrupted)"}.get(proc.returncode, f"killed (exit {proc.returncode})")
        record_cell(cell.id, outcome, f"{rec['exposures']} img, {rec['ec']} pts kept; {state}"
                    + ("; resumed to completed" if cell.resume else ""))
        assert "Traceback" not in proc.stderr, proc.stderr

        if cell.fault == "SIGINT":
            assert proc.returncode == 0, proc.stderr
            assert rec["status"] == "stopped" and "Ctrl-C" in rec["reason"]
            # the exposure running when Ctrl-C came was finished and kept
            assert rec["exposures"] >= {"configuration": 0, "mid-CV step": 1}.get(cell.moment, 2)
        elif cell.fault == "SIGTERM":
            assert proc.returncode == 1, proc.stderr
            assert rec["status"] == "interrupted" and "SIGTERM" in rec["reason"]
        else:
            assert proc.returncode == -9
            assert rec["status"] == "running"  # nobody closed it
        if cell.fault != "SIGKILL":
            assert off and blanked, state
            assert any("safe state: potentiostat output off, beam blanked" in m for _, m in rec["events"])
        # exposures completed before the signal are in the file, each with its record
        before = {"configuration": 0, "mid-CV step": 1}.get(cell.moment, 1)
        assert rec["exposures"] >= before
        assert len(rec["records"]["t_start_s"]) == rec["exposures"]
        if cell.moment != "configuration":
            assert rec["ec"] > 0

        if cell.resume:
            resume = ["run", "--resume", str(out), "--hardware", *resource_args(servers), "--no-progress", "--no-figures"]
            assert main(resume) == 0
            off, blanked = instruments_safe(servers)
            assert off and blanked
            after = file_record(out)
            assert after["status"] == "completed"
            assert after["exposures"] >= max(rec["exposures"], 1) and after["exposures"] >= N_EXPOSURES - 2
            assert after["ec"] > rec["ec"]
