"""The `insitem` command: list, validate, plan, run, show, analyze, export, serve, bridge.

Each command is a thin layer over the library (insitem.api, insitem.acquisition): the parser and
the small commands live here, the others in a module each (run.py, show.py, analyze.py, serve.py,
bridge.py), imported when their command runs so that `insitem list` starts quickly.

Bad input ends in one line on stderr naming the file, field or command, and exit status 2;
a run that stops on a device fault exits 1 (its file is closed with the reason). No traceback
reaches the user.
"""

from __future__ import annotations

import sys
from pathlib import Path

from insitem.acquisition.signal_gate import GATE

if __name__ == "__main__" or Path(sys.argv[0]).stem == "insitem":
    # the command line: stop signals are held from here on, so one that comes during the imports
    # below is acted on where stopping is clean (acquisition/signal_gate.py)
    GATE.hold()

import argparse  # noqa: E402
from typing import Callable, Sequence

from rich.table import Table

from insitem.cli.console import console, err_console
from insitem.drivers.errors import InsitemError, ProtocolError, ResourceError, UsageError
from insitem.protocols.loader import library_names, load, load_and_plan, resolve
from insitem.protocols.plan import Plan
from insitem.protocols.units import E_PER_A2

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2



class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        err_console.print(f"insitem {self.prog.removeprefix('insitem').strip()}: {message} (see --help)".replace("insitem :", "insitem:"), soft_wrap=True)
        raise SystemExit(EXIT_BAD_INPUT)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# commands


def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="Shipped protocols", show_lines=False)
    table.add_column("name")
    table.add_column("description")
    for name in library_names():
        table.add_row(name, load(name).description)
    console.print(table)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for item in args.protocols:
        try:
            protocol, _ = load_and_plan(item)
        except ProtocolError as exc:
            for line in str(exc).split("\n"):  # one line per error
                err_console.print(f"invalid: {line}", soft_wrap=True)
            status = EXIT_BAD_INPUT
        else:
            console.print(f"ok: {resolve(item)} ({protocol.name})", soft_wrap=True)
    return status


def render_plan(plan: Plan) -> Table:
    p = plan.protocol
    s = plan.summary()
    table = Table(title=f"Plan: {p.name}", show_header=False)
    table.add_column("item")
    table.add_column("value")
    table.add_row("total duration", f"{format_duration(plan.duration_s)} ({plan.duration_s:.6g} s)")
    table.add_row("steps", ", ".join(f"{st.index}:{st.kind} {format_duration(st.duration_s)}" for st in plan.steps))
    table.add_row("cycles", str(s["cycles"]))
    for name, n in plan.exposures_per_window().items():
        w = p.spectrometer.window(name)
        rows, cols = plan.frame_shape(name)
        table.add_row(f"exposures {name}", f"{n} x {w.exposure:g} s, {rows} x {cols} px, {w.energy_range_eV[0]:g}-{w.energy_range_eV[1]:g} eV")
    tracking = s.get("tracking")
    if isinstance(tracking, dict):
        cap = p.drift.track_max_dose
        table.add_row("drift tracking", f"{tracking['exposures']} x {tracking['exposure_s']:g} s ({tracking['settings_of']} settings), "
                      f"beam on {format_duration(tracking['beam_on_s'])}, {tracking['dose_e_per_A2']:.4g} e/Å²"
                      + (f" (cap {cap / E_PER_A2:.4g} e/Å²)" if cap is not None else ""))
    table.add_row("beam on", f"{format_duration(plan.beam_on_s)} ({p.beam.policy})" + (" incl. drift tracking" if tracking else ""))
    table.add_row(
        "electron dose",
        f"{plan.dose_e_per_m2 / E_PER_A2:.4g} e/Å² at {p.beam.dose_rate_e_per_m2_s / E_PER_A2:.3g} e/Å²/s "
        f"(budget {p.safety.max_total_dose / E_PER_A2:.4g} e/Å²)" + (" incl. drift tracking" if tracking else ""),
    )
    table.add_row("potentiostat points", f"{s['ec_points']}")
    table.add_row("data volume", format_bytes(plan.data_bytes()))
    for note in s["notes"]:  # type: ignore[attr-defined]
        table.add_row("note", note)
    return table


def cmd_plan(args: argparse.Namespace) -> int:
    _, plan = load_and_plan(args.protocol)
    if args.json:
        import json

        console.print_json(json.dumps(plan.summary()))
    else:
        console.print(render_plan(plan))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from insitem.cli.run import run_command

    return run_command(args)


def cmd_show(args: argparse.Namespace) -> int:
    from insitem.cli.show import show_command

    return show_command(args)


