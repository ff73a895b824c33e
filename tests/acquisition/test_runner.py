"""The runner on the simulated rig: whole protocols, stops, faults, and what the file holds after.

Safety is read from the simulated world (the potentiostat's applied level, the blanker), not
from the runner's belief.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from run_checks import assert_ended_safely
from shipped_protocol import variant

from insitem.cli.main import main
from insitem.acquisition.rig import SimRigBundle
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.launch import SignalHandlers
from insitem.acquisition.runner import NullProgress, Runner, StopNow

HOLD = "si-nanoparticle-hold"  # 120 one-second Li-K images at a -0.2 V hold

SimRun = Callable[..., tuple[SimRigBundle, Runner, Path]]  # the `sim_run` fixture (conftest.py)


def _assert_safe(bundle: SimRigBundle) -> None:
    world = bundle.world
    assert world.applied_V is None, "potentiostat output must be off (relay open)"
    assert world.optics.blanked, "beam must be blanked"


def test_graceful_stop_finishes_the_exposure_and_leaves_the_rig_safe(sim_run: SimRun) -> None:
    bundle, runner, path = sim_run(HOLD, stop_after=3)
    result = runner.run()
    assert_ended_safely(result, bundle, path, "stopped")
    with RunFileReader(path) as r:
        assert r.n_exposures("li-k") == 3
        assert r.n_electrochemistry > 0
        messages = [e.message for e in r.events()]
    assert any("safe state: potentiostat output off, beam blanked" in m for m in messages)


def test_device_fault_mid_exposure_stops_safe_and_keeps_the_data(sim_run: SimRun) -> None:
    bundle, runner, path = sim_run(HOLD, camera_fails_on=3)  # the third read-out raises
    result = runner.run()
    assert_ended_safely(result, bundle, path, "failed", ("DeviceTimeoutError", "sim://camera"), "no answer")
    with RunFileReader(path) as r:
        assert r.n_exposures("li-k") == 2
        frames = [r.exposure("li-k", i) for i in range(2)]
    assert all(np.isfinite(f).all() and f.mean() > 0 for f in frames)


def test_beam_is_unblanked_only_during_exposures(sim_run: SimRun) -> None:
    bundle, runner, path = sim_run(HOLD)
    result = runner.run()
    assert result.status == "completed"
    _assert_safe(bundle)
    optics = bundle.world.optics
    plan = runner.plan
    # the dose delivered equals dose rate x total exposure time: the beam was on for nothing else
    expected = plan.protocol.beam.dose_rate_e_per_m2_s * sum(e.exposure_s for e in plan.exposures)
    assert optics.total_dose_e_per_m2() == pytest.approx(expected, rel=1e-6)
    with RunFileReader(path) as r:
        rec = r.exposure_records("li-k")
        assert len(rec["t_start_s"]) == 120
        assert np.allclose(np.diff(rec["t_start_s"]), 5.0, atol=1e-6)
        ec = r.electrochemistry()
    # the hold is at -0.2 V and the cell draws a lithiation current
    assert np.allclose(ec["voltage_V"], -0.2, atol=5e-3)


def _wait_for_exposures(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 240) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, "the run ended before the exposures"
        if path.exists():
            try:
                with RunFileReader(path) as r:
                    k = r.n_exposures("li-k")
                if k >= n:
                    return k
            except Exception:  # noqa: BLE001 - the file may be half-created
                pass
        time.sleep(0.05)
    raise AssertionError("the run did not reach the exposures in time")


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run.h5"
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "insitem.cli", "run", HOLD, "--sim", "--out", str(out), "--no-progress", "--no-figures"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return proc, out


def _finish(proc: subprocess.Popen, tmp_path: Path) -> str:
    proc.wait(timeout=240)  # generous: a loaded machine slows the stop, not what it leaves
    return (tmp_path / "stderr.txt").read_text()


def test_sigkill_leaves_every_completed_exposure_readable(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    seen = _wait_for_exposures(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    _finish(proc, tmp_path)
    with RunFileReader(out) as r:
        assert r.status == "running"  # the writer never closed it
        n = r.n_exposures("li-k")
        assert n >= seen
        for i in range(n):
            assert np.isfinite(r.exposure("li-k", i)).all()
    import hyperspy.api as hs

    sig = hs.load(out, file_format="hspy", swmr=True)
    sig = sig if not isinstance(sig, list) else sig[0]
    assert sig.data.shape[0] >= seen


def test_sigint_stops_cleanly_with_status_and_safe_state(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    _wait_for_exposures(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc, tmp_path)
    assert proc.returncode == 3, err  # stopped after Ctrl-C
    assert "Traceback" not in err
    with RunFileReader(out) as r:
        assert r.status == "stopped"
        assert "Ctrl-C" in r.status_reason
        messages = [e.message for e in r.events()]
    assert any("safe state: potentiostat output off, beam blanked" in m for m in messages)


def test_sigterm_stops_at_once(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    _wait_for_exposures(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    err = _finish(proc, tmp_path)
    assert proc.returncode == 4 and "Traceback" not in err  # stopped at once
    with RunFileReader(out) as r:
        assert r.status == "interrupted" and "SIGTERM" in r.status_reason


class _SigtermInsideAWeakrefCallback(NullProgress):
    """After the second image, SIGTERM arrives while Python runs a weakref callback: the handler's
    StopNow is discarded there ("Exception ignored in ..."), as it was once in five under load
    when the signal landed in a WeakValueDictionary's callback during a dry run."""

    def __init__(self) -> None:
        self.done = 0

    def exposure_done(self, exposure, data, t_s) -> None:  # noqa: ANN001
        self.done += 1
        if self.done != 2:
            return

        class Thing:
            pass

        thing = Thing()
        ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGTERM))  # the handler runs in here
        del thing
        assert ref() is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_discarded_by_python_still_stops_the_run_at_once(sim_run: SimRun) -> None:
    bundle, runner, path = sim_run(HOLD, progress=_SigtermInsideAWeakrefCallback())
    with SignalHandlers(runner):
        result = runner.run()
    assert result.status == "interrupted" and "SIGTERM" in result.reason, result.reason
    _assert_safe(bundle)
    with RunFileReader(path) as r:
        assert r.status == "interrupted"
        assert r.n_exposures("li-k") <= 3  # the image running when the raise was lost, at most


