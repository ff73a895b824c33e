"""Li-K: integrated Li intensity along the slit, c/c0 profile, Li maximum and electrode width.

Li areal density in each row is taken proportional to the background-subtracted Li-K counts
(physics.md §1.8: Li-K amplitude proportional to c/c0), and c/c0 is that intensity over its mean
in the parent electrolyte far from Pt ([Y14]: c relative to the parent c0).

Plural scattering: at t/lambda ~ 0.5 the double plasmon (~49 eV in LASGTP) sits in the pre-edge
window and a power law fitted there cannot be extrapolated under Li-K. When a low-loss image (a
window holding the zero-loss peak) is given, the Li-K window is spliced onto it and deconvolved
(Fourier-log, `analysis.deconvolution`) first, and the Li-K intensity of each row is taken per
zero-loss count (single scattering per incident electron, proportional to the Li areal density).
Without a low-loss image the recorded spectrum is used as it is (valid only for thin regions).

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
    deconvolution: DeconvolutionParams = Field(default_factory=DeconvolutionParams)


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
    if lowloss is None:
        edge = edge_intensity(image, energy, p.pre_edge_eV, p.signal_eV, p.method, p.var_per_count)
    else:
        ss = single_scattering(lowloss[0], lowloss[1], image, energy, p.deconvolution)
        raw = edge_intensity(ss.ssd, ss.energy, p.pre_edge_eV, p.signal_eV, p.method, p.var_per_count * ss.scale)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_i0 = 1.0 / ss.i0
        edge = EdgeIntensity(
            intensity=raw.intensity * per_i0,
            sigma=raw.sigma * per_i0,
            background=raw.background * per_i0,
            h_factor=raw.h_factor,
            window_eV=raw.window_eV,
            fit=raw.fit,
        )
    d = geometry.distance_from_pt_m(position)
    parent = parent_mask(d, p.parent_distance_m)
    level = float(np.mean(edge.intensity[parent]))
    c = edge.intensity / level
    cs = edge.sigma / abs(level)
    electrolyte = d >= 0
    smooth = uniform_filter1d(c, p.max_smooth_rows, mode="nearest") if p.max_smooth_rows > 1 else c
    masked = np.where(electrolyte, smooth, -np.inf)
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
