"""Fault matrix, instrument and disk faults: the real drivers against the emulated instruments.

One cell per (fault, moment) of fault_matrix.CELLS (signals are in test_signal_faults.py). Each
cell serves the three emulators over one world, runs the 3 s fault-matrix protocol through the
runner with a fault armed at the moment, and checks: the outcome the matrix expects, a reason
naming the fault, the potentiostat off and the beam blanked read from the emulators, the run file
readable (RunFileReader and HyperSpy) with every exposure and electrochemical point completed
before the fault, and - for the cells marked so - that `insitem run --resume` finishes the run.

The representative subset (`Cell.fast`) runs in `make test`; the rest is marked slow (and every
cell `faults`: `make faults` runs the whole matrix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from fault_matrix import Cell, cells
from faultkit import (
    ENOSPC,
    LANDED,
    N_EXPOSURES,
    Moment,
    blank_fails,
    error_query,
    file_record,
    heal,
    instruments_safe,
    on_image,
    on_reply,
    outcome_of,
    reading_query,
    resource_args,
    resume_to_completion,
    run_wire,
    serve,
    state_text,
    write_protocol,
)

from insitem.cli.main import main
from insitem.acquisition.runfile import RunFile
from insitem.drivers.gif import protocol as P
from insitem.simulators.serve import ServerSet

pytestmark = [pytest.mark.wire, pytest.mark.faults]

# what the status reason of a stop must name, per fault (any one of the alternatives)
REASON: dict[str, tuple[str, ...]] = {
    "timeout": ("no answer", "no data for"),
    "drop (never returns)": ("connection", "closed"),
    "drop (returns)": ("connection", "closed"),
    "garbled reply": ("garbled",),
    "truncated reply": ("truncated", "garbled", "closed"),
    "error-queue entry": ("-300", "failed:"),
    "compliance trip": ("compliance",),
    "beam-blank fails": ("-240",),
    "disk full": ("No space left on device",),
}


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=() if c.fast else (pytest.mark.slow,)) for c in cells("wire")]


# ---------------------------------------------------------------------------------------------
# Arming: what each (fault, moment) does to the emulators (or, for disk full, to the run file)


def _keithley_fault(servers: ServerSet, fault: str, moment: str) -> Callable[[], None]:
    ks = servers.servers["keithley2450"]
    match = error_query if moment == "configuration" else reading_query

    def action() -> None:
        if fault == "timeout":
            ks.faults.inject("timeout")
        elif fault == "drop (returns)":
            ks.faults.inject("drop")
        elif fault == "drop (never returns)":
            ks.faults.inject("drop", 10**6)
        elif fault == "garbled reply":
            ks.faults.inject("garble")
        elif fault == "truncated reply":
            ks.faults.inject("truncate")

    return lambda: on_reply(ks, match, action)


def _gif_readout_fault(servers: ServerSet, fault: str) -> Callable[[], None]:
    gif = servers.servers["gif"]

    def action(conn: Any, code: int, image: Any, send: Callable[..., None]) -> None:
        if fault == "timeout":
            return  # DM never answers: the client's read-out timeout ends it
        if fault == "drop (returns)":
            raise OSError("fault: connection closed before the image")
        if fault == "drop (never returns)":
            gif.faults.drop_connection = 10**6  # every later request closes the connection too
            raise OSError("fault: connection closed before the image")
        if fault == "garbled reply":
            gif.faults.garble_header += 1
        elif fault == "truncated reply":
            gif.faults.truncate_image += 1
        elif fault == "camera saturation":
            image.data[:, :4] = 65535
        send(conn, code, image)

    return lambda: on_image(gif, action)


def _arm(cell: Cell, servers: ServerSet, monkeypatch: pytest.MonkeyPatch, moment: list[Moment]) -> Callable[[], None]:
    f, m = cell.fault, cell.moment
    ks, tem, gif = servers.servers["keithley2450"], servers.servers["tem"], servers.servers["gif"]
    if f in ("timeout", "drop (returns)", "drop (never returns)", "garbled reply", "truncated reply", "camera saturation"):
        return _gif_readout_fault(servers, f) if m == "frame readout" else _keithley_fault(servers, f, m)
    if f == "error-queue entry":
        if m == "frame readout":
            return lambda: gif.faults.fail_next(P.Fn.GetAcquiredImage, 1)
        return lambda: ks.instrument.push_error(-300, "Device-specific error; injected")
    if f == "compliance trip":
        smu = servers.smu
        assert smu is not None
        return lambda: smu.force_compliance(1 if m == "mid-exposure" else 100)
    if f == "beam-blank fails":
        return lambda: blank_fails(tem, 1)
    if f == "beam-blank fails (persistent)":
        return lambda: blank_fails(tem, 10**6)
    if f == "disk full":
        return _disk_full(monkeypatch, moment, m)
    raise AssertionError(f"no arming for {cell.id}")


def _disk_full(monkeypatch: pytest.MonkeyPatch, moment: list[Moment], m: str) -> Callable[[], None]:
    """From the moment on, every write of the run file to disk raises ENOSPC (closing still
    stamps the status: a fixed-size attribute needs no new space)."""
    full = [False]
    disk_state: dict[str, int] = {}

    def failing(name: str) -> None:
        orig = getattr(RunFile, name)

        def method(self: RunFile, *a: Any, **k: Any) -> Any:
            if name == "append_exposure" and m == "file write" and not full[0] and self.n_exposures("li-k") == 1:
                moment[0].fire()
            if full[0]:
                raise OSError(ENOSPC.errno, ENOSPC.strerror)
            return orig(self, *a, **k)

        monkeypatch.setattr(RunFile, name, method)

    for name in ("append_exposure", "_write_ec_buffer", "_flush_file", "log", "begin_step", "end_step"):
        failing(name)

    def fire() -> None:
        full[0] = True

    return fire


# ---------------------------------------------------------------------------------------------
# The cells


@pytest.mark.parametrize("cell", _params())
def test_wire_fault(cell: Cell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                    record_cell: Callable[[str, str, str], None]) -> None:
    protocol_path = write_protocol(tmp_path)
    out = tmp_path / "run.h5"
    with serve(protocol_path) as servers:
        if cell.fault == "disk full" and cell.moment == "configuration":
            _disk_full_at_creation(cell, servers, protocol_path, out, monkeypatch, capsys, record_cell)
            return
        holder: list[Moment] = []
        fire = _arm(cell, servers, monkeypatch, holder)
        moment = Moment(cell.moment, fire)
        holder.append(moment)
        run = run_wire(servers, protocol_path, out, moment)
        monkeypatch.undo()
        off, blanked = instruments_safe(servers)
        rec = file_record(out)
        res = run.result
        before_x, before_ec = moment.before
        outcome = outcome_of(res.status)
        if cell.expect == "reported unsafe" and res.safe_state_failures:
            outcome = f"reported unsafe ({res.status})"
        record_cell(cell.id, outcome, f"{rec['exposures']} img, {rec['ec']} pts kept; {state_text(servers)}")
        err = capsys.readouterr().err

        # the fault happened, and the run ended as the matrix says, with a reason naming it
        assert moment.fired, "the fault was never armed: the moment did not come"
        hooked = cell.fault in ("timeout", "drop (returns)", "drop (never returns)", "garbled reply", "truncated reply",
                                "camera saturation") or cell.fault.startswith("beam-blank")
        assert LANDED or not hooked, "the fault was armed but never reached the wire"
        assert "Traceback" not in err, err
        if cell.expect == "recovered":
            assert res.status == "completed", res.reason
            assert rec["exposures"] == N_EXPOSURES
        elif cell.expect == "reported unsafe":
            assert res.status == "failed"
            assert "safe state not confirmed" in res.reason and "microscope" in res.reason
            assert any(level == "CRITICAL" for level, _ in rec["events"])
        else:
            assert res.status == "failed", (res.status, res.reason)
            assert any(word in res.reason for word in REASON[cell.fault]), res.reason
        # the file says the same (closing may add what it could not write)
        assert rec["status"] == res.status and rec["reason"].startswith(res.reason)

        # safety from the emulators: output off always; the beam blanked unless the blanker is broken
        assert off, "potentiostat output left on"
        if cell.expect == "reported unsafe":
            assert not blanked, "the run reported the beam unsafe; the emulator must agree"
            assert "beam" in res.reason or "BEAM" in res.reason
        else:
            assert blanked, "beam left unblanked"

        # data: everything completed before the fault is in the file, and the file holds what the runner counted
        assert rec["exposures"] >= before_x
        if cell.fault == "disk full":
            # points still in the memory buffer when the disk filled cannot be written
            assert rec["exposures"] == res.exposures
        else:
            assert rec["exposures"] == res.exposures and rec["ec"] == res.ec_points
            assert rec["ec"] >= before_ec
        if cell.fault == "camera saturation":
            assert rec["records"]["saturated_px"].max() >= 4 * 80
            assert any("saturated" in msg for _, msg in rec["events"])
        if cell.fault == "compliance trip" and cell.expect == "recovered":
            assert any("compliance tripped" in msg for _, msg in rec["events"])

        if cell.resume:
            heal(servers)
            after = resume_to_completion(servers, out)
            assert after["exposures"] >= rec["exposures"] + 1
            assert after["ec"] > rec["ec"]
            record_cell(cell.id, outcome, f"{rec['exposures']} img, {rec['ec']} pts kept; {state_text(servers)}; resumed to completed")


def _disk_full_at_creation(cell: Cell, servers: ServerSet, protocol_path: Path, out: Path,
                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           record_cell: Callable[[str, str, str], None]) -> None:
    """`insitem run --hardware` when the run file cannot be created: one line, exit 1, rig safe."""

    def create(*a: Any, **k: Any) -> RunFile:
        raise OSError(ENOSPC.errno, ENOSPC.strerror, str(out))

    monkeypatch.setattr(RunFile, "create", create)
    code = main(["run", str(protocol_path), "--hardware", "--out", str(out), *resource_args(servers), "--no-progress", "--no-figures"])
    err = capsys.readouterr().err
    off, blanked = instruments_safe(servers)
    record_cell(cell.id, f"safe stop (exit {code}, no file)", f"nothing to keep; {state_text(servers)}")
    assert code == 1
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert off and blanked
    assert not out.exists()
