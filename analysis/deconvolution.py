"""Single-scattering distribution of the Li-K region: splice a low-loss and a Li-K window, Fourier-log.

Why: at t/lambda ~ 0.5 the double plasmon (2 Ep ~ 49 eV for LASGTP, physics.md §1.3-1.4) peaks
inside the Li-K pre-edge window (44-53 eV), so a power law fitted to the recorded spectrum there
is nearly flat (r < 1) and its extrapolation under Li-K is wrong by more than the edge. Hofer &
Kothleitner (Microsc. Microanal. Microstruct. 4 (1993) 539) give the remedy used here: record a
spectrum that includes the zero-loss peak, remove plural scattering by Fourier-log deconvolution
(Egerton [S:EG11] §4.2), then fit the conventional A E^-r background to the single-scattering
distribution (SSD), whose pre-edge is the Drude tail with r ~ 4 (physics.md §1.6).

The Li-K window (35-240 eV, long exposure) does not contain the zero-loss peak, and a window that
does (short exposure, below saturation) is too noisy at the Li-K edge, so the two are spliced
(the DualEELS arrangement): the low-loss window below `join_eV`, the Li-K window, scaled to the
low-loss window's exposure, above it. The scale is the median over rows of the ratio of the two
windows in the overlap, so it needs no beam-current record.

Fourier-log (Egerton eq. 4.11, vectorised over rows): with J the spliced spectrum and Z its
zero-loss part (channels below the first minimum after the ZLP), on the same channel grid,

    s(E) = IFFT[ G(nu) * I0 * ln(J(nu) / Z(nu)) ],   I0 = sum Z,

G the Fourier transform of a unit-area Gaussian of the ZLP's width (it bounds the noise
amplification where Z(nu) is small). The principal-branch complex log is exact because
|ln(J/Z)| = |s(nu)|/I0 <= t/lambda < pi. The SSD's channel j is a loss of j * dispersion exactly,
because J and Z share their grid (the absolute calibration cancels). The top end is extended
by a power law fitted to the last 15 eV and tapered to zero, and the array is zero-padded, so
the periodic transform does not wrap the spectrum's end onto its start.

Simplifications (named): the two windows are exposed one after the other, not simultaneously,
so an energy drift between them shifts the Li-K part relative to the ZLP (a shift of the Li-K
edge in the SSD by the drift, harmless to the integrated intensity); the zero-loss part is cut
at a minimum, so valence losses below it (band gap ~3.5 eV) count as zero loss; the Gaussian
resolution G broadens the SSD by the ZLP width (~0.5 eV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import fft as sfft

from insitem.analysis.axes import AnalysisError, EnergyAxis, check_image
from insitem.analysis.background import fit_power_law


class DeconvolutionParams(BaseModel):
    """Splice and Fourier-log settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    join_eV: float = Field(default=40.0, description="below: low-loss window; above: the scaled Li-K window")
    overlap_eV: tuple[float, float] = Field(
        default=(38.0, 50.0), description="where both windows are compared for the scale (below the Li-K onset)"
    )
    zlp_search_eV: tuple[float, float] = Field(
        default=(0.5, 8.0), description="the zero-loss part ends at the minimum of the mean spectrum in this loss range"
    )
    tail_fit_eV: float = Field(default=15.0, gt=0, description="power law fitted to the last eV of the spectrum")
    resolution_fwhm_eV: float | None = Field(
        default=None, description="FWHM of the Gaussian G; None = the measured ZLP FWHM, at least 2 channels"
    )


@dataclass(frozen=True)
class SingleScattering:
    """Per-row single-scattering distributions on `energy` (channel j at loss j * dispersion).

    ssd: counts per channel in the low-loss window's exposure units; i0: zero-loss counts per row;
    t_over_lambda: ln(I_total/I0) per row; scale: Li-K window -> low-loss window factor (the
    variance per SSD count is about scale x the Li-K window's variance per count)."""

    ssd: np.ndarray
    energy: EnergyAxis
    i0: np.ndarray
    t_over_lambda: np.ndarray
    scale: float


def _channel(axis: EnergyAxis, e: float) -> int:
    """Index of the channel boundary nearest e, clipped to the axis."""
    return int(np.clip(axis.edge_index(e), 0, axis.size))


