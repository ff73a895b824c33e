"""`insitem run`: the command-line options to `RunOptions`, the run (acquisition/launch.py), then
its outcome in a few lines, the figures, and the exit status.

Exit status: 0 completed, 1 failed (device fault, safety limit, disk full, a lost supervisor, a
stop signal before the run started), 2 bad input (protocol, resource, a run file that cannot be
resumed), 3 stopped after Ctrl-C (the running exposure finished), 4 stopped at once (second
Ctrl-C, SIGTERM, SIGHUP, SIGTSTP, a lapsed safety lease).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from insitem.acquisition.launch import RunOptions, RunReport, start_run

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3
EXIT_INTERRUPTED = 4
EXIT_BY_STATUS = {"completed": EXIT_COMPLETED, "stopped": EXIT_STOPPED, "interrupted": EXIT_INTERRUPTED}

console = Console(stderr=True, highlight=False)


def options_of(args: argparse.Namespace) -> RunOptions:
    """The run's options from the parsed command line."""
    return RunOptions(
        protocol=args.protocol,
        out=args.out,
        resume=args.resume,
        hardware=bool(args.hardware),
        resource=tuple(args.resource),
        realtime=bool(args.realtime),
        speed=args.speed,
        time_scale=args.time_scale,
        sweeps=bool(args.sweeps),
        no_progress=bool(args.no_progress),
        status_every=args.status_every,
        console=console,
    )


def run_command(args: argparse.Namespace) -> int:
    report = start_run(options_of(args))
    return report_run(report, figures=not args.no_figures)


def report_run(report: RunReport, figures: bool = True) -> int:
    """Print how the run ended and where its file is, draw its figures, return the exit status."""
    path, result = report.path, report.result
    console.print(
        f"run {result.status}{': ' + result.reason if result.reason else ''} - "
        f"{result.exposures} exposures, {result.ec_points} potentiostat readings",
        soft_wrap=True,
        markup=False,
    )
    print(f"run file: {path}")
    if report.broken:
        console.print(f"the run file could not be written ({report.broken}); it holds what its last flush wrote", soft_wrap=True, markup=False)
    elif figures and result.exposures + result.ec_points > 0:
        folder = path.parent / (path.stem + "-figures")
        try:
            from insitem.acquisition.figures import write_figures  # matplotlib only when figures are drawn

            figs = write_figures(path, folder)
            print(f"figures: {folder} ({len(figs)} PNG)")
        except Exception as exc:  # noqa: BLE001 - figures are a convenience; the data are safe
            console.print(f"[yellow]figures not written: {exc}[/]")
    return EXIT_BY_STATUS.get(result.status, EXIT_FAILED)
