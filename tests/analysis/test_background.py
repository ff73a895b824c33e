"""Power-law background (physics.md §1.6, Egerton [S:EG11] §4.4) and propagated Poisson noise."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis import AnalysisError, EnergyAxis, edge_intensity, fit_power_law, subtract_background

AX = EnergyAxis(offset_eV=35.0, scale_eV=0.1, size=2048)
WIN = (44.0, 53.0)


@pytest.mark.parametrize("method", ["two_area", "log_lsq"])
@pytest.mark.parametrize("r", [2.5, 3.0, 4.0, 5.5])
def test_noiseless_power_law_recovers_r(synth, method, r):
    """§7 check 4: a pure A E^-r spectrum gives r to 1e-3 (and A to 1e-2 relative)."""
    A = 3.0e4 * 45.0**r
    fit = fit_power_law(synth.power_law_counts(AX, A, r)[None], AX, WIN, method)
    assert abs(fit.r[0] - r) < 1e-3
    assert fit.A[0] == pytest.approx(A, rel=1e-2)


@pytest.mark.parametrize("method", ["two_area", "log_lsq"])
def test_power_law_fit_unbiased_over_1000_draws(synth, method):
    """§7 check 4: the mean r of 1000 Poisson draws lies within 3 standard errors of the truth."""
    rng = np.random.default_rng(4)
    mu = synth.power_law_counts(AX, 1.0e4 * 45.0**4, 4.0)
    draws = rng.poisson(np.broadcast_to(mu, (1000, AX.size)))
    r = fit_power_law(draws, AX, WIN, method).r
    se = r.std(ddof=1) / np.sqrt(r.size)
    assert abs(r.mean() - 4.0) < 3 * se
    assert se < 0.005  # the check has teeth: 3 SE is below 0.015 in r


def test_two_area_is_exact_where_egerton_closed_form_is_not(synth):
    """The closed form 2 ln(I1/I2)/ln(E3/E1) is off by >1e-3 for a 9 eV window; the solved r is not."""
    mu = synth.power_law_counts(AX, 45.0**4, 4.0)
    sl = AX.window(*WIN)
    mid = (sl.start + sl.stop) // 2
    i1, i2 = mu[sl.start : mid].sum(), mu[mid : sl.stop].sum()
    e1, e3 = AX.window_edges_eV(sl)
    assert abs(2 * np.log(i1 / i2) / np.log(e3 / e1) - 4.0) > 1e-3
    assert abs(fit_power_law(mu, AX, WIN, "two_area").r - 4.0) < 1e-9


@pytest.mark.parametrize("method", ["two_area", "log_lsq"])
def test_edge_intensity_recovers_known_edge_and_predicts_its_noise(synth, method):
    """Noiseless: S equals the synthetic edge counts; noisy: predicted sigma matches the scatter (±10 %)."""
    E = AX.values_eV
    # truncated at 54 eV so that no edge tail reaches the pre-edge window (the background is then exact)
    edge = (E >= 54.0) * (500.0 * synth.step(E, 57.0, 1.0) + 3000.0 * synth.gauss(E, 61.5, 3.0))
    mu = synth.power_law_counts(AX, 2.0e4 * 45.0**4, 4.0) + edge
    truth = edge[AX.window(55.0, 70.0)].sum()
    exact = edge_intensity(mu, AX, WIN, (55.0, 70.0), method)
    assert exact.intensity == pytest.approx(truth, rel=1e-3)
    rng = np.random.default_rng(5)
    res = edge_intensity(rng.poisson(np.broadcast_to(mu, (1000, AX.size))), AX, WIN, (55.0, 70.0), method)
    assert res.intensity.mean() == pytest.approx(truth, abs=4 * res.sigma.mean() / np.sqrt(1000))
    assert res.intensity.std(ddof=1) == pytest.approx(res.sigma.mean(), rel=0.1)
    assert np.all(res.h_factor > 1)  # extrapolation always adds noise beyond Poisson on the window


def test_var_per_count_scales_variance(synth):
    mu = synth.power_law_counts(AX, 2.0e4 * 45.0**4, 4.0)
    a = edge_intensity(mu, AX, WIN, (55.0, 70.0))
    b = edge_intensity(mu, AX, WIN, (55.0, 70.0), var_per_count=6.3)
    assert b.sigma == pytest.approx(a.sigma * np.sqrt(6.3))


def test_subtract_background_leaves_zero_on_pure_power_law_and_edge_after(synth):
    mu = synth.power_law_counts(AX, 1e4 * 45.0**4, 4.0)
    sub = subtract_background(mu[None], AX, WIN, "two_area")
    assert np.max(np.abs(sub.signal)) < 1e-6 * mu.max()
    assert sub.energy.offset_eV == pytest.approx(AX.values_eV[AX.window(*WIN).start])
    assert sub.signal.shape[-1] == sub.energy.size


def test_windows_outside_axis_or_unknown_method_raise():
    data = np.ones((2, AX.size))
    with pytest.raises(AnalysisError, match="outside the axis"):
        fit_power_law(data, AX, (20.0, 30.0))
    with pytest.raises(AnalysisError, match="unknown background method"):
        fit_power_law(data, AX, WIN, "spline")  # type: ignore[arg-type]
    with pytest.raises(AnalysisError, match="energy channels"):
        fit_power_law(np.ones((2, 100)), AX, WIN)


def test_agrees_with_exspy_power_law_removal(synth, low_noisy):
    """Same data, same windows: Li-K counts after exspy's fast PowerLaw removal agree within 2 %."""
    exspy = pytest.importorskip("exspy")
    s = exspy.signals.EELSSpectrum(low_noisy.copy())
    ax = s.axes_manager.signal_axes[0]
    ax.offset, ax.scale, ax.units, ax.is_binned = synth.LOW.offset_eV, synth.LOW.scale_eV, "eV", True
    pre = (44.0, 50.0)
    lo, hi = synth.LOW.window_edges_eV(synth.LOW.window(*pre))
    # hyperspy takes channel values (centres) as the range ends: pass the centres of our end channels
    removed = s.remove_background(
        signal_range=(lo + 0.05, hi + 0.05), background_type="PowerLaw", fast=True, show_progressbar=False
    )
    sl = synth.LOW.window(55.0, 70.0)
    theirs = removed.data[:, sl].sum(axis=1)
    ours = edge_intensity(low_noisy, synth.LOW, pre, (55.0, 70.0)).intensity
    elec = synth.truth().distance_m >= 0
    rel = np.abs(ours[elec] - theirs[elec]) / np.abs(ours[elec])
    assert np.median(rel) < 0.02
    assert np.sum(ours[elec]) == pytest.approx(np.sum(theirs[elec]), rel=0.02)
