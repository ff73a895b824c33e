"""On-chip binning drawn on the readout lattice (`DetectorParameters.binned_fluctuation`) against
drawing every unbinned pixel and summing (the reference path): the binned readouts must have the
same statistics per readout pixel (mean, variance) and the same correlation between neighbouring
readout pixels along both axes, within 3 standard errors, in the exactly drawn low-count cells as
well as in the Gaussian ones. Saturation stays the 16-bit limit of the readout pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.simulators.detector import (
    CCDDetector,
    DetectorParameters,
    binned_autocorrelation,
    compound_poisson_skewness,
    lattice_kernel,
    noise_kernel,
    psf_line_profile,
    skewed_normal_terms,
)

PARAMS = DetectorParameters(shape_px=(192, 256))
N_FRAMES = 400
N_BATCHES = 20


def sr_image() -> np.ndarray:
    """32 positions x 6 CCD rows; columns: low counts (exact draws), a ramp over 3 decades, a high plateau."""
    pos = np.repeat(np.linspace(0.05, 1.0, 32), 6)
    spec = np.concatenate([np.full(64, 0.3), np.geomspace(0.5, 300.0, 128), np.full(64, 800.0)])
    return (pos[:, None] * spec[None, :]).astype(np.float32)


def frames(fast: bool, binning: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N_FRAMES binned frames minus their noise-free expectation (float64), and that expectation."""
    det = CCDDetector(PARAMS.model_copy(update={"binned_fluctuation": fast}), rng=seed)
    mu = sr_image()
    f = np.array([det.expose(mu, 1.0, binning=binning).data for _ in range(N_FRAMES)], dtype=np.float64)
    m = det.mean_counts(mu, 1.0, binning=binning)
    return f - m, m


def batch_stats(d: np.ndarray, cols: slice) -> np.ndarray:
    """Per batch of frames: (variance, lag-1 correlation along x, along y) over the readout pixels of `cols`."""
    d = d[:, :, cols] - d[:, :, cols].mean(axis=0)
    out = []
    for b in np.array_split(d, N_BATCHES):
        v = float(np.mean(b**2))
        rx = float(np.mean(b[:, :, 1:] * b[:, :, :-1])) / v
        ry = float(np.mean(b[:, 1:] * b[:, :-1])) / v
        out.append((v, rx, ry))
    return np.array(out)


