"""Done-when of issue 6: the analysis recovers the simulator's ground truth on dry runs.

Position mapping (explicit): the run file's position axis is the distance along the slit from its
first edge (nm); the ground truth is sampled at the same binned row centres in sample coordinates
(y = 0 at the Pt/electrolyte interface), and the slit's first edge sits at
y = WorldParameters.slit_start_y_m (-400 nm). So y_row = position_row + slit_start_y_m.

Targets that the present simulator + analysis do not meet are strict xfails whose reason carries
the measured numbers and the cause (see the lead report); they turn into failures the moment the
cause is fixed, so they cannot be forgotten.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from insitem.acquisition.analyze_command import Analysis, analyze_file, near_pt
from insitem.acquisition.cli import main
from insitem.acquisition.runfile_read import RunFileReader
from insitem.analysis import fit_power_law
from insitem.simulators.world import WorldParameters

ROW_M = 5.70e-9  # y pixel [Y14], physics.md §0
SLIT_START_Y_M = WorldParameters.model_fields["slit_start_y_m"].default
SIM_GAP = "simulator Li-K pre-edge is not a power law (tests/simulators/test_eels.py xfail: double plasmon + Ti M2,3)"


def _dry_run(tmp: Path, protocol: str) -> Path:
    assert main(["run", protocol, "--out", str(tmp), "--no-progress", "--no-figures"]) == 0
    (run,) = tmp.glob("*.h5")
    return run


@pytest.fixture(scope="module")
def ex_situ(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Analysis, dict[str, np.ndarray], np.ndarray]:
    run = _dry_run(tmp_path_factory.mktemp("ex"), "ex-situ-lasgtp")
    a = analyze_file(run)
    with RunFileReader(run) as r:
        gt = r.ground_truth()
        pos_m = r.position_axis("li-k") * 1e-9
    assert gt is not None
    y = pos_m + SLIT_START_Y_M
    return run, a, {k: (v[-1] if v.ndim == 2 else v) for k, v in gt.items()}, y


def test_file_positions_map_onto_ground_truth_positions(ex_situ) -> None:
    _, _, gt, y = ex_situ
    np.testing.assert_allclose(y, gt["position_m"], atol=1e-12)


def test_interface_located_within_two_rows(ex_situ) -> None:
    _, a, _, _ = ex_situ
    assert a.summary.geometry.interface_m + SLIT_START_Y_M == pytest.approx(0.0, abs=2 * ROW_M)


def test_li_pre_edge_window_of_the_simulated_spectra_is_not_a_falling_power_law(ex_situ) -> None:
    """The cause of the Li-K xfails below: a power law A E^-r fitted in 44-50 eV ([Y14]/physics.md §1.6,
    r 3-5 expected) gives r < 1 on the parent rows, so its extrapolation under Li-K is wrong."""
    _, a, _, _ = ex_situ
    parent = a.low_image[a.summary.li.parent_rows].mean(axis=0, keepdims=True)
    r = float(fit_power_law(parent, a.low.energy, (44.0, 50.0), "two_area").r.ravel()[0])
    assert r < 1.0, f"r = {r:.2f}: the simulator's pre-edge now looks like a power law - the xfails below should pass"


def _li_rms(a: Analysis, gt: dict[str, np.ndarray], y: np.ndarray) -> float:
    """RMS of c/c0 (analysis) - c/c0 (truth) over the electrolyte rows 0-900 nm, relative to the truth's maximum."""
    el = (y > ROW_M) & (y < 900e-9)
    return float(np.sqrt(np.mean((a.summary.li.c_rel[el] - gt["li_fraction"][el]) ** 2)) / gt["li_fraction"][el].max())


@pytest.mark.xfail(strict=True, reason=f"measured RMS 30-45 % of max, c_max ~1.0: {SIM_GAP}")
def test_li_profile_within_5_percent_rms(ex_situ) -> None:
    _, a, gt, y = ex_situ
    assert _li_rms(a, gt, y) <= 0.05


@pytest.mark.xfail(strict=True, reason=f"measured c_max ~1.0 c0, width 0 nm: {SIM_GAP}")
def test_li_figures_agree_with_paper(ex_situ) -> None:
    _, a, gt, _ = ex_situ
    assert a.summary.c_max == pytest.approx(8.5, rel=0.1)  # [Y14], physics.md §0
    assert a.summary.electrode_width_m == pytest.approx(400e-9, abs=50e-9)


