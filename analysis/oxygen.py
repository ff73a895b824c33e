"""O-K: peak a and peak b energies per row and the O-O distance from peak b.

[Y14] (physics.md §0, §1.8): O-K threshold 529.0 eV, peak a ~538 eV, peak b ~558-565 eV (a
multiple-scattering resonance, FWHM ~8 eV [est]) obeying (E_b - 529.0 eV) R**2 = 2.820 eV nm**2,
R = O-O distance (0.280 nm parent -> 0.310 nm in the electrode; R = 0.310 nm gives 558.34 eV, §7
check 5).

Per row, vectorised over all rows:

1. Background: the pre-edge power law (485-525 eV, §1.6) is subtracted from 485 eV to the end of
   the axis. The power law fitted below the O-K edge also carries the Ti-L continuum, which it
   only approximates (§1.6 fits them jointly [est]).
2. Plural scattering: every edge carries a plasmon replica ~25 eV above it with t/lambda of its
   area (§1.4); the replica of peak a (538 + 24.7 eV) falls on peak b and pulls a fitted peak b
   towards ~563 eV (measured on a dry run: +0.004 nm in the parent, -0.004 nm next to Pt). It is
   removed by Fourier-log deconvolution with a model single-plasmon shape, K_hat = J_hat
   exp(-t/lambda p_hat) (p = unit-area Drude single-scattering distribution, §1.3: Ep 24.7 eV,
   dEp 8 eV, beta 10 mrad), which is exact for a Poisson series of plasmons of that shape and, the
   shape being causal, needs only the spectrum below each energy. t/lambda is given or estimated:
   the value on a grid (0-1) that minimises the summed residual of the peak-b fits of row groups
   (spectra of 8 adjacent electrolyte rows), because the right value leaves each group's peak b a
   Gaussian on a smooth baseline. Simplification: the plasmon shape is the model's, not measured
   (a low-loss acquisition, §1.10 step 0, would give it; these run files have none).
3. Ti L1 (560.9 eV, §1.6) is a step under peak b: it rises inside the electrode's peak b
   (558.3 eV) and pulls a fitted E_b up (R short by ~0.7 pm next to Pt, measured noise-free on
   the ex-situ sample). Its height is fitted on the row groups (a Gaussian-broadened step,
   `ti_l1_width_eV`, flat above the onset, added to the peak-b model below) and the median height per
   O-K count is subtracted from every row before the per-row fit. Simplification: the Ti/O ratio is
   the same in every electrolyte row (true of LASGTP, whose Li insertion changes neither) and the
   L1 onset carries no chemical shift.
4. Peak b: least squares of a Gaussian (position E_b, FWHM w) plus a quadratic baseline over
   546-580 eV; the linear parameters are projected out (one QR per candidate E_b, shared by all
   rows), E_b scanned on a 0.1 eV grid over the search window and refined by the parabola through
   the residual sum of squares (RSS) at the minimum. w is given or estimated with t/lambda (same
   criterion). Noise: Var(E_b) = 2 s**2 / RSS''(E_b), s**2 = RSS / (n - 4) from the row's own
   scatter (so detector gain and read noise are included), propagated to R by dR/dE_b =
   -R / (2 (E_b - 529.0 eV)).
5. Row window: the spectra are averaged over `row_window` adjacent electrolyte rows (default 7 =
   40 nm; Pt rows are left out of the mean) before the peak-b fit. [Y14] does not state its row
   binning; the choice is ours. It costs little resolution because the O-K image is already blurred
   along y by chromatic aberration, a cusp of rms 15 nm reaching 46 nm at 560 eV (Cc 2 mm, beta
   10 mrad, §1.7): a 40 nm box (rms 11.5 nm) widens the rms to 19 nm. On the
   ex-situ dry run (5 noise seeds) 7 rows give a largest electrode-row error of 1.8-2.3 pm against
   1.4-2.9 pm for 5 rows. The same blur mixes the R of neighbouring rows; next to Pt, where R
   changes fastest, that alone moves R by ~0.001 nm.
6. Peak a: maximum of minus the Gaussian-smoothed second derivative (blind to a linear baseline)
   inside its window, sub-channel by a least-squares parabola through the top of the lobe. The
   same estimator is available for peak b (peak_b_method="second_derivative").

Limits: the replica of peak b itself lies mostly above the fit window. Noise-free, a bias of up
to 0.9 pm remains in the electrode rows 30-100 nm from Pt (R short); its cause is not located (not
the Ti L1 step, the plasmon width or the row window, each tried).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import gaussian_filter1d, uniform_filter1d
from scipy.special import erf

from insitem.analysis.alignment import lsq_vertex
from insitem.analysis.axes import AnalysisError, EnergyAxis, PositionAxis, check_image
from insitem.analysis.background import Method, PowerLawFit, fit_power_law
from insitem.analysis.profiles import SlitGeometry

O_K_THRESHOLD_EV = 529.0  # [Y14], physics.md §0
PEAK_B_LAW_EV_NM2 = 2.820  # (E_b - 529.0 eV) R^2, [Y14], physics.md §0
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_TWO_GAMMA_T_EV = 489.0e3  # 2 gamma T at 300 kV, physics.md §1.1


def oo_distance_m(peak_b_eV: np.ndarray | float, threshold_eV: float = O_K_THRESHOLD_EV, law_eV_nm2: float = PEAK_B_LAW_EV_NM2) -> np.ndarray:
    """O-O distance R (m) from the peak-b energy: R = sqrt(2.820 eV nm^2 / (E_b - 529.0 eV)) [Y14]."""
    de = np.asarray(peak_b_eV, float) - threshold_eV
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(de > 0, np.sqrt(law_eV_nm2 / np.where(de > 0, de, 1.0)) * 1e-9, np.nan)


def peak_b_eV(r_m: np.ndarray | float, threshold_eV: float = O_K_THRESHOLD_EV, law_eV_nm2: float = PEAK_B_LAW_EV_NM2) -> np.ndarray:
    """Inverse of `oo_distance_m`: E_b = 529.0 + 2.820 / R^2 (R in nm) [Y14]."""
    r_nm = np.asarray(r_m, float) * 1e9
    return threshold_eV + law_eV_nm2 / (r_nm * r_nm)


class OParams(BaseModel):
    """Windows, plural-scattering model and peak-b fit of the O-K analysis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_edge_eV: tuple[float, float] = Field(default=(485.0, 525.0), description="power-law window, physics.md §1.6")
    method: Method = "two_area"
    peak_a_window_eV: tuple[float, float] = Field(default=(535.0, 542.0), description="search window of peak a (~538 eV [Y14])")
    peak_b_window_eV: tuple[float, float] = Field(default=(552.0, 570.0), description="search window of peak b (558-565 eV, §1.8)")
    smooth_a_eV: float = Field(default=1.0, gt=0, description="Gaussian sigma for peak a (FWHM ~4 eV, §1.8 [est])")
    smooth_b_eV: float = Field(default=2.0, gt=0, description="Gaussian sigma for peak b, second_derivative method only")
    peak_b_method: Literal["gauss_fit", "second_derivative"] = "gauss_fit"
    fit_window_eV: tuple[float, float] = Field(default=(546.0, 580.0), description="peak-b Gaussian + quadratic fit range")
    peak_b_fwhm_eV: float | None = Field(
        default=None, gt=0, description="Gaussian FWHM of peak b; None = estimated (8 eV [est] before broadening, §1.8)"
    )
    row_window: int = Field(default=7, ge=1, description="running mean over this many electrolyte rows before the peak-b fit")
    t_over_lambda: float | None = Field(
        default=None, ge=0, description="plasmon deconvolution strength; None = estimated, 0 = none (§1.4: 0.51 at 100 nm)"
    )
    ti_l1_eV: float | None = Field(
        default=560.9, description="Ti L1 onset under peak b (physics.md §1.6), fitted as a step; None = not modelled"
    )
    ti_l1_width_eV: float = Field(default=0.4, gt=0, description="Gaussian sigma of the Ti L1 onset (energy resolution)")
    plasmon_eV: float = Field(default=24.7, gt=0, description="Drude plasmon energy, §1.3 (LATP/LASGTP)")
    plasmon_width_eV: float = Field(default=8.0, gt=0, description="Drude damping dEp, §1.3 [est]")
    beta_rad: float = Field(default=10e-3, gt=0, description="collection semi-angle for the Drude angular factor")
    threshold_eV: float = O_K_THRESHOLD_EV
    law_eV_nm2: float = PEAK_B_LAW_EV_NM2


