"""Run file: round trips, HyperSpy layout, SWMR live reading, crash survival, status, resume.

The HyperSpy checks load the file with the real reader (HyperSpy 2.5 + exspy): the run file is
meant to open as a calibrated EELSSpectrum with no conversion step (design.md §7).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from insitem.acquisition.runfile import (
    GroundTruthSpec,
    RunFile,
    RunFileConfig,
    RunFileError,
    WindowSpec,
    clear_open_flags,
    lookup3_checksum,
    open_flags,
)
from insitem.acquisition.runfile_read import RunFileReader
from insitem.drivers.interfaces import CameraSettings, Frame, InstrumentIdentity, Reading

ROWS, LOW_CH, HIGH_CH = 6, 16, 24


def make_config(**overrides) -> RunFileConfig:
    base = dict(
        title="LLTO half cell",
        windows=(
            WindowSpec(
                name="low",
                n_rows=ROWS,
                n_channels=LOW_CH,
                energy_offset_eV=40.0,
                dispersion_eV_per_channel=0.25,
                position_scale=2.5,
                position_offset=-5.0,
                position_units="nm",
            ),
            WindowSpec(name="high", n_rows=ROWS, n_channels=HIGH_CH, energy_offset_eV=440.0, dispersion_eV_per_channel=0.5),
        ),
        beam_energy_keV=200.0,
        convergence_angle_mrad=0.5,
        collection_angle_mrad=12.0,
        protocol_text="name: cv-test\nsteps:\n  - cv: {from_V: 0, to_V: 2.5}\n",
        software_version="0.1.0-test",
        instruments={
            "potentiostat": InstrumentIdentity("KEITHLEY INSTRUMENTS", "MODEL 2450", "04321", "1.7.3b", "TCPIP0::127.0.0.1::5025::SOCKET"),
            "camera": InstrumentIdentity("Gatan", "GIF CCD", resource="TCPIP0::127.0.0.1::48890::SOCKET"),
        },
        ground_truth=GroundTruthSpec(n_positions=ROWS, position_m=tuple(np.arange(ROWS) * 2.5e-9)),
    )
    base.update(overrides)
    return RunFileConfig(**base)


def frame_for(window: str, i: int) -> np.ndarray:
    """A frame whose every pixel encodes (window, exposure, row, column): mix-ups cannot pass."""
    ch = LOW_CH if window == "low" else HIGH_CH
    rows, cols = np.mgrid[0:ROWS, 0:ch]
    return (1000 * i + 100 * rows + cols + (0.5 if window == "high" else 0.0)).astype(np.float32)


@pytest.fixture(scope="module")
def hs():
    logging.getLogger("hyperspy").setLevel(logging.ERROR)  # "Numba is not installed" log noise
    import hyperspy.api as hs_api

    return hs_api


def write_run(path: Path, n: int = 4) -> None:
    with RunFile.create(path, make_config()) as rf:
        for i in range(n):
            rf.begin_step(i, f"hold {i}", 10.0 * i)
            for w in ("low", "high"):
                rf.append_exposure(
                    w,
                    frame_for(w, i),
                    t_start_s=10.0 * i + (0.0 if w == "low" else 2.0),
                    exposure_s=1.5,
                    potential_V=0.1 * i,
                    current_A=1e-9 * i,
                    cycle=1,
                    step=i,
                    dose_e_per_m2=2e20,
                    saturated_px=i,
                )
            rf.end_step(i, 10.0 * i + 9.0)


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_exposures_records_ec_events_steps_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    n = 5
    t = np.linspace(0, 100, 2500)
    v = np.sin(t)
    i_a = 1e-9 * np.cos(t)
    cfg = make_config(ec_block_rows=1000)  # 2500 points cross two block boundaries
    with RunFile.create(path, cfg) as rf:
        for k in range(n):
            rf.append_exposure("low", frame_for("low", k), t_start_s=3.0 * k, exposure_s=1.0, potential_V=v[k],
                               current_A=i_a[k], cycle=2, step=k, dose_e_per_m2=1e20, energy_offset_eV=40.0 + k,
                               saturated_px=k)
        rf.append_electrochemistry(t, v, i_a, cycle=3, step=7, compliance=t > 90)
        rf.log(1.5, "warning", "compliance near")
        rf.begin_step(0, "cv", 0.0)
        rf.end_step(0, 50.0)
        rf.write_ground_truth(12.0, {"li_fraction": np.linspace(0, 1, ROWS)}, {"total_dose_e_per_m2": 5e20})

    with RunFileReader(path) as r:
        assert r.status == "completed" and r.status_reason == ""
        assert r.windows == ["low", "high"]
        assert r.n_exposures("low") == n and r.n_exposures("high") == 0
        for k in range(n):
            np.testing.assert_array_equal(r.exposure("low", k), frame_for("low", k))
        np.testing.assert_array_equal(r.exposure_times_s("low"), 3.0 * np.arange(n))
        rec = r.exposure_records("low")
        np.testing.assert_array_equal(rec["index"], np.arange(n))
        np.testing.assert_array_equal(rec["potential_V"], v[:n])
        np.testing.assert_array_equal(rec["energy_offset_eV"], 40.0 + np.arange(n))
        np.testing.assert_array_equal(rec["saturated_px"], np.arange(n))
        np.testing.assert_allclose(rec["total_dose_e_per_m2"], 1e20 * np.arange(1, n + 1))
        assert set(rec["window"]) == {"low"}
        ec = r.electrochemistry()
        np.testing.assert_array_equal(ec["t_s"], t)
        np.testing.assert_array_equal(ec["voltage_V"], v)
        np.testing.assert_array_equal(ec["current_A"], i_a)
        np.testing.assert_array_equal(ec["compliance"], t > 90)
        assert ec["compliance"].dtype == bool and set(ec["cycle"]) == {3} and set(ec["step"]) == {7}
        (event,) = [e for e in r.events() if e.level == "WARNING"]
        assert (event.t_s, event.message) == (1.5, "compliance near")
        (step,) = r.steps()
        assert (step.index, step.name, step.t_start_s, step.t_end_s, step.status) == (0, "cv", 0.0, 50.0, "completed")
        assert r.protocol_text == make_config().protocol_text
        assert r.software_version == "0.1.0-test"
        assert r.instruments == make_config().instruments
        gt = r.ground_truth()
        assert gt is not None
        np.testing.assert_array_equal(gt["t_s"], [12.0])
        np.testing.assert_array_equal(gt["li_fraction"], [np.linspace(0, 1, ROWS)])
        assert np.isnan(gt["ti3_fraction"]).all() and gt["total_dose_e_per_m2"][0] == 5e20
        np.testing.assert_allclose(gt["position_m"], np.arange(ROWS) * 2.5e-9)


def test_uint16_counts_are_stored_exactly_as_float32(tmp_path: Path) -> None:
    raw = np.array([[0, 1, 65535, 40000] * (LOW_CH // 4)] * ROWS, dtype=np.uint16)
    with RunFile.create(tmp_path / "r.h5", make_config()) as rf:
        rf.append_exposure("low", raw, t_start_s=0.0, exposure_s=1.0)
    with RunFileReader(tmp_path / "r.h5") as r:
        got = r.exposure("low", 0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(np.uint16), raw)


def test_append_frame_and_readings_take_their_fields(tmp_path: Path) -> None:
    settings = CameraSettings(exposure_s=2.0, readout_area=(0, 0, ROWS, LOW_CH), energy_offset_eV=41.0,
                              dispersion_eV_per_px=0.25)
    frame = Frame(data=frame_for("low", 0), t_start_s=7.0, settings=settings, saturated_px=3)
    with RunFile.create(tmp_path / "r.h5", make_config()) as rf:
        rf.append_frame("low", frame, potential_V=1.2)
        rf.append_readings([Reading(1.0, 0.5, 1e-9), Reading(2.0, 0.6, 2e-9, compliance_tripped=True)], cycle=1, step=2)
    with RunFileReader(tmp_path / "r.h5") as r:
        rec = r.exposure_records()
        assert (rec["t_start_s"][0], rec["exposure_s"][0], rec["energy_offset_eV"][0]) == (7.0, 2.0, 41.0)
        assert (rec["saturated_px"][0], rec["potential_V"][0]) == (3, 1.2)
        ec = r.electrochemistry()
        np.testing.assert_array_equal(ec["voltage_V"], [0.5, 0.6])
        np.testing.assert_array_equal(ec["compliance"], [False, True])
        np.testing.assert_array_equal(ec["step"], [2, 2])


def test_window_from_camera_settings_matches_the_camera_energy_axis() -> None:
    settings = CameraSettings(exposure_s=1.0, binning=(4, 2), readout_area=(100, 0, 420, 2048),
                              energy_offset_eV=400.0, dispersion_eV_per_px=0.1)
    w = WindowSpec.from_camera_settings("high", settings, (2048, 2048), position_scale=1.2)
    energies = settings.energy_axis_eV((2048, 2048))
    assert (w.n_rows, w.n_channels) == (80, 1024)
    np.testing.assert_allclose(w.energy_offset_eV + w.dispersion_eV_per_channel * np.arange(w.n_channels), energies)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        make_config(windows=(WindowSpec(name="a", n_rows=1, n_channels=1, energy_offset_eV=0, dispersion_eV_per_channel=1),) * 2)
    path = tmp_path / "r.h5"
    with RunFile.create(path, make_config()) as rf:
        with pytest.raises(RunFileError, match="frame shape"):
            rf.append_exposure("low", np.zeros((ROWS, LOW_CH + 1)), t_start_s=0, exposure_s=1)
        with pytest.raises(RunFileError, match="unknown window"):
            rf.append_exposure("mid", np.zeros((ROWS, LOW_CH)), t_start_s=0, exposure_s=1)
        with pytest.raises(RunFileError, match="undeclared"):
            rf.write_ground_truth(0.0, {"mystery": np.zeros(ROWS)})
        assert rf.n_exposures("low") == 0
    with pytest.raises(RunFileError, match="exists"):
        RunFile.create(path, make_config())


def test_long_event_message_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    with RunFile.create(tmp_path / "r.h5", make_config(event_message_bytes=16)) as rf:
        rf.log(0.0, "INFO", "Å" * 20)  # 2 bytes per character in UTF-8
    with RunFileReader(tmp_path / "r.h5") as r:
        assert r.events()[0].message == "Å" * 8


# ---------------------------------------------------------------------------------------------
# HyperSpy


def test_hyperspy_loads_calibrated_eels_spectra_per_window(tmp_path: Path, hs) -> None:
    path = tmp_path / "run.h5"
    write_run(path, n=4)
    low, high = hs.load(path, file_format="hspy")  # /insitem (outside /Experiments) is tolerated
    assert type(low).__name__ == "EELSSpectrum" and type(high).__name__ == "EELSSpectrum"
    assert low.metadata.General.title == "low"
    assert low.data.shape == (4, ROWS, LOW_CH)
    np.testing.assert_array_equal(low.data[2], frame_for("low", 2))
    np.testing.assert_array_equal(high.data[3], frame_for("high", 3))
    energy = low.axes_manager.signal_axes[0]
    assert (energy.units, energy.offset, energy.scale, energy.size) == ("eV", 40.0, 0.25, LOW_CH)
    assert energy.is_binned and not energy.navigate
    position, time_axis = low.axes_manager.navigation_axes
    assert (position.name, position.units, position.scale, position.offset) == ("position", "nm", 2.5, -5.0)
    assert time_axis.name == "time" and time_axis.units == "s" and not time_axis.is_uniform
    np.testing.assert_array_equal(time_axis.axis, [0.0, 10.0, 20.0, 30.0])
    np.testing.assert_array_equal(high.axes_manager.navigation_axes[1].axis, [2.0, 12.0, 22.0, 32.0])
    tem = low.metadata.Acquisition_instrument.TEM
    assert (tem.beam_energy, tem.convergence_angle, tem.Detector.EELS.collection_angle) == (200.0, 0.5, 12.0)
    assert high.axes_manager.signal_axes[0].offset == 440.0


def test_hyperspy_lazy_load_reads_one_exposure_per_chunk(tmp_path: Path, hs) -> None:
    path = tmp_path / "run.h5"
    write_run(path, n=3)
    low, _ = hs.load(path, file_format="hspy", lazy=True)
    try:
        assert type(low).__name__ == "LazyEELSSpectrum"
        assert low.data.chunks[0] == (1, 1, 1)  # one exposure per chunk, as stored
        np.testing.assert_array_equal(low.inav[:, 1].data.compute(), frame_for("low", 1))
    finally:
        low.close_file()


def test_hyperspy_follows_a_live_run_while_the_writer_holds_the_file(tmp_path: Path, hs) -> None:
    path = tmp_path / "live.h5"
    rf = RunFile.create(path, make_config())
    try:
        for k in range(2):
            rf.append_exposure("low", frame_for("low", k), t_start_s=float(k), exposure_s=1.0)
        rf.append_exposure("high", frame_for("high", 0), t_start_s=0.5, exposure_s=1.0)
        low, high = hs.load(path, file_format="hspy", swmr=True)
        assert low.data.shape[0] == 2 and high.data.shape[0] == 1
        np.testing.assert_array_equal(low.axes_manager.navigation_axes[1].axis, [0.0, 1.0])
        rf.append_exposure("low", frame_for("low", 2), t_start_s=2.0, exposure_s=1.0)
        low, _ = hs.load(path, file_format="hspy", swmr=True)
        assert low.data.shape[0] == 3
        np.testing.assert_array_equal(low.data[2], frame_for("low", 2))
    finally:
        rf.close()


# ---------------------------------------------------------------------------------------------
# SWMR reader and buffering


def test_swmr_reader_sees_exposures_appended_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    rf = RunFile.create(path, make_config())
    try:
        rf.append_exposure("low", frame_for("low", 0), t_start_s=0.0, exposure_s=1.0)
        with RunFileReader(path) as r:
            assert r.status == "running"
            assert r.n_exposures("low") == 1
            for k in (1, 2):
                rf.append_exposure("low", frame_for("low", k), t_start_s=float(k), exposure_s=1.0)
            r.refresh()
            assert r.n_exposures("low") == 3
            np.testing.assert_array_equal(r.exposure("low", -1), frame_for("low", 2))
            np.testing.assert_array_equal(r.exposure_times_s("low"), [0.0, 1.0, 2.0])
            rf.close("stopped", "operator stop")
            assert (r.status, r.status_reason) == ("stopped", "operator stop")
    finally:
        rf.close()


def test_electrochemistry_is_flushed_on_the_wall_clock_interval(tmp_path: Path) -> None:
    path = tmp_path / "ec.h5"
    now = [0.0]
    rf = RunFile.create(path, make_config(ec_flush_interval_s=5.0), wall_clock=lambda: now[0])
    try:
        with RunFileReader(path) as r:
            rf.append_electrochemistry([0.0, 1.0], [0.1, 0.2], [1e-9, 2e-9])
            now[0] = 4.9
            rf.append_electrochemistry([2.0], [0.3], [3e-9])
            r.refresh()
            assert r.n_electrochemistry == 0  # held in the buffer, interval not reached
            now[0] = 5.0
            rf.append_electrochemistry([3.0], [0.4], [4e-9])
            r.refresh()
            np.testing.assert_array_equal(r.electrochemistry()["t_s"], [0.0, 1.0, 2.0, 3.0])
    finally:
        rf.close()


def test_memory_held_for_electrochemistry_is_one_block(tmp_path: Path) -> None:
    path = tmp_path / "ec.h5"
    rf = RunFile.create(path, make_config(ec_block_rows=100), wall_clock=lambda: 0.0)
    try:
        with RunFileReader(path) as r:
            rf.append_electrochemistry(np.arange(250.0), 0.0, 0.0)
            r.refresh()
            assert r.n_electrochemistry == 200  # two full blocks written, 50 points buffered
            assert rf._ec_buffer.shape == (100,)
    finally:
        rf.close()
    with RunFileReader(path) as r:
        assert r.n_electrochemistry == 250


# ---------------------------------------------------------------------------------------------
# Status on every exit path


def test_exception_inside_the_run_closes_with_failed_and_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with pytest.raises(RuntimeError):
        with RunFile.create(path, make_config()) as rf:
            rf.append_exposure("low", frame_for("low", 0), t_start_s=0.0, exposure_s=1.0)
            rf.append_electrochemistry([0.5], [0.1], [1e-9])  # still buffered when the error hits
            raise RuntimeError("camera stopped answering")
    with h5py.File(path, "r") as f:  # closed cleanly: a plain (non-SWMR) open works
        assert f.attrs["status"].decode().strip() == "failed"
    with RunFileReader(path) as r:
        assert r.status == "failed"
        assert r.status_reason == "RuntimeError: camera stopped answering"
        assert r.n_exposures("low") == 1 and r.n_electrochemistry == 1


def test_keyboard_interrupt_closes_with_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        with RunFile.create(path, make_config()):
            raise KeyboardInterrupt
    with RunFileReader(path) as r:
        assert r.status == "interrupted"


def test_closed_file_refuses_writes_and_close_twice_is_harmless(tmp_path: Path) -> None:
    rf = RunFile.create(tmp_path / "r.h5", make_config())
    rf.close("completed")
    rf.close("failed", "ignored")
    with pytest.raises(RunFileError, match="closed"):
        rf.append_electrochemistry([0.0], [0.0], [0.0])
    with RunFileReader(tmp_path / "r.h5") as r:
        assert r.status == "completed"


# ---------------------------------------------------------------------------------------------
# Crash survival and resume

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {testdir!r})
    from test_runfile import make_config, frame_for
    from insitem.acquisition.runfile import RunFile

    rf = RunFile.create(sys.argv[1], make_config())
    rf.begin_step(0, "hold", 0.0)
    k = 0
    while True:
        rf.append_exposure("low", frame_for("low", k), t_start_s=float(k), exposure_s=1.0, step=0)
        rf.append_electrochemistry([float(k)], [0.1 * k], [1e-9])
        rf.flush()
        print(k + 1, flush=True)
        k += 1
    """
)


