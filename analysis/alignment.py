"""Energy alignment: common drift of a whole spectrum image and per-row non-isochromaticity.

physics.md §1.9: the energy offset drifts between exposures (0.1 eV/min + random walk; the whole
image moves together) and varies along the slit as ``dE(y) = c1 (y - y0) + c2 (y - y0)**2``
(~0.3 eV peak to peak). The analysis measures shifts and either recalibrates the axis (common
drift: `EnergyAxis.shifted`, exact and free) or resamples rows (per-row: `shift_rows`).

Sign convention everywhere: ``shift_eV > 0`` means the spectrum's features sit that far *above*
the reference's, i.e. spectrum(E) ~ reference(E - shift).

Cross-correlation uses the Gaussian-smoothed first derivative of each spectrum (scipy.ndimage),
which keeps edge onsets and fine structure and drops the smooth background that would otherwise
dominate the correlation. The correlation of all rows is one FFT (numpy) over the window; the
sub-channel peak is the vertex of the parabola through the three channels around the maximum.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from insitem.analysis.axes import AnalysisError, EnergyAxis, check_image


def _parabolic_vertex(y: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Sub-channel position of a maximum at integer index k of y (..., n): vertex of the 3-point parabola."""
    n = y.shape[-1]
    k = np.clip(k, 1, n - 2)
    ym = np.take_along_axis(y, (k - 1)[..., None], -1)[..., 0]
    y0 = np.take_along_axis(y, k[..., None], -1)[..., 0]
    yp = np.take_along_axis(y, (k + 1)[..., None], -1)[..., 0]
    den = ym - 2 * y0 + yp
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den < 0, 0.5 * (ym - yp) / den, 0.0)
    return k + np.clip(d, -0.5, 0.5)


