"""The runner: walks a plan on a rig, streams everything to the run file, always ends safe.

One runner for both clocks: on a `VirtualClock` (dry run) time jumps, on a `RealClock` it passes.
Plan times are seconds from the run start; the runner maps them onto the rig clock with one
offset, so a resumed run or a slow setup does not shift the schedule.

Per step the runner interleaves two things in time order:
* the potentiostat staircase: PC-timed (`set_voltage` at each point, `measure` at the end of each
  stair) or, where the backend offers it, instrument-timed sweeps of up to `sweep_chunk` points;
* exposures: configure the camera for the window, unblank, `start_exposure`, keep stepping the
  potentiostat while the camera integrates, blank at the end, `read_frame`, write it.

On a real or paced clock, `read_frame` and every run-file write run on one I/O thread
(acquisition/frame_worker.py), in the order the runner issued them, so a read-out or an HDF5 flush
never delays a stair; the runner waits for the camera only before starting the next exposure, and
keeps stepping while it waits. In PC-timed mode the reading that ends a stair is taken early by the
time a `measure()` takes, so the next level is set on time. On a virtual clock (dry run) all of it
runs in the runner's thread, in the same order: the dry run is deterministic.

Every exit path (completion, graceful stop, second Ctrl-C, SIGTERM, device fault, any exception)
goes through `Rig.safe_state()` and `RunFile.close(status, reason)`.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable
from typing import Protocol as TypingProtocol

import numpy as np

from insitem.drivers.errors import ComplianceError, InsitemError, InstrumentError, SafetyLimitError
from insitem.acquisition.drift_control import DriftController
from insitem.acquisition.frame_worker import IoWorker, QueuedRunFile
from insitem.acquisition.windows import camera_settings  # noqa: F401 - importable from here too
from insitem.acquisition.supervisor import LeaseLapsed, SupervisorLost
from insitem.drivers.interfaces import CameraSettings, Frame, PotentiostatConfig, Reading, Rig
from insitem.protocols.plan import Plan, PlannedExposure, PlannedStep
from insitem.protocols.timeline import CurrentLeg
from insitem.protocols.schema import TRACKING_WINDOW, Protocol
from insitem.protocols.units import E_PER_A2

#: metres per unit of a window's position axis, for the units drift tracking can use
LENGTH_UNITS_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9, "pm": 1e-12}

log = logging.getLogger("insitem.runner")
FIRST_READING_TRANSFER_S = 2e-3  # reply transfer and parsing allowed on top of the integration time (s)


class StopNow(BaseException):
    """Raised (from a signal handler) to stop at once.

    A BaseException, as KeyboardInterrupt is: a handler that catches `Exception` to retry or to
    carry on (a driver's retry loop, a best-effort close) must not swallow a stop. A signal handler
    can still run where Python discards any exception (a weakref callback, a finalizer), so the
    handler also leaves the reason on the runner (`Runner.request_stop_now`) and the runner raises
    it again at its next wait."""


class Progress(TypingProtocol):
    """What the runner reports; acquisition/progress.py renders it."""

    def step_started(self, step: PlannedStep, t_s: float) -> None: ...
    def readings(self, t_s: np.ndarray, voltage_V: np.ndarray, current_A: np.ndarray, cycle: int, step: int) -> None: ...
    def exposure_started(self, exposure: PlannedExposure, t_s: float) -> None: ...
    def exposure_done(self, exposure: PlannedExposure, data: np.ndarray, t_s: float) -> None: ...
    def event(self, level: str, message: str) -> None: ...


class NullProgress:
    def step_started(self, step: PlannedStep, t_s: float) -> None:
        pass

    def readings(self, t_s: np.ndarray, voltage_V: np.ndarray, current_A: np.ndarray, cycle: int, step: int) -> None:
        pass

    def exposure_started(self, exposure: PlannedExposure, t_s: float) -> None:
        pass

    def exposure_done(self, exposure: PlannedExposure, data: np.ndarray, t_s: float) -> None:
        pass

    def event(self, level: str, message: str) -> None:
        pass


@dataclass
class _OpenImage:
    """The spectrum image being exposed, as the runner's thread counts it (beam-on time, dose)."""

    first: PlannedExposure
    dose_rate_e_per_m2_s: float
    beam_on_s: float = 0.0
    dose_e_per_m2: float = 0.0
    subframes_done: int = 0
    t_exposing_since: float | None = None  # rig time the running sub-exposure started


class _ImageSum:
    """Sum of the sub-exposures of one spectrum image."""

    def __init__(self, t_start_s: float, energy_offset_eV: float) -> None:
        self.t_start_s = t_start_s
        self.energy_offset_eV = energy_offset_eV
        self.data: np.ndarray | None = None
        self.saturated_px = 0
        self.dose = 0.0
        self.exposure_s = 0.0
        self.readings: list[tuple[float, float]] = []

    def add(self, data: np.ndarray, saturated_px: int, dose: float, exposure_s: float, readings: list[tuple[float, float]]) -> None:
        self.data = data.astype(np.float32) if self.data is None else self.data + data
        self.saturated_px += saturated_px
        self.dose += dose
        self.exposure_s += exposure_s
        self.readings.extend(readings)


@dataclass
class RunResult:
    status: str  # completed | stopped | failed | interrupted
    reason: str = ""
    exposures: int = 0
    ec_points: int = 0
    safe_state_failures: list[str] = field(default_factory=list)


class RunFileSink(TypingProtocol):
    """The part of acquisition.runfile.RunFile the runner uses."""

    def append_exposure(self, window: str, data: np.ndarray, **record: Any) -> int: ...
    def append_electrochemistry(self, t_s: Any, voltage_V: Any, current_A: Any, **cols: Any) -> None: ...
    def log(self, t_s: float, level: str, message: str) -> None: ...
    def append_drift(self, t_s: float, window: str, index: int, measured_m: float, sigma_m: float,
                     image_shift_m: float, action: str, kind: str = "science", dose_e_per_m2: float = math.nan,
                     stage_y_m: float = math.nan) -> None: ...
    def begin_step(self, index: int, name: str, t_s: float) -> None: ...
    def end_step(self, index: int, t_s: float, status: Any = "completed") -> None: ...
    def write_ground_truth(self, t_s: float, profiles: Any = None, scalars: Any = None) -> None: ...
    def close(self, status: Any = "completed", reason: str = "") -> None: ...


class Runner:
    def __init__(
        self,
        plan: Plan,
        rig: Rig,
        runfile: RunFileSink,
        *,
        progress: Progress | None = None,
        start_step: int = 0,
        ground_truth: Callable[[], tuple[dict[str, np.ndarray], dict[str, float]]] | None = None,
        sweep_chunk: int = 2500,
        use_sweeps: bool | None = None,
        background_io: bool | None = None,
    ) -> None:
        """`background_io`: read frames and write the run file on an I/O thread (default: on any
        clock that is not virtual). `use_sweeps`: run the stairs between exposure events as
        instrument-timed sweeps where the potentiostat offers them (default: on a virtual clock
        only; in real time PC-timed stairs meet the 5 ms step timing, sweeps do not yet)."""
        self.plan = plan
        self.protocol = plan.protocol
        self.rig = rig
        self.clock = rig.clock
        self._runfile = runfile
        threaded = (not self.clock.is_virtual) if background_io is None else background_io
        self._io = IoWorker(threaded, while_full=self._renew)  # a queue full behind a long read-out holds the run, alive
        # the runner's thread writes through the I/O worker; read-out jobs use the file directly
        self.file: RunFileSink = QueuedRunFile(self._io, runfile) if threaded else runfile  # type: ignore[assignment]
        self._measure_lead_s = 0.0  # how long before a stair's end its reading starts (real time)
        self._measure_times: deque[float] = deque(maxlen=32)
        self.progress: Progress = progress or NullProgress()
        self.start_step = start_step
        self.ground_truth = ground_truth
        self.sweep_chunk = sweep_chunk
        # instrument-timed sweeps by default on a virtual clock only: in real time the stair after each
        # sweep waits for the buffer read-back (p99 28-31 ms late), PC-timed stairs land within
        # 5 ms (docs/performance/realtime.md, docs/decisions/0010)
        self.use_sweeps = self.clock.is_virtual if use_sweeps is None else use_sweeps
        self._stop_requested = threading.Event()
        self._offset = 0.0  # rig clock time of plan time 0
        self._output_on = False
        self._compliance_trips = 0
        self._exposures = 0
        self._ec_points = 0
        # a resumed run continues the dose budget the file recorded
        self._dose_e_per_m2 = float(getattr(runfile, "total_dose_e_per_m2", 0.0) or 0.0)
        # of the drift-tracking frames taken, a resumed run's included (drift.track_max_dose)
        self._tracking_dose_e_per_m2 = float(getattr(runfile, "tracking_dose_e_per_m2", 0.0) or 0.0)
        self._tracking_skipped = 0
        # readings of the running exposure, for its mean potential and current
        self._exposure_readings: list[tuple[float, float]] | None = None
        self._stair_pending = False  # a level was set and its stair not yet measured
        self._pending_cycle = 0  # the cycle of that stair
        # PC-timed stairs never read the potentiostat's error queue (sweeps do): it is drained
        # after each exposure, in the slack just after the next level is set, and at each step's end
        self._errors_due = False
        self._image: _ImageSum | None = None  # sub-exposures read so far (the I/O thread's side)
        self._open_image: _OpenImage | None = None  # the image being exposed (the runner's side)
        self._open_step: int | None = None  # index of the step begun and not yet ended
        self._voltage_config: PotentiostatConfig | None = None  # the source settings of _setup
        self._drift_control: DriftController | None = None  # protocol `drift`: tracking and correction
        self._planned_end_s: float | None = None  # planned end of the last exposure started
        # -- safety lease (hardware runs; acquisition/supervisor.py) --
        #: the run's end of the supervisor's lease (`Lease`), or None (dry runs, in-process tests)
        self.lease: Any = None
        self._stopped_by: BaseException | None = None  # the StopNow / LeaseLapsed that ended the run
        self._stop_now: str | None = None  # an immediate stop asked for (a signal): the reason
        self.finishing = False  # the run is on its way out (safe state, file close): no more raises

    # -- control ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the running exposure, then stop cleanly (first Ctrl-C)."""
        self._stop_requested.set()

    def request_stop_now(self, reason: str) -> None:
        """Stop at once (second Ctrl-C, SIGTERM, SIGHUP): the signal handler raises StopNow too;
        this makes the stop stick when the raise lands where Python discards it."""
        self._stop_now = reason

    def _check_stop_now(self) -> None:
        if self._stop_now is not None:
            raise StopNow(self._stop_now)

    def _sleep_until(self, t_s: float) -> None:
        """Wait on the rig clock; an immediate stop asked for acts before and after the wait."""
        self._check_stop_now()
        self.clock.sleep_until(t_s)
        self._check_stop_now()

    def abort_before_start(self, reason: str) -> RunResult:
        """End without running a step (a stop signal before the first): safe state, file closed
        with status ``interrupted``."""
        self.finishing = True
        return self._finish("interrupted", reason)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    @property
    def _stopping(self) -> bool:
        """A stop was asked for and no spectrum image is half exposed: a stop after Ctrl-C finishes
        every sub-exposure of the running image first."""
        return self._stop_requested.is_set() and self._open_image is None

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        status, reason = "completed", ""
        switch_interval = sys.getswitchinterval()
        if self._io.threaded:
            # a stepping thread woken by its timer waits for the GIL at most this long while the
            # I/O thread computes or writes a frame (default 5 ms: the whole step-timing budget)
            sys.setswitchinterval(5e-4)
        try:
            self._setup()
            steps = self.plan.steps[self.start_step :]
            if steps:
                self._offset = self.clock.now() - steps[0].t_start_s
            for step in steps:
                self._check_stop_now()
                self._run_step(step)
                if self.stop_requested:
                    status, reason = "stopped", "stop requested (Ctrl-C): stopped after the running exposure"
                    break
            while not self._io.wait_camera_free(0.05):  # the last read-out, renewing the lease
                self._renew()
            self._io.drain()  # the last writes, and any error they raised
        except LeaseLapsed as exc:
            status, reason = "interrupted", f"{exc}; resume with --resume"
            self._stopped_by = exc
        except SupervisorLost as exc:
            status, reason = "failed", f"SupervisorLost: {exc}"
        except StopNow as exc:
            status, reason = "interrupted", str(exc) or "stopped at once"
            self._stopped_by = exc
        except KeyboardInterrupt:
            status, reason = "interrupted", "second Ctrl-C: stopped at once"
        except InsitemError as exc:
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - any fault must still end in the safe state
            # no traceback on the terminal: the reason goes to the run file and the status line
            log.error("runner fault: %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.finishing = True
            sys.setswitchinterval(switch_interval)
        return self._finish(status, reason)

    def _finish(self, status: str, reason: str) -> RunResult:
        # The safe state first: nothing below may prevent it.
        failures = self.rig.safe_state()
        t = self._now_safe()
        if self.lease is not None:  # confirmed: the supervisor exits; else it takes over
            self.lease.release(confirmed=not failures)
        # then the I/O thread: queued writes run; read-outs not yet started run too (the beam is
        # blanked; the frames are in the camera) unless a fault ended the run; afterwards the file
        # is this thread's alone
        try:
            if not self._io.close(cancel=status == "failed"):
                reason = (reason + "; " if reason else "") + "run-file I/O thread did not stop in time"
        except BaseException:  # noqa: BLE001 - e.g. a signal during the join: still close the file
            self._io.abandon()
        self.file = self._runfile
        try:
            self._store_partial_image(t, status, self._beam_off_time(t))
            if self._open_step is not None:
                self.file.end_step(self._open_step, t, "interrupted")
                self._open_step = None
        except Exception as exc:  # noqa: BLE001 - the file may be the thing that failed (disk full)
            if str(exc) not in reason:
                reason = (reason + "; " if reason else "") + f"run file: {exc}"
        try:
            if failures:
                self.file.log(t, "CRITICAL", "safe state NOT confirmed: " + "; ".join(failures))
                reason = (reason + "; " if reason else "") + "safe state not confirmed: " + "; ".join(failures)
                if status == "completed":
                    status = "failed"
            else:
                self.file.log(t, "INFO", "safe state: potentiostat output off, beam blanked")
            self._write_ground_truth(t)
            self.file.log(t, "INFO" if status == "completed" else "ERROR", f"run {status}{': ' + reason if reason else ''}")
        except Exception as exc:  # noqa: BLE001 - the file may be the thing that failed (disk full)
            if str(exc) not in reason:
                reason = (reason + "; " if reason else "") + f"run file: {exc}"
        finally:
            try:
                self.file.close(status, reason)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                log.error("closing the run file failed: %s", exc)
        self.progress.event("INFO" if status == "completed" else "ERROR", f"run {status}{': ' + reason if reason else ''}")
        return RunResult(status, reason, self._exposures, self._ec_points, failures)

    def _store_partial_image(self, t_safe: float, status: str, t_beam_off: float | None = None) -> None:
        """After an immediate stop mid-image: the sub-exposures read so far as one image flagged
        partial, with the true beam-on time and dose (the running sub-exposure's beam time runs to
        the safe state); without any sub-exposure read, an event says what the sample received."""
        img = self._open_image
        self._open_image = None
        if img is None:
            return
        t_off = t_safe if t_beam_off is None else t_beam_off  # a lease lapse: the supervisor's blank
        if img.t_exposing_since is not None and math.isfinite(t_off):
            on = max(0.0, t_off - img.t_exposing_since)
            img.beam_on_s += on
            img.dose_e_per_m2 += on * img.dose_rate_e_per_m2_s
            self._dose_e_per_m2 += on * img.dose_rate_e_per_m2_s
        exp = img.first
        acc = self._image
        self._image = None
        what = (f"{exp.window} image at t = {exp.t_start_s + self._offset:.1f} s cut short ({status}): "
                f"{img.beam_on_s:.3g} s of beam, {img.dose_e_per_m2 / E_PER_A2:.4g} e/Å²")
        if acc is None or acc.data is None:
            self.file.log(t_safe, "WARNING", what + "; no sub-exposure read out, no image stored")
            return
        self._append_image(exp, acc, img.dose_e_per_m2, math.nan, partial=True, beam_on_s=img.beam_on_s)
        self._exposures += 1
        self.file.log(t_safe, "WARNING", what + f"; stored as partial: {acc.exposure_s:g} s of "
                      f"{exp.exposure_s * exp.n_subframes:g} s read out")

    def _now_safe(self) -> float:
        try:
            return self.clock.now()
        except Exception:  # noqa: BLE001
            return math.nan

    # -- setup ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        p = self.protocol
        scope = self.rig.microscope
        scope.beam.set_blanked(True)
        if not scope.beam.blanked:
            raise SafetyLimitError("the beam did not blank at setup")
        rate = scope.beam.dose_rate_e_per_m2_s
        if rate > p.safety.max_dose_rate * (1 + 1e-6):
            raise SafetyLimitError(
                f"dose rate {rate / E_PER_A2:.3g} e/Å²/s read from the microscope exceeds "
                f"safety.max_dose_rate {p.safety.max_dose_rate / E_PER_A2:.3g} e/Å²/s"
            )
        slit = p.spectrometer.slit
        scope.slit.set_inserted(True)
        scope.slit.set_width(slit.width)
        scope.slit.set_height(slit.length)
        pot = self.rig.potentiostat
        config = PotentiostatConfig(
            compliance_A=p.safety.current_compliance,
            voltage_limits_V=(p.safety.voltage_min, p.safety.voltage_max),
            voltage_range_V=max(abs(p.safety.voltage_min), abs(p.safety.voltage_max)),
        )
        pot.configure(config)
        self._voltage_config = config  # restored after each current-sourcing step
        pot.set_output(False)
        self._output_on = False
        if not self.clock.is_virtual:
            # the first stair's reading starts this long before its end, before any `measure()`
            # has been timed: the integration time plus the reply's transfer
            self._measure_lead_s = config.nplc / config.line_frequency_Hz + FIRST_READING_TRANSFER_S
        self._log("INFO", f"setup done: dose rate {rate / E_PER_A2:.3g} e/Å²/s, compliance {p.safety.current_compliance:g} A")
        self._drift_control = self._make_drift_control()

    def _make_drift_control(self) -> DriftController | None:
        d = self.protocol.drift
        if d.mode == "off":
            return None
        window = d.window or self.protocol.spectrometer.windows[0].name
        specs = {w.name: w for w in getattr(getattr(self._runfile, "config", None), "windows", ())}
        spec = specs.get(window)
        scale = LENGTH_UNITS_M.get(spec.position_units) if spec is not None else None
        if spec is None or scale is None:
            self._log("WARNING", f"drift tracking off: the {window} window has no position axis in a length unit")
            return None
        position_m = (spec.position_offset + spec.position_scale * np.arange(spec.n_rows)) * scale
        return DriftController(d, window, position_m, record_io=self._runfile.append_drift, record=self.file.append_drift,
                               event=lambda level, message: self._log(level, message), pause=self._pause)

    def _pause(self, seconds: float) -> None:
        """Wait on the rig clock, renewing the lease (the drift loop while the stage travels)."""
        self._sleep_until(self.clock.now() + seconds)
        self._renew()

    # -- steps ------------------------------------------------------------------------------------
    def _run_step(self, step: PlannedStep) -> None:
        if step.current is not None:
            self._run_current_step(step)
            return
        t_now = self.clock.now()
        self.file.begin_step(step.index, step.kind, t_now)
        self._open_step = step.index
        self.progress.step_started(step, t_now)
        self._log("INFO", f"step {step.index} ({step.kind}) started")
        t, v, cyc = step.point_arrays()
        t = t + self._offset
        ends = np.append(t[1:], step.t_end_s + self._offset)  # end of each stair
        exposures = deque(step.exposures)
        active: tuple[PlannedExposure, float] | None = None  # (exposure, rig start time)
        i, n = 0, len(t)
        while True:
            # a running exposure ends before the next one starts, even when it started late
            if active is not None:
                t_event = active[1] + active[0].exposure_s
            else:
                t_event = exposures[0].t_start_s + self._offset if exposures else math.inf
            if math.isfinite(t_event):
                # stairs that end by the event run whole (swept where possible); a stair the event
                # falls inside is started PC-timed so the event lands on time, mid-stair
                j = max(i, int(np.searchsorted(ends, t_event, side="right")))
                if j > i:
                    self._apply_points(step, t, v, cyc, i, j)
                    i = j
                if i < n and t[i] < t_event:
                    self._apply_points(step, t, v, cyc, i, i + 1, pc_timed=True)
                    i += 1
            else:
                self._apply_points(step, t, v, cyc, i, n)
                i = n
            if not math.isfinite(t_event):
                break
            if active is not None:
                self._measure_ahead(t_event, t, cyc, i, step.index, step.dwell_s)
                self._finish_exposure(active[0], active[1])
                active = None
                if self._stopping:
                    break
            else:
                if self._stopping:
                    break
                i = self._wait_for_camera(step, t, v, cyc, i)
                if self._stopping:
                    break
                self._measure_ahead(t_event, t, cyc, i, step.index, step.dwell_s)
                exp = exposures.popleft()
                if self._skip_tracking(exp):
                    continue
                active = (exp, self._start_exposure(exp))
        # final reading at the end of the last stair
        if not self.stop_requested:
            self._sleep_until(step.t_end_s + self._offset)
        # the stair set last (not the step's last one when a stop cut the step short)
        self._measure_pending(self._pending_cycle if n else 0, step.index)
        self._end_step(step)

    def _end_step(self, step: PlannedStep) -> None:
        """Close a step: the potentiostat's error queue checked, its end recorded (interrupted when
        a stop cut it short), the ground truth written, one log line."""
        self._check_potentiostat_errors(f"step {step.index}")
        t_end = self.clock.now()
        self.file.end_step(step.index, t_end, "interrupted" if self.stop_requested else "completed")
        self._open_step = None
        self._write_ground_truth(t_end)
        self._log("INFO", f"step {step.index} ({step.kind}) {'stopped' if self.stop_requested else 'completed'}")

    def _lead(self, dwell_s: float) -> float:
        """How long before a stair's end its closing reading starts: the recent `measure()` time,
        at most half a stair (one slow reply must not move readings to the start of their stairs)."""
        return min(self._measure_lead_s, 0.5 * dwell_s)

    def _measure_ahead(self, t_event: float, t: np.ndarray, cyc: np.ndarray, i: int, step_index: int, step_dwell_s: float) -> None:
        """Real time only: when stair i starts within a reading's duration after an exposure event,
        take the reading that ends the stair before it now, ahead of the event, so the event's
        device calls do not push that reading, and the level after it, late."""
        if self.clock.is_virtual or not self._stair_pending or i >= len(t):
            return
        lead = self._lead(step_dwell_s)
        if t[i] - lead - 2e-3 < t_event:
            self._sleep_until(t[i] - lead)
            self._measure_pending(int(cyc[i - 1]) if i > 0 else int(cyc[i]), step_index)

    def _wait_for_camera(self, step: PlannedStep, t: np.ndarray, v: np.ndarray, cyc: np.ndarray, i: int) -> int:
        """Wait until the last read-out has left the camera, running the stairs that fall due
        meanwhile (PC-timed). Returns the index of the next stair. Immediate on a virtual clock."""
        while not self._io.wait_camera_free(0.0):
            self._renew()
            if self._stopping:
                self._io.wait_camera_free(0.05)
            elif i < len(t) and self.clock.now() >= t[i] - self._lead(step.dwell_s) - 3e-3:
                self._apply_points(step, t, v, cyc, i, i + 1, pc_timed=True)
                i += 1
            else:
                self._io.wait_camera_free(1e-3)
        return i

    def _apply_points(
        self, step: PlannedStep, t: np.ndarray, v: np.ndarray, cyc: np.ndarray, i: int, j: int, pc_timed: bool = False
    ) -> None:
        """Run staircase points i..j-1: one instrument-timed sweep per chunk where the backend
        offers it, else PC-timed (set the level at each point, measure at the end of each stair)."""
        pot = self.rig.potentiostat
        # a sweep blocks the controlling thread: with a safety lease, only sweeps of stairs well
        # inside the lease's time to live, cut into chunks that are too
        fits_lease = self.lease is None or step.dwell_s <= 0.5 * self.lease.ttl_s
        if not pc_timed and self.use_sweeps and pot.supports_sweep and fits_lease and not np.isnan(v[i:j]).any():
            k = i
            while k < j:
                if self._stopping and self._exposure_readings is None:
                    return
                self._io.check()
                self._renew()
                if self.clock.now() > t[k] + 1e-9:
                    # late (camera read-out, slow I/O): run this stair PC-timed so the sweep that
                    # follows starts on its schedule instead of shifting every later stair
                    self._apply_points(step, t, v, cyc, k, k + 1, pc_timed=True)
                    k += 1
                    continue
                m = min(j, k + self.sweep_chunk)
                if self.lease is not None:
                    m = min(m, k + max(1, int(0.5 * self.lease.ttl_s / step.dwell_s)))
                self._sleep_until(t[k] - self._lead(step.dwell_s))
                self._measure_pending(int(cyc[k]), step.index)
                self._sleep_until(t[k])
                self._ensure_output(True)
                readings = pot.run_sweep(v[k:m].tolist(), step.dwell_s)
                self._record(readings, cyc[k:m], step.index)
                k = m
            return
        for k in range(i, j):
            if self._stopping and self._exposure_readings is None:
                return
            self._io.check()
            self._renew()
            # the stair before ends at t[k]: its reading ends then too, and the next level is set on time
            self._sleep_until(t[k] - self._lead(step.dwell_s))
            self._measure_pending(int(cyc[k - 1]) if k > 0 else int(cyc[k]), step.index)
            self._sleep_until(t[k])
            if math.isnan(v[k]):
                self._ensure_output(False)
            else:
                pot.set_voltage(float(v[k]))
                self._ensure_output(True)
                self._stair_pending = True
                self._pending_cycle = int(cyc[k])
                if self._errors_due:
                    self._check_potentiostat_errors(f"step {step.index}")

    def _check_potentiostat_errors(self, during: str) -> None:
        """Drain the potentiostat's error queue; any entry stops the run (InstrumentError)."""
        self._errors_due = False
        errs = self.rig.potentiostat.errors()
        if errs:
            listed = "; ".join(f"{code} {message}" for code, message in errs)
            raise InstrumentError(f"potentiostat errors during {during}: {listed}", code=errs[0][0])

    def _ensure_output(self, on: bool) -> None:
        if on != self._output_on:
            if on and self.lease is not None:
                self.lease.require_live("to switch the potentiostat output on")
            self.rig.potentiostat.set_output(on)
            self._output_on = on

    def _measure_pending(self, cycle: int, step_index: int) -> None:
        """Measure the end of the stair set last (PC-timed mode), once."""
        if not (self._stair_pending and self._output_on):
            return
        self._stair_pending = False
        if self.clock.is_virtual:
            reading = self.rig.potentiostat.measure()
        else:
            c0 = self.clock.now()
            reading = self.rig.potentiostat.measure()
            self._measure_times.append(self.clock.now() - c0)
            # the next reading starts this much before its stair ends: the longest recent one
            # plus 0.5 ms, so the level after it is not set late by the integration time
            self._measure_lead_s = max(self._measure_times) + 5e-4
        self._record([reading], np.array([cycle]), step_index)

    def _record(self, readings: list[Reading], cycles: np.ndarray, step_index: int, count_trips: bool = True) -> None:
        """Write readings to the electrochemical record; compliance trips count against
        safety.max_compliance_trips (`count_trips` False: a current source at its voltage limit,
        the expected end of a galvanostatic half-cycle, is recorded but not counted)."""
        if not readings:
            return
        ts = np.fromiter((r.t_s for r in readings), float, len(readings))
        vs = np.fromiter((r.voltage_V for r in readings), float, len(readings))
        cs = np.fromiter((r.current_A for r in readings), float, len(readings))
        trips = np.fromiter((r.compliance_tripped for r in readings), bool, len(readings))
        cyc = np.broadcast_to(np.asarray(cycles, dtype=np.int32), (len(readings),))
        self.file.append_electrochemistry(ts, vs, cs, cycle=cyc, step=step_index, compliance=trips)
        self._ec_points += len(readings)
        if self._exposure_readings is not None:
            self._exposure_readings.extend(zip(vs.tolist(), cs.tolist()))
        self.progress.readings(ts, vs, cs, int(cyc[-1]), step_index)
        n_trips = int(trips.sum()) if count_trips else 0
        if n_trips:
            self._compliance_trips += n_trips
            limit = self.protocol.safety.max_compliance_trips
            self._log("WARNING", f"compliance tripped ({self._compliance_trips} so far, limit {limit})")
            if self._compliance_trips > limit:
                raise ComplianceError(
                    f"current compliance {self.protocol.safety.current_compliance:g} A tripped "
                    f"{self._compliance_trips} times, more than safety.max_compliance_trips = {limit}"
                )

    # -- current-sourcing steps (galvanostatic, ocv) ---------------------------------------------------
    def _run_current_step(self, step: PlannedStep) -> None:
        """Source the step's constant-current legs (`CurrentProgram`, protocols/timeline.py): the
        SourceMeter as a current source with a voltage limit, the voltage read every reading
        interval and recorded with the leg's cycle and the step index. A leg ends at the first
        reading at or beyond its voltage limit (or at the source's limit), or after its max time.

        Leg times in a plan that ends on limits are estimates: the schedule (`_offset`) is re-based
        at each leg's start, so an exposure keeps its planned offset from the start of its leg, and
        one whose leg ended first is skipped (the sub-exposures of an image already begun still
        run). After the last leg the source stays at 0 A (open circuit, voltage still read) until
        the step's planned end, where its `at_end` exposures are. Then the output goes off and the
        source returns to voltage mode for the steps after."""
        prog = step.current
        assert prog is not None
        pot = self.rig.potentiostat
        safety = self.protocol.safety
        t_now = self.clock.now()
        self.file.begin_step(step.index, step.kind, t_now)
        self._open_step = step.index
        self.progress.step_started(step, t_now)
        self._log("INFO", f"step {step.index} ({step.kind}) started")
        limit = prog.voltage_limit_V if prog.voltage_limit_V is not None else max(abs(safety.voltage_min), abs(safety.voltage_max))
        self._ensure_output(False)
        assert self._voltage_config is not None
        pot.configure(PotentiostatConfig(**{**self._voltage_config.model_dump(), "source_mode": "current", "voltage_limit_V": limit}))
        exposures = deque(step.exposures)
        active: tuple[PlannedExposure, float] | None = None
        # the voltage the step starts from, at 0 A: a half-cycle already at its limit is skipped
        pot.set_current(0.0)
        self._ensure_output(True)
        last_V = self._read_current_step(step, prog.legs[0].cycle)
        for leg in prog.legs:
            if self._stopping:
                break
            if prog.ends_on_limits:
                self._offset = self.clock.now() - leg.t0_s
            if leg.current_A != 0.0 and leg.reached(last_V):
                self._log("INFO", f"step {step.index} ({step.kind}) cycle {leg.cycle}: {leg.current_A:+.4g} A half-cycle "
                          f"skipped, the cell is at its voltage limit already ({last_V:.4g} V)")
                continue
            pot.set_current(leg.current_A)
            active, reached, last_V = self._run_leg(step, leg, exposures, active, last_V)
            if reached:
                self._log("INFO", f"step {step.index} ({step.kind}) cycle {leg.cycle}: {leg.current_A:+.4g} A half-cycle "
                          f"reached its voltage limit after {self.clock.now() - (leg.t0_s + self._offset):.6g} s")
        last = prog.legs[-1]
        if not self._stopping:
            if prog.ends_on_limits:
                self._offset = self.clock.now() - last.t1_s
            if step.t_end_s > last.t1_s or exposures or active is not None:
                if last.current_A != 0.0:
                    pot.set_current(0.0)
                tail = CurrentLeg(last.t1_s, math.inf, 0.0, last.cycle, max_s=max(0.0, step.t_end_s - last.t1_s))
                active, _, _ = self._run_leg(step, tail, exposures, active, last_V)
        if active is not None:
            self._finish_exposure(*active)
        self._ensure_output(False)
        assert self._voltage_config is not None
        pot.configure(self._voltage_config)
        if prog.ends_on_limits and not self._stopping:
            self._offset = self.clock.now() - step.t_end_s  # the next step starts now
        self._end_step(step)

    def _run_leg(self, step: PlannedStep, leg: CurrentLeg, exposures: "deque[PlannedExposure]",
                 active: tuple[PlannedExposure, float] | None, last_V: float
                 ) -> tuple[tuple[PlannedExposure, float] | None, bool, float]:
        """One constant-current leg: readings every reading interval and the exposures planned
        in it (plan times in [leg.t0_s, leg.t1_s)); an exposure shorter than the interval gets a
        reading at its end, so its record carries the voltage and current it was taken at.
        Returns the exposure still running, whether the leg ended on its voltage limit, and the
        last voltage read."""
        assert step.current is not None
        interval = step.current.reading_interval_s
        t_leg0 = leg.t0_s + self._offset
        t_max = t_leg0 + leg.max_s if leg.max_s is not None else math.inf
        k = 1
        while not self._stopping:
            t_read = min(t_leg0 + k * interval, t_max)
            if active is not None and active[1] + active[0].exposure_s <= t_read:
                if self._exposure_readings is not None and not self._exposure_readings:
                    self._sleep_until(active[1] + active[0].exposure_s)
                    last_V = self._read_current_step(step, leg.cycle)
                self._finish_exposure(*active)
                active = None
                continue
            exp = self._due_exposure(step, exposures, leg) if active is None else None
            if exp is not None and exp.t_start_s + self._offset <= t_read:
                while not self._io.wait_camera_free(0.05):  # the last read-out (real time only)
                    self._renew()
                exposures.popleft()
                if not self._skip_tracking(exp):
                    active = (exp, self._start_exposure(exp))
                continue
            if t_read <= t_leg0:  # a leg of no time (a tail with nothing left to wait for)
                break
            self._sleep_until(t_read)
            self._io.check()
            self._renew()
            reading = self.rig.potentiostat.measure()
            self._record([reading], np.array([leg.cycle]), step.index, count_trips=False)
            last_V = reading.voltage_V
            if leg.current_A != 0.0 and (leg.reached(reading.voltage_V) or reading.compliance_tripped):
                return active, True, last_V
            if t_read >= t_max:
                break
            k += 1
        return active, False, last_V

    def _read_current_step(self, step: PlannedStep, cycle: int) -> float:
        """One reading now, recorded; its voltage."""
        reading = self.rig.potentiostat.measure()
        self._record([reading], np.array([cycle]), step.index, count_trips=False)
        return reading.voltage_V

    def _due_exposure(self, step: PlannedStep, exposures: "deque[PlannedExposure]", leg: CurrentLeg) -> PlannedExposure | None:
        """The next exposure of this leg, after dropping those planned in a leg that ended before
        them (the remaining sub-exposures of an image already begun are kept)."""
        skipped = 0
        while exposures:
            exp = exposures[0]
            if exp.subframe > 0 and self._open_image is not None:
                return exp
            if exp.t_start_s >= leg.t0_s - 1e-9:
                if skipped:
                    self._log("WARNING", f"step {step.index} ({step.kind}): {skipped} exposure(s) planned in a half-cycle "
                              "that ended at its voltage limit before them were skipped")
                return exp if exp.t_start_s < leg.t1_s else None
            exposures.popleft()
            skipped += 1
        if skipped:
            self._log("WARNING", f"step {step.index} ({step.kind}): {skipped} exposure(s) planned in a half-cycle "
                      "that ended at its voltage limit before them were skipped")
        return None

    # -- exposures ----------------------------------------------------------------------------------
    def _skip_tracking(self, exp: PlannedExposure) -> bool:
        """A drift-tracking frame is left out when it would take the tracking dose past
        drift.track_max_dose (the plan checked it at the protocol's dose rate; the microscope's
        may be higher): a warning, and the run goes on without it."""
        cap = self.protocol.drift.track_max_dose
        if not exp.tracking or cap is None:
            return False
        dose = exp.exposure_s * self.rig.microscope.beam.dose_rate_e_per_m2_s
        if self._tracking_dose_e_per_m2 + dose <= cap * (1 + 1e-9):
            return False
        if not self._tracking_skipped:
            self._log("WARNING", f"drift tracking: the next frame would take the tracking dose past drift.track_max_dose "
                      f"({cap / E_PER_A2:.4g} e/Å²); no more tracking frames")
        self._tracking_skipped += 1
        return True

    def _start_exposure(self, exp: PlannedExposure) -> float:
        cam = self.rig.camera
        settings = camera_settings(self.protocol, exp.window)
        if exp.tracking:  # a drift-tracking frame: the tracking window's settings, its own exposure
            settings = settings.model_copy(update={"exposure_s": exp.exposure_s})
        if cam.settings != settings:
            cam.configure(settings)  # energy offset switched here, before the beam comes on
        planned_dose = exp.exposure_s * self.rig.microscope.beam.dose_rate_e_per_m2_s
        if self._dose_e_per_m2 + planned_dose > self.protocol.safety.max_total_dose * (1 + 1e-9):
            raise SafetyLimitError(
                f"exposure {exp.index} would take the dose to {(self._dose_e_per_m2 + planned_dose) / E_PER_A2:.4g} e/Å², "
                f"over safety.max_total_dose {self.protocol.safety.max_total_dose / E_PER_A2:.4g} e/Å²"
            )
        self._sleep_until(exp.t_start_s + self._offset)
        if self._drift_control is not None and exp.subframe == 0 and not self._follows_back_to_back(exp):
            self._drift_control.apply(self.rig.microscope, self.clock.now())  # beam still blanked
        self._planned_end_s = exp.t_end_s
        if self.lease is not None:
            self.lease.require_live("to unblank the beam")
        if exp.subframe == 0 or self._open_image is None:
            self._open_image = _OpenImage(exp, self.rig.microscope.beam.dose_rate_e_per_m2_s)
        self._open_image.t_exposing_since = self.clock.now()
        if self.protocol.beam.policy == "blanked_between":
            self.rig.microscope.beam.set_blanked(False)
        t0 = cam.start_exposure()
        self._exposure_readings = []
        self.progress.exposure_started(exp, t0)
        return t0

    def _follows_back_to_back(self, exp: PlannedExposure) -> bool:
        """True when `exp` starts right after the previous exposure (its window's turn in one
        trigger's group): drift is not corrected between the images of a group."""
        prev = self._planned_end_s
        return prev is not None and exp.t_start_s - prev <= self.protocol.spectrometer.camera.dead_time + 1e-6

    def _finish_exposure(self, exp: PlannedExposure, t0: float) -> None:
        self._sleep_until(t0 + exp.exposure_s)
        scope = self.rig.microscope
        dose_rate = scope.beam.dose_rate_e_per_m2_s
        if self.protocol.beam.policy == "blanked_between":
            scope.beam.set_blanked(True)
            if not scope.beam.blanked:
                raise SafetyLimitError("the beam did not blank after an exposure")
        readings = self._exposure_readings or []
        self._exposure_readings = None
        self._errors_due = True
        dose = dose_rate * exp.exposure_s
        self._dose_e_per_m2 += dose
        if exp.tracking:
            self._tracking_dose_e_per_m2 += dose
        img = self._open_image
        if img is not None:
            img.t_exposing_since = None
            img.beam_on_s += exp.exposure_s
            img.dose_e_per_m2 += dose
            img.subframes_done += 1
            if exp.subframe >= exp.n_subframes - 1:
                self._open_image = None  # the image is whole; its write is queued below
        # read-out and write on the I/O thread (real time) or here (virtual clock)
        self._io.submit_readout(self.rig.camera.read_frame, lambda frame: self._store_frame(exp, frame, readings, dose))

    def _append_image(self, exp: PlannedExposure, acc: "_ImageSum", dose_e_per_m2: float, potential_if_unread_V: float,
                      **extra: Any) -> int | None:
        """Write a summed image with its record: the mean potential and current of the readings
        taken while it was exposed (`potential_if_unread_V` and NaN when there were none)."""
        pot_V = float(np.mean([r[0] for r in acc.readings])) if acc.readings else potential_if_unread_V
        cur_A = float(np.mean([r[1] for r in acc.readings])) if acc.readings else math.nan
        return self._runfile.append_exposure(
            TRACKING_WINDOW if exp.tracking else exp.window,
            acc.data,
            t_start_s=acc.t_start_s,
            exposure_s=acc.exposure_s,
            potential_V=pot_V,
            current_A=cur_A,
            cycle=exp.cycle,
            step=exp.step_index,
            dose_e_per_m2=dose_e_per_m2,
            energy_offset_eV=acc.energy_offset_eV,
            saturated_px=acc.saturated_px,
            kind=exp.kind,
            **extra,
        )

    def _store_frame(self, exp: PlannedExposure, frame: Frame, readings: list[tuple[float, float]], dose: float) -> None:
        """Add a read-out frame to its spectrum image; write the image after its last sub-exposure.
        Runs on the I/O thread on a real-time run: writes go to the run file directly."""
        # sub-exposures of a summed spectrum image accumulate until the last one
        if exp.subframe == 0:
            self._image = _ImageSum(frame.t_start_s, frame.settings.energy_offset_eV)
        acc = self._image
        assert acc is not None
        acc.add(frame.data, frame.saturated_px, dose, exp.exposure_s, readings)
        if exp.subframe == exp.n_subframes - 1:
            self._image = None
            assert acc.data is not None
            planned_V = exp.potential_V if exp.potential_V is not None else math.nan
            image_index = self._append_image(exp, acc, acc.dose, planned_V)
            self._exposures += 1
            if self._drift_control is not None and image_index is not None:
                self._drift_control.observe(exp.window, int(image_index), acc.t_start_s, acc.data, kind=exp.kind,
                                            dose_e_per_m2=acc.dose)
            if acc.saturated_px:
                self._log("WARNING", f"{exp.window} image at t = {acc.t_start_s:.1f} s: {acc.saturated_px} saturated pixels", self._runfile)
            self._write_ground_truth(self.clock.now(), self._runfile)
        self.progress.exposure_done(exp, frame.data if exp.n_subframes == 1 else (acc.data if acc.data is not None else frame.data), frame.t_start_s)

    # -- safety lease -------------------------------------------------------------------------------
    def _renew(self) -> None:
        """Renew the supervisor's lease from the controlling thread's loops (no-op without one);
        an immediate stop asked for acts here too."""
        self._check_stop_now()
        if self.lease is not None:
            self.lease.renew()

    def _beam_off_time(self, t_safe: float) -> float:
        """When the beam went off after a stop: the supervisor's read-back blank when a lease
        lapse told it (rig clock), else the run's own safe state `t_safe`."""
        mono = getattr(self._stopped_by, "beam_blanked_mono_s", math.nan)
        to_rig = getattr(self.clock, "rig_time_of", None)
        if to_rig is None or not math.isfinite(mono) or not math.isfinite(t_safe):
            return t_safe
        return min(t_safe, float(to_rig(mono)))

    # -- helpers ------------------------------------------------------------------------------------
    def _write_ground_truth(self, t_s: float, file: RunFileSink | None = None) -> None:
        if self.ground_truth is None:
            return
        profiles, scalars = self.ground_truth()
        (file or self.file).write_ground_truth(t_s, profiles=profiles, scalars=scalars)

    def _log(self, level: str, message: str, file: RunFileSink | None = None) -> None:
        (file or self.file).log(self.clock.now(), level, message)
        self.progress.event(level, message)
        log.log(getattr(logging, level, logging.INFO), message)