def _ti_truth_boundary_m(gt: dict[str, np.ndarray], y: np.ndarray) -> float:
    el = y > 0
    ti3 = el & (gt["ti3_fraction"] >= 0.5)
    return float(y[np.flatnonzero(ti3)[-1]]) if ti3.any() else 0.0


def test_truth_ti_boundary_is_the_papers(ex_situ) -> None:
    _, _, gt, y = ex_situ
    assert _ti_truth_boundary_m(gt, y) == pytest.approx(160e-9, abs=3 * ROW_M)  # [Y14] ~160 nm


@pytest.mark.xfail(strict=True, reason="measured: noisy per-row xcorr shift (rows inside the Ti3+ region at -0.2..-0.3 eV) "
                   "breaks the contiguous region next to Pt: boundary 0-10 nm vs truth 161 nm")
def test_ti_boundary_within_two_rows(ex_situ) -> None:
    _, a, gt, y = ex_situ
    truth = _ti_truth_boundary_m(gt, y)
    assert a.summary.ti3_boundary_m == pytest.approx(truth, abs=2 * ROW_M)


def test_ti3_shift_near_paper(ex_situ) -> None:
    _, a, _, _ = ex_situ
    assert a.summary.ti3_shift_eV == pytest.approx(-1.7, abs=0.3)  # [Y14] ~-1.7 eV


def test_oo_mean_error_in_electrode_and_range_of_truth(ex_situ) -> None:
    """O-O from peak b ((E_b - 529.0) R^2 = 2.820 eV nm^2, [Y14]): mean row error in the electrode
    (truth c/c0 > 1.05) within 0.004 nm, and the truth itself spans the paper's 0.280-0.310 nm."""
    _, a, gt, y = ex_situ
    e = (y > ROW_M) & (gt["li_fraction"] > 1.05)
    err = np.abs(a.summary.o.oo_distance_m[e] - gt["oo_distance_m"][e])
    assert np.nanmean(err) <= 0.004e-9
    assert gt["oo_distance_m"][y > 0].min() == pytest.approx(0.280e-9, abs=0.002e-9)
    assert gt["oo_distance_m"][y > 0].max() == pytest.approx(0.310e-9, abs=0.002e-9)


@pytest.mark.xfail(strict=True, reason="measured: per-row O-O error up to 0.016 nm in the electrode (mean 0.003 nm); "
                   "peak b located per single 5.7 nm row at ~300 counts/channel is noise-limited")
def test_oo_within_0_003_nm_per_row(ex_situ) -> None:
    _, a, gt, y = ex_situ
    e = (y > ROW_M) & (gt["li_fraction"] > 1.05)
    assert np.nanmax(np.abs(a.summary.o.oo_distance_m[e] - gt["oo_distance_m"][e])) <= 0.003e-9


@pytest.fixture(scope="module")
def in_situ(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, dict[str, np.ndarray], np.ndarray]:
    run = _dry_run(tmp_path_factory.mktemp("in"), "in-situ-lasgtp")
    a = analyze_file(run)
    with RunFileReader(run) as r:
        gt = r.ground_truth()
        y = r.position_axis("li-k") * 1e-9 + SLIT_START_Y_M
    assert gt is not None
    return a, gt, y


def _charge_discharge(series_t: np.ndarray, values: np.ndarray, v_of_t: np.ndarray) -> tuple[float, float]:
    """(change over the rising sweep, change over the falling sweep) of `values`."""
    k_top = int(np.nanargmax(v_of_t))
    return float(values[k_top] - values[0]), float(values[-1] - values[k_top])


@pytest.mark.slow
def test_in_situ_truth_li_near_pt_grows_on_charge_and_falls_on_discharge(in_situ) -> None:
    _, gt, y = in_situ
    near = np.array([near_pt(y, c) for c in gt["li_fraction"]])
    up, down = _charge_discharge(gt["t_s"], near, gt["cell_voltage_V"])
    assert up > 0.2 and down < -0.2  # measured +0.46, -0.55 c0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=f"measured: analysed Li near Pt flat at ~0.31 +- 0.01 c0 over the cycle: {SIM_GAP}")
def test_in_situ_analysed_li_near_pt_grows_on_charge_and_falls_on_discharge(in_situ) -> None:
    a, _, _ = in_situ
    s = a.series
    v = np.array([np.nan_to_num(p.potential_V, nan=-1.0) for p in s])
    near = np.array([p.near_pt for p in s])
    up, down = _charge_discharge(np.array([p.t_s for p in s]), near, v)
    assert up > 0.2 and down < -0.2
