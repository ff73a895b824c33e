"""Drift-tracking exposures of their own in a dry run (protocol `drift.track_every`, docs/drift.md):
the specimen drifts 3 nm/min along the slit (9 nm/min while it settles after the start) for 20 min
at open circuit; a 50 ms low-loss tracking
frame every 2 min measures it and the loop takes it back by image shift before the next group.

Checked after the run, from the run file and the simulated world's own record: every tracking
frame's estimate (against the first low-loss image, the reference) agrees with where the world put
the specimen's image (within 3 sigma of the
difference of two frames plus the registration's interpolation bias), the drift table says which frame each estimate came from and
its dose, the frames are marked `tracking` in the exposure record and kept out of the science
windows, and the dose the run file and the world record equals the plan's, tracking included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import insitem.api as api
from insitem.protocols.loader import loads, resolve
from insitem.protocols.plan import make_plan

NM = 1e-9
PIXEL_M = 5.70e-9
#: the registration's bias from linear interpolation between rows: 0.7 nm at most on noise-free
#: low-loss images (docs/drift.md, tests/analysis/test_drift_tracking.py)
INTERPOLATION_BIAS_M = 0.7e-9


def _protocol() -> dict:
    p = yaml.safe_load(resolve("in-situ-lasgtp").read_text(encoding="utf-8"))
    p["name"] = "drift-tracking-rest"
    p["sample"]["drift_rate"] = "3 nm/min"
    p["sample"]["seed"] = 11
    (low,) = [w for w in p["spectrometer"]["windows"] if w["name"] == "low-loss"]
    low["exposure"], low["frames"] = "0.05 s", 1
    p["spectrometer"]["windows"] = [low]
    p["drift"].pop("track_groups", None)  # tracking on the clock here, not before each group
    p["drift"].update({"mode": "correct", "window": "low-loss", "track_every": "2 min", "track_exposure": "0.05 s"})
    p["steps"] = [{"rest": {"duration": "20 min", "exposures": [{"windows": ["low-loss"], "every": "10 min"}]}}]
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    protocol = _protocol()
    plan = make_plan(loads(yaml.safe_dump(protocol, allow_unicode=True)))
    outcome = api.dry_run(protocol, tmp_path_factory.mktemp("tracking") / "run.h5")
    assert outcome.status == "completed", outcome.reason
    with api.open_run(outcome.path) as r:
        out = {"plan": plan, "gt": r.ground_truth(), "drift": r.drift(), "records": r.exposure_records(),
               "windows": r.windows, "tracking_window": r.tracking_window,
               "n_tracking": r.n_exposures("drift-tracking"), "n_low": r.n_exposures("low-loss")}
    return out


def test_tracking_frames_measure_the_drift_against_the_worlds_truth(run: dict) -> None:
    d, gt = run["drift"], run["gt"]
    measured = d["action"] == "measured"
    # the reference is the first low-loss image (at 0 s, before the first frame), then one estimate
    # per tracking frame, in order
    assert list(d["kind"][measured]) == ["science"] + ["tracking"] * len(run["plan"].tracking)
    assert list(d["window"][measured]) == ["low-loss"] + ["drift-tracking"] * len(run["plan"].tracking)
    assert list(d["index"][measured]) == [0, *range(len(run["plan"].tracking))]
    t_mid = d["t_s"][measured] + 0.025
    # the truth row the world wrote right after each frame (a correction only comes before the next exposure)
    j = np.searchsorted(gt["t_s"], t_mid)
    truth = gt["image_displacement_y_m"][j] - gt["image_displacement_y_m"][j[0]]
    est, sigma = d["measured_m"][measured], d["sigma_m"][measured]
    err = est - truth
    print("tracking error (nm):", np.round(err / NM, 2).tolist(), "sigma (nm):", np.round(sigma / NM, 2).tolist())  # docs/drift.md
    # an estimate is the difference between a frame and the first (reference) frame: the recorded
    # sigma is the registration's, from the new frame's noise; the reference, exposed alike, carries
    # a typical frame's noise again (the median sigma)
    sigma_diff = np.sqrt(sigma[1:] ** 2 + np.median(sigma[1:]) ** 2)
    assert np.all(np.abs(err[1:]) <= 3 * sigma_diff + INTERPOLATION_BIAS_M), (err / NM, sigma / NM)
    assert np.all((sigma[1:] > 0.05 * NM) & (sigma[1:] < PIXEL_M))  # an uncertainty that says something
    # the specimen drifted far more than that, and the loop took it back (the image stayed near its start)
    drift = gt["specimen_drift_y_m"][j] - gt["specimen_drift_y_m"][j[0]]
    print("specimen drift (nm):", np.round(drift / NM, 1).tolist(), "image (nm):", np.round(truth / NM, 1).tolist(),
          "rms error (nm): %.2f" % float(np.sqrt(np.mean(err[1:] ** 2)) / NM))
    assert abs(drift[-1]) > 40 * NM
    assert np.max(np.abs(truth[3:])) < PIXEL_M  # from the first correction on (before it, at 2 min: 17 nm)
    assert np.count_nonzero(d["action"] == "corrected") >= 5


def test_the_dose_recorded_equals_the_plans_including_tracking(run: dict) -> None:
    plan, rec, gt = run["plan"], run["records"], run["gt"]
    assert plan.tracking_dose_e_per_m2 > 0
    assert float(np.sum(rec["dose_e_per_m2"])) == pytest.approx(plan.dose_e_per_m2, rel=1e-9)
    assert float(gt["total_dose_e_per_m2"][-1]) == pytest.approx(plan.dose_e_per_m2, rel=1e-6)  # the world's own count
    tracking = rec["kind"] == "tracking"
    assert np.count_nonzero(tracking) == run["n_tracking"] == len(plan.tracking)
    assert set(rec["window"][tracking]) == {"drift-tracking"} and set(rec["window"][~tracking]) == {"low-loss"}
    assert float(np.sum(rec["dose_e_per_m2"][tracking])) == pytest.approx(plan.tracking_dose_e_per_m2, rel=1e-9)
    # the drift table's dose of each estimate is its frame's
    d = run["drift"]
    measured = d["action"] == "measured"
    frames = measured & (d["kind"] == "tracking")
    np.testing.assert_allclose(d["dose_e_per_m2"][frames], rec["dose_e_per_m2"][tracking], rtol=1e-12)
    (ref,) = np.flatnonzero(measured & (d["kind"] == "science"))
    assert d["dose_e_per_m2"][ref] == pytest.approx(rec["dose_e_per_m2"][~tracking][0], rel=1e-12)
    assert np.all(np.isnan(d["dose_e_per_m2"][~measured]))


def test_the_tracking_frames_stay_out_of_the_science_windows(run: dict) -> None:
    assert run["windows"] == ["low-loss"] and run["tracking_window"] == "drift-tracking"
    assert run["n_low"] == 2  # at 0 and 10 min