def splice(
    lowloss: np.ndarray, ll_energy: EnergyAxis, edge: np.ndarray, edge_energy: EnergyAxis, params: DeconvolutionParams
) -> tuple[np.ndarray, EnergyAxis, float]:
    """One spectrum per row from the low-loss window's start to the Li-K window's end (low-loss units)."""
    check_image(lowloss, ll_energy)
    check_image(edge, edge_energy)
    if lowloss.shape[0] != edge.shape[0]:
        raise AnalysisError(f"low-loss and Li-K images have {lowloss.shape[0]} and {edge.shape[0]} rows")
    d = ll_energy.scale_eV
    if abs(edge_energy.scale_eV - d) > 1e-9 * d:
        raise AnalysisError("low-loss and Li-K windows need the same dispersion to be spliced")
    lo, hi = params.overlap_eV
    if not (edge_energy.offset_eV <= lo and ll_energy.offset_eV + d * ll_energy.size >= hi):
        raise AnalysisError(f"the windows do not overlap over {lo:g}-{hi:g} eV")
    # the Li-K window on the low-loss grid (linear interpolation for a fractional offset)
    shift = (edge_energy.offset_eV - ll_energy.offset_eV) / d
    n_total = int(np.floor(shift + edge_energy.size))
    whole = int(round(shift))
    edge_on_grid = np.zeros((edge.shape[0], n_total), dtype=np.float32)  # counts: < 7 significant digits
    if abs(shift - whole) < 1e-6:  # the usual case: offsets a whole number of channels apart
        edge_on_grid[:, whole:] = edge[:, : n_total - whole]
    else:
        pos = np.arange(n_total) - shift
        j = np.clip(np.floor(pos).astype(np.intp), 0, edge_energy.size - 2)
        f = np.clip(pos - j, 0.0, 1.0)
        edge_on_grid = edge[:, j] * (1.0 - f) + edge[:, j + 1] * f
    a, b = _channel(ll_energy, lo), _channel(ll_energy, hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = lowloss[:, a:b].sum(axis=1) / edge_on_grid[:, a:b].sum(axis=1)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if ratios.size == 0:
        raise AnalysisError("no signal in the overlap of the low-loss and Li-K windows")
    scale = float(np.median(ratios))
    joined = edge_on_grid
    joined *= np.float32(scale)
    jn = _channel(ll_energy, params.join_eV)
    joined[:, :jn] = lowloss[:, :jn]
    axis = EnergyAxis(offset_eV=ll_energy.offset_eV, scale_eV=d, size=n_total)
    return joined, axis, scale


def fourier_log(spectra: np.ndarray, energy: EnergyAxis, params: DeconvolutionParams | None = None) -> SingleScattering:
    """SSD of spectra (rows, channels) that contain the zero-loss peak (see module docstring)."""
    p = params or DeconvolutionParams()
    check_image(spectra, energy)
    J = np.asarray(spectra)
    n_rows, n = J.shape
    d = energy.scale_eV
    E = energy.values_eV
    mean = J.mean(axis=0)
    if not (E[0] < 0.0 < E[-1]):
        raise AnalysisError("Fourier-log deconvolution needs a spectrum that contains the zero-loss peak")
    peak = int(np.argmax(np.where(np.abs(E) < 3.0, mean, -np.inf)))
    s_lo, s_hi = np.searchsorted(E, E[peak] + p.zlp_search_eV[0]), np.searchsorted(E, E[peak] + p.zlp_search_eV[1])
    cut = s_lo + int(np.argmin(mean[s_lo:s_hi]))
    Z = np.asarray(J[:, :cut], dtype=np.float32)  # the zero-loss part; zero beyond `cut`
    I0 = Z.sum(axis=1, dtype=np.float64)
    # ZLP FWHM from the mean spectrum (channels above half maximum)
    above = np.nonzero(mean[:cut] >= 0.5 * mean[peak])[0]
    fwhm = max((above[-1] - above[0] + 1) * d, 2 * d)
    fwhm = p.resolution_fwhm_eV or fwhm
    # extend the top end: power law fitted to the last tail_fit_eV, tapered to zero over n channels
    tail = EnergyAxis(offset_eV=float(E[-1] - p.tail_fit_eV), scale_eV=d, size=int(round(p.tail_fit_eV / d)))
    tail_data = J[:, n - tail.size :]
    n_ext = n // 2
    E_ext = E[-1] + d * (np.arange(n_ext) + 1)
    fit = fit_power_law(tail_data, tail, (float(tail.values_eV[0]), float(tail.values_eV[-1])), "two_area")
    r = np.nan_to_num(np.asarray(fit.r, float).reshape(n_rows, 1), nan=3.0)
    last = np.maximum(tail_data[:, -8:].mean(axis=1, keepdims=True), 0.0)
    ext = last * (E_ext[None, :] / E[-1]) ** (-np.clip(r, 0.0, 8.0))
    ext *= 0.5 * (1.0 + np.cos(np.pi * np.arange(n_ext) / n_ext))[None, :]
    # padding beyond the taper keeps the periodic transform from wrapping the end onto the start;
    # single precision: counts carry < 7 significant digits and the log ratio is O(t/lambda)
    P = sfft.next_fast_len(n + n_ext + n // 4, real=True)
    full = np.zeros((n_rows, P), dtype=np.float32)
    full[:, :n] = J
    full[:, n : n + n_ext] = ext
    Jh = sfft.rfft(full, axis=1, overwrite_x=True)
    del full
    nu = np.arange(Jh.shape[1]) / (P * d)  # cycles per eV
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    G = np.exp(-2.0 * (np.pi * sigma * nu) ** 2)
    # ln(J/Z) in place in Jh (one complex rows x P/2 array alive besides Z's transform)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        Jh /= sfft.rfft(Z, n=P, axis=1)
        np.log(Jh, out=Jh)
    Jh[~np.isfinite(Jh)] = 0.0
    Jh *= (G[None, :] * I0[:, None]).astype(np.float32)
    ssd = sfft.irfft(Jh, n=P, axis=1, overwrite_x=True)[:, :n].astype(float)
    del Jh
    with np.errstate(invalid="ignore", divide="ignore"):
        tl = np.log(J.sum(axis=1, dtype=np.float64) / I0)
    # channel j of the SSD is a loss of j*d: an axis whose centres are 0, d, 2d, ...
    axis = EnergyAxis(offset_eV=0.0, scale_eV=d, size=n)
    return SingleScattering(ssd=ssd, energy=axis, i0=I0, t_over_lambda=tl, scale=1.0)


def single_scattering(
    lowloss: np.ndarray,
    ll_energy: EnergyAxis,
    edge: np.ndarray,
    edge_energy: EnergyAxis,
    params: DeconvolutionParams | None = None,
) -> SingleScattering:
    """Splice a low-loss and a Li-K window and return the SSD (the Li-K analysis input)."""
    p = params or DeconvolutionParams()
    joined, axis, scale = splice(lowloss, ll_energy, edge, edge_energy, p)
    s = fourier_log(joined, axis, p)
    return SingleScattering(ssd=s.ssd, energy=s.energy, i0=s.i0, t_over_lambda=s.t_over_lambda, scale=scale)
