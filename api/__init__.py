"""insitem from Python: load and plan protocols, dry-run them, open, analyse and export run files.

A notebook session::

    import insitem.api as ins

    protocol = ins.load_protocol("loopback-hold")          # a shipped name, a file, YAML text or a dict
    print(ins.plan(protocol).duration_s)                   # seconds; .dose_e_per_m2, .data_bytes, ...
    outcome = ins.dry_run(protocol, "runs/hold.h5")         # the simulated rig, virtual clock
    with ins.open_run(outcome.path) as run:                 # the run file, as HDF5 (also HyperSpy)
        print(run.n_exposures("li-k"), run.status)
    summary = ins.analyze(outcome.path)                     # the SR-EELS analysis, as summary.json holds it
    ins.export(outcome.path, "bdf")                         # Battery Data Format CSV beside the run file

Progress: pass `progress=` an object with the methods of `Progress` (subclass it and override
what you need: step_started, readings, exposure_started, exposure_done, event).

Hardware runs (real instruments, the safety supervisor, signal handling) go through the
`insitem run --hardware` command, which owns the process they need; docs/api.md says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from insitem.acquisition.export import export_run
from insitem.acquisition.rig import SimRigBundle
from insitem.acquisition.run_command import runfile_config, run_file_path
from insitem.acquisition.runfile import RunFile
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import NullProgress, Runner
from insitem.drivers.clock import Clock, PacedClock, VirtualClock
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


def dry_run(
    source: ProtocolSource,
    out: str | os.PathLike[str] = "runs",
    *,
    speed: float | None = None,
    progress: NullProgress | None = None,
) -> RunOutcome:
    """Run a protocol on the simulated rig and write its run file.

    `out`: a folder (a timestamped file is made in it) or a `.h5` path. `speed`: None runs on the
    virtual clock (a 125-hour protocol in minutes); a number paces the simulation at that many
    simulated seconds per wall second. The simulated world's seed is the protocol's
    `sample.seed`.
    """
    text, where = _text_of(source)
    protocol = loads(text, source=where)
    the_plan = make_plan(protocol)
    clock: Clock = VirtualClock() if speed is None else PacedClock(speed)
    bundle = SimRigBundle.create(protocol, clock)
    path = run_file_path(Path(out), protocol.name)
    try:
        runfile = RunFile.create(path, runfile_config(the_plan, bundle, text, bundle.identify()))
    except BaseException:
        bundle.rig.safe_state()
        bundle.close()
        raise
    runner = Runner(the_plan, bundle.rig, runfile, progress=progress, ground_truth=bundle.ground_truth)
    bundle.attach_runner(runner)
    result = runner.run()
    bundle.checkpoint(path)
    bundle.close()
    return RunOutcome(path, result.status, result.reason, result.exposures, result.ec_points)


def open_run(path: str | os.PathLike[str]) -> RunFileReader:
    """Open a run file for reading (live or finished); use as a context manager."""
    return RunFileReader(path)


def analyze(path: str | os.PathLike[str], figures: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The SR-EELS analysis of a run file as `insitem analyze` writes it to summary.json (the
    LASGTP Fig. 6 summary, or the seed experiments' series); with `figures`, its PNGs go there."""
    from insitem.acquisition.analyze_command import (
        AnalyzeInputError,
        analyze_file,
        summary_json,
        window_axes,
        write_figures,
    )
    from insitem.acquisition.analyze_seeds import analyze_seed_file, seed_summary_json, write_seed_figures

    run_file = Path(path)
    try:
        a = analyze_file(run_file)
    except AnalyzeInputError:
        seed = analyze_seed_file(run_file, window_axes)
        if figures is not None:
            Path(figures).mkdir(parents=True, exist_ok=True)
            write_seed_figures(seed, Path(figures), run_file.stem)
        return seed_summary_json(seed, run_file)
    if figures is not None:
        Path(figures).mkdir(parents=True, exist_ok=True)
        write_figures(a, Path(figures), run_file.stem)
    return summary_json(a, run_file)


def export(path: str | os.PathLike[str], to: str, out: str | os.PathLike[str] | None = None,
           preparation_date: str | None = None) -> Path:
    """Write the run in another format: "bdf" (Battery Data Format CSV) or "nexus" (NXem)."""
    return export_run(path, to, out, preparation_date=preparation_date)


__all__ = ["Progress", "ProtocolSource", "RunOutcome", "analyze", "dry_run", "export", "load_protocol", "open_run", "plan"]
