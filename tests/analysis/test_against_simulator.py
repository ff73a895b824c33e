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

import logging
from pathlib import Path

import numpy as np
import pytest

from insitem.acquisition.analyze_run import Analysis, analyze_file, near_pt
from insitem.cli.main import main
from insitem.acquisition.runfile_read import RunFileReader
from insitem.analysis import EnergyAxis, edge_intensity, fit_power_law
from insitem.analysis.lithium import LiParams
from insitem.analysis.summary import SummaryParams
from insitem.simulators.world import WorldParameters

ROW_M = 5.70e-9  # y pixel [Y14], physics.md §0
SLIT_START_Y_M = WorldParameters.model_fields["slit_start_y_m"].default


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


def test_li_pre_edge_window_of_the_recorded_spectra_is_not_a_falling_power_law(ex_situ) -> None:
    """Why the Li-K analysis deconvolves first: a power law A E^-r fitted in 44-50 eV of the recorded
    spectrum ([Y14]/physics.md §1.6, r 3-5 expected) gives r < 1 on the parent rows (double plasmon),
    so its extrapolation under Li-K would be wrong; the run's low-loss window makes the SSD."""
    _, a, _, _ = ex_situ
    parent = a.low_image[a.summary.li.parent_rows].mean(axis=0, keepdims=True)
    r = float(fit_power_law(parent, a.low.energy, (44.0, 50.0), "two_area").r.ravel()[0])
    assert r < 1.0, f"r = {r:.2f}: the recorded pre-edge now looks like a power law"


def test_li_profile_sees_the_electrode(ex_situ) -> None:
    """After deconvolution the profile has the electrode: c/c0 > 5 in the first 100 nm, ~1 beyond 700 nm."""
    _, a, _, y = ex_situ
    c = a.summary.li.c_rel
    assert np.nanmean(c[(y > 20e-9) & (y < 100e-9)]) > 5.0
    assert np.nanmean(c[(y > 700e-9) & (y < 1200e-9)]) == pytest.approx(1.0, abs=0.15)


def _li_rms(a: Analysis, gt: dict[str, np.ndarray], y: np.ndarray) -> float:
    """RMS of c/c0 (analysis) - c/c0 (truth) over the electrolyte rows 0-900 nm, relative to the truth's maximum."""
    el = (y > ROW_M) & (y < 900e-9)
    return float(np.sqrt(np.mean((a.summary.li.c_rel[el] - gt["li_fraction"][el]) ** 2)) / gt["li_fraction"][el].max())


def test_li_profile_within_5_percent_rms(ex_situ) -> None:
    """Measured 0.56-0.83 % over seeds 0-2 (parent-scaled SSD background, cusp chromatic blur, sum-rule
    near edges of issue 14; 0.6-1.2 % over seeds 0-4 before); with the parent's power-law counts as c0
    the unit is meaningless (the power law extrapolates above the parent's Li-K, decision 0018), which
    the second assertion keeps as the reason for the reference fit. With the grown electrode of
    decision 0020: see the numbers measured with it in the cell report."""
    run, a, gt, y = ex_situ
    assert a.summary.li.parent_level == "reference_fit"
    assert _li_rms(a, gt, y) <= 0.05
    plain = analyze_file(run, SummaryParams(li=LiParams(parent_level="power_law")))
    assert _li_rms(plain, gt, y) > 0.05  # the power-law parent misses the 5 % target


def test_li_figures_against_paper(ex_situ) -> None:
    """[Y14]: ~8.5 c0, ~400 nm. The simulated electrode grows by decomposition kinetics
    (docs/decisions/0020) and is not fitted to these: truth 8.1 c0 at Pt, 6 c0 at 71 nm, 5 % of the
    excess at 345 nm. Measured on the protocol seed (before issue 14's spectra): c_max 7.21 c0, width
    297 nm (the paper-tuned formation gave 8.33-8.59 c0 and 373-393 nm over seeds 0-4)."""
    _, a, gt, _ = ex_situ
    assert 6.5 < a.summary.c_max <= 8.5  # [Y14] 8.5, physics.md §0
    assert a.summary.electrode_width_m == pytest.approx(300e-9, abs=50e-9)  # [Y14] ~400 nm


