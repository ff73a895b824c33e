"""`drift.track_max_dose` at run time: the plan checks the cap at the protocol's dose rate; when the
microscope delivers more (here the beam current doubles after the setup), the runner leaves out
the frame that would pass the cap and every one after it, says so once, and the science images go
on. The dose is read from the simulated world, not from the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import NullProgress
from insitem.protocols.loader import loads, resolve
from insitem.protocols.plan import make_plan

E_PER_A2 = 1e20


def _protocol(cap_e_per_a2: float | None) -> str:
    p = yaml.safe_load(resolve("in-situ-lasgtp").read_text(encoding="utf-8"))
    p["name"] = "tracking-cap"
    p["sample"]["drift_rate"] = "3 nm/min"
    (low,) = [w for w in p["spectrometer"]["windows"] if w["name"] == "low-loss"]
    low["exposure"], low["frames"] = "0.05 s", 1
    p["spectrometer"]["windows"] = [low]
    p["drift"].pop("track_groups", None)
    p["drift"].update({"mode": "measure", "window": "low-loss", "track_every": "2 min", "track_exposure": "0.05 s"})
    if cap_e_per_a2 is not None:
        p["drift"]["track_max_dose"] = f"{cap_e_per_a2:.6g} e/Å^2"
    p["steps"] = [{"rest": {"duration": "20 min", "exposures": [{"windows": ["low-loss"], "every": "10 min"}]}}]
    return yaml.safe_dump(p, allow_unicode=True)


class _DoubleTheBeam(NullProgress):
    """At the first step, after the setup checked the dose rate: the beam current doubles."""

    def __init__(self) -> None:
        self.bundle: Any = None

    def step_started(self, step, t_s) -> None:  # noqa: ANN001
        beam = self.bundle.rig.microscope.beam
        beam.set_current(2.0 * beam.current_A)


def test_a_tracking_frame_past_the_cap_is_left_out(sim_run: Callable[..., Any]) -> None:
    plan = make_plan(loads(_protocol(None)))
    n_frames = len(plan.tracking)
    frame_dose = 0.05 * plan.protocol.beam.dose_rate_e_per_m2_s
    assert n_frames == 10
    cap = 10.5 * frame_dose  # the plan's ten frames fit; at twice the dose rate five do
    progress = _DoubleTheBeam()
    bundle, runner, path = sim_run(_protocol(cap / E_PER_A2), progress=progress)
    progress.bundle = bundle
    result = runner.run()
    assert result.status == "completed", result.reason
    with RunFileReader(path) as r:
        assert r.n_exposures("drift-tracking") == 5
        assert r.n_exposures("low-loss") == len(plan.images) - n_frames  # every science image
        warnings = [e.message for e in r.events() if "track_max_dose" in e.message]
        rec = r.exposure_records(r.tracking_window)
    assert len(warnings) == 1 and "no more tracking frames" in warnings[0]
    assert runner._tracking_skipped == 5
    # the world's own dose: the science images and the five frames, all at the doubled rate
    science_s = sum(e.exposure_s for e in plan.exposures if not e.tracking)
    expected = 2 * plan.protocol.beam.dose_rate_e_per_m2_s * (science_s + 5 * 0.05)
    assert bundle.world.optics.total_dose_e_per_m2() == pytest.approx(expected, rel=1e-6)
    tracking_dose = float(rec["dose_e_per_m2"].sum())
    assert tracking_dose == pytest.approx(10 * frame_dose, rel=1e-6) and tracking_dose <= cap