def cmd_analyze(args: argparse.Namespace) -> int:
    from insitem.cli.analyze import analyze_command

    return analyze_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from insitem.api import export

    out = export(args.run_file, args.to, args.out, preparation_date=args.prepared)
    console.print(f"{args.to} file: {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from insitem.cli.serve import serve_command

    return serve_command(args)


def cmd_bridge(args: argparse.Namespace) -> int:
    from insitem.cli.bridge import bridge_command

    return bridge_command(args)


# ---------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="insitem", description="In-situ electrochemical TEM-EELS: protocols, runs, simulators, analysis.")
    parser.add_argument("--version", action="version", version=f"insitem {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    add("list", cmd_list, "list the shipped protocols")

    p = add("validate", cmd_validate, "validate protocol files or shipped protocol names")
    p.add_argument("protocols", nargs="+", metavar="FILE|NAME")

    p = add("plan", cmd_plan, "show a protocol's plan: duration, steps, exposures, dose, data volume")
    p.add_argument("protocol", metavar="FILE|NAME")
    p.add_argument("--json", action="store_true", help="print the plan summary as JSON")

    p = add("run", cmd_run, "run a protocol on the simulators (--sim, default) or on hardware (--hardware)")
    p.epilog = (
        "Ctrl-C finishes the running exposure (every frame of a summed image) and stops; a second Ctrl-C or "
        "SIGTERM stops at once, storing an image cut short flagged partial. Exit status: 0 completed, 1 failed "
        "(device fault, safety limit, disk full), 2 bad input (protocol, resource, a run file that cannot be "
        "resumed), 3 stopped after Ctrl-C, 4 stopped at once (second Ctrl-C or SIGTERM)."
    )
    p.add_argument("protocol", nargs="?", metavar="FILE|NAME")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sim", action="store_true", help="dry run on the simulated rig, virtual clock (default)")
    mode.add_argument("--hardware", action="store_true", help="real instruments from the protocol's resource strings")
    p.add_argument("--realtime", action="store_true", help="pace a simulation at wall-clock speed")
    p.add_argument("--speed", type=float, default=1.0, help="with --realtime: simulated seconds per wall second")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="K",
                   help="with --hardware: K simulated seconds per wall second, only against insitem emulators served "
                   "with the same --time-scale (default 1: real time)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="output folder or .h5 path (default: runs/)")
    p.add_argument("--resume", type=Path, metavar="RUN.h5", help="continue an interrupted run file")
    p.add_argument(
        "--resource", action="append", default=[], metavar="NAME=RESOURCE", help="override a resource: potentiostat=..., camera=..., tem=..."
    )
    p.add_argument(
        "--sweeps",
        action="store_true",
        help="in real time too: instrument-timed list sweeps between exposures (default: PC-timed stairs; "
        "the stair after each sweep waits for its read-back)",
    )
    p.add_argument("--no-progress", action="store_true", help="no live display (log lines only)")
    p.add_argument(
        "--status-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="without a live display (output not a terminal, or --no-progress): a status line every SECONDS of "
        "wall time - step, potential, current, images, dose, wall-clock time left (default 60; 0: none)",
    )
    p.add_argument("--no-figures", action="store_true", help="do not write PNG figures at the end")

    p = add("show", cmd_show, "write PNG figures of a run file (CV curves, spectrum images, exposures on the trace)")
    p.add_argument("run_file", type=Path, metavar="RUN.h5")
    p.add_argument("--out", type=Path, help="folder for the figures (default: next to the run file)")
    p.add_argument("--follow", action="store_true", help="keep redrawing while the run is live")
    p.add_argument("--interval", type=float, default=5.0, help="with --follow: seconds between redraws")

    p = add("analyze", cmd_analyze, "SR-EELS analysis of a run file: JSON summary and figures")
    p.add_argument("run_file", type=Path, metavar="RUN.h5")
    p.add_argument("--out", type=Path, help="folder for the results (default: next to the run file)")

    p = add("export", cmd_export, "write a run file's data in another community format (BDF CSV, NeXus NXem)")
    p.add_argument("run_file", type=Path, metavar="RUN.h5")
    p.add_argument("--to", required=True, choices=["bdf", "nexus"],
                   help="bdf: the electrochemical record as Battery Data Format CSV; nexus: NXem HDF5")
    p.add_argument("--out", type=Path, help="output file (default: next to the run file, .bdf.csv or .nxs)")
    p.add_argument("--prepared", metavar="ISO8601",
                   help="nexus: when the specimen was prepared (NXem requires it; default: the run's start)")

    p = add("serve", cmd_serve, "serve emulated instruments over their real wire protocols (one shared simulated world)")
    p.add_argument("instruments", nargs="*", metavar="INSTRUMENT",
                   help="keithley2400, keithley2450, gif, tem (default: the protocol's potentiostat model, gif and tem)")
    p.add_argument("--bind", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=0, help="first port (0 = any free port)")
    p.add_argument("--protocol", default="ex-situ-lasgtp",
                   help="protocol whose sample and instruments the emulators take (default ex-situ-lasgtp)")
    p.add_argument("--serial", action="store_true", help="also serve the Keithley over a pseudo-terminal")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="K",
                   help="K simulated seconds per wall second for the emulated world (default 1); the emulators "
                   "announce K and accept only insitem run --hardware --time-scale K")

    p = add("bridge", cmd_bridge, "run the TEM command-set bridge on the microscope PC")
    p.add_argument("target", choices=["tem"])
    p.add_argument("--vendor", required=True, choices=["temscript", "pyjem"])
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (beyond loopback needs a token)")
    p.add_argument("--port", type=int, default=5025)
    p.add_argument("--mag-table", metavar="FILE", help="CSV of index,magnification (docs/tem-command-set.md)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the token (else $INSITEM_BRIDGE_TOKEN_FILE, $INSITEM_BRIDGE_TOKEN)")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("insitem")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        GATE.release(redeliver=False)
        raise
    if args.command != "run":
        GATE.release()  # Python's own signal handling; a signal held since launch is delivered now
    try:
        return int(args.func(args))
    except InsitemError as exc:
        for line in str(exc).split("\n"):  # a protocol with several errors: one line each
            err_console.print(f"insitem {args.command}: {line}", soft_wrap=True)
        bad_input = isinstance(exc, (ProtocolError, ResourceError, UsageError)) or getattr(exc, "bad_input", False)
        return EXIT_BAD_INPUT if bad_input else EXIT_FAULT
    except KeyboardInterrupt:
        err_console.print(f"insitem {args.command}: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
