"""The drift record read back (acquisition/drift_report.py): residual, correction and specimen drift
per tracked image from the rows the correction loop writes, the summary `insitem analyze` reports
and the figure `insitem show` draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from insitem.acquisition.drift_report import drift_figure, drift_line, drift_series
from insitem.acquisition.runfile import DRIFT_DTYPE

NM = 1e-9


def _table(rows: list[tuple[float, int, float, float, float, str]]) -> dict[str, np.ndarray]:
    t = np.zeros(len(rows), dtype=DRIFT_DTYPE)
    for k, (t_s, index, measured, sigma, shift, action, *stage) in enumerate(rows):
        t[k] = (t_s, b"low-loss", index, measured, sigma, shift, action.encode(), b"science", np.nan,
                stage[0] if stage else np.nan)
    return {name: t[name] for name in t.dtype.names}


def _loop_rows(drift_nm: list[float], start_shift_nm: float = 40.0) -> list[tuple]:
    """The rows a correcting loop writes when the specimen drifts to `drift_nm` at each image (300 s
    apart) and every correction takes the whole measured displacement back just before the next
    image (the image shift starts at `start_shift_nm`)."""
    rows: list[tuple] = []
    shift = start_shift_nm * NM
    start = shift
    for k, d in enumerate(drift_nm):
        t = 300.0 * k
        seen = d * NM + (shift - start)  # the image over the slit: drift plus the shift moved since
        rows.append((t, k, seen, 0.0 if k == 0 else 1.0 * NM, shift if k else np.nan, "measured"))
        if k == 0:
            rows.append((t + 299.0, k, np.nan, np.nan, shift, "shift-read"))
            continue
        shift -= seen
        rows.append((t + 299.0, k, seen, 1.0 * NM, shift, "corrected"))
    return rows


def test_series_splits_the_measured_displacement_into_drift_correction_and_residual() -> None:
    drift = [0.0, 10.0, 21.0, 29.0, 42.0]
    s = drift_series(_table(_loop_rows(drift)))
    assert s is not None and s.window == "low-loss"
    np.testing.assert_allclose(s.t_s, 300.0 * np.arange(5))
    # every image shows the drift since the previous correction: 10, 11, 8, 13 nm
    np.testing.assert_allclose(s.residual_m / NM, [0.0, 10.0, 11.0, 8.0, 13.0], atol=1e-9)
    np.testing.assert_allclose(s.correction_m / NM, [0.0, 0.0, 10.0, 21.0, 29.0], atol=1e-9)
    np.testing.assert_allclose(s.drift_m / NM, drift, atol=1e-9)  # the start shift (40 nm) is not a correction
    summary = s.summary()
    assert summary["specimen_drift_m"] == pytest.approx(42e-9)
    assert summary["correction_m"] == pytest.approx(29e-9)
    assert summary["residual_rms_m"] == pytest.approx(np.sqrt(np.mean(np.square([10, 11, 8, 13]))) * NM)
    assert summary["residual_max_m"] == pytest.approx(13e-9)
    assert summary["actions"]["corrected"] == 4
    assert "residual rms 10.7 nm (max 13.0 nm)" in (drift_line({"drift": summary}) or "")


def test_measure_only_reports_the_drift_as_the_residual() -> None:
    rows = [(300.0 * k, k, 4.0 * k * NM, 1.0 * NM, np.nan, "measured") for k in range(4)]
    s = drift_series(_table(rows))
    assert s is not None
    np.testing.assert_allclose(s.residual_m, s.drift_m)
    assert np.all(s.correction_m == 0.0)
    assert s.summary()["specimen_drift_m"] == pytest.approx(12e-9)


def test_no_record_no_series_and_no_figure(tmp_path: Path) -> None:
    empty = _table([])
    assert drift_series(empty) is None
    assert drift_figure(empty, {"t_s": np.zeros(0), "voltage_V": np.zeros(0)}, "t", tmp_path / "d.png") == []
    assert not (tmp_path / "d.png").exists()


def test_figure_is_drawn_beside_the_potential(tmp_path: Path) -> None:
    ec = {"t_s": np.linspace(0, 1500, 50), "voltage_V": np.linspace(1.0, 2.0, 50)}
    rows = _loop_rows([0.0, 10.0, 21.0, 29.0, 42.0])
    rows.append((1300.0, 4, 13 * NM, 1 * NM, np.nan, "refused"))
    (path,) = drift_figure(_table(rows), ec, "run", tmp_path / "drift-time.png")
    assert path.stat().st_size > 10_000


def test_stage_moves_count_in_the_correction_and_tracking_frames_in_the_summary() -> None:
    """Image shift 0 -> -12 nm, then a stage move of -20 nm with the shift back at 0; the tracked
    images are tracking frames of 1e18 e/m2 each."""
    t = np.zeros(7, dtype=DRIFT_DTYPE)
    rows = [(0.0, 0, 0.0, 0.0, np.nan, "measured", 3e-6), (299.0, 0, np.nan, np.nan, 0.0, "shift-read", np.nan),
            (300.0, 1, 12e-9, 1e-9, 0.0, "measured", np.nan), (301.0, 1, 12e-9, 1e-9, -12e-9, "corrected", np.nan),
            (600.0, 2, 8e-9, 1e-9, -12e-9, "measured", np.nan), (601.0, 2, np.nan, np.nan, -12e-9, "stage-read", 3e-6),
            (601.0, 2, 8e-9, 1e-9, 0.0, "stage", 3e-6 - 20e-9)]
    for k, (t_s, index, measured, sigma, shift, action, stage) in enumerate(rows):
        dose = 1e18 if action == "measured" else np.nan
        t[k] = (t_s, b"drift-tracking", index, measured, sigma, shift, action.encode(), b"tracking", dose, stage)
    table = {name: t[name] for name in t.dtype.names}
    table_plus = {name: np.append(v, v[-1:]) for name, v in table.items()}  # one more image after the stage move
    table_plus["t_s"][-1], table_plus["action"][-1], table_plus["measured_m"][-1] = 900.0, b"measured", 1e-9
    table_plus["dose_e_per_m2"][-1] = 1e18
    s = drift_series(table_plus)
    assert s is not None
    np.testing.assert_allclose(s.correction_m / NM, [0.0, 0.0, 12.0, 20.0], atol=1e-9)  # 12 by shift, then 20 by stage
    np.testing.assert_allclose(s.drift_m / NM, [0.0, 12.0, 20.0, 21.0], atol=1e-9)
    summary = s.summary()
    assert summary["actions"]["stage"] == 1 and summary["stage_m"] == pytest.approx(-20e-9)
    assert summary["tracking_frames"] == 4 and summary["tracking_dose_e_per_A2"] == pytest.approx(4e18 / 1e20)
    line = drift_line({"drift": summary}) or ""
    assert "stage moved -20.0 nm in 1 moves" in line and "4 tracking frames" in line