@dataclass(frozen=True)
class OResult:
    """O-K per row: peak energies (eV), O-O distance (m) and its 1-sigma noise, the range over the electrolyte."""

    distance_m: np.ndarray
    peak_a_eV: np.ndarray
    peak_b_eV: np.ndarray
    peak_b_sigma_eV: np.ndarray  # counting-noise 1-sigma of peak_b_eV (NaN for the second_derivative method)
    oo_distance_m: np.ndarray
    oo_sigma_m: np.ndarray
    oo_range_m: tuple[float, float]  # (min, max) over electrolyte rows
    t_over_lambda: float  # used for the plasmon deconvolution
    ti_l1_share: float  # Ti L1 step height subtracted under peak b, per mean count of the fit window
    peak_b_fwhm_eV: float  # used in the Gaussian fit (NaN for second_derivative)
    fit: PowerLawFit


def locate_peaks(
    signal: np.ndarray, energy: EnergyAxis, window_eV: tuple[float, float], smooth_eV: float
) -> np.ndarray:
    """Energy (eV) of the strongest peak inside window_eV in each background-subtracted spectrum.

    Maximum of minus the Gaussian-smoothed second derivative, sub-channel by a least-squares parabola. The
    smoothing runs on the whole given range, so give spectra that extend a few sigma beyond the window.
    """
    s = check_image(signal, energy).astype(float)
    d2 = -gaussian_filter1d(s, sigma=smooth_eV / energy.scale_eV, axis=-1, order=2, mode="nearest")
    sl = energy.window(*window_eV, min_channels=3)
    seg = d2[..., sl]
    k = np.argmax(seg, axis=-1)
    # refine on a +/- 1 smoothing-sigma neighbourhood: the whole top of the lobe votes, not 3 channels
    return energy.values_eV[sl.start] + lsq_vertex(seg, k, round(smooth_eV / energy.scale_eV)) * energy.scale_eV


