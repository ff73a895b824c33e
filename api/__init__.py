"""insitem from Python: load and plan protocols, dry-run them, open, analyse and export run files.

A notebook session::

    import insitem.api as ins

    protocol = ins.load_protocol("loopback-hold")          # a shipped name, a file, YAML text or a dict
    print(ins.plan(protocol).duration_s)                   # seconds; .dose_e_per_m2, .data_bytes, ...
    outcome = ins.dry_run(protocol, "runs/hold.h5")         # the simulated rig, virtual clock
    # ins.run(protocol, "runs", hardware=True, resources={"potentiostat": "GPIB0::24::INSTR"})
    with ins.open_run(outcome.path) as run:                 # the run file, as HDF5 (also HyperSpy)
        print(run.n_exposures("li-k"), run.status)
    summary = ins.analyze(outcome.path)                     # the SR-EELS analysis, as summary.json holds it
    ins.export(outcome.path, "bdf")                         # Battery Data Format CSV beside the run file

Progress: pass `progress=` an object with the methods of `Progress` (subclass it and override
what you need: step_started, readings, exposure_started, exposure_done, event).

`run` is the run path of `insitem run`: a dry run or a hardware run (real instruments behind the
safety supervisor), new or resumed; `dry_run` is `run` on the simulators.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from insitem.acquisition.export import export_run
from insitem.acquisition.launch import RunOptions, start_run
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import NullProgress
from insitem.protocols.loader import loads, resolve
from insitem.protocols.plan import Plan, make_plan
from insitem.protocols.schema import Protocol

#: base class of progress callbacks (every method does nothing until overridden)
Progress = NullProgress

ProtocolSource = str | os.PathLike[str] | Mapping[str, Any] | Protocol


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: its file, status (completed, stopped, failed, interrupted) and reason,
    and how many spectrum images and potentiostat readings it recorded."""

    path: Path
    status: str
    reason: str
    exposures: int
    ec_points: int


def _text_of(source: ProtocolSource) -> tuple[str, str]:
    """(YAML text, where it came from) of a protocol source."""
    if isinstance(source, Protocol):
        return yaml.safe_dump(source.model_dump(mode="json"), sort_keys=False), f"<protocol {source.name}>"
    if isinstance(source, Mapping):
        return yaml.safe_dump(dict(source), sort_keys=False), "<dict>"
    text = os.fspath(source)
    if "\n" in text:
        return text, "<text>"
    path = resolve(text)
    return path.read_text(encoding="utf-8"), str(path)


def load_protocol(source: ProtocolSource) -> Protocol:
    """Validate a protocol: a shipped name, a file path, YAML text or a dict (as in the file).
    Raises `insitem.drivers.errors.ProtocolError` with one line per problem."""
    if isinstance(source, Protocol):
        return source
    text, where = _text_of(source)
    return loads(text, source=where)


def plan(source: ProtocolSource) -> Plan:
    """The protocol's timeline: steps, exposures, duration, dose and data volume."""
    return make_plan(load_protocol(source))


def run(
    source: ProtocolSource,
    out: str | os.PathLike[str] = "runs",
    *,
    hardware: bool = False,
    resources: Mapping[str, str] | None = None,
    speed: float | None = None,
    time_scale: float = 1.0,
    sweeps: bool = False,
    progress: NullProgress | None = None,
    resume: str | os.PathLike[str] | None = None,
    handle_signals: bool = True,
) -> RunOutcome:
    """Run a protocol and write its run file, as `insitem run` does.

    `hardware`: the real instruments, from the protocol's `instruments` section and `resources`
    (role -> VISA resource, e.g. ``{"potentiostat": "GPIB0::24::INSTR"}``), behind the safety
    supervisor process (design.md §8); else the simulated rig. `speed`: None runs a simulation on
    the virtual clock; a number paces it at that many simulated seconds per wall second (ignored
    on hardware, which runs in real time, or at `time_scale` simulated seconds per wall second
    against emulators served with the same `--time-scale`). `sweeps`: instrument-timed list sweeps between
    exposures in real time too. `out`: a folder (a timestamped file is made in it) or a `.h5`
    path. `resume`: continue that run file (its own protocol; `source` is then ignored).
    `handle_signals`: from the main thread, Ctrl-C finishes the running exposure and stops, a
    second one stops at once. Raises `insitem.drivers.errors.InsitemError` subclasses on bad input
    or when a stop signal came before the run started.
    """
    text, where = (None, None) if resume is not None else _text_of(source)
    report = start_run(RunOptions(
        protocol=where,
        protocol_text=text,
        out=Path(out),
        resume=None if resume is None else Path(resume),
        hardware=hardware,
        resource=tuple(f"{role}={res}" for role, res in (resources or {}).items()),
        realtime=speed is not None,
        speed=1.0 if speed is None else speed,
        time_scale=time_scale,
        sweeps=sweeps,
        progress=progress if progress is not None else NullProgress(),
        handle_signals=handle_signals,
    ))
    r = report.result
    return RunOutcome(report.path, r.status, r.reason, r.exposures, r.ec_points)


def dry_run(
    source: ProtocolSource,
    out: str | os.PathLike[str] = "runs",
    *,
    speed: float | None = None,
    progress: NullProgress | None = None,
) -> RunOutcome:
    """Run a protocol on the simulated rig and write its run file (`run` without hardware).

    `out`: a folder (a timestamped file is made in it) or a `.h5` path. `speed`: None runs on the
    virtual clock (a 125-hour protocol in minutes); a number paces the simulation at that many
    simulated seconds per wall second. The simulated world's seed is the protocol's
    `sample.seed`.
    """
    return run(source, out, speed=speed, progress=progress)


def open_run(path: str | os.PathLike[str]) -> RunFileReader:
    """Open a run file for reading (live or finished); use as a context manager."""
    return RunFileReader(path)


def analyze(path: str | os.PathLike[str], figures: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The SR-EELS analysis of a run file as `insitem analyze` writes it to summary.json (the
    LASGTP Fig. 6 summary, or the seed experiments' series); with `figures`, its PNGs go there."""
    from insitem.acquisition.analyze_run import analyze_any, figures_of, summary_of

    run_file = Path(path)
    a = analyze_any(run_file)
    if figures is not None:
        figures_of(a, Path(figures), run_file.stem)
    return summary_of(a, run_file)


def export(path: str | os.PathLike[str], to: str, out: str | os.PathLike[str] | None = None,
           preparation_date: str | None = None) -> Path:
    """Write the run in another format: "bdf" (Battery Data Format CSV) or "nexus" (NXem)."""
    return export_run(path, to, out, preparation_date=preparation_date)


__all__ = ["Progress", "ProtocolSource", "RunOutcome", "analyze", "dry_run", "export", "load_protocol", "open_run", "plan", "run"]
