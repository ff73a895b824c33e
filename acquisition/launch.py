"""Starting a run: build the rig, open the run file, run the plan under signal handlers.

`start_run(RunOptions(...))` is the run path of `insitem run` and of `insitem.api.run`: a dry run
on the simulators (virtual or paced clock) or a hardware run through the real drivers, a new run
or a resumed one (`resume`). It returns a `RunReport`; the command prints it and maps its status
to an exit status (insitem/cli/run.py).

A hardware run first starts its safety supervisor (acquisition/supervisor.py) and renews its
lease from then on; only then does it touch an instrument.

Signals, from launch on (acquisition/signal_gate.py holds them until the run can act):
* before the runner runs, any stop signal ends the command at the next clean point: the
  instruments (if touched) are put safe, a run file already created is closed with status
  ``interrupted`` (it resumes), and one line says so;
* while the runner runs, the first Ctrl-C (SIGINT) finishes the running exposure (every
  sub-exposure of a summed image) and stops cleanly; a second Ctrl-C, SIGTERM or SIGHUP (terminal
  closed) stops at once (an image cut short is stored flagged partial, with its true beam-on time
  and dose); on a hardware run SIGTSTP (Ctrl-Z) stops at once too, since a paused run with the
  beam on is never safe (a dry run pauses as usual). Either way the runner puts the rig in its
  safe state and closes the file with the status and the reason.

Status of the run: completed; failed (device fault, safety limit, disk full, a lost supervisor);
stopped after Ctrl-C (the running exposure finished); interrupted (second Ctrl-C, SIGTERM, SIGHUP,
SIGTSTP, a lapsed safety lease). A stop signal before the run started raises `RunStoppedEarly`;
bad input (protocol, resource, a run file that cannot be resumed) raises `ProtocolError`,
`ResourceError` or `RunFileUnreadable`.

Signal handlers can only be installed from the main thread; from another thread the run goes on
without them (`RunOptions.handle_signals` turns them off anywhere).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import signal
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console

from insitem.acquisition.progress import STATUS_INTERVAL_S, LiveProgress
from insitem.acquisition.rig import RigBundle, build_rig, hardware_resources, parse_resource_overrides
from insitem.acquisition.runfile import RunFile, RunFileConfig, RunFileError, WindowSpec, check_writable
from insitem.acquisition.runner import NullProgress, Runner, RunResult, StopNow, camera_settings
from insitem.acquisition.signal_gate import GATE, signal_name
from insitem.acquisition.supervisor import Lease, LeasedClock, LeaseLapsed, SupervisorLost
from insitem.acquisition.time_scale import check_rig_time_scale, hardware_clock, parse_time_scale
from insitem.drivers.clock import Clock, PacedClock, VirtualClock
from insitem.drivers.errors import InsitemError, ProtocolError, UsageError
from insitem.drivers.interfaces import InstrumentIdentity
from insitem.protocols.loader import loads_and_plan, resolve
from insitem.protocols.plan import Plan
from insitem.protocols.schema import TRACKING_WINDOW


@dataclass
class RunOptions:
    """How `start_run` runs: the `insitem run` options as plain values.

    `protocol`: a shipped name or a file; or `protocol_text`, the protocol itself (YAML), with
    `protocol` naming where it came from. `out`: a folder (a timestamped file is made in it) or a
    `.h5` path. `resume`: continue this run file instead (its own protocol). `resource`:
    ROLE=RESOURCE overrides of the protocol's instruments (hardware). `realtime`: pace a dry run
    at `speed` simulated seconds per wall second (else a virtual clock). `time_scale`: a hardware
    run against emulators paced at that many simulated seconds per wall second
    (acquisition/time_scale.py). `sweeps`: instrument-timed
    list sweeps in real time too. `progress`: callbacks instead of the live display (which
    `no_progress` turns into status lines every `status_every` s). `console`: where the run's
    messages go (none by default).
    """

    protocol: str | None = None
    protocol_text: str | None = None
    out: Path = Path("runs")
    resume: Path | None = None
    hardware: bool = False
    resource: Sequence[str] = ()
    realtime: bool = False
    speed: float = 1.0
    time_scale: float = 1.0
    sweeps: bool = False
    no_progress: bool = False
    status_every: float = STATUS_INTERVAL_S
    progress: NullProgress | None = None
    handle_signals: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, quiet=True))


@dataclass(frozen=True)
class RunReport:
    """A run that ran: its file, how it ended, and why the file could not be written ("" if it could)."""

    path: Path
    result: RunResult
    broken: str


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("insitem")
    except PackageNotFoundError:
        return "unknown"


def run_file_path(out: Path, protocol_name: str) -> Path:
    if out.suffix in (".h5", ".hspy"):
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"{protocol_name}-{stamp}.h5"
    n = 1
    while path.exists():
        path = out / f"{protocol_name}-{stamp}-{n}.h5"
        n += 1
    return path


def window_specs(plan: Plan, bundle: RigBundle) -> tuple[WindowSpec, ...]:
    specs = []
    shape = bundle.rig.camera.sensor_shape
    for w in plan.protocol.spectrometer.windows:
        settings = camera_settings(plan.protocol, w.name)
        scale_nm, offset_nm = bundle.position_axis_nm(settings)
        specs.append(
            WindowSpec.from_camera_settings(
                w.name, settings, shape, position_scale=scale_nm, position_offset=offset_nm, position_units="nm", title=f"{plan.protocol.name} {w.name}",
                frames=w.frames,
            )
        )
    if plan.tracking:  # the drift-tracking frames: the tracking window's settings, one frame each
        d = plan.protocol.drift
        window = d.window or plan.protocol.spectrometer.windows[0].name
        settings = camera_settings(plan.protocol, window).model_copy(update={"exposure_s": d.track_exposure})
        scale_nm, offset_nm = bundle.position_axis_nm(settings)
        specs.append(WindowSpec.from_camera_settings(
            TRACKING_WINDOW, settings, shape, position_scale=scale_nm, position_offset=offset_nm, position_units="nm",
            title=f"{plan.protocol.name} drift tracking ({window} settings)", kind="tracking"))
    return tuple(specs)


def runfile_config(plan: Plan, bundle: RigBundle, protocol_text: str, instruments: dict[str, InstrumentIdentity]) -> RunFileConfig:
    """The run file's header for `plan` on `bundle`: its windows, the protocol's beam energy and
    angles, the protocol text, the instruments' identities and (simulated rigs) the ground truth."""
    p = plan.protocol
    return RunFileConfig(
        title=p.name,
        windows=window_specs(plan, bundle),
        beam_energy_keV=p.beam.high_tension / 1e3,
        convergence_angle_mrad=p.spectrometer.convergence_semiangle,
        collection_angle_mrad=p.spectrometer.collection_semiangle,
        protocol_text=protocol_text,
        software_version=_version(),
        instruments=instruments,
        ground_truth=bundle.ground_truth_spec,
    )