def plasmon_ssd(n: int, scale_eV: float, plasmon_eV: float, width_eV: float, beta_rad: float) -> np.ndarray:
    """Unit-sum single-plasmon loss distribution on channels 0..n-1 of `scale_eV` (channel 0 = 0 eV).

    Drude ELF times the angular factor ln(1 + beta^2/theta_E^2), theta_E = E/(2 gamma T) (§1.3).
    """
    e = np.arange(n) * scale_eV
    e[0] = 1.0  # replaced below; avoids 0/0
    elf = plasmon_eV**2 * e * width_eV / ((e**2 - plasmon_eV**2) ** 2 + (e * width_eV) ** 2)
    p = elf * np.log1p((beta_rad * _TWO_GAMMA_T_EV / e) ** 2)
    p[0] = 0.0
    return p / p.sum()


def deconvolve_plasmons(spectra: np.ndarray, p: np.ndarray, t_over_lambda: float | np.ndarray) -> np.ndarray:
    """Fourier-log removal of plural plasmon scattering: K_hat = J_hat exp(-t/lambda p_hat).

    spectra (..., n) start at an energy below which the signal is zero; p is the unit-sum plasmon
    shape from `plasmon_ssd` (length >= n). Zero padding to >= 2 n keeps the circular convolution
    causal over the returned n channels. An array t_over_lambda adds its shape as leading axes.
    """
    n = spectra.shape[-1]
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    ph = np.fft.rfft(p[:n], nfft)
    tau = np.asarray(t_over_lambda, float)
    kern = np.exp(-tau[..., None] * ph)  # (*tau.shape, nfreq)
    kern = kern.reshape(tau.shape + (1,) * (spectra.ndim - 1) + (ph.size,))
    return np.fft.irfft(np.fft.rfft(spectra, nfft) * kern, nfft)[..., :n]


