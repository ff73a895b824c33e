"""Machinery for the fault matrix: a short real-time protocol, the emulators, fault hooks, checks.

The wire path is the real one: `Keithley2450`, `GifCamera` and `TemMicroscope` over loopback
TCP to `start_servers(...)` emulators sharing one simulated world. Driver timeouts are shortened
(0.5 s for SCPI replies, exposure + 3 s for a frame) so a timeout cell takes seconds; the
policies under test do not depend on the values.

Fault hooks act on the emulators, never on the drivers or the runner:
* `on_reply(server, match, action)` - runs `action` as the instrument answers a line that
  `match`es, so a transport fault (`Faults`) lands on exactly that reply;
* `on_image(gif, action)` - replaces the GIF emulator's next image transfer;
* `blank_fails(tem, times)` - the next `times` BEAM:BLAN commands answer -240 Hardware error.
Safety is read back from the emulators (`ServerSet.smu.output_on`, the TEM emulator's
blanker), never from the runner.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from shipped_protocol import variant

from insitem.cli.main import main
from insitem.acquisition.rig import HardwareRigBundle
from insitem.acquisition.launch import runfile_config
from insitem.acquisition.runfile import RunFile
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import NullProgress, Runner, RunResult
from insitem.drivers.clock import RealClock
from insitem.drivers.gif.camera import GifCamera, GifCameraConfig
from insitem.drivers.interfaces import Rig
from insitem.drivers.keithley.k2450 import Keithley2450
from insitem.drivers.scpi import ScpiError
from insitem.drivers.tem.client import TemMicroscope
from insitem.protocols.loader import load_and_plan
from insitem.simulators.serve import ServerSet, start_servers

KINDS = ["keithley2450", "gif", "tem"]
N_EXPOSURES = 3  # two in the CV (at 0 and 1 s), one at the start of the hold

# the shipped loopback-hold with 0.3 s unprocessed 4 x 4-binned images over a 2 s CV and a 1 s
# hold, at most 3 compliance trips
PROTOCOL = variant(
    "loopback-hold",
    ("name: loopback-hold", "name: fault-matrix"),
    ("description: 15 s hold at -0.2 V, a 1 s Li-K spectrum image every 5 s, small readout (hardware smoke test)",
     "description: a 2 s CV and a 1 s hold with 0.3 s Li-K images, for the fault matrix on loopback emulators"),
    ("current_compliance: 1 uA\n", "current_compliance: 1 uA\n  max_compliance_trips: 3\n"),
    ("spectrometer:\n", "spectrometer:\n  camera: {processing: unprocessed}\n"),
    ("exposure: 1 s", "exposure: 0.3 s"),
    ("binning: [6, 1]", "binning: [4, 4]"),
    steps="""\
steps:
  - cv:
      start: -0.1 V
      vertices: [-0.2 V]
      end: -0.1 V
      sweep_rate: 100 mV/s
      step: 10 mV
      exposures:
        - windows: [li-k]
          every: 1 s
  - hold:
      potential: -0.15 V
      duration: 1 s
      exposures:
        - windows: [li-k]
          at_start: true
""",
)

ENOSPC = OSError(errno.ENOSPC, "No space left on device")

#: what the hooks actually did to the traffic, in order (cleared by `serve`): a cell whose fault
#: never reached the wire must fail, not pass as "recovered"
LANDED: list[str] = []


def write_protocol(directory: Path) -> Path:
    path = directory / "fault-matrix.yaml"
    path.write_text(PROTOCOL, encoding="utf-8")
    return path


def serve(protocol_path: Path) -> ServerSet:
    LANDED.clear()
    return start_servers(str(protocol_path), KINDS)


def resource_args(servers: ServerSet) -> list[str]:
    out: list[str] = []
    for role, res in servers.resources.items():
        out += ["--resource", f"{role}={res}"]
    return out


# ---------------------------------------------------------------------------------------------
# Fault hooks on the emulators


def on_reply(server: Any, match: Callable[[str], bool], action: Callable[[], None], times: int = 1) -> None:
    """Run `action` as `server`'s instrument answers the next `times` lines that `match`."""
    inst = server.instrument
    orig = inst.handle
    left = [times]

    def handle(line: str) -> str | None:
        reply = orig(line)
        if left[0] > 0 and reply is not None and match(line):
            left[0] -= 1
            LANDED.append(f"reply to {line!r}")
            action()
        return reply

    inst.handle = handle


def reading_query(line: str) -> bool:
    u = line.upper()
    return ":READ?" in u or ":TRAC:DATA?" in u