def make_clock(args: RunOptions, hardware: bool, t0_s: float = 0.0) -> Clock:
    """The run's clock, reading `t0_s` now (0 for a new run; where a resumed run continues)."""
    if hardware:
        return hardware_clock(parse_time_scale(args.time_scale), t0_s)
    if args.time_scale != 1.0:
        raise UsageError("--time-scale paces a --hardware run against emulators; pace a dry run with --realtime --speed")
    if args.realtime:
        return PacedClock(args.speed, t0_s)
    return VirtualClock(t0_s)


def continue_time_s(path: Path, real_time: bool) -> float:
    """Rig-clock time at which a resumed run continues: after everything the file recorded (so
    the time axes keep increasing and HyperSpy still loads the file), plus the wall time since
    the last event when time is real (the cell kept ageing while nothing ran)."""
    import time

    from insitem.acquisition.runfile_read import RunFileReader

    with RunFileReader(path) as r:
        times = [e.t_s for e in r.events() if math.isfinite(e.t_s)]
        walls = [e.unix_time_s for e in r.events() if math.isfinite(e.unix_time_s)]
        n = r.n_electrochemistry
        if n:
            times.append(float(r.electrochemistry(n - 1, n)["t_s"][-1]))
        for w in r.windows:
            rec = r.exposure_records(w)
            if len(rec["t_start_s"]):
                times.append(float(np.max(rec["t_start_s"] + rec["exposure_s"])))
    t = max([0.0, *[x for x in times if math.isfinite(x)]])
    if real_time and walls:
        t += max(0.0, time.time() - max(walls))
    return t


