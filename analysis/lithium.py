"""Li-K: integrated Li intensity along the slit, c/c0 profile, Li maximum and electrode width.

Li areal density in each row is taken proportional to the background-subtracted Li-K counts
(physics.md §1.8: Li-K amplitude proportional to c/c0), and c/c0 is that intensity over its mean
in the parent electrolyte far from Pt ([Y14]: c relative to the parent c0).

Plural scattering: at t/lambda ~ 0.5 the double plasmon (~49 eV in LASGTP) sits in the pre-edge
window and a power law fitted there cannot be extrapolated under Li-K. When a low-loss image (a
window holding the zero-loss peak) is given, the Li-K window is spliced onto it and deconvolved
(Fourier-log, `analysis.deconvolution`) first, and intensities are taken per zero-loss count
(single scattering per incident electron, proportional to the Li areal density). On the
single-scattering distribution (SSD) the background is the paper's power law (`pre_edge_eV`) or,
with `ssd_background="log_quadratic"`, ln B = a + b ln E + c (ln E)^2 fitted in `ssd_pre_edge_eV`
(40-54 eV) by Poisson-weighted least squares per row. The SSD's pre-edge is the Drude tail, whose
local slope falls from ~4.4 towards 3 above 2 Ep (physics.md §1.3, §1.6), so the straight power
law extrapolated from 44-50 eV under-subtracts 55-70 eV. Measured on the ex-situ dry run
(docs/decisions/0007): power law c/c0 25 % low in the electrode, RMS 10 % of the maximum;
log-quadratic 10 % high, RMS 5.6 %, but its sign and size of bias change with the electrode's
plasmon width and noise (noise-free it reads 12 % low), so it is not the default.

Without a low-loss image the recorded spectrum is used with a power law (valid only for thin
regions).

Simplifications (named, with limits): uniform thickness and t/lambda along the slit (a thickness
gradient scales c/c0 directly; a t/lambda map from the low-loss image would correct it);
features under the Li-K window that do not scale with Li (Ti M1 at 58.7 eV, the Ti M2,3 tail,
physics.md §1.6) count as Li, which compresses c/c0 towards 1 by their share of the parent
signal; Pt O3/O2 (51.7/65.3 eV) make rows inside and next to Pt unreliable, so rows inside Pt are
reported but excluded from the maximum and the width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import uniform_filter1d

from insitem.analysis.axes import EnergyAxis, PositionAxis
from insitem.analysis.background import EdgeIntensity, Method, edge_intensity
from insitem.analysis.deconvolution import DeconvolutionParams, single_scattering
from insitem.analysis.profiles import SlitGeometry, crossing_from_pt, parent_mask


class LiParams(BaseModel):
    """Windows and thresholds of the Li-K analysis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_edge_eV: tuple[float, float] = Field(
        default=(44.0, 50.0),
        description="power-law window; 44-50 eV is valid in and near Pt (Pt O3 at 51.7 eV), physics.md §1.6",
    )
    signal_eV: tuple[float, float] = Field(
        default=(55.0, 70.0),
        description="Li-K integration window from the onset (55 eV) to below Pt N7 (71.2) and Al L2,3 (72.5), §1.6/§1.8",
    )
    method: Method = "two_area"
    var_per_count: float = Field(default=1.0, gt=0, description="variance per count: 1 for electrons, g(1+nu2) for CCD counts (§2.5)")
    parent_distance_m: tuple[float, float] | None = Field(
        default=None, description="distance range from Pt of the parent electrolyte (m); None = farthest quarter"
    )
    width_threshold: float = Field(
        default=0.1,
        gt=0,
        description="electrode edge: excess c/c0 - 1 falls below this fraction of the maximum excess "
        "(10 % puts the [Y14] profile's edge at 381 nm, physics.md §3.5) or below this absolute excess",
    )
    width_threshold_mode: Literal["fraction_of_max_excess", "excess"] = "fraction_of_max_excess"
    max_smooth_rows: int = Field(default=3, ge=1, description="running mean over rows before taking the maximum (limits noise bias)")
    max_min_distance_m: float = Field(
        default=15e-9, ge=0,
        description="rows closer to Pt than this are left out of the maximum: the ~20 nm blur along the slit "
        "(physics.md §1.7) mixes Pt O3/O2 (51.7/65.3 eV) into them",
    )
    deconvolution: DeconvolutionParams = Field(default_factory=DeconvolutionParams)
    ssd_pre_edge_eV: tuple[float, float] = Field(
        default=(40.0, 54.0), description="log-quadratic background window on the deconvolved spectrum (module docstring)"
    )
    ssd_background: Literal["power_law", "log_quadratic"] = Field(
        default="power_law",
        description="background on the deconvolved spectrum: the paper's power law in pre_edge_eV, or log-quadratic in ssd_pre_edge_eV",
    )