def error_query(line: str) -> bool:
    return ":SYST:ERR" in line.upper()


def on_image(gif: Any, action: Callable[[Any, int, Any, Callable[..., None]], None]) -> None:
    """Replace the GIF emulator's next image transfer by `action(conn, code, image, send)`."""
    orig = gif._send_image
    armed = [True]

    def send_image(conn: Any, code: int, image: Any) -> None:
        if armed[0]:
            armed[0] = False
            LANDED.append("image transfer")
            return action(conn, code, image, orig)
        return orig(conn, code, image)

    gif._send_image = send_image


def blank_fails(tem: Any, times: int) -> None:
    """The next `times` BEAM:BLAN commands fail in the blanker (-240), leaving its state."""
    inst = tem.instrument
    orig = inst.set
    left = [times]

    def set_(name: str, value: Any) -> None:
        if name == "beam_blanked" and left[0] > 0:
            left[0] -= 1
            LANDED.append(f"BEAM:BLAN {int(value)}")
            exc = ScpiError(-240)
            exc.message = "Hardware error; beam blanker did not respond"
            raise exc
        orig(name, value)

    inst.set = set_


def heal(servers: ServerSet) -> None:
    """Remove every injected fault (before a resume)."""
    for kind in ("keithley2450", "tem"):
        s = servers.servers[kind]
        s.faults.clear()
        inst = s.instrument
        for attr in ("handle", "set"):
            inst.__dict__.pop(attr, None)
    gif = servers.servers["gif"]
    gif.__dict__.pop("_send_image", None)
    f = gif.faults
    f.latency_s, f.no_answer, f.drop_connection, f.truncate_image, f.garble_header = 0.0, 0, 0, 0, 0
    f.error_codes.clear()


# ---------------------------------------------------------------------------------------------
# One in-process run through the real drivers


def open_rig(servers: ServerSet, protocol: Any, *, timeout_s: float = 0.5, camera_timeout_s: float = 1.0,
             readout_timeout_s: float = 3.0) -> HardwareRigBundle:
    """The real drivers on the served emulators (the Keithley and the TEM with `timeout_s`, the GIF
    with `camera_timeout_s` and `readout_timeout_s`); short timeouts by default, so faults show fast."""
    clock = RealClock()
    res = servers.resources
    pot = Keithley2450(res["potentiostat"], timeout_s=timeout_s, clock=clock)
    cam = GifCamera(GifCameraConfig(resource=res["camera"], timeout_s=camera_timeout_s, readout_timeout_s=readout_timeout_s),
                    clock=clock)
    scope = TemMicroscope(res["microscope"], timeout_s=timeout_s)
    return HardwareRigBundle(Rig(pot, cam, scope, clock), protocol)


class Moment(NullProgress):
    """Calls `fire()` once at the chosen moment of the run (progress callbacks of the runner)."""

    def __init__(self, moment: str, fire: Callable[[], None]) -> None:
        self.moment = moment
        self._fire = fire
        self.fired = False
        self.started = 0
        self.done = 0
        self.runner: Runner | None = None
        self.before = (0, 0)  # (exposures, electrochemical points) completed when the fault came

    def fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        r = self.runner
        self.before = (r._exposures, r._ec_points) if r is not None else (0, 0)
        self._fire()

    def exposure_started(self, exposure: Any, t_s: float) -> None:
        self.started += 1
        if self.started == 2 and self.moment in ("mid-exposure", "frame readout"):
            self.fire()

    def exposure_done(self, exposure: Any, data: np.ndarray, t_s: float) -> None:
        self.done += 1
        if self.done == 1 and self.moment == "mid-CV step":
            self.fire()


@dataclass
class WireRun:
    path: Path
    result: RunResult
    moment: Moment


def run_wire(servers: ServerSet, protocol_path: Path, out: Path, moment: Moment) -> WireRun:
    """Set up like `insitem run --hardware` does, fire at the moment, run, close the rig."""
    protocol, plan = load_and_plan(str(protocol_path))
    bundle = open_rig(servers, protocol)
    try:
        config = runfile_config(plan, bundle, protocol_path.read_text(encoding="utf-8"), bundle.identify())
        rf = RunFile.create(out, config)
        runner = Runner(plan, bundle.rig, rf, progress=moment)
        moment.runner = runner
        if moment.moment == "configuration":
            moment.fire()
        result = runner.run()
    finally:
        bundle.close()
    return WireRun(out, result, moment)


# ---------------------------------------------------------------------------------------------
# What every cell checks