def kill_writer_after(path: Path, n_exposures: int) -> int:
    """Run a writer in a subprocess, SIGKILL it once it reports `n_exposures` flushed; return the count."""
    script = CHILD.format(testdir=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done = 0
    try:
        for line in proc.stdout:
            done = int(line)
            if done >= n_exposures:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return done


def test_sigkill_mid_run_leaves_every_flushed_exposure_readable(tmp_path: Path, hs) -> None:
    path = tmp_path / "killed.h5"
    flushed = kill_writer_after(path, 8)
    assert open_flags(path) != 0  # the writer never closed: superblock still says "open for write"

    with RunFileReader(path) as r:  # SWMR read-only open works as is
        assert r.status == "running"
        n = r.n_exposures("low")
        assert n >= flushed
        for k in range(n):
            np.testing.assert_array_equal(r.exposure("low", k), frame_for("low", k))
        assert r.n_electrochemistry >= flushed
    # Eager load: HyperSpy's lazy loader divides by the size of the empty "high" window.
    low, high = hs.load(path, file_format="hspy", swmr=True)
    assert low.data.shape[0] >= flushed and high.data.shape[0] == 0
    np.testing.assert_array_equal(low.data[flushed - 1], frame_for("low", flushed - 1))

    assert clear_open_flags(path) is True  # what `h5clear -s` does; now any HDF5 reader opens it
    assert open_flags(path) == 0
    with h5py.File(path, "r") as f:
        assert f["Experiments/low/data"].shape[0] >= flushed


def test_resume_after_sigkill_appends_and_keeps_the_step_table(tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    flushed = kill_writer_after(path, 3)
    with RunFile.reopen_for_append(path) as rf:
        assert rf.status == "running"
        n0 = rf.n_exposures("low")
        assert n0 >= flushed
        rf.end_step(0, 100.0, "interrupted")
        rf.begin_step(1, "cv", 101.0)
        rf.append_exposure("low", frame_for("low", n0), t_start_s=102.0, exposure_s=1.0, step=1)
        rf.end_step(1, 110.0)
    with RunFileReader(path) as r:
        assert r.status == "completed"
        assert r.n_exposures("low") == n0 + 1
        for k in range(n0 + 1):
            np.testing.assert_array_equal(r.exposure("low", k), frame_for("low", k))
        assert r.exposure_times_s("low")[-1] == 102.0
        assert [(s.index, s.status) for s in r.steps()] == [(0, "interrupted"), (1, "completed")]
        assert r.last_completed_step() is None  # step 0 never completed: resume must redo it
        assert any("resumed run file (was running)" in e.message for e in r.events())


def test_resume_of_an_interrupted_run_reports_the_last_completed_step(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_run(path, n=2)  # steps 0 and 1 completed
    with pytest.raises(KeyboardInterrupt):
        with RunFile.reopen_for_append(path) as rf:
            rf.begin_step(2, "hold 2", 20.0)
            raise KeyboardInterrupt
    with RunFileReader(path) as r:
        assert r.status == "interrupted" and r.last_completed_step() == 1
    with RunFile.reopen_for_append(path) as rf:
        rf.begin_step(2, "hold 2", 30.0)  # re-entering the interrupted step rewrites its row
        rf.append_exposure("low", frame_for("low", 2), t_start_s=30.0, exposure_s=1.0)
        rf.end_step(2, 39.0)
        assert rf.total_dose_e_per_m2 == pytest.approx(4 * 2e20)  # dose so far carried over
    with RunFileReader(path) as r:
        assert r.last_completed_step() == 2 and len(r.steps()) == 3
        assert r.n_exposures("low") == 3 and r.n_exposures("high") == 2
        assert r.exposure_records("low")["total_dose_e_per_m2"][-1] == pytest.approx(4 * 2e20)


def test_reopen_trims_a_frame_written_without_its_record(tmp_path: Path, hs) -> None:
    path = tmp_path / "r.h5"
    write_run(path, n=2)
    with h5py.File(path, "r+") as f:  # a crash between frame and record: data and time ahead by one
        f["Experiments/low/data"].resize(3, axis=0)
        f["Experiments/low/axis-0/axis"].resize((3,))
        for key in ("potential", "current"):
            f[f"Experiments/low/metadata/Acquisition_instrument/Potentiostat/{key}"].resize((3,))
    with RunFileReader(path) as r:
        assert r.n_exposures("low") == 2  # the reader never counts the uncommitted frame
    RunFile.reopen_for_append(path).close("interrupted", "test")
    with h5py.File(path, "r") as f:
        assert f["Experiments/low/data"].shape[0] == 2
        assert f["Experiments/low/axis-0"].attrs["size"] == 2
    low, _ = hs.load(path, file_format="hspy")
    assert low.data.shape[0] == 2
    assert low.metadata.Acquisition_instrument.Potentiostat.potential.shape == (2,)
    assert low.metadata.Acquisition_instrument.Potentiostat.current.shape == (2,)


def test_reopen_refuses_a_file_its_writer_still_holds(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    rf = RunFile.create(path, make_config())
    try:
        rf.append_exposure("low", frame_for("low", 0), t_start_s=0.0, exposure_s=1.0)
        with pytest.raises(RunFileError, match="still open for writing by process"):
            RunFile.reopen_for_append(path)
        assert open_flags(path) != 0  # the live writer's flags were left alone
        rf.append_exposure("low", frame_for("low", 1), t_start_s=1.0, exposure_s=1.0)
    finally:
        rf.close()
    with RunFileReader(path) as r:
        assert r.n_exposures("low") == 2 and r.status == "completed"


def test_lookup3_reproduces_the_checksum_hdf5_wrote_into_the_superblock(tmp_path: Path) -> None:
    # HDF5 File Format Specification, superblock v2/v3: the last 4 bytes are the lookup3
    # checksum of the 44 before them (8-byte addresses).
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("x", data=np.arange(3))
    block = path.read_bytes()[:48]
    assert block[:8] == b"\x89HDF\r\n\x1a\n" and block[8] >= 2
    assert lookup3_checksum(block[:44]) == int.from_bytes(block[44:48], "little")
    assert lookup3_checksum(b"") == 0xDEADBEEF  # the empty key returns the initial state
    assert clear_open_flags(path) is False  # nothing to clear on a cleanly closed file


def test_status_attribute_values_fit_and_never_create_attributes_under_swmr(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    rf = RunFile.create(path, make_config())
    reason = "x" * 5000
    rf.close("failed", reason)  # longer than the fixed attribute: cut, not an HDF5 error
    with RunFileReader(path) as r:
        assert r.status == "failed" and r.status_reason == "x" * 2048


# ---------------------------------------------------------------------------------------------
# Faults: records of unwritten images, partial exposures, a full disk (decision 0017)


def test_a_record_whose_image_was_never_written_is_not_counted_and_is_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_run(path, n=2)
    with h5py.File(path, "r+") as f:  # an old writer's crash: data and record grown, image never written
        f["Experiments/high/data"].resize(3, axis=0)
        f["Experiments/high/axis-0/axis"].resize((3,))
        table = f["insitem/exposures"]
        row = table[table.shape[0] - 1]
        row["index"] = 2
        table.resize((table.shape[0] + 1,))
        table[table.shape[0] - 1] = row
    with RunFileReader(path) as r:
        assert r.n_exposures("high") == 2  # the NaN image (the fill value) is not complete
        assert len(r.exposure_records("high")["t_start_s"]) == 2
    RunFile.reopen_for_append(path, t_s=99.0).close("interrupted", "test")
    with RunFileReader(path) as r:
        assert r.n_exposures("high") == 2 and len(r.exposure_records()["window"]) == 4
        resumed = [e for e in r.events() if e.message.startswith("resumed")]
    assert resumed[0].t_s == 99.0


def test_partial_exposure_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    with RunFile.create(path, make_config()) as rf:
        rf.append_exposure("low", frame_for("low", 0), t_start_s=0.0, exposure_s=1.5)
        rf.append_exposure("low", frame_for("low", 1), t_start_s=5.0, exposure_s=0.75, partial=True, beam_on_s=1.1,
                           dose_e_per_m2=1.1e20)
    with RunFileReader(path) as r:
        rec = r.exposure_records("low")
    assert rec["partial"].tolist() == [False, True]
    assert rec["beam_on_s"].tolist() == [1.5, 1.1]
    assert rec["exposure_s"].tolist() == [1.5, 0.75]


def test_resume_ends_steps_left_running_at_the_last_recorded_time(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    rf = RunFile.create(path, make_config())
    rf.begin_step(0, "hold", 1.0)
    rf.append_electrochemistry([1.5, 2.5, 3.25], 0.1, 1e-9, step=0)
    rf.flush()
    rf._f.close()  # the writer dies: no end_step, no status
    rf._closed = True
    RunFile.reopen_for_append(path, t_s=10.0).close("interrupted", "test")
    with RunFileReader(path) as r:
        (step,) = r.steps()
    assert step.status == "interrupted" and step.t_end_s == 3.25


def test_disk_full_stops_before_writing_and_the_file_closes_properly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import insitem.acquisition.runfile as runfile_module

    path = tmp_path / "full.h5"
    room = {"bytes": 10e9}
    monkeypatch.setattr(runfile_module, "_room", lambda p: (room["bytes"], "on the test's disk"))
    rf = RunFile.create(path, make_config())
    rf.append_exposure("low", frame_for("low", 0), t_start_s=0.0, exposure_s=1.0)
    room["bytes"] = runfile_module.DISK_RESERVE_BYTES + 100  # less than a frame above the reserve
    with pytest.raises(RunFileError, match="disk full: .* left on the test's disk"):
        rf.append_exposure("low", frame_for("low", 1), t_start_s=5.0, exposure_s=1.0)
    rf.log(6.0, "ERROR", "run failed: disk full")  # small records still fit in the reserve
    rf.close("failed", "disk full")
    assert not rf.broken
    with RunFileReader(path) as r:
        assert r.status == "failed" and r.n_exposures("low") == 1
        assert r.events()[-1].message == "run failed: disk full"


def test_damaged_and_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    from insitem.acquisition.runfile import RunFileUnreadable

    path = tmp_path / "r.h5"
    write_run(path, n=1)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:512])
    text = tmp_path / "t.h5"
    text.write_text("hello")
    for bad, says in ((cut, "truncated: the file holds 512 bytes"), (text, "not an HDF5 run file (a text file"),
                      (tmp_path / "missing.h5", "no such run file")):
        with pytest.raises(RunFileUnreadable, match=re.escape(says)):
            RunFileReader(bad)


def test_the_tracking_dose_is_counted_apart_and_survives_a_resume(tmp_path: Path) -> None:
    """`tracking_dose_e_per_m2` sums the drift-tracking frames only, and a reopened (resumed) file
    starts from what it recorded, so `drift.track_max_dose` holds across a resume."""
    windows = make_config().windows + (
        WindowSpec(name="drift-tracking", n_rows=ROWS, n_channels=LOW_CH, energy_offset_eV=40.0,
                   dispersion_eV_per_channel=0.25, kind="tracking"),
    )
    path = tmp_path / "r.h5"
    with RunFile.create(path, make_config(windows=windows)) as rf:
        rf.append_exposure("low", np.ones((ROWS, LOW_CH)), t_start_s=0.0, exposure_s=1.0, dose_e_per_m2=5e20)
        rf.append_exposure("drift-tracking", np.ones((ROWS, LOW_CH)), t_start_s=2.0, exposure_s=0.05,
                           dose_e_per_m2=2e19, kind="tracking")
        assert rf.tracking_dose_e_per_m2 == pytest.approx(2e19)
        assert rf.total_dose_e_per_m2 == pytest.approx(5.2e20)
        rf.close("stopped", "operator stop")
    rf = RunFile.reopen_for_append(path)
    try:
        assert rf.tracking_dose_e_per_m2 == pytest.approx(2e19)
        rf.append_exposure("drift-tracking", np.ones((ROWS, LOW_CH)), t_start_s=3.0, exposure_s=0.05,
                           dose_e_per_m2=2e19, kind="tracking")
        assert rf.tracking_dose_e_per_m2 == pytest.approx(4e19)
    finally:
        rf.close()