@dataclass(frozen=True)
class LiProfile:
    """Li-K profile along the slit. Arrays are per row; distances in m from the Pt interface."""

    distance_m: np.ndarray
    edge: EdgeIntensity
    c_rel: np.ndarray  # c/c0 per row
    c_rel_sigma: np.ndarray  # 1-sigma of c/c0 from counting noise (parent level taken as exact)
    parent_rows: np.ndarray  # bool mask
    parent_counts: float  # mean Li-K counts per row in the parent region
    c_max: float  # maximum c/c0 in the electrolyte (after the running mean)
    c_max_distance_m: float
    threshold_c_rel: float  # c/c0 level that defines the electrode edge
    electrode_width_m: float  # distance from Pt at which c/c0 falls below threshold_c_rel


def li_profile(
    image: np.ndarray,
    energy: EnergyAxis,
    position: PositionAxis,
    geometry: SlitGeometry,
    params: LiParams | None = None,
    lowloss: tuple[np.ndarray, EnergyAxis] | None = None,
) -> LiProfile:
    """Li-K profile of a Li-K-window spectrum image (position, energy).

    lowloss: (image, energy axis) of an exposure of the same rows that holds the zero-loss peak;
    given, the profile is measured on the single-scattering distribution (module docstring)."""
    p = params or LiParams()
    d = geometry.distance_from_pt_m(position)
    parent = parent_mask(d, p.parent_distance_m)
    if lowloss is None:
        edge = edge_intensity(image, energy, p.pre_edge_eV, p.signal_eV, p.method, p.var_per_count)
        level = float(np.mean(edge.intensity[parent]))
        c = edge.intensity / level
        cs = edge.sigma / abs(level)
    else:
        ss = single_scattering(lowloss[0], lowloss[1], image, energy, p.deconvolution)
        v = p.var_per_count * ss.scale  # variance per SSD count
        if p.ssd_background == "log_quadratic":
            raw = _log_quadratic_edge(ss.ssd, ss.energy, p.ssd_pre_edge_eV, p.signal_eV, v)
        else:
            raw = edge_intensity(ss.ssd, ss.energy, p.pre_edge_eV, p.signal_eV, p.method, v)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_i0 = 1.0 / ss.i0
        edge = EdgeIntensity(intensity=raw.intensity * per_i0, sigma=raw.sigma * per_i0,
                             background=raw.background * per_i0, h_factor=raw.h_factor, window_eV=raw.window_eV,
                             fit=raw.fit)
        level = float(np.nanmean(edge.intensity[parent]))
        c = edge.intensity / level
        cs = edge.sigma / abs(level)
    electrolyte = d >= 0
    smooth = uniform_filter1d(c, p.max_smooth_rows, mode="nearest") if p.max_smooth_rows > 1 else c
    masked = np.where(electrolyte & (d >= p.max_min_distance_m), smooth, -np.inf)
    imax = int(np.argmax(masked))
    c_max = float(smooth[imax])
    if p.width_threshold_mode == "fraction_of_max_excess":
        thr = 1.0 + p.width_threshold * (c_max - 1.0)
    else:
        thr = 1.0 + p.width_threshold
    width = crossing_from_pt(d, smooth, thr)
    return LiProfile(
        distance_m=d,
        edge=edge,
        c_rel=c,
        c_rel_sigma=cs,
        parent_rows=parent,
        parent_counts=level,
        c_max=c_max,
        c_max_distance_m=float(d[imax]),
        threshold_c_rel=thr,
        electrode_width_m=width,
    )


def _log_quadratic_edge(
    data: np.ndarray, energy: EnergyAxis, pre_eV: tuple[float, float], signal_eV: tuple[float, float], var_per_count: float
) -> EdgeIntensity:
    """Edge counts over a background ln B = a + b x + c x^2 (x = ln E), Poisson-weighted, all rows at once.

    Weights n_k / v for ln n_k (Var ln n = v / n); the background's variance in the signal window
    is g^T C g with C the weighted-least-squares covariance and g = dB_sum / d(a, b, c)."""
    pre = energy.window(*pre_eV, min_channels=8)
    sig = energy.window(*signal_eV)
    E = energy.values_eV
    x0 = float(np.log(np.mean(energy.window_edges_eV(pre))))  # centred for conditioning
    xp, xs = np.log(E[pre]) - x0, np.log(E[sig]) - x0
    Xp = np.stack([np.ones_like(xp), xp, xp * xp], axis=1)  # (k, 3)
    Xs = np.stack([np.ones_like(xs), xs, xs * xs], axis=1)
    y = np.clip(data[:, pre], 1e-12, None)
    w = y / var_per_count  # (rows, k)
    A = np.einsum("rk,ki,kj->rij", w, Xp, Xp)  # (rows, 3, 3)
    b = np.einsum("rk,ki,rk->ri", w, Xp, np.log(y))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        C = np.linalg.inv(A)
        coef = np.einsum("rij,rj->ri", C, b)
        B = np.exp(coef @ Xs.T)  # (rows, signal channels)
        N = data[:, sig].sum(axis=1)
        Bsum = B.sum(axis=1)
        g = B @ Xs  # d Bsum / d coef
        var_B = np.einsum("ri,rij,rj->r", g, C, g)
        S = N - Bsum
        sigma = np.sqrt(var_per_count * np.maximum(N, 0.0) + var_B)
        h = 1.0 + var_B / (var_per_count * Bsum)
    return EdgeIntensity(intensity=S, sigma=sigma, background=Bsum, h_factor=h, window_eV=energy.window_edges_eV(sig), fit=None)
