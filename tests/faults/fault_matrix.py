"""The fault matrix as data: every (fault, moment) cell, what it hits, what must happen.

Shared by the cell tests (test_wire_faults.py, test_signal_faults.py) and by the report
(conftest.py prints the table after a run; docs/reliability.md quotes it).

Expectations:
* ``recovered`` - the run completes (status ``completed``) with every planned exposure;
* ``safe stop`` - the run ends early with status failed / stopped / interrupted and a reason
  that names the fault; every exposure and electrochemical point completed before it is in the file;
* ``killed`` - SIGKILL: none of the run's code runs on the way out; its safety supervisor
  (acquisition/supervisor.py) sees the lease end and puts the instruments in their safe state, the file holds what was
  committed and ``--resume`` finishes the run;
* ``reported unsafe`` - software cannot reach the safe state (a blanker that keeps refusing):
  the run stops with CRITICAL "safe state not confirmed" and the emulator state proves the
  report true;
* ``n/a`` - the fault cannot happen at that moment (the note says why).

Every cell except n/a also asserts, from the emulators' own state, that at the end the
potentiostat output is off and the beam blanked (``reported unsafe``: the beam only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FAULTS = (
    "timeout",
    "drop (never returns)",
    "drop (returns)",
    "garbled reply",
    "truncated reply",
    "error-queue entry",
    "compliance trip",
    "camera saturation",
    "beam-blank fails",
    "beam-blank fails (persistent)",
    "disk full",
    "SIGINT",
    "SIGTERM",
    "SIGKILL",
)
MOMENTS = ("configuration", "mid-CV step", "mid-exposure", "frame readout", "file write")

# a wire fault at "file write": the runner talks to no instrument while it writes the file
_NO_IO_WHILE_WRITING = "no instrument I/O during a file write"


@dataclass(frozen=True)
class Cell:
    fault: str
    moment: str
    expect: str  # recovered | safe stop | killed | reported unsafe | n/a
    target: str = ""  # what the fault hits, one line
    fast: bool = False  # part of `make test` (the representative subset)
    resume: bool = False  # also check that `insitem run --resume` finishes the run

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", f"{self.fault} at {self.moment}").strip("_")


def _transport(fault: str, expect_cfg: str, fast: tuple[str, ...] = (), resume: tuple[str, ...] = ()) -> list[Cell]:
    """The four transport faults hit the same places at each moment."""
    return [
        Cell(fault, "configuration", expect_cfg, "Keithley 2450: reply to the error-queue check after configure",
             "configuration" in fast, "configuration" in resume),
        Cell(fault, "mid-CV step", expect_cfg if fault == "drop (returns)" else "safe stop",
             "Keithley 2450: a reading reply (:READ? / :TRAC:DATA?) between exposures", "mid-CV step" in fast,
             "mid-CV step" in resume),
        Cell(fault, "mid-exposure", expect_cfg if fault == "drop (returns)" else "safe stop",
             "Keithley 2450: a reading reply while the beam is on and the camera integrates", "mid-exposure" in fast,
             "mid-exposure" in resume),
        Cell(fault, "frame readout", "safe stop", "GIF: the GetAcquiredImage reply", "frame readout" in fast,
             "frame readout" in resume),
        Cell(fault, "file write", "n/a", _NO_IO_WHILE_WRITING),
    ]


CELLS: list[Cell] = [
    *_transport("timeout", "safe stop", fast=("mid-exposure",), resume=("mid-CV step",)),
    *_transport("drop (never returns)", "safe stop"),
    *_transport("drop (returns)", "recovered", fast=("mid-CV step",)),
    *_transport("garbled reply", "safe stop", fast=("frame readout",), resume=("frame readout",)),
    *_transport("truncated reply", "safe stop"),
    Cell("error-queue entry", "configuration", "recovered",
         "Keithley 2450: an entry left in the queue before configure (stale: drained and logged, never fatal)", fast=True),
    Cell("error-queue entry", "mid-CV step", "safe stop", "Keithley 2450: an entry queued between exposures (found at the check after the next exposure, or at the step's end)"),
    Cell("error-queue entry", "mid-exposure", "safe stop", "Keithley 2450: an entry queued while exposing"),
    Cell("error-queue entry", "frame readout", "safe stop", "GIF: GetAcquiredImage answers a positive error code"),
    Cell("error-queue entry", "file write", "n/a", _NO_IO_WHILE_WRITING),
    Cell("compliance trip", "configuration", "n/a", "no readings are taken while configuring"),
    Cell("compliance trip", "mid-CV step", "safe stop", "Keithley 2450: every reading trips (more than safety.max_compliance_trips = 3)", fast=True),
    Cell("compliance trip", "mid-exposure", "recovered", "Keithley 2450: one reading trips (within the limit: logged, flagged in the record)"),
    Cell("compliance trip", "frame readout", "n/a", "no readings are taken during the camera read-out"),
    Cell("compliance trip", "file write", "n/a", "no readings are taken during a file write"),
    Cell("camera saturation", "configuration", "n/a", "no frame exists yet"),
    Cell("camera saturation", "mid-CV step", "n/a", "no frame between exposures"),
    Cell("camera saturation", "mid-exposure", "n/a", "saturation shows in the read-out frame (next column)"),
    Cell("camera saturation", "frame readout", "recovered", "GIF: frame with pixels at 65535 (logged, counted in the record)", fast=True),
    Cell("camera saturation", "file write", "n/a", "saturation is a property of the frame, not of the write"),
    Cell("beam-blank fails", "configuration", "safe stop", "TEM: BEAM:BLAN 1 at setup answers -240 once"),
    Cell("beam-blank fails", "mid-CV step", "safe stop", "TEM: the unblank for the next exposure answers -240"),
    Cell("beam-blank fails", "mid-exposure", "safe stop", "TEM: the blank that ends the exposure answers -240 once", fast=True),
    Cell("beam-blank fails", "frame readout", "n/a", "the beam is blanked before the read-out starts"),
    Cell("beam-blank fails", "file write", "n/a", "no blanker command during a file write"),
    Cell("beam-blank fails (persistent)", "configuration", "n/a", "the beam starts blanked; covered by the once-failing row"),
    Cell("beam-blank fails (persistent)", "mid-CV step", "n/a", "the beam is blanked between exposures"),
    Cell("beam-blank fails (persistent)", "mid-exposure", "reported unsafe", "TEM: every BEAM:BLAN answers -240 from the exposure on"),
    Cell("beam-blank fails (persistent)", "frame readout", "n/a", "the beam is blanked before the read-out starts"),
    Cell("beam-blank fails (persistent)", "file write", "n/a", "no blanker command during a file write"),
    Cell("disk full", "configuration", "safe stop", "creating the run file raises ENOSPC (one-line error, no file)"),
    Cell("disk full", "mid-CV step", "safe stop", "every run-file write raises ENOSPC from the first exposure's end on"),
    Cell("disk full", "mid-exposure", "safe stop", "every run-file write raises ENOSPC from an exposure's start on"),
    Cell("disk full", "frame readout", "n/a", "the read-out writes nothing; the write that follows is the next column"),
    Cell("disk full", "file write", "safe stop", "the second exposure's write raises ENOSPC (and every write after it)", fast=True),
    *[
        Cell(sig, m, {"SIGINT": "safe stop", "SIGTERM": "safe stop", "SIGKILL": "killed"}[sig],
             {
                 "configuration": "delivered while the Keithley is being configured",
                 "mid-CV step": "delivered from a timer while a sweep runs between exposures",
                 "mid-exposure": "delivered from a timer 0.1 s into the second exposure",
                 "frame readout": "delivered as the second frame's read-out starts",
                 "file write": "delivered inside the second exposure's record write (between resize and fill)",
             }[m],
             fast=(sig, m) in {("SIGTERM", "frame readout"), ("SIGKILL", "mid-exposure"), ("SIGINT", "file write")},
             resume=sig == "SIGKILL" or (sig, m) == ("SIGTERM", "mid-exposure"))
        for sig in ("SIGINT", "SIGTERM", "SIGKILL")
        for m in MOMENTS
    ],
]

SIGNAL_FAULTS = ("SIGINT", "SIGTERM", "SIGKILL")


def cells(kind: str) -> list[Cell]:
    """Cells run by one test module: 'signal' (subprocess runs) or 'wire' (in-process runs)."""
    runnable = [c for c in CELLS if c.expect != "n/a"]
    if kind == "signal":
        return [c for c in runnable if c.fault in SIGNAL_FAULTS]
    return [c for c in runnable if c.fault not in SIGNAL_FAULTS]


def render(results: dict[str, dict[str, str]]) -> str:
    """Markdown table fault x moment. `results[cell.id]` = {"outcome", "data"}; missing = not run."""
    head = "| fault | " + " | ".join(MOMENTS) + " |"
    rule = "|---|" + "---|" * len(MOMENTS)
    rows = [head, rule]
    by_key = {(c.fault, c.moment): c for c in CELLS}
    for fault in FAULTS:
        out = []
        for moment in MOMENTS:
            c = by_key[(fault, moment)]
            if c.expect == "n/a":
                out.append("n/a")
                continue
            r = results.get(c.id)
            if r is None:
                out.append(f"({c.expect}: not run)")
            else:
                out.append(f"{r['outcome']}; {r['data']}")
        rows.append(f"| {fault} | " + " | ".join(out) + " |")
    return "\n".join(rows)