class RunStoppedEarly(InsitemError):
    """A stop signal (or a lease problem) before the runner ran: one line, exit 1."""


SIGHUP = getattr(signal, "SIGHUP", None)
SIGTSTP = getattr(signal, "SIGTSTP", None)


class SignalHandlers:
    """Install the run's SIGINT/SIGTERM/SIGHUP (and, on hardware, SIGTSTP) handlers for its duration."""

    def __init__(self, runner: Runner, hardware: bool = False, console: Console | None = None) -> None:
        self.runner = runner
        self.hardware = hardware
        self.console = console or Console(stderr=True, highlight=False)
        self._old: dict[int, Any] = {}
        self._sigints = 0

    def __enter__(self) -> "SignalHandlers":
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may install handlers
        self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        if SIGHUP is not None:
            self._old[SIGHUP] = signal.signal(SIGHUP, self._on_sighup)
        if SIGTSTP is not None and self.hardware:
            self._old[SIGTSTP] = signal.signal(SIGTSTP, self._on_sigtstp)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        self._sigints += 1
        if self._sigints == 1:
            self.console.print("[yellow]Ctrl-C: finishing the running exposure, then stopping (Ctrl-C again to stop now)[/]")
            self.runner.request_stop()
        else:
            self._stop_now("second Ctrl-C: stopped at once")

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        self._stop_now("SIGTERM: stopped at once")

    def _on_sighup(self, signum: int, frame: types.FrameType | None) -> None:
        self._stop_now("SIGHUP (terminal closed): stopped at once")

    def _on_sigtstp(self, signum: int, frame: types.FrameType | None) -> None:
        self._stop_now("SIGTSTP (Ctrl-Z): a hardware run cannot pause safely; stopped at once (resume with --resume)")

    def _stop_now(self, reason: str) -> None:
        """Leave the stop on the runner, then raise it here (the runner raises it again at its next
        wait if this raise lands in a weakref callback or finalizer, where Python discards it).
        Once the runner is on its way out (safe state, closing the file) nothing is raised: the
        stop is under way and a raise could only cut the safe state or the file's close short."""
        self.runner.request_stop_now(reason)
        if not self.runner.finishing:
            raise StopNow(reason)


def stop_pending(stage: str, consequence: str) -> None:
    """Raise RunStoppedEarly when a stop signal came since launch (held by the gate)."""
    sig = GATE.stop_pending()
    if sig is not None:
        GATE.take()  # acted on here: not delivered again
        raise RunStoppedEarly(f"{signal_name(sig)} {stage}: stopped before the run started; {consequence}")


def supervisor_log_path(path: Path) -> Path:
    """The safety supervisor's log, next to the run file."""
    return path.with_name(path.name + ".supervisor.log")


