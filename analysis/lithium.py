"""Li-K: integrated Li intensity along the slit, c/c0 profile, Li maximum and electrode width.

Li areal density in each row is taken proportional to the background-subtracted Li-K counts
(physics.md §1.8: Li-K amplitude proportional to c/c0), and c/c0 is that intensity over its mean
in the parent electrolyte far from Pt ([Y14]: c relative to the parent c0).

Plural scattering: at t/lambda ~ 0.5 the double plasmon (~49 eV in LASGTP) sits in the pre-edge
window and a power law fitted there cannot be extrapolated under Li-K. When a low-loss image (a
window holding the zero-loss peak) is given, the Li-K window is spliced onto it and deconvolved
(Fourier-log, `analysis.deconvolution`) first, and intensities are taken per zero-loss count
(single scattering per incident electron, proportional to the Li areal density).

Background on the SSD (default `ssd_background="parent_scaled"`, docs/decisions/0018): the parent's
mean SSD, scaled to each row over `parent_scale_eV` (44-54 eV, below the Li-K onset), is that row's
background; the remainder is the row's excess over the parent (the Li-K of c - c0, plus Pt next to
Pt). Everything under Li-K that is not Li and scales with the host cancels: the Drude tail, the
delayed Ti M2,3 with its maximum near 47 eV (physics.md §1.8), Ti M1. A power law cannot follow
that pre-edge: on the simulated 100 nm LASGTP column a power law fitted in 44-53 eV extrapolates
above the parent's whole Li-K signal. The c0 unit comes from the reference fit below (MLLS of the
parent's SSD with the electrode's excess as the Li-K reference, from 52 eV, past the Ti M2,3
maximum: from 44 eV the smooth background cannot follow the M2,3 hump and the unit comes out 12 %
low noise-free; 50 eV 1.5 %, 52 eV 0.2 %). Rows next to Pt are unmixed with a Pt reference as below.

Alternatives on the SSD: the paper's power law (`pre_edge_eV`) or,
with `ssd_background="log_quadratic"`, ln B = a + b ln E + c (ln E)^2 fitted in `ssd_pre_edge_eV`
(40-54 eV) by Poisson-weighted least squares per row. The SSD's pre-edge is the Drude tail, whose
local slope falls from ~4.4 towards 3 above 2 Ep (physics.md §1.3, §1.6), so the straight power
law extrapolated from 44-50 eV under-subtracts 55-70 eV. Measured on the ex-situ dry run
(docs/decisions/0007): power law c/c0 25 % low in the electrode, RMS 10 % of the maximum;
log-quadratic 10 % high, RMS 5.6 %, but its sign and size of bias change with the electrode's
plasmon width and noise (noise-free it reads 12 % low), so it is not the default.

The parent level (the c0 unit). Features under the Li-K window that do not scale with Li (Ti M1
at 58.7 eV, the Ti M2,3 tail, the Drude tail's curvature beyond the power law; physics.md §1.6)
survive the power-law subtraction as a residual that is the same in every row of a uniform
electrolyte. Taking the parent's power-law edge counts as c0 counts that residual as Li and
compresses c/c0 towards 1 (noise-free on the ex-situ sample: residual 0.40 of the parent's Li,
a true 8.5 reads 6.4). With `parent_level="reference_fit"` (the default when a low-loss image is
given) the parent's Li is measured by a multiple linear least-squares fit instead: the
electrode-minus-parent difference of the power-law-subtracted mean SSDs is a Li-K reference that
holds no non-Li feature (those cancel in the difference), and the parent's mean SSD over
`reference_fit_eV` is fitted with exp(quadratic in ln E) + gamma x reference + a generic step
for each non-Li edge in `reference_fit_edges_eV` (Ti M1 at 58.7 eV: `shallow_edge`). gamma x
(electrode minus parent edge counts) is then the parent's Li in edge counts, and
c/c0 = 1 + (S_row - S_parent) / that. The smooth background absorbs the Drude curvature; the Ti M1
step, which rises within 3 eV of the Li-K onset, needs its own term (docs/decisions/0011).
Without it, 6 % of the parent's Li is Ti M1 noise-free. That share does not fall as the beam
removes Li, so c/c0 would drift down over an in-situ run (0.96 -> 0.89 of the truth in the dry
run). The step's shape is generic; the simulator uses the same one, so the dry run's accuracy is
an upper bound for real data. The fit needs an electrode whose excess is significant
(`reference_min_excess_sigma`); without one the profile falls back to the parent's
power-law counts and says so in `LiProfile.parent_level`.

Pt spill (`pt_unmix`, docs/decisions/0009). The blur along the slit (chromatic: a cusp of rms
~1 nm reaching ~5 nm at 50-65 eV, physics.md §1.7; plus the detector's PSF) carries Pt O3/O2
(51.7/65.3 eV) from the Pt rows into the first electrolyte rows, where the edge counts read it as
Li (dry run: 13.8 c0 at 4 nm where the truth is 8.5), and as the beam removes Li but not Pt that
spill grows in c0 units over a run. Each row's power-law-subtracted SSD minus the parent's is
therefore fitted over `pt_fit_eV` by linear least squares with two references, the Li-K reference
above and a Pt reference (rows `pt_reference_m` inside Pt minus the parent); the O3 edge below the
Li-K onset separates them. c/c0 = 1 + alpha x (electrode minus parent edge counts) / parent level.
The fit runs on every row: the smooth Pt reference also takes up the power-law extrapolation error,
so the parent's scatter drops (0.22 -> 0.06 c0 on the ex-situ dry run).

Without a low-loss image the recorded spectrum is used with a power law (valid only for thin
regions).

Simplifications (named, with limits): uniform thickness and t/lambda along the slit (a thickness
gradient scales c/c0 directly; a t/lambda map from the low-loss image would correct it);
the reference fit assumes the non-Li part of the SSD is the same in the electrode and parent
rows (same thickness, host and plasmon) and takes the electrode's Li-K shape as the parent's;
mixtures of Pt and electrolyte spectra are treated as linear after the per-row power-law
subtraction and deconvolution (both are non-linear in a mixed row); rows inside Pt read ~1 (no Li
excess) and are excluded from the maximum and the width; each row is deconvolved as one column,
but the chromatic blur along the slit grows with the loss (rms 0.5 nm at the plasmon, 1.0 nm at the
double plasmon for Cc = 2 mm, beta = 10 mrad: a cusp, physics.md §1.7), so next to a sharp change
of the valence spectrum a row holds its neighbours' spectra in shares that change with energy,
which Fourier-log does not undo. At the simulated in-situ electrode's edge (plasmon width 9 eV
against 8 eV) that reads -0.10/+0.08 c0 on the last row before and the first row after it,
noise-free, about 0.1 c0 per eV of width difference (docs/decisions/0012); no correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import uniform_filter1d
from scipy.optimize import least_squares

from insitem.analysis.axes import EnergyAxis, PositionAxis, check_image
from insitem.analysis.background import EdgeIntensity, Method, edge_intensity, fit_power_law, power_law_integral
from insitem.analysis.deconvolution import DeconvolutionParams, SingleScattering, fourier_log, single_scattering
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
        default=30e-9, ge=0,
        description="rows closer to Pt than this are left out of the maximum and of the Li-K reference: the "
        "blur along the slit (physics.md §1.7) and the detector PSF mix Pt O3/O2 (51.7/65.3 eV) into them, and the located interface "
        "is uncertain by up to ~2 rows (11 nm)",
    )
    deconvolution: DeconvolutionParams = Field(default_factory=DeconvolutionParams)
    ssd_pre_edge_eV: tuple[float, float] = Field(
        default=(40.0, 54.0), description="log-quadratic background window on the deconvolved spectrum (module docstring)"
    )
    ssd_background: Literal["parent_scaled", "power_law", "log_quadratic"] = Field(
        default="parent_scaled",
        description="background on the deconvolved spectrum: the parent's mean SSD scaled to each row in "
        "parent_scale_eV (module docstring), the paper's power law in pre_edge_eV, or log-quadratic in ssd_pre_edge_eV",
    )
    parent_scale_eV: tuple[float, float] = Field(
        default=(44.0, 54.0),
        description="window below the Li-K onset (55 eV) where the parent's SSD is scaled to each row (parent_scaled)",
    )
    parent_level: Literal["power_law", "reference_fit"] = Field(
        default="reference_fit",
        description="how the parent's Li (the c0 unit) is measured when a low-loss image is given: its power-law "
        "edge counts, or the MLLS fit with the electrode-minus-parent Li-K reference (module docstring)",
    )
    reference_fit_eV: tuple[float, float] = Field(
        default=(52.0, 71.0),
        description="MLLS window on the parent's SSD: from 5 eV past the delayed Ti M2,3 maximum (~47 eV, physics.md "
        "§1.8), where the non-Li background falls monotonically, to below Pt N7 (71.2 eV, §1.6)",
    )
    reference_fit_edges_eV: tuple[float, ...] = Field(
        default=(58.7,),
        description="onsets of non-Li edges fitted alongside the Li-K reference in the parent's MLLS fit (Ti M1, "
        "58.7 eV, physics.md §1.6), each a step rising over reference_fit_edge_rise_eV and falling as E^-3",
    )
    reference_fit_edge_rise_eV: float = Field(default=3.0, gt=0, description="rise width of those edge steps (eV)")
    reference_min_excess_sigma: float = Field(
        default=20.0, gt=0, description="the electrode's mean excess over the parent must exceed this many sigma for a reference fit"
    )
    pt_unmix: bool = Field(
        default=True, description="with the reference fit, take each row's Li excess from the two-reference Li-K + Pt "
        "fit (module docstring) when the field holds rows inside Pt",
    )
    pt_reference_m: tuple[float, float] = Field(
        default=(-150e-9, -30e-9), description="distance range (m, negative = inside Pt) of the rows whose mean makes "
        "the Pt reference: clear of the blur at the interface and of the W cap beyond the ~200 nm Pt layer",
    )
    pt_fit_eV: tuple[float, float] = Field(
        default=(50.0, 71.0), description="two-reference fit window: Pt O3 (51.7 eV) below the Li-K onset, to below Pt N7 (71.2 eV)"
    )


@dataclass(frozen=True)
class LiProfile:
    """Li-K profile along the slit. Arrays are per row; distances in m from the Pt interface."""

    distance_m: np.ndarray
    edge: EdgeIntensity
    c_rel: np.ndarray  # c/c0 per row
    c_rel_sigma: np.ndarray  # 1-sigma of c/c0 from counting noise (parent level taken as exact; unmixed: scaled to the parent's scatter)
    parent_rows: np.ndarray  # bool mask
    parent_counts: float  # mean Li-K counts per row in the parent region
    c_max: float  # maximum c/c0 in the electrolyte (after the running mean)
    c_max_distance_m: float
    threshold_c_rel: float  # c/c0 level that defines the electrode edge
    electrode_width_m: float  # distance from Pt at which c/c0 falls below threshold_c_rel
    parent_level: str = "power_law"  # how parent_counts was measured ("power_law" or "reference_fit")
    non_li_fraction: float = 0.0  # share of the parent's power-law edge counts that is not Li (reference fit)
    pt_share: np.ndarray | None = None  # per row, Pt share of the two-reference fit (1 = a Pt-reference row); None = not unmixed


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
    method, non_li, pt_share = "power_law", 0.0, None
    d = geometry.distance_from_pt_m(position)
    parent = parent_mask(d, p.parent_distance_m)
    if lowloss is None:
        edge = edge_intensity(image, energy, p.pre_edge_eV, p.signal_eV, p.method, p.var_per_count)
        level = float(np.mean(edge.intensity[parent]))
        c = edge.intensity / level
        cs = edge.sigma / abs(level)
    elif p.ssd_background == "parent_scaled":
        ss = single_scattering(lowloss[0], lowloss[1], image, energy, p.deconvolution)
        edge, c, cs, method, non_li, pt_share, level = _parent_scaled(ss, d, parent, p)
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
        if p.parent_level == "reference_fit":
            spec = ss.ssd * per_i0[:, None]
            fitted = li_reference(spec, ss.energy, edge, c, d, parent, p, v * per_i0)
            if fitted is not None:
                non_li = level / fitted.level - 1.0
                level, method = fitted.level, "reference_fit"
                c = 1.0 + (edge.intensity - float(np.nanmean(edge.intensity[parent]))) / level
                cs = edge.sigma / level
                mix = pt_unmix(spec, ss.energy, d, fitted, p, v * per_i0) if p.pt_unmix else None
                if mix is not None:
                    pt_share = mix.beta
                    c, cs = mix.li_concentration(fitted.excess, level, parent)
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
        parent_level=method,
        non_li_fraction=non_li,
        pt_share=pt_share,
    )


def _parent_scaled(
    ss: SingleScattering, d: np.ndarray, parent: np.ndarray, p: LiParams
) -> tuple[EdgeIntensity, np.ndarray, np.ndarray, str, float, np.ndarray | None, float]:
    """c/c0 from the SSD with the parent's own spectrum as the background (module docstring).

    Every row's SSD per zero-loss count minus the parent's mean SSD scaled to it over
    `parent_scale_eV` is its excess over the parent: the Li-K of (c - c0), plus Pt next to Pt. The
    non-Li features under Li-K (Drude tail, the delayed Ti M2,3 with its maximum near 47 eV, Ti M1)
    cancel as far as they scale together. The c0 unit (the parent's own Li) comes from the MLLS fit
    of the parent's SSD with the electrode's excess as the Li-K reference (`_excess_reference`); Pt
    rows are unmixed with a Pt reference (`_pt_unmix_excess`). Returns (edge, c, sigma, method,
    non-Li share, Pt share, c0 unit in edge counts)."""
    energy = ss.energy
    with np.errstate(invalid="ignore", divide="ignore"):
        per_i0 = 1.0 / ss.i0
    spec = ss.ssd * per_i0[:, None]
    var = p.var_per_count * ss.scale * per_i0  # per row: variance of spec per unit of spec
    pre = energy.window(*p.parent_scale_eV, min_channels=8)
    sig = energy.window(*p.signal_eV)
    m_par = np.nanmean(spec[parent], axis=0)
    k = spec[:, pre].sum(axis=1) / m_par[pre].sum()
    resid = spec - k[:, None] * m_par[None, :]
    S = resid[:, sig].sum(axis=1)
    n_par = max(int(parent.sum()), 1)
    sigma = np.sqrt(var * (np.maximum(spec[:, sig].sum(axis=1), 0.0)
                           + k**2 * (np.nanmean(var[parent]) / var) * m_par[sig].sum() / n_par))
    edge = EdgeIntensity(intensity=S, sigma=sigma, background=k * m_par[sig].sum(), h_factor=np.ones_like(S),
                         window_eV=energy.window_edges_eV(sig), fit=None)
    # fallback unit: the parent's power-law edge counts
    pl = edge_intensity(spec[parent].mean(axis=0, keepdims=True), energy, p.pre_edge_eV, p.signal_eV, p.method)
    level_pl = float(pl.intensity[0])
    c = 1.0 + S / level_pl
    cs = sigma / abs(level_pl)
    ref = _excess_reference(energy, spec, resid, S, sigma, d, parent, p, var, m_par) if p.parent_level == "reference_fit" else None
    if ref is None:
        return edge, c, cs, "power_law", 0.0, None, level_pl
    level = ref.level
    c = 1.0 + S / level
    cs = sigma / level
    pt_share = None
    if p.pt_unmix:
        mix = _pt_unmix_excess(energy, resid, spec, d, ref, p, var)
        if mix is not None:
            pt_share = mix.beta
            c, cs = mix.li_concentration(ref.excess, level, parent)
    return edge, c, cs, "reference_fit", level_pl / level - 1.0, pt_share, level


def _excess_reference(
    energy: EnergyAxis, spec: np.ndarray, resid: np.ndarray, S: np.ndarray, sigma: np.ndarray, d: np.ndarray,
    parent: np.ndarray, p: LiParams, var: np.ndarray, m_par: np.ndarray,
) -> LiReference | None:
    """Li-K reference = mean excess of the electrode rows (beyond max_min_distance_m, smoothed excess
    above half its maximum), and the parent's Li by the MLLS fit of the parent's SSD over
    reference_fit_eV: exp(quadratic in ln E) + gamma x reference + a step per non-Li edge; the
    parent's Li in edge counts is gamma x the reference's edge counts. None without a significant electrode."""
    far = (d >= p.max_min_distance_m) & np.isfinite(S)
    if not far.any() or parent.sum() < 3:
        return None
    smooth = uniform_filter1d(np.nan_to_num(S), p.max_smooth_rows, mode="nearest")
    peak = float(np.max(smooth[far]))
    elec = far & (smooth > 0.5 * peak) & ~parent
    if elec.sum() < 3 or peak <= 0:
        return None
    excess = float(np.nanmean(S[elec]) - np.nanmean(S[parent]))
    ex_sigma = float(np.hypot(np.sqrt(np.nansum(sigma[elec] ** 2)) / elec.sum(),
                              np.sqrt(np.nansum(sigma[parent] ** 2)) / parent.sum()))
    if not excess > p.reference_min_excess_sigma * ex_sigma:
        return None
    E = energy.values_eV
    ref = np.nanmean(resid[elec], axis=0) - np.nanmean(resid[parent], axis=0)
    ref = np.where(E >= p.parent_scale_eV[1], ref, 0.0)  # zero where the rows were scaled together
    gamma = _reference_share(energy, m_par, ref, float(np.nanmean(var[parent])), int(parent.sum()), p)
    if gamma is None:
        return None
    return LiReference(level=gamma * excess, ref=ref, parent_minus_pl=np.zeros(energy.size), excess=excess)


def _reference_share(energy: EnergyAxis, m_par: np.ndarray, ref: np.ndarray, var_parent: float, n_parent: int,
                     p: LiParams) -> float | None:
    """Share gamma of the Li reference `ref` in the parent's mean spectrum over
    `p.reference_fit_eV`: weighted least squares of exp(quadratic in ln E) + gamma ref + the
    shallow edges, with Poisson weights of the parent mean; None when the fit fails or gamma <= 0."""
    E = energy.values_eV
    win = energy.window(*p.reference_fit_eV, min_channels=16)
    x = np.log(E[win] / E[win].mean())
    y, r = m_par[win], ref[win]
    sd = np.sqrt(np.maximum(var_parent * np.maximum(y, 0.0) / n_parent, 1e-300))
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(r)) and np.all(y > 0)):
        return None
    # weighted least squares of ln y for the starting background (reference share taken as 0)
    start = np.polyfit(x, np.log(y), 2, w=y / sd)
    Ew = E[win]
    edges = [shallow_edge(Ew, onset, p.reference_fit_edge_rise_eV) for onset in p.reference_fit_edges_eV]
    scale = [float(np.max(y)) / max(float(np.max(g)), 1e-300) for g in edges]

    def res(q: np.ndarray) -> np.ndarray:
        model = np.exp(np.polyval(q[:3], x)) + q[3] * r
        for k, g in enumerate(edges):
            model = model + q[4 + k] * scale[k] * g
        return (model - y) / sd

    fit = least_squares(res, np.r_[start, 0.0, np.zeros(len(edges))], x_scale="jac")
    gamma = float(fit.x[3])
    return gamma if fit.success and gamma > 0 else None


def _pt_unmix_excess(
    energy: EnergyAxis, resid: np.ndarray, spec: np.ndarray, d: np.ndarray, ref: LiReference, p: LiParams,
    var: np.ndarray,
) -> PtUnmix | None:
    """Each row's excess over the parent fitted over pt_fit_eV with the Li-K reference and a Pt
    reference (mean excess of the rows in pt_reference_m), by weighted linear least squares."""
    pt = (d >= p.pt_reference_m[0]) & (d <= p.pt_reference_m[1])
    if pt.sum() < 3:
        return None
    win = energy.window(*p.pt_fit_eV, min_channels=16)
    R = resid[:, win]
    pt_ref = np.nanmean(R[pt], axis=0)
    G = np.stack([ref.ref[win], pt_ref], axis=1)
    w = 1.0 / np.maximum(np.nanmean(spec[:, win], axis=0), 1e-300)
    M = np.linalg.solve(G.T @ (w[:, None] * G), (G * w[:, None]).T)
    coef = R @ M.T
    a_var = var * (np.maximum(spec[:, win], 0.0) @ (M[0] ** 2))
    return PtUnmix(alpha=coef[:, 0], beta=coef[:, 1], alpha_sigma=np.sqrt(a_var))


@dataclass(frozen=True)
class LiReference:
    """Result of the reference fit: the parent's Li in edge counts, the Li-K reference (power-law-
    subtracted electrode minus parent mean, per channel, zero below the pre-edge's end), the parent's
    power-law-subtracted mean (same channels) and the electrode-minus-parent edge counts."""

    level: float
    ref: np.ndarray
    parent_minus_pl: np.ndarray
    excess: float


def shallow_edge(E_eV: np.ndarray, onset_eV: float, rise_eV: float) -> np.ndarray:
    """Generic shape of a shallow non-Li edge (an s-shell step such as Ti M1): zero below the
    onset, rising as 1 - exp(-(E - onset)/rise), falling as (onset/E)^3 above; peak-free, unit scale."""
    return np.where(E_eV > onset_eV, -np.expm1(-(E_eV - onset_eV) / rise_eV) * (onset_eV / np.maximum(E_eV, onset_eV)) ** 3, 0.0)


def parent_li_by_reference(
    spec: np.ndarray, energy: EnergyAxis, edge: EdgeIntensity, c_pre: np.ndarray, d: np.ndarray,
    parent: np.ndarray, p: LiParams, var: np.ndarray,
) -> float | None:
    """The parent's Li in edge-count units (per zero-loss count) by the MLLS fit of the module
    docstring, or None when there is no significant electrode to take the reference from.

    spec: SSD per zero-loss count (rows, channels); edge: its power-law edge counts; c_pre: c/c0
    against the parent's power-law counts; var: per row, variance of spec per unit of spec."""
    r = li_reference(spec, energy, edge, c_pre, d, parent, p, var)
    return None if r is None else r.level


def li_reference(
    spec: np.ndarray, energy: EnergyAxis, edge: EdgeIntensity, c_pre: np.ndarray, d: np.ndarray,
    parent: np.ndarray, p: LiParams, var: np.ndarray,
) -> LiReference | None:
    """`parent_li_by_reference` with the reference spectra it builds (arguments as there)."""
    far = (d >= p.max_min_distance_m) & np.isfinite(c_pre)
    if not far.any() or parent.sum() < 3:
        return None
    smooth = uniform_filter1d(np.nan_to_num(c_pre, nan=1.0), p.max_smooth_rows, mode="nearest")
    peak = float(np.max(smooth[far]))
    elec = far & (smooth > 1.0 + 0.5 * (peak - 1.0)) & ~parent
    if elec.sum() < 3:
        return None
    S = edge.intensity
    excess = float(np.nanmean(S[elec]) - np.nanmean(S[parent]))
    ex_sigma = float(np.hypot(np.sqrt(np.nansum(edge.sigma[elec] ** 2)) / elec.sum(),
                              np.sqrt(np.nansum(edge.sigma[parent] ** 2)) / parent.sum()))
    if not excess > p.reference_min_excess_sigma * ex_sigma:
        return None
    E = energy.values_eV
    above = np.flatnonzero(E >= p.pre_edge_eV[1])  # the reference is zero below the pre-edge's end
    lo_b, hi_b = energy.boundary_eV(above), energy.boundary_eV(above + 1)

    def minus_power_law(mean: np.ndarray) -> np.ndarray:
        f = fit_power_law(mean, energy, p.pre_edge_eV, p.method)
        return mean[above] - power_law_integral(f.A, f.r, lo_b, hi_b)

    m_el, m_par = np.nanmean(spec[elec], axis=0), np.nanmean(spec[parent], axis=0)
    ref = np.zeros(energy.size)
    ref[above] = minus_power_law(m_el) - minus_power_law(m_par)  # Li-K of (c_el - c0): non-Li features cancel
    gamma = _reference_share(energy, m_par, ref, float(np.nanmean(var[parent])), int(parent.sum()), p)
    if gamma is None:
        return None
    par = np.zeros(energy.size)
    par[above] = minus_power_law(m_par)
    return LiReference(level=gamma * excess, ref=ref, parent_minus_pl=par, excess=excess)


@dataclass(frozen=True)
class PtUnmix:
    """Per-row two-reference fit: Li-K share `alpha` (of the electrode-minus-parent reference), Pt
    share `beta` (of the Pt-minus-parent reference) and the 1-sigma of alpha from counting noise."""

    alpha: np.ndarray
    beta: np.ndarray
    alpha_sigma: np.ndarray

    def li_concentration(self, excess: float, level: float, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relative Li concentration c/c0 per row and its 1-sigma, from the Li-K share of the
        reference's `excess` over the parent's edge `level`. The counts alone understate the
        scatter (channel correlations, power-law extrapolation): sigma is scaled up to the
        `parent` rows' measured scatter."""
        c = 1.0 + self.alpha * excess / level
        cs = self.alpha_sigma * excess / level
        scatter = float(np.nanstd(c[parent], ddof=1) / np.sqrt(np.nanmean(cs[parent] ** 2)))
        return c, cs * max(1.0, scatter)


def pt_unmix(
    spec: np.ndarray, energy: EnergyAxis, d: np.ndarray, ref: LiReference, p: LiParams, var: np.ndarray
) -> PtUnmix | None:
    """Split each row's power-law-subtracted SSD minus the parent's into Li-K and Pt parts (module
    docstring), or None when there are too few rows inside Pt for the Pt reference.

    spec: SSD per zero-loss count (rows, channels); var: per row, variance of spec per unit of spec."""
    pt = (d >= p.pt_reference_m[0]) & (d <= p.pt_reference_m[1])
    if pt.sum() < 3:
        return None
    win = energy.window(*p.pt_fit_eV, min_channels=16)
    lo_b = energy.boundary_eV(np.arange(win.start, win.stop))
    hi_b = energy.boundary_eV(np.arange(win.start + 1, win.stop + 1))
    f = fit_power_law(spec, energy, p.pre_edge_eV, p.method)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        bg = power_law_integral(f.A[:, None], f.r[:, None], lo_b[None, :], hi_b[None, :])
        resid = spec[:, win] - bg - ref.parent_minus_pl[None, win]  # (rows, channels)
    pt_ref = np.nanmean(resid[pt], axis=0)
    G = np.stack([ref.ref[win], pt_ref], axis=1)  # (channels, 2)
    w = 1.0 / np.maximum(np.nanmean(spec[:, win], axis=0), 1e-300)  # Poisson weights of an average row
    M = np.linalg.solve(G.T @ (w[:, None] * G), (G * w[:, None]).T)  # (2, channels): coefficients = M @ resid
    coef = resid @ M.T
    a_var = var * (np.maximum(spec[:, win], 0.0) @ (M[0] ** 2))
    return PtUnmix(alpha=coef[:, 0], beta=coef[:, 1], alpha_sigma=np.sqrt(a_var))


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


@dataclass(frozen=True)
class LiKPerZeroLoss:
    """Li-K of spectra recorded without their zero-loss peak (`li_k_per_zero_loss`), per spectrum."""

    per_zero_loss: np.ndarray  # background-subtracted SSD counts over the signal window / zero-loss counts
    sigma: np.ndarray  # counting noise of per_zero_loss
    zero_loss_counts: np.ndarray  # I0 used, in the spectrum's counts
    t_over_lambda: np.ndarray  # ln(I0 + recorded counts) - ln I0: a lower bound (the window ends at its top)


def zero_loss_ratio(spectra: np.ndarray, energy: EnergyAxis, zero_loss_below_eV: float = 2.0,
                    counts_eV: tuple[float, float] = (10.0, 97.0)) -> np.ndarray:
    """Zero-loss counts per inelastic count over `counts_eV`, per spectrum of a window that holds the zero-loss
    peak: the number that scales a window without it (same loss range counted) to its own I0. The
    counted range starts at 10 eV because the zero-loss peak's detector tail lifts 2-10 eV (on the
    simulated GIF by ~4 % of the 10-97 eV counts); the zero-loss part is everything below
    `zero_loss_below_eV` (the tail beyond it, ~2 % of I0 there, is lost: I0 reads that much low)."""
    s = np.atleast_2d(np.asarray(spectra, float))
    E = energy.values_eV
    zl = s[:, E < zero_loss_below_eV].sum(axis=1)
    inel = s[:, (E >= counts_eV[0]) & (E <= counts_eV[1])].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return zl / inel


def li_k_per_zero_loss(
    spectra: np.ndarray, energy: EnergyAxis, zero_loss_per_count: np.ndarray | float, *,
    counts_eV: tuple[float, float] = (10.0, 97.0), pre_edge_eV: tuple[float, float] = (44.0, 51.5),
    signal_eV: tuple[float, float] = (56.0, 70.0), resolution_fwhm_eV: float = 1.0, var_per_count: float = 1.0,
) -> LiKPerZeroLoss:
    """Li-K per zero-loss count of spectra whose window starts above the zero-loss peak.

    At t/lambda ~ 0.5 the double plasmon sits under the Li-K pre-edge, and a power law fitted to the
    recorded spectrum there extrapolates above the edge (the LFP rows of the lamella read negative
    Li-K that way). Fourier-log needs the zero-loss intensity I0, which such a window lacks; a short
    exposure of a window that holds it gives the ratio of zero-loss to inelastic counts over
    `counts_eV` (`zero_loss_ratio`), so I0 = ratio x the spectrum's own counts there. A Gaussian
    zero-loss peak of that area and `resolution_fwhm_eV` is put at 0 eV below the spectrum (nothing
    in between: the band gap), the whole is deconvolved (`analysis.deconvolution.fourier_log`,
    Egerton [S:EG11] §4.2), and the SSD's Li-K is the power-law-subtracted count over `signal_eV`
    with the power law fitted in `pre_edge_eV` (the SSD's Drude tail), divided by I0: the
    single-scattering probability, proportional to the Li areal density (physics.md §1.8). Shallow
    edges under the signal window that do not scale with Li (Fe M2,3 at 52.7 eV in LiFePO4/FePO4)
    stay in it as a constant share.

    spectra: (n, channels) or (channels,), counts; zero_loss_per_count: per spectrum or one number."""
    s = np.atleast_2d(np.asarray(spectra, float))
    check_image(s, energy)
    d = energy.scale_eV
    E = energy.values_eV
    if E[0] <= 1.5 * resolution_fwhm_eV:
        raise ValueError("li_k_per_zero_loss: the spectrum starts inside the zero-loss peak; use fourier_log directly")
    ratio = np.broadcast_to(np.asarray(zero_loss_per_count, float), (s.shape[0],))
    i0 = ratio * s[:, (E >= counts_eV[0]) & (E <= counts_eV[1])].sum(axis=1)
    # channels from ~-5 eV up to the spectrum's first, on its grid
    n_pre = int(np.ceil((E[0] + 5.0) / d))
    E_pre = E[0] - d * np.arange(n_pre, 0, -1)
    sig = resolution_fwhm_eV / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    g = np.exp(-0.5 * (E_pre / sig) ** 2)
    g /= g.sum()
    full = np.concatenate([i0[:, None] * g[None, :], s], axis=1)
    axis = EnergyAxis(offset_eV=float(E_pre[0]), scale_eV=d, size=full.shape[1])
    ssd = fourier_log(full, axis, DeconvolutionParams(resolution_fwhm_eV=resolution_fwhm_eV))
    edge = edge_intensity(ssd.ssd, ssd.energy, pre_edge_eV, signal_eV, var_per_count=var_per_count)
    with np.errstate(divide="ignore", invalid="ignore"):
        return LiKPerZeroLoss(per_zero_loss=np.asarray(edge.intensity) / i0, sigma=np.asarray(edge.sigma) / i0,
                              zero_loss_counts=i0, t_over_lambda=np.asarray(ssd.t_over_lambda))
