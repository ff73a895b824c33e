"""CCD detector model (physics.md §2, table §6.2, §7 check 6): photon transfer (EMVA 1288),
linearity, saturation, dark frames, on-chip binning, PSF noise correlation, dark and gain
references. Most tests use a 256 x 256 sensor with the per-pixel defaults of §6.2; the
sums-over-whole-PSFs test uses 1024 x 1024 for enough independent blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, stats

from insitem.simulators.detector import CCDDetector, DetectorParameters, noise_kernel, psf_line_profile

SMALL = DetectorParameters(shape_px=(256, 256))
SIGMA = SMALL.psf_sigma_px
G = SMALL.gain_counts_per_e
NU2 = SMALL.nu2
FULL_SCALE = 65535


def flat(det: CCDDetector, level_e: float) -> np.ndarray:
    return np.full(det.params.shape_px, level_e, dtype=np.float32)


def pair_stats(det: CCDDetector, mu: np.ndarray, exposure_s: float, **kw) -> tuple[float, float]:
    """(mean of the pair, temporal variance var(f1 - f2)/2) over all pixels (EMVA 1288)."""
    f1 = det.expose(mu, exposure_s, **kw).data.astype(np.float64)
    f2 = det.expose(mu, exposure_s, **kw).data.astype(np.float64)
    return 0.5 * (f1.mean() + f2.mean()), float(np.var(f1 - f2) / 2.0)


def reference_profile(sigma: float, gamma: float, w: float, radius: int) -> np.ndarray:
    """Pixel-integrated Gaussian + Lorentzian (Cauchy) line profile from scipy.stats CDFs."""
    edges = np.arange(-radius - 0.5, radius + 1.0)
    g = np.diff(stats.norm.cdf(edges, scale=sigma))
    lo = np.diff(stats.cauchy.cdf(edges, scale=gamma))
    prof = (1 - w) * g + w * lo
    return prof / prof.sum()


def test_psf_profile_and_beta_psf_follow_from_the_default_psf() -> None:
    ref = reference_profile(SIGMA, 2.0, 0.3, 256)
    prof = psf_line_profile(SIGMA, 2.0, 0.3, 256)
    np.testing.assert_allclose(prof, ref, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(psf_line_profile(0.6, 2.0, 0.3, 40), reference_profile(0.6, 2.0, 0.3, 40), rtol=1e-9, atol=1e-15)
    det = CCDDetector(SMALL, rng=0, n_threads=1)
    beta1 = float(np.sum(ref**2))
    assert det.beta_psf == pytest.approx(beta1**2, rel=1e-12)
    # K_eff = g (1 + nu2) beta_psf (physics.md 2.5)
    assert det.photon_transfer_gain == pytest.approx(G * (1 + NU2) * beta1**2, rel=1e-12)
    # the 5-tap noise kernel keeps sum 1, sum h^2 = sum PSF^2 and the lag-1 autocorrelation
    h = noise_kernel(ref)
    assert h.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sum(h**2) == pytest.approx(beta1, rel=1e-10)
    assert np.dot(h[1:], h[:-1]) == pytest.approx(np.dot(ref[1:], ref[:-1]), rel=1e-10)


def test_default_psf_gives_the_sourced_variance_to_mean_of_1_55_counts() -> None:
    """physics.md 2.1/2.2: per-pixel variance-to-mean of the PSF-smoothed gain g (1 + nu2) beta_psf = 1.55 counts [S:SR25]."""
    p = DetectorParameters()
    beta = float(np.sum(reference_profile(p.psf_sigma_px, p.psf_gamma_px, p.psf_tail_weight, p.psf_radius_px) ** 2)) ** 2
    assert p.gain_counts_per_e * (1 + p.nu2) * beta == pytest.approx(1.55, rel=0.03)
    assert CCDDetector(SMALL, rng=0).photon_transfer_gain == pytest.approx(1.55, rel=0.03)


def test_photon_transfer_slope_and_intercept_emva1288() -> None:
    """EMVA 1288: var = K_eff (mu_y - mu_dark) + sigma_d^2; K_eff = g(1+nu2)beta_psf, sigma_d^2 = read^2 + dark + row^2 + 1/12."""
    det = CCDDetector(SMALL, rng=11)
    t = 1.0
    levels_e = [0, 2, 8, 30, 100, 300, 700, 1500, 2500, 4000, 5500, 7000, 8250]  # 8250 e = 80 % of full scale
    assert levels_e[-1] * G < 0.8 * FULL_SCALE
    means, variances, errors = [], [], []
    for level in levels_e:
        f1 = det.expose(flat(det, level), t).data.astype(np.float64)
        f2 = det.expose(flat(det, level), t).data.astype(np.float64)
        d = f1 - f2
        means.append(0.5 * (f1.mean() + f2.mean()))
        variances.append(np.var(d) / 2)
        # standard error of the variance from 64 independent 32 x 32 blocks (model-free; the
        # PSF correlates neighbouring pixels, so the pixel count overstates the information)
        block_var = d.reshape(8, 32, 8, 32).transpose(0, 2, 1, 3).reshape(64, -1).var(axis=1) / 2
        errors.append(block_var.std(ddof=1) / math.sqrt(64))
    x = np.array(means) - means[0]
    y = np.array(variances)
    (slope, intercept), cov = np.polyfit(x, y, 1, w=1.0 / np.array(errors), cov="unscaled")
    se = math.sqrt(cov[0, 0])
    k_eff = det.photon_transfer_gain
    assert abs(slope - k_eff) / k_eff < 0.03
    assert abs(slope - k_eff) < 3 * se  # physics.md §7 check 6 (3 standard errors)
    assert se < 0.01 * k_eff
    dark_var = det.dark_variance_counts2(t)
    assert abs(intercept - dark_var) / dark_var < 0.03
    # the slope is not g: a scintillator camera's photon transfer underestimates g by (1+nu2) beta_psf
    assert slope < 0.3 * G


def test_exact_low_dose_draws_have_the_compound_poisson_variance() -> None:
    """Exact path (Poisson electrons, Gamma pulse-height sums) gives the same K_eff as the Gaussian path."""
    t = 1.0
    slopes = []
    for exact_below in (0.0, 1e9):
        det = CCDDetector(SMALL.model_copy(update={"exact_below_e": exact_below}), rng=5)
        m0, v0 = pair_stats(det, flat(det, 0.0), t)
        m1, v1 = pair_stats(det, flat(det, 60.0), t)
        slopes.append((v1 - v0) / (m1 - m0))
    k_eff = CCDDetector(SMALL, rng=0, n_threads=1).photon_transfer_gain
    for s in slopes:
        assert abs(s - k_eff) / k_eff < 0.05


def test_sums_over_whole_psfs_recover_g_times_1_plus_nu2() -> None:
    """Block sums take in whole PSFs: slope -> g(1+nu2); column sums only sum y: slope g(1+nu2) beta_x."""
    det = CCDDetector(DetectorParameters(), rng=3)  # full 2048 x 2048 sensor: 4096 blocks per frame
    n = det.params.shape_px[0]
    h = det.noise_kernel_1d
    b = 32  # block size, px

    def captured(size: int) -> float:
        """(1/size) sum over source pixels of (fraction of h landing inside a size-pixel interval)^2."""
        frac = np.convolve(np.ones(size), h)  # source offsets -2 .. size+1
        return float(np.sum(frac**2) / size)

    def pair_sums(level: float, pairs: int) -> tuple[float, float, float, float]:
        x_b, v_b, x_c, v_c = [], [], [], []
        for _ in range(pairs):
            f1 = det.expose(flat(det, level), 1.0).data.astype(np.float64)
            f2 = det.expose(flat(det, level), 1.0).data.astype(np.float64)
            d, s = f1 - f2, (f1 + f2) / 2
            x_b.append(s.reshape(n // b, b, n // b, b).sum(axis=(1, 3)).mean())
            v_b.append(np.var(d.reshape(n // b, b, n // b, b).sum(axis=(1, 3))) / 2)
            x_c.append(s.sum(axis=0).mean())
            v_c.append(np.var(d.sum(axis=0)) / 2)
        return float(np.mean(x_b)), float(np.mean(v_b)), float(np.mean(x_c)), float(np.mean(v_c))

    xb0, vb0, xc0, vc0 = pair_sums(0.0, 2)
    xb1, vb1, xc1, vc1 = pair_sums(7000.0, 4)
    k_blk = (vb1 - vb0) / (xb1 - xb0)
    k_col = (vc1 - vc0) / (xc1 - xc0)
    assert captured(b) ** 2 > 0.9  # a 32 x 32 block holds nearly whole PSFs
    expected_blk = G * (1 + NU2) * captured(b) ** 2
    assert abs(k_blk - expected_blk) / expected_blk < 0.03
    expected_col = G * (1 + NU2) * float(np.sum(det.psf_profile**2))
    assert abs(k_col - expected_col) / expected_col < 0.04
    assert k_col < 0.45 * k_blk  # a column sum keeps the PSF spread along E (beta_x = 0.40)


def test_mean_is_linear_to_half_a_percent_below_80_percent_full_scale() -> None:
    det = CCDDetector(SMALL, rng=2)
    dark = det.expose(None, 1.0).data.mean()
    levels = np.linspace(200, 8250, 9)
    resp = np.array([det.expose(flat(det, lv), 1.0).data.mean() - dark for lv in levels])
    slope, icpt = np.polyfit(levels, resp, 1)
    assert slope == pytest.approx(G, rel=0.005)
    assert np.max(np.abs(resp - (slope * levels + icpt)) / resp) < 0.005


def test_saturation_clips_at_65535_and_is_counted() -> None:
    det = CCDDetector(SMALL, rng=4)
    mu = np.zeros(SMALL.shape_px, dtype=np.float32)
    mu[:128] = 20000.0  # 126,000 counts expected: twice full scale
    frame = det.expose(mu, 1.0)
    assert frame.data.dtype == np.uint16
    assert frame.data.max() == FULL_SCALE
    n_full = int(np.count_nonzero(frame.data == FULL_SCALE))
    assert frame.saturated_px == n_full
    assert abs(n_full - 128 * 256) <= 2 * 256  # the bright half, give or take the PSF edge rows
    assert frame.data[140:].max() < FULL_SCALE


def test_counts_scale_with_exposure_and_beam_current() -> None:
    det = CCDDetector(SMALL, rng=6)
    rng = np.random.default_rng(0)
    spectrum = np.repeat(rng.uniform(50, 500, (32, 256)), 8, axis=0).astype(np.float32)  # e per pixel at 1 s, 1 nA
    bias = det.mean_counts(None, 0.0).mean()

    def signal(mu: np.ndarray, t: float) -> float:
        return float(det.expose(mu, t).data.mean() - bias - det.params.dark_counts_per_s * t)

    base = signal(spectrum, 1.0)
    assert base == pytest.approx(G * spectrum.mean(), rel=0.005)
    # twice the exposure at the same current: twice the electrons and twice the dark time
    assert signal(2 * spectrum, 2.0) == pytest.approx(2 * base, rel=0.005)
    # three times the beam current at the same exposure
    assert signal(3 * spectrum, 1.0) == pytest.approx(3 * base, rel=0.005)


@pytest.mark.parametrize("exposure_s", [1.0, 100.0])
def test_blanked_beam_gives_a_dark_frame(exposure_s: float) -> None:
    det = CCDDetector(SMALL, rng=7)
    bright = flat(det, 3000.0)
    n = bright.size
    expected = det.mean_counts(None, exposure_s).mean()  # bias map + dark map * t
    assert expected == pytest.approx(det.bias_quadrant_counts.mean() + 0.2 * exposure_s, rel=0.01)
    sd = math.sqrt(det.dark_variance_counts2(exposure_s))
    for frame in (det.expose(bright, exposure_s, beam_on=False), det.expose(np.zeros_like(bright), exposure_s)):
        # row noise is common to a quadrant row: it sets the standard error of the frame mean
        se = math.sqrt(sd**2 / n + det.params.row_noise_counts**2 / (2 * 256))
        assert abs(frame.data.mean() - expected) < 4 * se + 0.05
        assert frame.saturated_px == 0


def test_on_chip_binning_adds_read_noise_once_per_readout_pixel() -> None:
    det = CCDDetector(SMALL, rng=8)
    t = 10.0
    _, v = pair_stats(det, None, t, binning=(4, 4))  # type: ignore[arg-type]
    p = det.params
    on_chip = p.read_noise_counts**2 + 16 * p.dark_counts_per_s * t + p.row_noise_counts**2 + 1 / 12
    software = 16 * (p.read_noise_counts**2 + p.dark_counts_per_s * t + p.row_noise_counts**2)
    assert v == pytest.approx(on_chip, rel=0.05)
    assert v < 0.25 * software


def test_binning_and_readout_area_give_the_right_shape_and_sums() -> None:
    det = CCDDetector(SMALL, rng=9)
    rng = np.random.default_rng(1)
    mu = rng.uniform(100, 1000, SMALL.shape_px).astype(np.float32)
    area = (32, 64, 160, 192)
    frame = det.expose(mu, 1.0, binning=(2, 4), readout_area=area)
    assert frame.data.shape == (64, 32)
    assert frame.readout_area == area and frame.binning == (2, 4)
    unbinned = det.mean_counts(mu, 1.0, readout_area=area)
    binned = det.mean_counts(mu, 1.0, binning=(2, 4), readout_area=area)
    bias_u = det.mean_counts(None, 0.0, readout_area=area).sum()
    bias_b = det.mean_counts(None, 0.0, binning=(2, 4), readout_area=area).sum()
    # on-chip binning conserves the signal: binned sum - bias once per readout pixel = unbinned sum - bias
    assert binned.sum() - bias_b == pytest.approx(unbinned.sum() - bias_u, rel=1e-5)
    noise = math.sqrt(frame.data.size * (det.photon_transfer_gain * binned.mean() * 8 + 40))
    assert abs(frame.data.astype(np.float64).sum() - binned.sum()) < 5 * noise
    # an image given over the area only is taken as continuing with its edge values beyond it
    uniform = np.full((128, 128), 500.0, dtype=np.float32)
    inner = det.mean_counts(uniform, 1.0, readout_area=area) - det.mean_counts(None, 1.0, readout_area=area)
    np.testing.assert_allclose(inner, G * 500.0 * det.gain_map[32:160, 64:192], rtol=1e-4)
    # timing (physics.md 2.3): full frame 0.3 s; vertically binned spectrum a few ms
    full = DetectorParameters()
    big = CCDDetector(full, rng=0, n_threads=1)
    assert big.readout_time_s() == pytest.approx(0.3, rel=1e-9)
    assert big.readout_time_s(binning=(2048, 1)) < 5e-3
    assert big.readout_time_s(binning=(2, 2)) < big.readout_time_s()


def test_lag1_correlation_equals_the_psf_autocorrelation() -> None:
    det = CCDDetector(SMALL, rng=10)
    level = 5000.0
    f1 = det.expose(flat(det, level), 1.0).data.astype(np.float64)
    f2 = det.expose(flat(det, level), 1.0).data.astype(np.float64)
    d = f1 - f2
    ref = reference_profile(SIGMA, 2.0, 0.3, 256)
    rho_psf = float(np.dot(ref[1:], ref[:-1]) / np.dot(ref, ref))
    v_sig = det.photon_transfer_gain * G * level
    v_dark = det.dark_variance_counts2(1.0)
    expected = rho_psf * v_sig / (v_sig + v_dark)
    rho_x = np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]
    rho_y = np.corrcoef(d[:-1].ravel(), d[1:].ravel())[0, 1]
    assert rho_x == pytest.approx(expected, abs=0.01)
    assert rho_y == pytest.approx(expected, abs=0.01)
    assert 0.3 < expected < 0.35


def test_psf_applied_to_the_mean_matches_a_direct_nearest_convolution() -> None:
    params = DetectorParameters(shape_px=(96, 128), psf_radius_px=40)
    det = CCDDetector(params, rng=0, n_threads=1)
    prof = reference_profile(SIGMA, 2.0, 0.3, 40)
    rng = np.random.default_rng(2)
    for mu in (
        rng.uniform(0, 100, (96, 128)),  # all rows distinct: FFT path along y
        np.repeat(rng.uniform(0, 100, (16, 128)), 6, axis=0),  # repeated rows: matrix path along y
    ):
        mu = mu.astype(np.float32)
        direct = ndimage.convolve1d(ndimage.convolve1d(mu.astype(np.float64), prof, axis=1, mode="nearest"), prof, axis=0, mode="nearest")
        expected = direct * G * det.gain_map + det.mean_counts(None, 1.0)
        np.testing.assert_allclose(det.mean_counts(mu, 1.0), expected, rtol=1e-4, atol=1e-3)


def test_gain_reference_corrects_the_gain_map_to_the_0_27_percent_residual() -> None:
    det = CCDDetector(SMALL, rng=12)
    ref = det.gain_reference()
    assert ref.dtype == np.float32 and ref.shape == SMALL.shape_px
    assert ref.mean() == pytest.approx(1.0, abs=1e-6)
    assert np.std(det.gain_map) == pytest.approx(SMALL.gain_nonuniformity, rel=0.05)
    residual = np.std(ref / det.gain_map)
    assert residual == pytest.approx(SMALL.gain_ref_residual, rel=0.1)
    # gain_normalized processing of the noise-free flat leaves only the reference residual
    t = 1.0
    dark_ref = det.dark_reference(t, 10)
    mean = det.mean_counts(flat(det, 5000.0), t)
    corrected = det.correct(mean, dark_ref, ref)
    assert corrected.dtype == np.float32
    before = np.std(mean - det.mean_counts(None, t)) / (G * 5000)
    after = np.std(corrected) / corrected.mean()
    assert before > 5 * after
    assert after == pytest.approx(SMALL.gain_ref_residual, rel=0.15)
    # a binned, area-cut raw frame is corrected with the unbinned reference
    raw = det.expose(flat(det, 2000.0), t, binning=(2, 2), readout_area=(0, 0, 128, 256)).data
    dref = det.dark_reference(t, 4, binning=(2, 2), area=(0, 0, 128, 256))
    out = det.correct(raw, dref, ref, binning=(2, 2), readout_area=(0, 0, 128, 256))
    assert out.shape == (64, 128)
    assert out.mean() == pytest.approx(4 * G * 2000, rel=0.005)


def test_correct_bins_the_reference_it_is_given_each_time() -> None:
    """`correct` keeps the binned reference between frames of one area and binning: a second frame
    gets the same numbers as the first, and a new reference (`refresh=True`) is binned anew."""
    det = CCDDetector(SMALL, rng=14)
    area, binning = (8, 0, 128, 256), (2, 2)
    raw = det.expose(flat(det, 2000.0), 1.0, binning=binning, readout_area=area).data
    dref = det.dark_reference(1.0, 2, binning=binning, area=area)

    def by_hand(ref: np.ndarray) -> np.ndarray:
        g = ref[8:128, :256].reshape(60, 2, 128, 2).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
        return (raw.astype(np.float32) - dref) / g

    old = det.gain_reference()
    first = det.correct(raw, dref, old, binning=binning, readout_area=area)
    assert np.array_equal(first, by_hand(old))
    assert np.array_equal(det.correct(raw, dref, old, binning=binning, readout_area=area), first)
    other = det.correct(raw[:, :64], dref[:, :64], old, binning=binning, readout_area=(8, 0, 128, 128))
    assert np.array_equal(other, by_hand(old)[:, :64])  # another area in between
    assert np.array_equal(det.correct(raw, dref, old, binning=binning, readout_area=area), first)
    new = det.gain_reference(refresh=True)
    assert not np.array_equal(new, old)
    again = det.correct(raw, dref, new, binning=binning, readout_area=area)
    assert np.array_equal(again, by_hand(new)) and not np.array_equal(again, first)


def test_dark_reference_noise_falls_as_one_over_sqrt_n() -> None:
    det = CCDDetector(SMALL, rng=13)
    t = 1.0
    truth = det.mean_counts(None, t)
    var_d = det.dark_variance_counts2(t)
    sd = {}
    for n in (1, 4, 16):
        sd[n] = float(np.std(det.dark_reference(t, n) - truth))
        assert sd[n] == pytest.approx(math.sqrt(var_d / n), rel=0.06)
    assert sd[1] / sd[4] == pytest.approx(2.0, rel=0.06)
    assert sd[1] / sd[16] == pytest.approx(4.0, rel=0.06)


def test_frames_depend_on_the_seed_only_not_on_threads() -> None:
    mu = np.repeat(np.geomspace(1, 1e4, 256)[None, :], 256, axis=0).astype(np.float32)
    a = CCDDetector(SMALL, rng=21, n_threads=1).expose(mu, 1.0).data
    b = CCDDetector(SMALL, rng=21, n_threads=2).expose(mu, 1.0).data
    c = CCDDetector(SMALL, rng=22, n_threads=2).expose(mu, 1.0).data
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_bad_input_is_refused() -> None:
    det = CCDDetector(SMALL, rng=0, n_threads=1)
    with pytest.raises(ValueError):
        det.expose(np.full((10, 10), 1.0), 1.0)  # neither sensor nor area shape
    with pytest.raises(ValueError):
        det.expose(np.full(SMALL.shape_px, -1.0), 1.0)
    with pytest.raises(ValueError):
        det.expose(np.full(SMALL.shape_px, np.nan), 1.0)
    with pytest.raises(ValueError):
        det.expose(None, 1.0, readout_area=(0, 0, 300, 10))
    with pytest.raises(ValueError):
        det.expose(None, 1.0, binning=(0, 1))
    with pytest.raises(ValueError):
        DetectorParameters(shape_px=(255, 256))
    with pytest.raises(ValueError):
        DetectorParameters(unknown=1)  # type: ignore[call-arg]


def test_table_gaussian_has_unit_variance_and_normal_shape() -> None:
    """The 2^16-bin inverse-CDF sampler: mean 0, variance 1, kurtosis 3 (to 2e-4), bounded at 4.39 sigma."""
    from insitem.simulators.detector import _gauss_table, _normals

    t = _gauss_table().astype(np.float64)
    assert t.mean() == pytest.approx(0.0, abs=1e-6)
    assert np.mean(t**2) == pytest.approx(1.0, abs=1e-6)
    assert np.mean(t**4) == pytest.approx(3.0, abs=2e-3)
    assert np.max(np.abs(t)) < 4.4
    x32 = _normals(np.random.Generator(np.random.SFC64(0)), (1000, 1000))
    assert x32.dtype == np.float32 and x32.shape == (1000, 1000)
    x = x32.astype(np.float64)
    assert abs(x.mean()) < 5e-3 and x.var() == pytest.approx(1.0, abs=5e-3)
    # quantiles of a normal law (Kolmogorov-Smirnov on a subsample)
    assert stats.kstest(x.ravel()[:20000], "norm").pvalue > 1e-3


def test_mean_of_n_frames_drawn_at_once_has_the_law_of_the_mean_of_n_frames() -> None:
    """The gain reference's flats and darks: one draw with n times the electrons, noise variances / n."""
    det = CCDDetector(SMALL, rng=13)
    area = (0, 0, 256, 256)
    n, level = 4, 800.0
    for mu in (None, flat(det, level)):
        looped = [np.mean([det.expose(mu, 1.0, beam_on=mu is not None).data for _ in range(n)], axis=0) for _ in range(2)]
        once = [det._mean_of_frames(None if mu is None else mu * n, 1.0, n, area) for _ in range(2)]
        var_looped = np.var(looped[0] - looped[1]) / 2
        var_once = np.var(once[0] - once[1]) / 2
        assert var_once == pytest.approx(var_looped, rel=0.04)
        assert once[0].mean() == pytest.approx(looped[0].mean(), abs=0.05 + 4 * math.sqrt(var_looped / 256**2 * 4))
    # signal variance of the mean: K_eff * signal / n on top of the dark variance / n
    expected = (det.photon_transfer_gain * G * level + det.dark_variance_counts2(1.0)) / n
    assert var_once == pytest.approx(expected, rel=0.04)