def test_li_profile_has_no_dip_and_spike_at_the_in_situ_electrode_layer_boundary(ex_situ) -> None:
    """The simulated in-situ electrode (the first 400 nm, plasmon width 9 eV against the parent's 8 eV)
    ends in a sharp step. When the simulator blurred the Li-K window's valence spectrum along y more
    than the low-loss window's, the spliced spectra disagreed there and the analysed c/c0 read
    -0.20/-0.29 on the two rows before the step and +0.30/+0.21 on the two after (seed 0; -0.58 for
    the signature below, noise-free). With the blur per detected loss (decision 0012) the seeds 0-4
    give signature -0.03..-0.19 and RMS 0.045-0.073 c0 over rows 130-150; what is left (noise-free
    -0.10/+0.08 on the two rows next to the step) is the loss-dependent blur a real instrument has
    too, which the per-row deconvolution does not undo."""
    _, a, gt, y = ex_situ
    err = a.summary.li.c_rel - gt["li_fraction"]
    step = int(np.searchsorted(y, 400e-9))  # first parent row
    signature = float(np.mean(err[step - 2 : step]) - np.mean(err[step : step + 2]))
    assert signature > -0.3
    near = slice(step - 10, step + 11)
    assert float(np.sqrt(np.mean(err[near] ** 2))) < 0.1
    assert float(np.max(np.abs(err[near]))) < 0.25


def _ti_truth_boundary_m(gt: dict[str, np.ndarray], y: np.ndarray) -> float:
    el = y > 0
    ti3 = el & (gt["ti3_fraction"] >= 0.5)
    return float(y[np.flatnonzero(ti3)[-1]]) if ti3.any() else 0.0


def test_truth_ti_boundary_follows_the_electrons_inserted(ex_situ) -> None:
    """Ti3+ >= 0.5 where the electrons beyond the O share reduce half the Ti: c/c0 >= 6 + 0.7/1.5
    (sample.ti3_fraction). [Y14] saw the boundary at ~160 nm; the grown electrode puts it at ~53 nm
    (its 6 c0 point is at 71 nm, docs/decisions/0020)."""
    _, _, gt, y = ex_situ
    x = _ti_truth_boundary_m(gt, y)
    el = y > 0
    last = float(y[el][np.flatnonzero(gt["li_fraction"][el] >= 6.0 + 0.7 / 1.5)[-1]])
    assert x == pytest.approx(last, abs=1e-12)
    assert 20e-9 < x < 100e-9


@pytest.mark.xfail(
    strict=True,
    reason="grown electrode (docs/decisions/0020): the Ti3+ region is only ~53 nm (9 rows, f3 = 1 within ~30 nm); "
    "the analysis finds the boundary at 73 nm (protocol seed), 3.6 rows off: its Ti3+ end member from the data "
    "sits within the ~13 nm rms chromatic blur of the boundary",
)
def test_ti_boundary_within_two_rows(ex_situ) -> None:
    """Ti3+ fraction per row (two-component least squares) crossing 0.5, against the truth's last Ti3+ row."""
    _, a, gt, y = ex_situ
    truth = _ti_truth_boundary_m(gt, y)
    assert a.summary.ti3_boundary_m == pytest.approx(truth, abs=2 * ROW_M)


def test_ti3_shift_near_paper(ex_situ) -> None:
    _, a, _, _ = ex_situ
    assert a.summary.ti3_shift_eV == pytest.approx(-1.7, abs=0.3)  # [Y14] ~-1.7 eV


