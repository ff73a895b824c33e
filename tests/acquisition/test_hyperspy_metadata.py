"""What HyperSpy shows of a dry run's signals: the acquisition's date and time, the exposure time
and the potential and current at each exposure, in HyperSpy's metadata conventions
(docs/data-formats.md); a run file named .hspy loads without naming the reader."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np

import insitem.api as ins


def test_hyperspy_shows_date_exposure_potential_and_current_of_a_dry_run(tmp_path: Path) -> None:
    logging.getLogger("hyperspy").setLevel(logging.ERROR)  # "Numba is not installed" log noise
    import hyperspy.api as hs

    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    outcome = ins.dry_run("loopback-hold", tmp_path / "hold.hspy")  # HyperSpy's own extension
    after = dt.datetime.now(dt.timezone.utc)
    assert outcome.status == "completed" and outcome.exposures == 3

    s = hs.load(outcome.path)  # the .hspy name picks the reader: no file_format needed
    general = s.metadata.General
    started = dt.datetime.fromisoformat(f"{general.date}T{general.time}").replace(tzinfo=dt.timezone.utc)
    assert general.time_zone == "UTC" and before <= started <= after

    eels = s.metadata.Acquisition_instrument.TEM.Detector.EELS
    assert eels.exposure == eels.dwell_time == 1.0  # the protocol's `exposure: 1 s`, one frame
    assert eels.frame_number == 1

    with ins.open_run(outcome.path) as run:
        records = run.exposure_records("li-k")
    potentiostat = s.metadata.Acquisition_instrument.Potentiostat
    assert potentiostat.potential.shape == potentiostat.current.shape == (3,)  # one per time index
    np.testing.assert_array_equal(potentiostat.potential, records["potential_V"])
    np.testing.assert_array_equal(potentiostat.current, records["current_A"])
    # the hold's -0.2 V as the SourceMeter applied it, and the cell current the simulated
    # potentiostat read (finite, within the protocol's 1 uA compliance)
    np.testing.assert_allclose(potentiostat.potential, -0.2, atol=1e-3)
    assert np.all(np.isfinite(potentiostat.current)) and np.all(np.abs(potentiostat.current) < 1e-6)