def start_run(args: RunOptions) -> RunReport:
    """Run `args.protocol` (or resume `args.resume`) to a run file: see the module's docstring."""
    hardware = bool(args.hardware)
    if args.handle_signals:
        GATE.hold()  # held already when launched from the command line; in-process callers too
    try:
        if SIGTSTP is not None and not hardware:
            GATE.release_one(SIGTSTP)  # a dry run may pause
        overrides = parse_resource_overrides(args.resource)
        start_step = 0
        if args.resume is not None:
            return _resume(args, hardware, overrides)
        if args.protocol_text is not None:
            protocol_text, where = args.protocol_text, args.protocol or "<protocol>"
        elif args.protocol:
            file = resolve(args.protocol)
            protocol_text, where = file.read_text(encoding="utf-8"), str(file)
        else:
            raise ProtocolError("run: give a protocol file or name (or --resume RUN.h5)")
        protocol, plan = loads_and_plan(protocol_text, where)
        stop_pending("while loading the protocol", "nothing was touched, no run file written")
        path = run_file_path(args.out, protocol.name)
        return _execute(args, plan, protocol_text, path, hardware, overrides, start_step, runfile=None)
    finally:
        GATE.release()  # a signal held after the run (while figures are drawn) acts now


def _resume(args: RunOptions, hardware: bool, overrides: dict[str, str]) -> RunReport:
    """Continue a run file. Anything that makes the file unusable (missing, damaged, foreign,
    created without its protocol, not writable) is one line and exit 2 (RunFileUnreadable)."""
    from insitem.acquisition.runfile_read import RunFileReader, unreadable_as_one_line

    path = Path(args.resume)
    with unreadable_as_one_line(path):
        with RunFileReader(path) as r:
            text = r.protocol_text
            last = r.last_completed_step()
            start_step = 0 if last is None else last + 1
            status = r.status
        if status == "completed":
            raise ProtocolError(f"--resume {path}: the run completed; nothing to resume")
        check_writable(path)
        _, plan = loads_and_plan(text, f"{path}:/insitem/protocol")
        if start_step >= len(plan.steps):
            raise ProtocolError(f"--resume {path}: every step completed; nothing to resume")
        t0_s = continue_time_s(path, real_time=hardware or bool(args.realtime))
        stop_pending("while reading the run file", f"nothing was touched; {path} is unchanged")
        runfile = RunFile.reopen_for_append(path, t_s=t0_s)
    return _execute(args, plan, text, path, hardware, overrides, start_step, runfile=runfile, t0_s=t0_s)


def _execute(
    args: RunOptions,
    plan: Plan,
    protocol_text: str,
    path: Path,
    hardware: bool,
    overrides: dict[str, str],
    start_step: int,
    runfile: RunFile | None,
    t0_s: float = 0.0,
) -> RunReport:
    """Start the supervisor (hardware), build the rig, create the file, run. Until the runner runs,
    a held stop signal, a fault or a lease problem ends here: the rig is put safe, a file already
    open is closed as ``interrupted`` (resumable), the supervisor is released."""
    clock = make_clock(args, hardware, t0_s)
    lease: Lease | None = None
    bundle: RigBundle | None = None
    state = "the run file is unchanged" if runfile is not None else "no run file written"
    try:
        if hardware:
            res = hardware_resources(plan.protocol, overrides)
            lease = Lease(plan.protocol.instruments.potentiostat.model, res["potentiostat"], res["microscope"],
                          log_path=supervisor_log_path(path))
            clock = LeasedClock(clock, lease)
            stop_pending("while the safety supervisor started", f"nothing was touched, {state}")
        bundle = build_rig(plan.protocol, clock, hardware=hardware, overrides=overrides, resume_from=path if runfile else None, start_step=start_step)
        _renew(lease)
        stop_pending("while connecting to the instruments", f"instruments put in their safe state, {state}")
        identities = bundle.identify()
        if hardware:  # a paced clock only against emulators paced the same (acquisition/time_scale.py)
            check_rig_time_scale(bundle.rig, identities, parse_time_scale(args.time_scale))
        if runfile is None:
            config = runfile_config(plan, bundle, protocol_text, identities)
            _renew(lease)
            try:
                runfile = RunFile.create(path, config)
            except OSError as exc:  # disk full, no permission: one line, not a traceback
                raise RunFileError(f"cannot create the run file {path}: {exc.strerror or exc}") from None
        _renew(lease)
        runner, progress = _make_runner(args, plan, start_step, runfile, clock, bundle, lease)
        if lease is not None:
            lease.arm()  # waits for the supervisor; the short lease from here on, nothing is on before
        stop_pending("while the run started", f"instruments put in their safe state; {path} closed as interrupted (resume with --resume)")
    except BaseException as exc:
        _stop_before_start(exc, bundle, runfile, lease, path)
        if isinstance(exc, (LeaseLapsed, SupervisorLost)):
            raise RunStoppedEarly(f"{exc} before the run started; {state}") from None
        raise
    try:
        return _run(args, plan, path, hardware, bundle, runner, progress, lease, runfile)
    finally:
        if lease is not None:
            lease.release(confirmed=False)  # no-op once the runner released it