def test_l2_l3_of_the_ti4_rows_reads_the_paper_value(ex_situ) -> None:
    """L2/L3 of the rows the analysis calls Ti4+ against [Y14]'s 1.30: 1.284-1.314 over seeds 0-4
    (docs/ex-situ-comparison.md). With the continuum level taken at 472-478 eV, where the plasmon
    replica of the white lines (plural scattering) already rises, it read 1.22-1.25."""
    _, a, _, y = ex_situ
    ti = a.summary.ti
    ti4 = (y > 200e-9) & ~ti.is_ti3 & np.isfinite(ti.l2_l3_ratio)
    assert np.median(ti.l2_l3_ratio[ti4]) == pytest.approx(1.30, abs=0.04)


def test_oo_mean_error_in_electrode_and_range_of_truth(ex_situ) -> None:
    """O-O from peak b ((E_b - 529.0) R^2 = 2.820 eV nm^2, [Y14]): mean row error in the electrode
    (truth c/c0 > 1.05) within 0.004 nm, and the truth itself spans the paper's 0.280-0.310 nm."""
    _, a, gt, y = ex_situ
    e = (y > ROW_M) & (gt["li_fraction"] > 1.05)
    err = np.abs(a.summary.o.oo_distance_m[e] - gt["oo_distance_m"][e])
    assert np.nanmean(err) <= 0.004e-9
    assert gt["oo_distance_m"][y > 0].min() == pytest.approx(0.280e-9, abs=0.002e-9)
    assert gt["oo_distance_m"][y > 0].max() == pytest.approx(0.310e-9, abs=0.002e-9)


def test_oo_within_0_003_nm_per_row(ex_situ) -> None:
    """Measured 0.0014-0.0022 nm over seeds 0-2 with the issue-14 spectra (0.0018-0.0023 nm over five seeds
    before; Ti L1 step fitted, 7-row window); without the Ti L1 step 0.0021-0.0037 nm (analysis/oxygen.py)."""
    _, a, gt, y = ex_situ
    e = (y > ROW_M) & (gt["li_fraction"] > 1.05)
    assert np.nanmax(np.abs(a.summary.o.oo_distance_m[e] - gt["oo_distance_m"][e])) <= 0.003e-9


def test_oo_noise_estimate_bounds_the_error(ex_situ) -> None:
    """The per-row O-O sigma from the counts (fit residuals, channel correlation) describes the scatter
    far from Pt, where the truth is flat (RMS of error/sigma 0.6-2), and no electrode row is off by
    more than 5 sigma (the y blur of §1.7 adds ~0.001 nm next to Pt that the counts do not know)."""
    _, a, gt, y = ex_situ
    o = a.summary.o
    z = (o.oo_distance_m - gt["oo_distance_m"]) / o.oo_sigma_m
    far = y > 600e-9
    assert 0.6 <= float(np.sqrt(np.nanmean(z[far] ** 2))) <= 2.0
    e = (y > ROW_M) & (gt["li_fraction"] > 1.05)
    assert np.nanmax(np.abs(z[e])) <= 5.0
    assert 0.1 <= o.t_over_lambda <= 1.0  # plasmon deconvolution strength found from the data (§1.4: ~0.5)


def test_fig6_ti_and_oxygen_figures_agree_with_paper(ex_situ) -> None:
    """[Y14] (physics.md §0): Ti4+/Ti3+ boundary ~160 nm from Pt, Ti3+ ~1.7 eV below Ti4+, O-O 0.280 -> 0.310 nm.
    The grown electrode (docs/decisions/0020) puts the boundary at ~51 nm (truth ~53 nm) and reaches
    8.1 c0 at Pt, where R = 0.280 + 0.030 (8.1 - 1)/7.5 = 0.308 nm; measured 0.306 nm.
    (Li maximum and electrode width: test_li_figures_against_paper.)"""
    _, a, gt, _ = ex_situ
    s = a.summary
    assert 20e-9 < s.ti3_boundary_m < 100e-9  # [Y14] ~160 nm: not reproduced
    assert s.ti3_shift_eV == pytest.approx(-1.7, abs=0.3)
    assert s.oo_range_m[0] == pytest.approx(0.280e-9, abs=0.003e-9)
    assert s.oo_range_m[1] == pytest.approx(float(np.max(gt["oo_distance_m"])), abs=0.003e-9)