def _design(E: np.ndarray, centres: np.ndarray, fwhm: np.ndarray, step: np.ndarray | None = None) -> np.ndarray:
    """Columns [Gaussian(centre, fwhm), 1, x, x^2(, step)] on E: shape (*fwhm.shape, n_centres, n, 4 or 5)."""
    x = (E - E.mean()) / np.ptp(E)
    s = np.asarray(fwhm, float)[..., None, None] / _FWHM_PER_SIGMA
    G = np.exp(-0.5 * ((E - centres[:, None]) / s) ** 2)
    cols = [G] + [np.broadcast_to(x**k, G.shape) for k in range(3)]
    if step is not None:
        cols.append(np.broadcast_to(step, G.shape))
    return np.stack(cols, -1)


def _projectors(E: np.ndarray, centres: np.ndarray, fwhm: np.ndarray, step: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal bases of the `_design` columns on E: shape (*fwhm.shape, n_centres, n, 4 or 5)."""
    q, _ = np.linalg.qr(_design(E, centres, fwhm, step))
    return q


def ti_l1_step(E: np.ndarray, onset_eV: float, sigma_eV: float) -> np.ndarray:
    """Unit-height Ti L1 edge: a step at the onset broadened by a Gaussian of `sigma_eV`, flat above.

    Flat is the hydrogenic L1 shape over the ~30 eV of the peak-b fit (its decay there is a few %,
    which the quadratic baseline takes up)."""
    return 0.5 * (1.0 + erf((E - onset_eV) / (np.sqrt(2.0) * sigma_eV)))


def _l1_share(K: np.ndarray, E: np.ndarray, centres: np.ndarray, fwhm: float, step: np.ndarray) -> float:
    """Median over the spectra K (groups, n) of the fitted Ti L1 step height per mean count of K.

    Each spectrum is fitted with Gaussian + quadratic + step at its best peak-b centre."""
    rss = _rss(K, _projectors(E, centres, np.asarray(fwhm), step))
    X = _design(E, centres, np.asarray(fwhm), step)[np.argmin(rss, axis=-1)]  # (groups, n, 5)
    h = np.array([np.linalg.lstsq(x, y, rcond=None)[0][-1] for x, y in zip(X, K)])
    with np.errstate(divide="ignore", invalid="ignore"):
        share = h / K.mean(axis=-1)
    share = share[np.isfinite(share)]
    return float(np.median(share)) if share.size else 0.0


def _rss(Y: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """RSS of each spectrum Y (m, n) after projection on each basis Q (K, n, p) -> (m, K); one matrix product."""
    K, n, npar = Q.shape
    proj = (Y @ Q.transpose(1, 0, 2).reshape(n, K * npar)).reshape(Y.shape[0], K, npar)
    return (Y * Y).sum(-1)[:, None] - (proj * proj).sum(-1)


def _vertex(rss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid index of the minimum along the last axis, its parabolic offset (grid steps) and the curvature."""
    k = np.clip(np.argmin(rss, axis=-1), 1, rss.shape[-1] - 2)
    a = np.take_along_axis(rss, (k - 1)[..., None], -1)[..., 0]
    b = np.take_along_axis(rss, k[..., None], -1)[..., 0]
    c = np.take_along_axis(rss, (k + 1)[..., None], -1)[..., 0]
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den > 0, np.clip(0.5 * (a - c) / den, -1.0, 1.0), 0.0)
    return k, off, den


_TAU_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 10)
_FWHM_GRID = np.arange(5.0, 14.01, 1.0)
_GROUP_ROWS = 8


