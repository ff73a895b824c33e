"""O-K: peak a and peak b energies per row and the O-O distance from peak b.

[Y14] (physics.md §0, §1.8): O-K threshold 529.0 eV, peak a ~538 eV, peak b ~558-565 eV (a
multiple-scattering resonance, FWHM ~8 eV [est]) obeying (E_b - 529.0 eV) R**2 = 2.820 eV nm**2,
R = O-O distance (0.280 nm parent -> 0.310 nm in the electrode; R = 0.310 nm gives 558.34 eV, §7
check 5).

Peak location per row (vectorised over all rows): background subtraction with the pre-edge power
law (485-525 eV, §1.6), Gaussian smoothing combined with the second derivative (one scipy
gaussian_filter1d call, order=2), the maximum of -d2/dE2 inside the peak window, refined to
sub-channel by a least-squares parabola through the top of the lobe. The second derivative is blind to any linear
baseline, so the sloping O-K continuum and an imperfect power-law extrapolation do not pull the
peak, and for a symmetric peak the extremum of its smoothed second derivative is at its centre.
Limits: an asymmetric peak or an unresolved neighbour (Ti L1 at 560.9 eV, §1.6; the plasmon
replica of peak a ~25 eV above it, §1.4) moves the reported position by a fraction of their
overlap; the power law fitted below the O-K edge also carries the Ti-L continuum, which it
only approximates (§1.6 fits them jointly [est]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import gaussian_filter1d

from insitem.analysis.alignment import lsq_vertex
from insitem.analysis.axes import AnalysisError, EnergyAxis, PositionAxis, check_image
from insitem.analysis.background import Method, PowerLawFit, fit_power_law
from insitem.analysis.profiles import SlitGeometry

O_K_THRESHOLD_EV = 529.0  # [Y14], physics.md §0
PEAK_B_LAW_EV_NM2 = 2.820  # (E_b - 529.0 eV) R^2, [Y14], physics.md §0


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
    """Windows and smoothing of the O-K analysis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_edge_eV: tuple[float, float] = Field(default=(485.0, 525.0), description="power-law window, physics.md §1.6")
    method: Method = "two_area"
    peak_a_window_eV: tuple[float, float] = Field(default=(535.0, 542.0), description="search window of peak a (~538 eV [Y14])")
    peak_b_window_eV: tuple[float, float] = Field(default=(552.0, 570.0), description="search window of peak b (558-565 eV, §1.8)")
    smooth_a_eV: float = Field(default=1.0, gt=0, description="Gaussian sigma for peak a (FWHM ~4 eV, §1.8 [est])")
    smooth_b_eV: float = Field(default=2.0, gt=0, description="Gaussian sigma for peak b (FWHM ~8 eV, §1.8 [est])")
    threshold_eV: float = O_K_THRESHOLD_EV
    law_eV_nm2: float = PEAK_B_LAW_EV_NM2


@dataclass(frozen=True)
class OResult:
    """O-K per row: peak energies (eV), O-O distance (m), and the distance range over the electrolyte."""

    distance_m: np.ndarray
    peak_a_eV: np.ndarray
    peak_b_eV: np.ndarray
    oo_distance_m: np.ndarray
    oo_range_m: tuple[float, float]  # (min, max) over electrolyte rows
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
    margin = 4.0 * max(p.smooth_a_eV, p.smooth_b_eV)
    lo = max(p.peak_a_window_eV[0] - margin, float(energy.boundary_eV(0)))
    hi = min(p.peak_b_window_eV[1] + margin, float(energy.boundary_eV(energy.size)))
    sl = energy.window(lo, hi)
    sub_axis = energy.sub(sl)
    sig = img[:, sl] - fit.channel_counts(energy, sl)
    ea = locate_peaks(sig, sub_axis, p.peak_a_window_eV, p.smooth_a_eV)
    eb = locate_peaks(sig, sub_axis, p.peak_b_window_eV, p.smooth_b_eV)
    d = geometry.distance_from_pt_m(position)
    inside = d < 0
    ea = np.where(inside, np.nan, ea)
    eb = np.where(inside, np.nan, eb)
    r = oo_distance_m(eb, p.threshold_eV, p.law_eV_nm2)
    rr = r[~inside]
    rng = (float(np.nanmin(rr)), float(np.nanmax(rr))) if np.isfinite(rr).any() else (float("nan"), float("nan"))
    return OResult(distance_m=d, peak_a_eV=ea, peak_b_eV=eb, oo_distance_m=r, oo_range_m=rng, fit=fit)