def lsq_vertex(y: np.ndarray, k: np.ndarray, half_width: int) -> np.ndarray:
    """Sub-channel maximum near integer index k of y (..., n): vertex of the least-squares parabola
    through the 2 half_width + 1 channels around k (vectorised; the design matrix is the same for
    every spectrum, so the fit is one matrix product). Falls back to k where the fit has no maximum.
    """
    n = y.shape[-1]
    m = max(1, min(int(half_width), (n - 1) // 2))
    k = np.clip(k, m, n - 1 - m)
    x = np.arange(-m, m + 1, dtype=float)
    pinv = np.linalg.pinv(np.stack([np.ones_like(x), x, x * x], 1))  # (3, 2m+1)
    idx = k[..., None] + np.arange(-m, m + 1)
    seg = np.take_along_axis(y, idx, -1)
    coef = seg @ pinv.T
    b, c = coef[..., 1], coef[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(c < 0, -b / (2 * c), 0.0)
    return k + np.clip(d, -m, m)


def _prepare(x: np.ndarray, sigma_ch: float, derivative: bool) -> np.ndarray:
    """Smoothed (first-derivative) spectra with zero mean along the last axis."""
    out = gaussian_filter1d(np.asarray(x, dtype=float), sigma=max(sigma_ch, 1e-3), axis=-1, order=1 if derivative else 0, mode="nearest")
    return out - out.mean(axis=-1, keepdims=True)


def xcorr_shift(
    spectra: np.ndarray,
    reference: np.ndarray,
    energy: EnergyAxis,
    window_eV: tuple[float, float] | None = None,
    smooth_eV: float = 0.3,
    derivative: bool = True,
    max_shift_eV: float = 5.0,
) -> np.ndarray:
    """Shift (eV) of each spectrum against `reference` by cross-correlation, sub-channel.

    spectra: (..., n_energy); reference: (n_energy,) or broadcastable to spectra. Only
    `window_eV` is compared (default: the whole axis); shifts are searched within +/- max_shift_eV.
    Returns an array of the leading shape of `spectra` (a 0-d array for one spectrum).
    """
    s = check_image(spectra, energy)
    ref = check_image(reference, energy)
    sl = energy.window(*window_eV, min_channels=8) if window_eV is not None else slice(0, energy.size)
    sigma = smooth_eV / energy.scale_eV
    a = _prepare(s[..., sl], sigma, derivative)
    b = _prepare(ref[..., sl], sigma, derivative)
    n = a.shape[-1]
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    # c[k] = sum_m a[m + k] b[m]: peaks at k = shift in channels
    c = np.fft.irfft(np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)), nfft)
    m = min(int(np.ceil(max_shift_eV / energy.scale_eV)), n - 2)
    lags = np.concatenate([c[..., nfft - m :], c[..., : m + 1]], axis=-1)  # lags -m .. m
    k = np.argmax(lags, axis=-1)
    return (_parabolic_vertex(lags, k) - m) * energy.scale_eV


def edge_onset(
    spectra: np.ndarray, energy: EnergyAxis, window_eV: tuple[float, float], smooth_eV: float = 0.5
) -> np.ndarray:
    """Edge onset (eV) of each spectrum: the steepest rise (maximum of the smoothed derivative) in window_eV.

    This is the inflection point of the edge, a reproducible marker for alignment rather than the
    threshold energy itself; compare onsets of spectra measured the same way.
    """
    s = check_image(spectra, energy)
    sl = energy.window(*window_eV, min_channels=5)
    d = gaussian_filter1d(s[..., sl].astype(float), sigma=smooth_eV / energy.scale_eV, axis=-1, order=1, mode="nearest")
    k = np.argmax(d, axis=-1)
    return energy.values_eV[sl.start] + _parabolic_vertex(d, k) * energy.scale_eV


def image_drift(
    image: np.ndarray,
    reference: np.ndarray,
    energy: EnergyAxis,
    window_eV: tuple[float, float] | None = None,
    smooth_eV: float = 0.3,
    max_shift_eV: float = 5.0,
) -> float:
    """Common energy shift (eV) of a whole spectrum image (position, energy) against a reference.

    The rows are summed first (the drift moves the whole image together, physics.md §1.9), so the
    estimate uses every count. `reference` is a spectrum (n_energy,) or an image of the same kind.
    """
    img = check_image(image, energy)
    ref = check_image(reference, energy)
    s = img.reshape(-1, energy.size).sum(axis=0, dtype=float)
    r = ref.reshape(-1, energy.size).sum(axis=0, dtype=float)
    return float(xcorr_shift(s, r, energy, window_eV, smooth_eV, True, max_shift_eV))


def row_shifts(
    image: np.ndarray,
    energy: EnergyAxis,
    window_eV: tuple[float, float],
    fit_rows: np.ndarray | None = None,
    degree: int | None = 2,
    smooth_eV: float = 0.3,
    max_shift_eV: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row non-isochromaticity: (raw shifts, model shifts) in eV, each of shape (n_rows,).

    Each row is cross-correlated with the mean of the `fit_rows` (boolean mask; default all rows)
    in `window_eV`. With `degree` (default 2, the quadratic of physics.md §1.9) a polynomial in the
    row index is fitted to the raw shifts of the `fit_rows` and evaluated on every row, so rows
    whose spectra really change (a chemical shift near Pt) can be left out of the fit and still
    be corrected. `degree=None` returns the raw shifts as the model.
    """
    img = check_image(image, energy)
    if img.ndim != 2:
        raise AnalysisError(f"row_shifts needs a (position, energy) image, got shape {img.shape}")
    rows = np.arange(img.shape[0])
    mask = np.ones(img.shape[0], bool) if fit_rows is None else np.asarray(fit_rows, bool)
    if mask.sum() < (degree or 0) + 2:
        raise AnalysisError("row_shifts: too few fit rows for the polynomial degree")
    ref = img[mask].mean(axis=0)
    raw = xcorr_shift(img, ref, energy, window_eV, smooth_eV, True, max_shift_eV)
    if degree is None:
        return raw, raw.copy()
    coef = np.polynomial.polynomial.polyfit(rows[mask], raw[mask], degree)
    model = np.polynomial.polynomial.polyval(rows, coef)
    return raw, model - model[mask].mean()


def shift_rows(image: np.ndarray, shifts_eV: np.ndarray | float, energy: EnergyAxis) -> np.ndarray:
    """Undo per-row shifts: row i is resampled so that its features move down by shifts_eV[i].

    Linear interpolation between channels (vectorised gather); channels that would need data from
    beyond the axis take the end value. Linear interpolation conserves the total counts of a row up
    to the ends and broadens sharp features by at most one channel (a stated simplification; for a
    common drift prefer the exact `EnergyAxis.shifted`).
    """
    img = check_image(image, energy).astype(float)
    sh = np.broadcast_to(np.asarray(shifts_eV, float), img.shape[:-1]) / energy.scale_eV
    pos = np.arange(energy.size) + sh[..., None]
    i0 = np.clip(np.floor(pos).astype(int), 0, energy.size - 1)
    i1 = np.clip(i0 + 1, 0, energy.size - 1)
    f = np.clip(pos - np.floor(pos), 0.0, 1.0)
    f = np.where(pos < 0, 0.0, np.where(pos > energy.size - 1, 1.0, f))
    return (1 - f) * np.take_along_axis(img, i0, -1) + f * np.take_along_axis(img, i1, -1)