def _estimate_tau_fwhm(
    K0: np.ndarray, p: np.ndarray, fw_sl: slice, E: np.ndarray, centres: np.ndarray, params: OParams,
    step: np.ndarray | None = None,
) -> tuple[float, float]:
    """(t/lambda, FWHM) minimising the summed peak-b RSS of row-group spectra K0 (groups, n)."""
    taus = _TAU_GRID if params.t_over_lambda is None else np.array([params.t_over_lambda])
    fws = _FWHM_GRID if params.peak_b_fwhm_eV is None else np.array([params.peak_b_fwhm_eV])
    Kt = deconvolve_plasmons(K0, p, taus)[..., fw_sl]  # (tau, groups, n)
    Qs = [_projectors(E, centres, np.asarray(w), step) for w in fws]
    m = Kt.shape[1]
    # summed over the groups of each group's best peak-b position, for every (tau, fwhm)
    flat = Kt.reshape(-1, Kt.shape[-1])
    tot = np.stack([_rss(flat, Q).min(-1).reshape(taus.size, m).sum(-1) for Q in Qs], -1)  # (tau, fwhm)
    i, j = np.unravel_index(np.argmin(tot), tot.shape)
    tau = float(taus[i])
    if taus.size > 2 and 0 < i < taus.size - 1:
        a, b, c = tot[i - 1, j], tot[i, j], tot[i + 1, j]
        if a - 2 * b + c > 0:
            tau += float(np.clip(0.5 * (a - c) / (a - 2 * b + c), -1, 1)) * (taus[1] - taus[0])
    return tau, float(fws[j])


def _row_mean(Y: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """Running mean over `size` rows of Y (rows, n), counting only the rows where `rows` is True."""
    w = rows.astype(float)[:, None]
    num = uniform_filter1d(Y * w, size, axis=0, mode="constant")
    den = uniform_filter1d(w, size, axis=0, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), Y)


def _correlation_factor(Y: np.ndarray, Qk: np.ndarray, rows: np.ndarray, max_lag: int = 6) -> float:
    """Variance inflation 1 + 2 sum_k rho_k (lags 1..max_lag) of the fit residuals, pooled over `rows`.

    The detector PSF correlates neighbouring channels (physics.md §2.2), so a broad feature's
    position scatters more than white noise of the same per-channel variance would make it; the
    pooled residual autocorrelation measures that. Model misfit adds positive correlation, so the
    factor errs on the large side. Returns 1 when there are no rows.
    """
    if not rows.any():
        return 1.0
    y = Y[rows]
    q = Qk[rows]
    res = y - np.einsum("rnp,rp->rn", q, np.einsum("rn,rnp->rp", y, q))
    v = float(np.mean(res * res))
    if v <= 0:
        return 1.0
    rho = [float(np.mean(res[:, :-j] * res[:, j:])) / v for j in range(1, max_lag + 1)]
    return max(1.0, 1.0 + 2.0 * sum(rho))