def instruments_safe(servers: ServerSet) -> tuple[bool, bool]:
    """(potentiostat output off with the relay open, beam blanked) read from the emulators.

    "Off" means open circuit: an output switched off in the NORMAL off-state still clamps the
    cell at 0 V (the world then sees an applied level), which does not count as off.
    """
    smu = servers.smu
    assert smu is not None
    off = (not smu.output_on) and servers.world.applied_V is None
    blanked = bool(servers.servers["tem"].microscope.beam.blanked)
    return off, blanked


def state_text(servers: ServerSet) -> str:
    """The instruments' state for the report, e.g. 'output off, beam blanked'."""
    smu = servers.smu
    assert smu is not None
    if smu.output_on:
        out = "output ON"
    elif servers.world.applied_V is not None:
        out = "output off but clamped at 0 V (NORMAL off-state)"
    else:
        out = "output off"
    blanked = bool(servers.servers["tem"].microscope.beam.blanked)
    return f"{out}, beam {'blanked' if blanked else 'ON'}"


def file_record(path: Path) -> dict[str, Any]:
    """Status, counts and a HyperSpy load of a run file (SWMR, so a killed writer's file too)."""
    with RunFileReader(path) as r:
        rec = {
            "status": r.status,
            "reason": r.status_reason,
            "exposures": r.n_exposures("li-k"),
            "ec": r.n_electrochemistry,
            "records": r.exposure_records("li-k"),
            "events": [(e.level, e.message) for e in r.events()],
        }
        frames = [r.exposure("li-k", i) for i in range(rec["exposures"])]
    assert all(np.isfinite(f).all() for f in frames)
    if rec["exposures"]:
        import hyperspy.api as hs

        s = hs.load(path, file_format="hspy", swmr=True)
        assert s.metadata.Signal.signal_type == "EELS"
        # a writer killed between growing the image dataset and filling it leaves one row that
        # HyperSpy shows (the dataset's length) but the reader does not count (no record was
        # committed; --resume drops it): at most one such row
        assert rec["exposures"] <= s.data.shape[0] <= rec["exposures"] + 1
    return rec


def resume_to_completion(servers: ServerSet, out: Path) -> dict[str, Any]:
    """`insitem run --resume OUT --hardware` against the served emulators: it must exit 0, leave
    the instruments safe and the file completed. The file's record (`file_record`) after it."""
    argv = ["run", "--resume", str(out), "--hardware", *resource_args(servers), "--no-progress", "--no-figures"]
    assert main(argv) == 0
    off, blanked = instruments_safe(servers)
    assert off and blanked
    after = file_record(out)
    assert after["status"] == "completed"
    return after


def outcome_of(status: str) -> str:
    return "recovered" if status == "completed" else f"safe stop ({status})"


def drift_rest_protocol(name: str, description: str, drift_yaml: str, duration: str = "8 s",
                        drift_rate: str = "120 nm/min") -> str:
    """Protocol text of the drift fault cells: a rest (`duration`, default 8 s) with a 50 ms
    low-loss image every second on the LASGTP stack drifting `drift_rate` (3x that while it settles),
    with the `drift:` section given (its lines indented two spaces). On a loaded machine the images
    come seconds late and a correction may act on the estimate of the image before last (the I/O
    thread writes behind): 8 images leave room for the correction these cells look for. A run that
    fell behind takes its late images back to back, a few tenths of a second apart: a cell that
    needs every correction to exceed a limit drifts fast enough for that too."""
    return f"""
name: {name}
description: {description}
sample:
  preset: lasgtp_bulk
  seed: 3
  drift_rate: {drift_rate}
instruments:
  potentiostat: {{model: keithley2450}}
  camera: {{model: gif}}
  microscope: {{model: insitem-tem}}
safety:
  voltage_min: 0 V
  voltage_max: 3 V
  current_compliance: 1 mA
  max_dose_rate: 10 e/Å^2/s
  max_total_dose: 50000 e/Å^2
  max_exposure: 60 s
beam:
  current: 0.5 nA
  illuminated_diameter: 2 um
spectrometer:
  camera: {{processing: unprocessed}}
  slit: {{length: 1880 nm, width: 200 nm}}
  windows:
    - name: low-loss
      edges: [Zero-loss]
      energy_offset: -10 eV
      channels: 1024
      exposure: 0.05 s
      binning: [6, 1]
      readout_rows: [34, 2014]
drift:
{drift_yaml.rstrip()}
steps:
  - rest:
      duration: {duration}
      exposures:
        - windows: [low-loss]
          every: 1 s
"""