@pytest.mark.parametrize("binning", [(6, 1), (2, 2), (3, 2)])
def test_lattice_draws_match_unbinned_draws_per_readout_pixel(binning: tuple[int, int]) -> None:
    d_fast, m_fast = frames(True, binning, seed=4)
    d_ref, m_ref = frames(False, binning, seed=5)
    n = N_FRAMES
    # per readout pixel: mean (minus the noise-free expectation) and variance, z-scores
    v_fast, v_ref = d_fast.var(axis=0, ddof=1), d_ref.var(axis=0, ddof=1)
    z_mean = (d_fast.mean(axis=0) - d_ref.mean(axis=0)) / np.sqrt((v_fast + v_ref) / n)
    m4 = lambda d: np.mean((d - d.mean(axis=0)) ** 4, axis=0)  # noqa: E731
    z_var = (v_fast - v_ref) / np.sqrt((m4(d_fast) - v_fast**2) / n + (m4(d_ref) - v_ref**2) / n)
    for z in (z_mean, z_var):
        assert np.mean(np.abs(z) > 3) < 0.01  # 0.27 % for equal laws
        assert abs(z.mean()) < 0.15
        assert 0.85 < z.std() < 1.15
    # the signal dominates the read noise over most pixels: the test sees the fluctuation model
    assert np.median(v_ref) > 4 * (PARAMS.read_noise_counts**2 + 1)
    # variance and lag-1 correlations along x and y, per column region, within 3 standard errors
    nx = m_ref.shape[1]
    regions = {"exact (0.3 e/px)": slice(0, nx // 4), "ramp": slice(nx // 4, 3 * nx // 4), "high": slice(3 * nx // 4, nx)}
    for name, cols in regions.items():
        a, b = batch_stats(d_fast, cols), batch_stats(d_ref, cols)
        se = np.sqrt(a.var(axis=0, ddof=1) / N_BATCHES + b.var(axis=0, ddof=1) / N_BATCHES)
        diff = a.mean(axis=0) - b.mean(axis=0)
        assert np.all(np.abs(diff) < 3 * se), (name, diff, se)
        assert abs(diff[0]) / b[:, 0].mean() < 0.03, name  # variance within 3 %
        assert np.all(se[1:] < 0.01), name  # the correlation test has the power to see a 0.03 change
    if binning[0] > 1 and binning[1] == 1:  # the correlation along x (energy) is the PSF's, along y smaller
        r = batch_stats(d_ref, regions["high"]).mean(axis=0)
        assert r[1] > 0.25 and r[2] < 0.15


def test_lattice_draws_make_no_unbinned_fluctuation_field() -> None:
    for fast in (True, False):
        det = CCDDetector(PARAMS.model_copy(update={"binned_fluctuation": fast}), rng=1)
        for _ in range(2):  # the second time the image is cached and its buffers kept
            det.expose(sr_image(), 1.0, binning=(6, 1))
        assert ("z" in det._bufs) is not fast  # the padded unbinned field: only without the lattice


def test_binning_one_and_the_switch_give_the_unbinned_path_bit_for_bit() -> None:
    mu = sr_image()
    a = CCDDetector(PARAMS, rng=7).expose(mu, 1.0).data
    b = CCDDetector(PARAMS.model_copy(update={"binned_fluctuation": False}), rng=7).expose(mu, 1.0).data
    np.testing.assert_array_equal(a, b)


def test_lattice_frames_depend_on_the_seed_only_not_on_threads() -> None:
    mu = sr_image()
    a = CCDDetector(PARAMS, rng=9, n_threads=1).expose(mu, 1.0, binning=(6, 1)).data
    b = CCDDetector(PARAMS, rng=9, n_threads=2)
    try:
        np.testing.assert_array_equal(a, b.expose(mu, 1.0, binning=(6, 1)).data)
    finally:
        b.close()


def test_saturation_clips_each_binned_readout_pixel() -> None:
    det = CCDDetector(PARAMS, rng=3)
    mu = np.full(PARAMS.shape_px, 2000.0, dtype=np.float32)  # 6 x 2000 e x 6.3 = 75600 counts > 65535
    mu[:, 128:] = 100.0  # 3780 counts: far below
    frame = det.expose(mu, 1.0, binning=(6, 1))
    assert np.all(frame.data[:, :120] == 65535)
    assert np.all(frame.data[:, 136:] < 10000)
    assert frame.saturated_px == int(np.count_nonzero(frame.data == 65535))
    assert 120 * 32 <= frame.saturated_px <= 136 * 32
    assert frame.data.max() == 65535


@pytest.mark.parametrize("factor", [1, 2, 3, 6, 16, 330, 2048])
def test_lattice_kernel_keeps_variance_lag1_and_whole_sums_of_the_unbinned_path(factor: int) -> None:
    p = DetectorParameters()
    h = noise_kernel(psf_line_profile(p.psf_sigma_px, p.psf_gamma_px, p.psf_tail_weight, p.psf_radius_px))
    k = lattice_kernel(h, factor)
    assert k is not None
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.dot(k, k) == pytest.approx(binned_autocorrelation(h, factor, 0), abs=1e-10)
    assert np.dot(k[1:], k[:-1]) == pytest.approx(binned_autocorrelation(h, factor, 1), abs=1e-10)
    # the correlation function of the binned unbinned-path noise sums to 1 (whole-PSF sums)
    total = sum(binned_autocorrelation(h, factor, abs(L)) for L in range(-4, 5))
    assert total == pytest.approx(1.0, abs=1e-12)
    # binned readout pixel of the unbinned path by brute force: white noise, filter with h, sum factor pixels
    rng = np.random.default_rng(factor)
    if factor <= 16:
        w = rng.standard_normal(200_000 * factor + 4)
        s = np.convolve(w, h, mode="valid")[: 200_000 * factor].reshape(-1, factor).sum(axis=1)
        assert np.var(s) / factor == pytest.approx(binned_autocorrelation(h, factor, 0), rel=0.02)
        lag1 = np.mean(s[1:] * s[:-1]) / factor
        assert lag1 == pytest.approx(binned_autocorrelation(h, factor, 1), abs=0.01)
    assert math.isfinite(k[0])


def test_skew_terms_give_the_compound_poisson_mean_variance_and_skewness() -> None:
    """y = s (z + c (z^2 - 1)) (first Cornish-Fisher term): moments from the terms, analytically
    (z standard normal: E[z^4] = 3, E[z^6] = 15), against the compound Poisson of mu electrons with
    Gamma(1/nu2) pulse heights: skewness (1 + 2 nu2) / sqrt((1 + nu2) mu), excess kurtosis
    (1 + 3 nu2)(1 + 2 nu2) / ((1 + nu2) mu)."""
    p = DetectorParameters()
    mu = np.array([0.0, 1.0, 3.99, 4.0, 8.0, 24.0, 1000.0], dtype=np.float32)
    scale = p.gain_counts_per_e * math.sqrt(1.0 + p.nu2)
    s, c = (a.astype(np.float64) for a in skewed_normal_terms(mu, scale, p.nu2, p.exact_below_e))  # y = s (z + c (z^2 - 1))
    np.testing.assert_allclose(s**2 * (1 + 2 * c**2), scale**2 * mu.astype(np.float64), rtol=1e-5)  # variance exact
    skew = (6 * c + 8 * c**3) / (1 + 2 * c**2) ** 1.5
    kurt = (3 + 60 * c**2 + 60 * c**4) / (1 + 2 * c**2) ** 2 - 3
    above = mu >= p.exact_below_e
    assert np.all(c[~above] == 0.0)  # below the threshold (drawn exactly) and at zero dose: plain
    want_skew = compound_poisson_skewness(mu[above], p.nu2)
    assert np.all(np.abs(skew[above] / want_skew - 1) < 2e-3)
    want_kurt = (1 + 3 * p.nu2) * (1 + 2 * p.nu2) / ((1 + p.nu2) * mu[above])
    assert np.all(np.abs(kurt[above] / want_kurt - 1) < 0.1)
    # the law itself: sampled moments of exact draws (Poisson electrons, Gamma pulse heights) at 4 e
    rng = np.random.default_rng(11)
    n_e = rng.poisson(4.0, 2_000_000)
    x = rng.standard_gamma(n_e / p.nu2) * p.nu2 - 4.0
    assert abs(np.mean(x**3) / np.mean(x**2) ** 1.5 / compound_poisson_skewness(4.0, p.nu2) - 1) < 0.03


def flat_field_counts(exact_below_e: float, mu_cell: float, seed: int, n_frames: int = 120) -> np.ndarray:
    """Binned 6 x 1 frames of a flat field minus their noise-free expectation (float64), edge columns cut."""
    det = CCDDetector(PARAMS.model_copy(update={"exact_below_e": exact_below_e}), rng=seed)
    mu = np.full(PARAMS.shape_px, mu_cell / 6.0, dtype=np.float32)
    f = np.array([det.expose(mu, 1.0, binning=(6, 1)).data for _ in range(n_frames)], dtype=np.float64)
    return f[:, :, 4:-4] - det.mean_counts(mu, 1.0, binning=(6, 1))[:, 4:-4]


@pytest.mark.parametrize("mu_cell", [4.0, 24.0])
def test_readout_counts_above_the_exact_threshold_have_the_mean_variance_and_skew_of_exact_draws(mu_cell: float) -> None:
    """At and above `exact_below_e` per readout pixel (4 e: the threshold; 24 e: where the lattice's
    threshold was before decision 0028), the skew-corrected normal gives the readout counts (read
    noise, dark, rounding, neighbours through the lattice kernel included) the mean, variance and
    skewness of drawing every electron exactly, within 3 standard errors over batches of frames.
    A plain Gaussian gives the counts no skewness (0.46 at 4 e with exact draws) and fails."""
    approx = flat_field_counts(PARAMS.exact_below_e, mu_cell, seed=21)
    exact = flat_field_counts(1e9, mu_cell, seed=22)

    def moments(d: np.ndarray) -> np.ndarray:
        out = []
        for b in np.array_split(d, N_BATCHES):
            x = b.ravel()
            m, v = x.mean(), x.var()
            out.append((m, v, np.mean((x - m) ** 3) / v**1.5))
        return np.array(out)

    a, b = moments(approx), moments(exact)
    se = np.sqrt(a.var(axis=0, ddof=1) / N_BATCHES + b.var(axis=0, ddof=1) / N_BATCHES)
    diff = a.mean(axis=0) - b.mean(axis=0)
    assert np.all(np.abs(diff) < 3 * se), (diff, se)
    assert abs(diff[1]) / b[:, 1].mean() < 0.01  # variance within 1 %
    skew = b[:, 2].mean()
    assert skew > 0.2 and 3 * se[2] < 0.3 * skew  # power to see a Gaussian's missing skewness
    # variance to mean: g^2 (1 + nu2) mu_cell through the lattice kernels (sum of squared taps per
    # axis), plus read, row, dark (6 pixels binned on chip) and rounding noise
    h = noise_kernel(psf_line_profile(PARAMS.psf_sigma_px, PARAMS.psf_gamma_px, PARAMS.psf_tail_weight, PARAMS.psf_radius_px))
    kx, ky = lattice_kernel(h, 1), lattice_kernel(h, 6)
    assert kx is not None and ky is not None
    g = PARAMS.gain_counts_per_e
    signal_var = g**2 * (1 + PARAMS.nu2) * mu_cell * np.sum(kx**2) * np.sum(ky**2)
    noise_var = PARAMS.read_noise_counts**2 + PARAMS.row_noise_counts**2 + 6 * PARAMS.dark_counts_per_s + 1 / 12
    assert b[:, 1].mean() == pytest.approx(signal_var + noise_var, rel=0.02)
    assert a[:, 1].mean() == pytest.approx(signal_var + noise_var, rel=0.02)