def o_analysis(
    image: np.ndarray,
    energy: EnergyAxis,
    position: PositionAxis,
    geometry: SlitGeometry,
    params: OParams | None = None,
) -> OResult:
    """O-K analysis of a core-window spectrum image (position, energy)."""
    p = params or OParams()
    img = check_image(image, energy)
    if img.ndim != 2:
        raise AnalysisError(f"o_analysis needs a (position, energy) image, got shape {img.shape}")
    fit = fit_power_law(img, energy, p.pre_edge_eV, p.method)
    d = geometry.distance_from_pt_m(position)
    inside = d < 0
    # peak a: second derivative on the background-subtracted spectra around its window
    margin = 4.0 * p.smooth_a_eV
    sla = energy.window(max(p.peak_a_window_eV[0] - margin, float(energy.boundary_eV(0))), p.peak_a_window_eV[1] + margin)
    ea = locate_peaks(img[:, sla] - fit.channel_counts(energy, sla), energy.sub(sla), p.peak_a_window_eV, p.smooth_a_eV)

    # peak b: background-subtracted from the pre-edge start to the axis end
    sl = slice(energy.window(*p.pre_edge_eV).start, energy.size)
    J = img[:, sl] - fit.channel_counts(energy, sl)
    sub = energy.sub(sl)
    if p.peak_b_method == "second_derivative":
        if p.row_window > 1:
            J = _row_mean(J, ~inside, p.row_window)
        eb = locate_peaks(J, sub, p.peak_b_window_eV, p.smooth_b_eV)
        eb_sigma = np.full_like(eb, np.nan)
        tau, fwhm, l1_share = 0.0, float("nan"), 0.0
    else:
        fw_sl = sub.window(*p.fit_window_eV, min_channels=8)
        E = sub.values_eV[fw_sl]
        centres = np.arange(p.peak_b_window_eV[0], p.peak_b_window_eV[1] + 1e-9, 0.1)
        pshape = plasmon_ssd(sub.size, sub.scale_eV, p.plasmon_eV, p.plasmon_width_eV, p.beta_rad)
        el = np.flatnonzero(~inside)
        step = None if p.ti_l1_eV is None else ti_l1_step(E, p.ti_l1_eV, p.ti_l1_width_eV)
        groups = None
        if p.t_over_lambda is None or p.peak_b_fwhm_eV is None or step is not None:
            if el.size < 3:
                raise AnalysisError("o_analysis: fewer than 3 electrolyte rows to estimate t/lambda, the peak-b width and Ti L1")
            groups = np.stack([J[g].mean(axis=0) for g in np.array_split(el, max(1, el.size // _GROUP_ROWS))])
        if p.t_over_lambda is not None and p.peak_b_fwhm_eV is not None:
            tau, fwhm = p.t_over_lambda, p.peak_b_fwhm_eV
        else:
            assert groups is not None
            tau, fwhm = _estimate_tau_fwhm(groups, pshape, fw_sl, E, centres, p, step)
        K = deconvolve_plasmons(J, pshape, tau)[:, fw_sl] if tau > 0 else J[:, fw_sl]
        l1_share = 0.0
        if step is not None:
            assert groups is not None
            Kg = deconvolve_plasmons(groups, pshape, tau)[:, fw_sl] if tau > 0 else groups[:, fw_sl]
            l1_share = _l1_share(Kg, E, centres, fwhm, step)
            # the same Ti L1 height per O-K count in every row (uniform Ti/O ratio along the slit)
            K = K - l1_share * K.mean(axis=-1, keepdims=True) * step
        if p.row_window > 1:
            K = _row_mean(K, ~inside, p.row_window)
        Q = _projectors(E, centres, np.asarray(fwhm))
        rss = _rss(K, Q)
        k, off, curv = _vertex(rss)
        step = centres[1] - centres[0]
        eb = centres[k] + off * step
        rss_min = np.take_along_axis(rss, k[:, None], -1)[:, 0]
        s2 = np.maximum(rss_min, 0.0) / (E.size - 4)
        corr = _correlation_factor(K, Q[k], ~inside)
        with np.errstate(divide="ignore", invalid="ignore"):
            eb_sigma = np.sqrt(2.0 * s2 * corr / (curv / step**2))
    ea = np.where(inside, np.nan, ea)
    eb = np.where(inside, np.nan, eb)
    r = oo_distance_m(eb, p.threshold_eV, p.law_eV_nm2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_sigma = np.abs(r / (2.0 * (eb - p.threshold_eV))) * eb_sigma
    rr = r[~inside]
    rng = (float(np.nanmin(rr)), float(np.nanmax(rr))) if np.isfinite(rr).any() else (float("nan"), float("nan"))
    return OResult(
        distance_m=d,
        peak_a_eV=ea,
        peak_b_eV=eb,
        peak_b_sigma_eV=np.where(inside, np.nan, eb_sigma),
        oo_distance_m=r,
        oo_sigma_m=np.where(inside, np.nan, r_sigma),
        oo_range_m=rng,
        t_over_lambda=float(tau),
        peak_b_fwhm_eV=float(fwhm),
        ti_l1_share=float(l1_share),
        fit=fit,
    )
