"""The runner on a paced clock (`--realtime`): read-outs and run-file writes on the I/O thread.

The same guarantees as on the virtual clock (tests/acquisition/test_runner.py), for the threaded
path: every exposure and reading written in order, faults in the I/O thread stop the run, every
exit leaves the simulated world safe and the file closed and readable, and no I/O thread is left.
The protocol is a 60 s hold with a small read-out (80 x 128 binned pixels) paced at 20x.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from run_checks import assert_ended_safely
from shipped_protocol import variant

from insitem.acquisition.rig import SimRigBundle
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import NullProgress, Runner, StopNow
from insitem.drivers.clock import PacedClock

# the shipped loopback-hold for 60 s, binned 4 x 4 (80 x 128 pixels), dark-subtracted
PROTOCOL = variant(
    "loopback-hold",
    ("description: 15 s hold", "description: 60 s hold"),
    ("duration: 15 s", "duration: 60 s"),
    ("binning: [6, 1]", "binning: [4, 4]"),
    ("  slit: {length: 1880 nm, width: 200 nm}\n", "  slit: {length: 1880 nm, width: 200 nm}\n  camera: {processing: dark_subtracted}\n"),
)
N_EXPOSURES = 12

SimRun = Callable[..., tuple[SimRigBundle, Runner, Path]]  # the `sim_run` fixture (conftest.py)


def _setup(sim_run: SimRun, **options: Any) -> tuple[SimRigBundle, Runner, Path]:
    return sim_run(PROTOCOL, clock=PacedClock(20.0), **options)


def _assert_safe_and_no_io_thread(bundle: SimRigBundle) -> None:
    assert bundle.world.applied_V is None, "potentiostat output must be off (relay open)"
    assert bundle.world.optics.blanked, "beam must be blanked"
    assert not any(t.name == "insitem-io" and t.is_alive() for t in threading.enumerate())


def test_realtime_run_writes_every_exposure_and_reading_in_order(sim_run: SimRun) -> None:
    bundle, runner, path = _setup(sim_run)
    assert runner._io.threaded
    result = runner.run()
    assert result.status == "completed", result.reason
    _assert_safe_and_no_io_thread(bundle)
    with RunFileReader(path) as r:
        assert r.status == "completed"
        assert r.n_exposures("li-k") == N_EXPOSURES
        rec = r.exposure_records("li-k")
        # exposures in order, never before the plan's 5 s grid; at 20x pacing a read-out (wall
        # time, longer on a loaded machine) may delay the next start (the runner waits for the
        # camera): how late is the machine's business, not the runner's, so only the order and
        # "never early" are asserted
        planned = np.array([e.t_start_s for e in runner.plan.exposures]) + runner._offset
        late = rec["t_start_s"] - planned
        assert np.all(late > -1e-6), late
        assert np.all(np.diff(rec["t_start_s"]) > 0)
        # each image's potential is the mean of the readings taken while it was exposed
        np.testing.assert_allclose(rec["potential_V"], -0.2, atol=5e-3)
        ec = r.electrochemistry()
        assert len(ec["t_s"]) == result.ec_points and np.all(np.diff(ec["t_s"]) > 0)
        events = r.events()
        assert all(np.isfinite(r.exposure("li-k", i)).all() for i in range(N_EXPOSURES))
    times = [e.t_s for e in events]
    assert times == sorted(times), "events must be written in the order they happened"
    assert events[-1].message == "run completed"


def test_a_read_out_fault_on_the_io_thread_stops_the_run_safely(sim_run: SimRun) -> None:
    bundle, runner, path = _setup(sim_run, camera_fails_on=3)  # the third read-out raises
    result = runner.run()
    assert_ended_safely(result, bundle, path, "failed", ("DeviceTimeoutError", "sim://camera"), "no answer")
    _assert_safe_and_no_io_thread(bundle)
    with RunFileReader(path) as r:
        assert r.n_exposures("li-k") == 2
        assert all(np.isfinite(r.exposure("li-k", i)).all() for i in range(2))
        ec = r.electrochemistry()
        t0 = r.exposure_records("li-k")["t_start_s"][0]  # plan time 0 on the rig clock
    # the run stopped at the fault (the third exposure ends at 11 s), not at the end of the
    # 60 s hold (the upper bound leaves room for read-outs slowed by a loaded machine)
    assert 10.0 < ec["t_s"][-1] - t0 < 50.0


class StopNowAfter(NullProgress):
    """Raises StopNow in the stepping thread, as the second Ctrl-C's signal handler does."""

    def __init__(self, n_readings: int) -> None:
        self.n = n_readings
        self.seen = 0

    def readings(self, t_s, voltage_V, current_A, cycle, step) -> None:  # noqa: ANN001
        self.seen += len(t_s)
        if self.seen >= self.n:
            raise StopNow("second Ctrl-C: stopped at once")


