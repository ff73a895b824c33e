"""Done-when of issue 17: in-situ-lasgtp dry runs with the specimen drifting ~1 nm/min along the slit
(`sample.drift_rate: 1 nm/min`: settling drift, creep, random walk, jumps; simulators/drift.py).

Three runs of the shipped protocol, the same seed: without drift, with drift measured only, and with
drift corrected in closed loop (acquisition/drift_control.py), each analysed as `insitem analyze`
does. The analysed "Li near Pt" series (mean c/c0 over the first 50 nm of electrolyte, one value per
Li-K image) is compared with the simulator's truth at the same instants.

One change to the shipped protocol keeps the three runs within the slow-test budget: the low-loss
image is one 50 ms frame instead of 30 summed ones (the frames are synthesised one by one; 30 of
them are most of a dry run's time). Both the drift tracking and the Li-K deconvolution use it.

Measured numbers: docs/drift.md and the tests' docstrings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import insitem.api as api
from insitem.acquisition.analyze_run import analyze_file, near_pt
from insitem.acquisition.drift_report import drift_line, drift_series, drift_summary
from insitem.protocols.loader import resolve

PIXEL_M = 5.70e-9  # the protocol's position pixel along the slit (6 binned CCD rows)
NM = 1e-9

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class DriftRun:
    path: Path
    t_s: np.ndarray  # mid-times of the Li-K images
    analysed: np.ndarray  # Li near Pt, c/c0, from the analysis (each image on the specimen's coordinate)
    analysed_fixed: np.ndarray  # the same with every image at the last Ti-L/O-K image's interface
    truth: np.ndarray  # the simulator's Li near Pt at the same instants
    image_displacement_m: np.ndarray  # truth: the specimen's image over the slit at each Li-K image
    specimen_drift_m: np.ndarray  # truth: the specimen's own drift at each Li-K image
    gt: dict[str, np.ndarray]
    drift: dict[str, np.ndarray]

    @property
    def rms_error(self) -> float:
        return float(np.sqrt(np.mean((self.analysed - self.truth) ** 2)))

    @property
    def rms_error_fixed(self) -> float:
        return float(np.sqrt(np.mean((self.analysed_fixed - self.truth) ** 2)))


def _protocol(drift_rate_nm_per_min: float, mode: str) -> dict:
    p = yaml.safe_load(resolve("in-situ-lasgtp").read_text(encoding="utf-8"))
    p["sample"]["drift_rate"] = f"{drift_rate_nm_per_min:g} nm/min"
    p["drift"]["mode"] = mode  # the shipped section otherwise (window low-loss, dead band 2 nm)
    (low,) = [w for w in p["spectrometer"]["windows"] if w["name"] == "low-loss"]
    low["exposure"], low["frames"] = "0.05 s", 1
    return p


def _run(tmp: Path, drift_rate: float, mode: str) -> DriftRun:
    outcome = api.dry_run(_protocol(drift_rate, mode), tmp / f"{mode}-{drift_rate:g}.h5")
    assert outcome.status == "completed", outcome.reason
    a = analyze_file(outcome.path)
    fixed = analyze_file(outcome.path, specimen_coordinate=False)
    with api.open_run(outcome.path) as r:
        gt = r.ground_truth()
        drift = r.drift()
    assert gt is not None
    y = gt["position_m"][-1] if gt["position_m"].ndim == 2 else gt["position_m"]
    t = np.array([s.t_s for s in a.series])
    # the ground-truth row written after each image: the Li-K image's own (its mid-time is within it)
    j = np.minimum(np.searchsorted(gt["t_s"], t), gt["t_s"].size - 1)
    # where the image sat: at the image's mid-time, between the rows written after the low-loss image
    # and after the Li-K image (no correction comes between the two)
    def at_mid(name: str) -> np.ndarray:
        return np.interp(t, gt["t_s"], gt[name])

    return DriftRun(
        path=outcome.path,
        t_s=t,
        analysed=np.array([s.near_pt for s in a.series]),
        analysed_fixed=np.array([s.near_pt for s in fixed.series]),
        truth=np.array([near_pt(y, gt["li_fraction"][k]) for k in j]),
        image_displacement_m=at_mid("image_displacement_y_m"),
        specimen_drift_m=at_mid("specimen_drift_y_m"),
        gt=gt,
        drift=drift,
    )


# one run per fixture, and the tests in an order where each starts at most one new run: each test
# (with its fixtures' set-up) stays within the 300 s per-test timeout on a loaded machine
@pytest.fixture(scope="module")
def tmp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drift-in-situ")


@pytest.fixture(scope="module")
def uncorrected(tmp_runs: Path) -> DriftRun:
    return _run(tmp_runs, 1.0, "measure")


@pytest.fixture(scope="module")
def corrected(tmp_runs: Path) -> DriftRun:
    return _run(tmp_runs, 1.0, "correct")


@pytest.fixture(scope="module")
def still(tmp_runs: Path) -> DriftRun:
    return _run(tmp_runs, 0.0, "measure")


@pytest.fixture(scope="module")
def runs(still: DriftRun, uncorrected: DriftRun, corrected: DriftRun) -> dict[str, DriftRun]:
    out = {"still": still, "uncorrected": uncorrected, "corrected": corrected}
    for name, run in out.items():  # the numbers of docs/drift.md (pytest -s)
        walk = run.image_displacement_m - run.image_displacement_m[0]
        interface = analyze_file(run.path).summary.geometry.interface_m
        print(f"{name}: Li near Pt rms {run.rms_error:.3f} (max {np.max(np.abs(run.analysed - run.truth)):.2f}) c/c0 "
              f"on the specimen's coordinate, {run.rms_error_fixed:.3f} at a fixed interface; "
              f"image over the slit at the Li-K images within {np.max(np.abs(walk)) / NM:.2f} nm of the first; "
              f"specimen drift {(run.specimen_drift_m[-1] - run.specimen_drift_m[0]) / NM:.1f} nm; interface {interface / NM:.1f} nm; "
              f"{drift_line(drift_summary(run.path))}")
    return out


def test_drift_measured_from_the_spectra_agrees_with_the_world(uncorrected: DriftRun) -> None:
    """Every tracked low-loss image's displacement against where the world had its image, within
    3 sigma + 0.6 pixel (docs/drift.md: the registration's interpolation bias)."""
    run = uncorrected
    s = drift_series(run.drift)
    # the first low-loss image (the reference) and a tracking frame before each group (the shipped
    # `drift.track_groups`): at least one position per Li-K image
    assert s is not None and s.t_s.size >= run.t_s.size
    gt = run.gt
    j = np.minimum(np.searchsorted(gt["t_s"], s.t_s), gt["t_s"].size - 1)
    truth = gt["image_displacement_y_m"][j] - gt["image_displacement_y_m"][j[0]]
    err = s.residual_m - truth
    assert np.all(np.abs(err[1:]) <= 3 * s.sigma_m[1:] + 0.6 * PIXEL_M), err / NM
    assert np.all(s.sigma_m[1:] < 0.3 * PIXEL_M)


def test_correction_holds_the_interface_within_a_pixel(corrected: DriftRun) -> None:
    """Where the specimen's image sat over the slit (the world's truth) at every Li-K image."""
    run = corrected
    residual = run.image_displacement_m - run.image_displacement_m[0]
    assert np.all(np.abs(residual) <= PIXEL_M), residual / NM
    actions = [a.decode() if isinstance(a, bytes) else str(a) for a in run.drift["action"]]
    assert actions.count("corrected") >= 5 and "refused" not in actions and "limited" not in actions


def test_uncorrected_drift_corrupts_the_li_near_pt_series_read_at_a_fixed_interface(still: DriftRun, uncorrected: DriftRun) -> None:
    assert uncorrected.rms_error_fixed > 0.5  # c/c0: against ~7.5-8.4 c0 near Pt
    assert uncorrected.rms_error_fixed > 4 * still.rms_error


def test_measured_drift_places_each_image_on_the_specimen_coordinate(runs: dict[str, DriftRun]) -> None:
    """Drift measured only (no correction): `insitem analyze` moves each Li-K image's interface by the
    displacement the drift table records (acquisition/drift_report.py image_offset_m): each image's
    interface within 1 nm of where the world had it, and the series at 0.176 c/c0 rms against 0.172
    without drift and 2.50 read at a fixed interface (the corrected run: 0.168; docs/drift.md). What
    is left after the placement: each image's Li-K noise (the still run's 0.19) and the sub-pixel
    phases at which 150 nm of drift samples the profile against the 50 nm band's edge."""
    still, measured = runs["still"], runs["uncorrected"]
    assert measured.rms_error <= 2.0 * still.rms_error, (measured.rms_error, still.rms_error)
    assert measured.rms_error <= 0.25 * measured.rms_error_fixed, (measured.rms_error, measured.rms_error_fixed)
    # the interface moves with the specimen: by the drift between the last Ti-L/O-K image and each Li-K image
    a = analyze_file(measured.path)
    placed = np.array([s.interface_m for s in a.series])
    truth = measured.image_displacement_m - np.interp(_last_core_mid_s(measured.path), measured.gt["t_s"],
                                                      measured.gt["image_displacement_y_m"])
    assert np.all(np.abs(placed - a.summary.geometry.interface_m - truth) <= PIXEL_M), (placed - a.summary.geometry.interface_m - truth) / NM


def _last_core_mid_s(path: Path) -> float:
    with api.open_run(path) as r:
        rec = r.exposure_records("ti-l-o-k")
    return float(rec["t_start_s"][-1] + 0.5 * rec["exposure_s"][-1])


def test_the_specimen_drifts_many_pixels_over_the_run(runs: dict[str, DriftRun]) -> None:
    for name in ("uncorrected", "corrected"):
        d = runs[name].specimen_drift_m
        assert abs(d[-1] - d[0]) > 10 * PIXEL_M, name  # ~1 nm/min over 100 min
    assert np.all(runs["still"].specimen_drift_m == 0.0)
    # the truth does not depend on drift: the specimen's own Li is the same in all three runs
    np.testing.assert_allclose(runs["uncorrected"].truth, runs["still"].truth, atol=0.05)
    np.testing.assert_allclose(runs["corrected"].truth, runs["still"].truth, atol=0.05)


def test_corrected_series_matches_the_truth_as_well_as_without_drift(runs: dict[str, DriftRun]) -> None:
    """Measured (c/c0 rms against the truth, on the specimen's coordinate): still 0.19, corrected 0.24,
    uncorrected at a fixed interface 2.48; before the specimen coordinate: still 0.17, corrected 0.26-0.29. The
    corrected run's extra error is of the order of the analysis' own interface placement (the
    geometry from the last Ti-L/O-K image: 396.7 nm in the still run, 403-404 nm corrected, true
    400 nm; the band "within 50 nm of Pt" is 9 rows), not drift left in the images (below 1 pixel)."""
    still, drifted, corrected = runs["still"], runs["uncorrected"], runs["corrected"]
    assert corrected.rms_error <= 2.0 * still.rms_error, (corrected.rms_error, still.rms_error)
    assert corrected.rms_error <= 0.25 * drifted.rms_error_fixed, (corrected.rms_error, drifted.rms_error_fixed)


def test_analyze_reports_and_show_draws_the_residual(corrected: DriftRun, tmp_path: Path) -> None:
    run = corrected
    summary = api.analyze(run.path)
    d = summary["drift"]
    # the first low-loss image and a tracking frame before each group (the shipped drift.track_groups)
    assert d["tracked_images"] == run.t_s.size + 1 and d["tracking_frames"] == run.t_s.size
    assert d["actions"]["corrected"] >= 5
    assert abs(d["specimen_drift_m"]) > 10 * PIXEL_M
    assert d["residual_max_m"] < 2 * PIXEL_M and d["residual_rms_m"] < PIXEL_M
    # `insitem show` (the installed command): drift-time.png beside the other figures
    exe = Path(sys.executable).with_name("insitem")
    done = subprocess.run([str(exe), "show", str(run.path), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "drift-time.png").stat().st_size > 10_000
