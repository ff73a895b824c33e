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
    lattice_kernel,
    noise_kernel,
    psf_line_profile,
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
