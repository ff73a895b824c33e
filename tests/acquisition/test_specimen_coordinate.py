"""Where the specimen's image sat at any moment, read from the drift record
(acquisition/drift_report.py `image_offset_m`, `correction_in_force_m`): what `insitem analyze` uses to
place each Li-K image on the specimen's own coordinate (docs/drift.md)."""

from __future__ import annotations

import numpy as np
from insitem.acquisition.drift_report import correction_in_force_m, drift_series, image_offset_m
from insitem.acquisition.runfile import DRIFT_DTYPE

NM = 1e-9


def _table(rows: list[tuple[float, float, float, str]]) -> dict[str, np.ndarray]:
    """Rows of (t_s, measured_m, image_shift_m, action)."""
    t = np.zeros(len(rows), dtype=DRIFT_DTYPE)
    for k, (t_s, measured, shift, action) in enumerate(rows):
        t[k] = (t_s, b"low-loss", k, measured, 0.0 if action == "measured" else np.nan, shift, action.encode(),
                b"science", np.nan, np.nan)  # kind, dose, stage y: a science image, no stage
    return {name: t[name] for name in t.dtype.names}


def test_measured_only_the_offset_is_the_drift_interpolated_in_time() -> None:
    table = _table([(0.0, 0.0, np.nan, "measured"), (100.0, 10 * NM, np.nan, "measured"),
                    (200.0, 20 * NM, np.nan, "measured")])
    off = image_offset_m(table, np.array([50.0, 150.0, 200.0]), reference_s=200.0)
    np.testing.assert_allclose(off, np.array([-15, -5, 0]) * NM, atol=1e-15)
    np.testing.assert_array_equal(correction_in_force_m(table, np.array([0.0, 500.0])), 0.0)


def test_a_correction_in_between_is_taken_off_from_the_time_it_was_made() -> None:
    """The image shift starts at 1 um, takes back 10 nm at t = 150 s; the specimen drifts 10 nm by
    t = 100 s and 12 nm by t = 200 s (seen as 2 nm there)."""
    s0 = 1e-6
    table = _table([(0.0, 0.0, np.nan, "measured"), (0.0, np.nan, s0, "shift-read"),
                    (100.0, 10 * NM, s0, "measured"), (150.0, 10 * NM, s0 - 10 * NM, "corrected"),
                    (200.0, 2 * NM, s0 - 10 * NM, "measured")])
    np.testing.assert_allclose(correction_in_force_m(table, np.array([100.0, 149.0, 150.0, 175.0])),
                               np.array([0, 0, 10, 10]) * NM, atol=1e-15)
    series = drift_series(table)
    assert series is not None
    np.testing.assert_allclose(series.drift_m, np.array([0, 10, 12]) * NM, atol=1e-15)
    # at 175 s: specimen drift 11.5 nm, 10 nm taken back -> 1.5 nm; at the reference (100 s) 10 nm
    off = image_offset_m(table, np.array([120.0, 175.0]), reference_s=100.0)
    np.testing.assert_allclose(off, np.array([10.4 - 10.0, 1.5 - 10.0]) * NM, atol=1e-15)


def test_no_offset_without_two_tracked_images() -> None:
    assert image_offset_m(_table([(0.0, 0.0, np.nan, "measured")]), np.array([1.0]), 0.0) is None
    assert image_offset_m(_table([]), np.array([1.0]), 0.0) is None