def _hs_window(run: Path, title_end: str):
    """The run file's window as HyperSpy loads it (one exposure), with its energy calibration."""
    pytest.importorskip("exspy")
    logging.getLogger("hyperspy").setLevel(logging.ERROR)  # "Numba/Numexpr is not installed" log noise
    import hyperspy.api as hs

    (s,) = [x for x in hs.load(run, file_format="hspy") if x.metadata.General.title.endswith(title_end)]
    if s.axes_manager.navigation_dimension == 2:
        s = s.inav[:, -1]  # latest exposure, as the analysis uses
    ax = s.axes_manager.signal_axes[0]
    assert ax.is_binned
    return s, EnergyAxis(offset_eV=ax.offset, scale_eV=ax.scale, size=ax.size)


@pytest.mark.parametrize(
    ("window", "pre_eV", "edge_eV", "per_row"),
    [("ti-l-o-k", (425.0, 450.0), (452.0, 471.0), True), ("li-k", (44.0, 50.0), (55.0, 70.0), False)],
)
def test_power_law_agrees_with_exspy_on_the_run_file(ex_situ, window, pre_eV, edge_eV, per_row) -> None:
    """exspy's PowerLaw background removal (fast, Egerton's estimate) on the run file loaded by HyperSpy,
    same fit window: edge counts within 2 % of ours - per row for Ti-L2,3 (every electrolyte row); for
    the recorded Li-K window (no deconvolution; its edge is small against a nearly flat pre-edge) the
    median row and the sum over the electrolyte."""
    run, a, _, _ = ex_situ
    s, energy = _hs_window(run, window)
    lo, hi = energy.window_edges_eV(energy.window(*pre_eV))
    half = 0.5 * energy.scale_eV  # HyperSpy takes channel centres, its end exclusive: [first, one past last]
    removed = s.remove_background(signal_range=(lo + half, hi + half), background_type="PowerLaw", show_progressbar=False)
    sl = energy.window(*edge_eV)
    theirs = np.asarray(removed.data, float)[..., sl].sum(axis=-1)
    ours = edge_intensity(np.asarray(s.data, float), energy, pre_eV, edge_eV).intensity
    el = a.summary.li.distance_m > 0
    rel = np.abs(ours[el] - theirs[el]) / np.abs(ours[el])
    if per_row:
        assert np.max(rel) <= 0.02
    assert np.median(rel) <= 0.02
    assert theirs[el].sum() == pytest.approx(ours[el].sum(), rel=0.02)


@pytest.fixture(scope="module")
def in_situ_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dry_run(tmp_path_factory.mktemp("in"), "in-situ-lasgtp")


@pytest.fixture(scope="module")
def in_situ(in_situ_run: Path) -> tuple[Analysis, dict[str, np.ndarray], np.ndarray]:
    run = in_situ_run
    a = analyze_file(run)
    with RunFileReader(run) as r:
        gt = r.ground_truth()
        y = r.position_axis("li-k") * 1e-9 + SLIT_START_Y_M
    assert gt is not None
    return a, gt, y