def test_stop_now_on_a_realtime_run_closes_the_file_with_what_was_written(sim_run: SimRun) -> None:
    bundle, runner, path = _setup(sim_run, progress=StopNowAfter(12))
    result = runner.run()
    assert result.status == "interrupted" and "second Ctrl-C" in result.reason
    _assert_safe_and_no_io_thread(bundle)
    with RunFileReader(path) as r:
        assert r.status == "interrupted"
        assert r.n_electrochemistry >= 11  # the readings queued before the stop were written
        n = r.n_exposures("li-k")
        assert 1 <= n < N_EXPOSURES
        assert all(np.isfinite(r.exposure("li-k", i)).all() for i in range(n))


def test_graceful_stop_on_a_realtime_run_keeps_the_running_exposure(sim_run: SimRun) -> None:
    bundle, runner, path = _setup(sim_run, stop_after=3)
    result = runner.run()
    assert_ended_safely(result, bundle, path, "stopped")
    _assert_safe_and_no_io_thread(bundle)
    with RunFileReader(path) as r:
        # the stop arrives while the stepping thread may already expose the fourth image: it is
        # finished and written, never dropped
        assert r.n_exposures("li-k") in (3, 4)
        assert r.n_exposures("li-k") == result.exposures


@pytest.mark.parametrize("virtual", [True, False])
def test_io_worker_runs_jobs_in_order_and_hands_errors_to_the_caller(virtual: bool) -> None:
    from insitem.acquisition.frame_worker import IoWorker

    io = IoWorker(threaded=not virtual)
    out: list[str] = []
    io.submit(lambda: out.append("a"))
    io.submit_readout(lambda: "frame", lambda f: out.append(f))
    io.submit(lambda: out.append("b"))
    io.drain()
    assert out == ["a", "frame", "b"]

    def boom() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.submit(boom)
        io.drain()
    if not virtual:
        with pytest.raises(OSError, match="disk full"):  # nothing more is queued after a fault
            io.submit_readout(lambda: out.append("read after the error"), lambda f: None)  # type: ignore[func-returns-value]
    assert io.close(cancel=True)
    assert "read after the error" not in out
    assert io.camera_free.is_set()


def test_first_stair_reading_lead_is_the_configured_integration_time(sim_run: SimRun) -> None:
    """Before any `measure()` has been timed, the reading that closes the first stair starts one
    integration time (NPLC / line frequency) plus the transfer allowance before the stair ends, so
    the second level is not set one reading late."""
    from insitem.acquisition.runner import FIRST_READING_TRANSFER_S

    bundle, runner, _ = _setup(sim_run)
    runner._setup()
    cfg = bundle.rig.potentiostat.config
    assert cfg is not None
    assert runner._measure_lead_s == pytest.approx(cfg.nplc / cfg.line_frequency_Hz + FIRST_READING_TRANSFER_S)
    assert runner._lead(0.01) == pytest.approx(0.005)  # never more than half a stair
    assert runner.run().status == "completed"
    _assert_safe_and_no_io_thread(bundle)


@pytest.mark.parametrize("use_sweeps", [None, True])
def test_real_time_stairs_are_pc_timed_unless_sweeps_are_asked_for(sim_run: SimRun, use_sweeps: bool | None) -> None:
    """In real time the default is PC-timed stairs (a sweep's last stair waits for the buffer
    read-back, docs/decisions/0010); `use_sweeps=True` (`insitem run --sweeps`) restores the
    instrument-timed sweeps, which a virtual clock always uses."""
    bundle, runner, _ = _setup(sim_run)
    if use_sweeps is not None:
        runner.use_sweeps = use_sweeps
    pot = bundle.rig.potentiostat
    calls = {"sweep": 0, "set": 0}
    run_sweep, set_voltage = pot.run_sweep, pot.set_voltage

    def counting_sweep(*a: Any, **k: Any) -> Any:
        calls["sweep"] += 1
        return run_sweep(*a, **k)

    def counting_set(*a: Any, **k: Any) -> Any:
        calls["set"] += 1
        return set_voltage(*a, **k)

    pot.run_sweep, pot.set_voltage = counting_sweep, counting_set  # type: ignore[method-assign]
    assert runner.run().status == "completed"
    if use_sweeps:
        assert calls["sweep"] > 0
    else:
        assert calls["sweep"] == 0 and calls["set"] > 0
    _assert_safe_and_no_io_thread(bundle)