def test_stop_signals_are_not_swallowed_by_handlers_of_ordinary_errors() -> None:
    """StopNow is a BaseException: a retry loop's `except Exception` cannot swallow a SIGTERM."""
    with pytest.raises(StopNow):
        try:
            raise StopNow("SIGTERM: stopped at once")
        except Exception:  # noqa: BLE001 - what a driver's retry loop does
            pass


def test_a_stop_signal_while_the_run_finishes_does_not_cut_the_safe_state_short(sim_run: SimRun) -> None:
    """A second SIGTERM while the runner puts the rig safe and closes the file raises nothing."""
    bundle, runner, path = sim_run(HOLD, stop_after=1)
    real_safe_state = bundle.rig.safe_state

    def safe_state_under_sigterm() -> list[str]:
        signal.raise_signal(signal.SIGTERM)  # the handler runs now, mid-way out
        return real_safe_state()

    bundle.rig.safe_state = safe_state_under_sigterm  # type: ignore[method-assign]
    with SignalHandlers(runner):
        result = runner.run()
    assert result.status == "stopped"
    _assert_safe(bundle)
    with RunFileReader(path) as r:
        assert r.status == "stopped"


def test_resume_continues_an_interrupted_run(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    _wait_for_exposures(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _finish(proc, tmp_path)
    assert main(["run", "--resume", str(out), "--no-progress", "--no-figures"]) == 0
    with RunFileReader(out) as r:
        assert r.status == "completed"
        assert r.n_exposures("li-k") >= 120  # the interrupted hold step ran again in full


@pytest.mark.slow
def test_ex_situ_protocol_completes_and_opens_in_hyperspy(tmp_path: Path) -> None:
    out = tmp_path / "ex.h5"
    assert main(["run", "ex-situ-lasgtp", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    import hyperspy.api as hs

    sigs = hs.load(out, file_format="hspy")
    channels = {"low-loss": 1024, "li-k": 2048, "ti-l-o-k": 2048}
    assert {s.metadata.General.title.split()[-1] for s in sigs} == set(channels)
    for s in sigs:
        assert s.metadata.Signal.signal_type == "EELS"
        assert s.axes_manager.signal_axes[0].units == "eV"
        assert s.data.shape == (1, 330, channels[s.metadata.General.title.split()[-1]])
    with RunFileReader(out) as r:
        ec = r.electrochemistry()
    assert set(np.unique(ec["cycle"])) >= set(range(1, 51))
    assert ec["t_s"][-1] / 3600 == pytest.approx(83.3, abs=0.2)


def test_compliance_trips_beyond_the_limit_stop_the_run_safely(sim_run: SimRun) -> None:
    """safety.max_compliance_trips = 3 against a 1 nA compliance (the Keithleys' lowest limit) at a
    +1 V hold on the LASGTP cell, which draws more than 2.5 nA: the fourth tripped reading stops
    the run, output off and beam blanked in the world itself."""
    text = variant(
        "loopback-hold",
        ("current_compliance: 1 uA", "current_compliance: 1 nA\n  max_compliance_trips: 3"),
        ("preset: si_nanoparticle", "preset: lasgtp_bulk"),
        ("potential: -0.2 V", "potential: 1 V"),
        ("duration: 15 s", "duration: 60 s"),
        ("binning: [6, 1]", "binning: [4, 4]"),
    )
    bundle, runner, path = sim_run(text)
    result = runner.run()
    assert result.status == "failed"
    m = re.search(r"tripped (\d+) times", result.reason)
    assert "ComplianceError" in result.reason and m, result.reason
    trips = int(m.group(1))  # readings arrive in batches: the batch holding the fourth trip stops the run
    assert 4 <= trips <= 6
    assert "max_compliance_trips = 3" in result.reason
    _assert_safe(bundle)
    with RunFileReader(path) as r:
        assert r.status == "failed" and f"tripped {trips} times" in r.status_reason
        ec = r.electrochemistry()
        assert int(ec["compliance"].sum()) == trips  # stopped at the batch that went over the limit
        assert ec["t_s"][-1] < 60.0  # long before the end of the hold
        assert r.n_exposures("li-k") >= 1
        messages = [e.message for e in r.events()]
    assert any("safe state: potentiostat output off, beam blanked" in m for m in messages)


class QueueAnError(NullProgress):
    """Queues an error on the simulated potentiostat once `n` images are written."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = 0
        self.potentiostat: Any = None

    def exposure_done(self, exposure, data, t_s) -> None:  # noqa: ANN001
        self.done += 1
        if self.done == self.n:
            self.potentiostat._errors.append((-300, "Device-specific error; injected"))


@pytest.mark.parametrize("use_sweeps", [False, True])
def test_a_potentiostat_error_queue_entry_stops_the_run_safely(sim_run: SimRun, use_sweeps: bool) -> None:
    """PC-timed stairs drain the error queue after each exposure and at each step's end (sweeps at
    each sweep): an entry queued after the second image stops the run before the fourth."""
    progress = QueueAnError(2)
    bundle, runner, path = sim_run(HOLD, progress=progress)
    progress.potentiostat = bundle.rig.potentiostat
    runner.use_sweeps = use_sweeps
    result = runner.run()
    assert_ended_safely(result, bundle, path, "failed", ("InstrumentError", "-300 Device-specific error; injected"), "-300")
    with RunFileReader(path) as r:
        assert 2 <= r.n_exposures("li-k") <= 3