def _renew(lease: Lease | None) -> None:
    if lease is not None:
        lease.renew(force=True)


def _stop_before_start(exc: BaseException, bundle: RigBundle | None, runfile: RunFile | None, lease: Lease | None, path: Path) -> None:
    """The way out before the runner ran (a signal, a fault): safe state, file closed, lease released."""
    failures: list[str] = []
    if bundle is not None:
        failures = bundle.rig.safe_state()
        bundle.close()
    if runfile is not None:
        try:
            runfile.close("interrupted", f"stopped before the run started: {type(exc).__name__}: {exc}; resume with --resume {path}")
        except Exception:  # noqa: BLE001 - the file may be the thing that failed
            pass
    if lease is not None:
        # nothing touched, or the run's own safe state confirmed: the supervisor exits quietly;
        # else it takes over and retries
        lease.release(confirmed=not failures)


def _make_runner(
    args: RunOptions, plan: Plan, start_step: int, runfile: RunFile, clock: Clock, bundle: RigBundle, lease: Lease | None
) -> tuple[Runner, NullProgress]:
    progress = args.progress
    if progress is None:
        live = LiveProgress(plan, clock.now, console=args.console, live_profile=bundle.live_profile, enabled=not args.no_progress,
                            status_interval_s=args.status_every)
        if not live.enabled:
            # the live Li profile is only drawn on the progress display; without one (--no-progress,
            # output not a terminal) it is not computed (its deconvolution peaks ~40 MB above the
            # run's working set, docs/performance/dry-run.md)
            live.live_profile = None
        progress = live
    runner = Runner(plan, bundle.rig, runfile, progress=progress, start_step=start_step, ground_truth=bundle.ground_truth,
                    use_sweeps=True if args.sweeps else None)
    runner.lease = lease
    bundle.attach_runner(runner)
    return runner, progress


def _run(
    args: RunOptions, plan: Plan, path: Path, hardware: bool, bundle: RigBundle, runner: Runner, progress: NullProgress,
    lease: Lease | None, runfile: RunFile,
) -> RunReport:
    mode = "hardware" if hardware else ("simulation, paced at %gx" % args.speed if args.realtime else "dry run on the simulators (virtual clock)")
    if lease is not None:
        mode += f" (safety supervisor pid {lease.pid}, lease {lease.ttl_s:g} s; log {supervisor_log_path(path)})"
    console = args.console
    console.print(f"insitem run {plan.protocol.name}: {mode}; writing {path}", soft_wrap=True)
    handlers = SignalHandlers(runner, hardware, console) if args.handle_signals else contextlib.nullcontext()
    shown = progress if isinstance(progress, LiveProgress) else contextlib.nullcontext()
    with handlers, shown:
        # the runner's handlers are in place: a signal held since launch is acted on now
        held = GATE.take()
        if held and held[0] == signal.SIGINT:
            console.print("[yellow]Ctrl-C before the run started: stopping after the setup[/]")
            runner.request_stop()
            held = []
        if held:
            result: RunResult = runner.abort_before_start(f"{signal_name(held[0])} before the first step: stopped at once")
        else:
            result = runner.run()
    bundle.checkpoint(path)
    bundle.close()
    return RunReport(path, result, runfile.broken)