def _charge_discharge(t_s: np.ndarray, values: np.ndarray, v_of_t: np.ndarray, t_mean_s: np.ndarray | None = None,
                      n: int = 3) -> tuple[float, float]:
    """(change over the rising sweep, change over the falling sweep) of `values`, each level the mean of
    `n` samples: the first n, the n around the top of charge (highest cell voltage) and the last n.
    With `t_mean_s` (the exposures' mid-times) those samples are the instants in t_mean_s, and
    `values` (sampled at `t_s`) is interpolated there, so truth and analysis share the same instants."""
    k = int(np.nanargmax(v_of_t))
    m = len(v_of_t)
    idx = [np.arange(n), np.arange(max(k - n // 2, 0), max(k - n // 2, 0) + n), np.arange(m - n, m)]
    if t_mean_s is None:
        levels = [float(np.mean(values[i])) for i in idx]
    else:
        levels = [float(np.mean(np.interp(t_mean_s[i], t_s, values))) for i in idx]
    return levels[1] - levels[0], levels[2] - levels[1]


def _exposures(a: Analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mid-times (s), potentials (V; -1 where not recorded) and analysed Li near Pt of the Li-K exposures."""
    s = a.series
    return (np.array([p.t_s for p in s]), np.array([np.nan_to_num(p.potential_V, nan=-1.0) for p in s]),
            np.array([p.near_pt for p in s]))


@pytest.mark.slow
def test_in_situ_truth_li_near_pt_grows_on_charge_and_falls_on_discharge(in_situ) -> None:
    """The truth at the Li-K exposures' times: measured +0.41, -0.49 c0 (3-exposure means)."""
    a, gt, y = in_situ
    near = np.array([near_pt(y, c) for c in gt["li_fraction"]])
    t, v, _ = _exposures(a)
    up, down = _charge_discharge(gt["t_s"], near, v, t_mean_s=t)
    assert up > 0.3 and down < -0.3


@pytest.mark.slow
def test_in_situ_analysed_li_near_pt_grows_on_charge_and_falls_on_discharge(in_situ) -> None:
    """Measured (3-exposure means; protocol seed and noise seeds 1-2): +0.43..+0.60 c0 on charge,
    -0.41..-0.57 on discharge (truth +0.41, -0.49); with the per-loss chromatic blur (docs/decisions/0012),
    protocol seed: +0.46, -0.56; with the issue-14 spectra (cusp blur, sum-rule near edges, parent-scaled
    SSD background): +0.42, -0.54. Without the Ti M1 step in the parent fit
    (docs/decisions/0011) every row drifted down by ~0.2-0.3 c0 over the run as the beam removed
    Li (fall -0.58..-0.79). Without the Pt unmixing (docs/decisions/0009) the Pt O3/O2 spill,
    growing against the falling Li level, hid the fall (-0.3, +0.05, -0.25 over three seeds)."""
    a, _, _ = in_situ
    t, v, near = _exposures(a)
    up, down = _charge_discharge(t, near, v)
    assert up > 0.2 and down < -0.2
    assert up < 1.0 and down > -1.0  # the truth's order (+-0.5 c0): no runaway spill or drift


@pytest.mark.slow
def test_in_situ_electrode_c_rel_does_not_drift_as_the_beam_removes_li(in_situ) -> None:
    """The electrode's analysed/true c/c0 (30-300 nm from Pt), mean of the last five Li-K exposures
    over the mean of the first five, while knock-on loss takes the retained Li from 1 to ~0.5.
    Measured: 0.997 and 1.008 (two runs; exposure-to-exposure scatter ~2 %); 0.998 (first 1.001) with the
    issue-14 spectra. With the Ti M1 step
    left in the parent level it was 0.95 (docs/decisions/0011)."""
    a, gt, _ = in_situ
    d = a.summary.li.distance_m
    band = (d > 30e-9) & (d < 300e-9)
    ratio = []
    for p in a.series:
        j = int(np.argmin(np.abs(gt["t_s"] - p.t_s)))
        ratio.append(np.nanmean(p.c_rel[band]) / np.mean(gt["li_fraction"][j][band]))
    first, last = float(np.mean(ratio[:5])), float(np.mean(ratio[-5:]))
    assert float(np.atleast_1d(gt["li_retained_fraction"])[-1]) < 0.6  # the beam did remove Li
    assert first == pytest.approx(1.0, abs=0.05)
    assert 0.965 < last / first < 1.035


@pytest.mark.slow
def test_in_situ_show_draws_li_near_pt_over_the_potential(in_situ_run: Path, tmp_path: Path) -> None:
    """`insitem show` on an in-situ run adds the Li-near-Pt series over the potential trace."""
    from insitem.acquisition.figures import write_figures

    names = {p.name for p in write_figures(in_situ_run, tmp_path)}
    assert "li-near-pt-time.png" in names and (tmp_path / "li-near-pt-time.png").stat().st_size > 10_000
