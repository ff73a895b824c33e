"""Ti-L2,3: per-row chemical shift, L2/L3 white-line ratio, Ti3+/Ti4+ classification, boundary.

[Y14] (physics.md §0, §1.8): Ti3+ shows the L2,3 white lines ~1.7 eV below Ti4+ with the crystal-field
shoulders lost, and an integrated L2/L3 ratio of 1.25 against 1.30 for Ti4+; Ti3+ appears where
the Li concentration exceeds ~6 c0, and the Ti4+/Ti3+ boundary lies ~160 nm from Pt.

Per row, after the power-law background (pre-edge 400-450 eV, §1.6):

* shift: cross-correlation of the row's smoothed derivative with that of the Ti4+ reference
  (mean of the reference rows, default the parent electrolyte far from Pt) over the L2,3 window,
  or the shift of the L3 centroid. Note that a valence change is a change of shape, not only a
  translation: the number a method reports for pure Ti3+ depends on the method (the L3
  centroid moves less than the eg peak), so the classification threshold is a parameter.
* L2/L3: the continuum is removed as two arctan steps with heights 2:1 at the L3 and L2 onsets
  (width 1 eV, §1.8 [est]; moved by the row's measured shift), scaled to the post-edge counts; the
  white lines are integrated on either side of a split energy, the minimum of the smoothed valley
  between L3 and L2 inside 459.0-462.5 eV (Ti4+ valley between 459.0 and 463.0 eV, Ti3+ between
  457.3 and 463.3 eV, §1.8), sub-channel by parabola vertex. Simplification: a flat continuum after
  the steps (the hydrogenic L continuum rises slowly over 30-40 eV; its slope inside the 20 eV
  white-line window is neglected).
* classification: Ti3+ where shift <= `classify_fraction` x `ti3_shift_eV` (default 0.5 x -1.7 eV),
  or, with classify_by="ratio", where L2/L3 <= the mean of 1.30 and 1.25.
* boundary: distance from Pt where the contiguous Ti3+ region next to Pt ends (interpolated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scipy.ndimage import gaussian_filter1d

from insitem.analysis.alignment import _parabolic_vertex, xcorr_shift
from insitem.analysis.axes import AnalysisError, EnergyAxis, PositionAxis, check_image
from insitem.analysis.background import Method, PowerLawFit, fit_power_law
from insitem.analysis.profiles import SlitGeometry, crossing_from_pt, parent_mask


class TiParams(BaseModel):
    """Windows, reference region and classification thresholds of the Ti-L2,3 analysis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_edge_eV: tuple[float, float] = Field(
        default=(425.0, 450.0),
        description="power-law window: §1.6 suggests 400-450 eV; the core window of §6.1 starts at 420 eV",
    )
    method: Method = "two_area"
    edge_eV: tuple[float, float] = Field(default=(452.0, 471.0), description="L2,3 white lines (shift, intensity, ratio)")
    post_edge_eV: tuple[float, float] = Field(default=(472.0, 478.0), description="continuum level after the white lines")
    split_search_eV: tuple[float, float] = Field(
        default=(459.0, 462.5),
        description="L3/L2 split: the valley minimum inside this window (Ti4+ 459.0/463.0 eV, Ti3+ 457.3/463.3 eV, §1.8)",
    )
    step_L3_eV: float = Field(default=457.0, description="L3 continuum step (Ti4+; §1.8 [est])")
    step_L2_eV: float = Field(default=463.0, description="L2 continuum step (Ti4+; §1.8 [est])")
    step_width_eV: float = Field(default=1.0, gt=0, description="arctan step width, §1.8 [est]")
    shift_method: Literal["xcorr", "l3_centroid"] = "xcorr"
    smooth_eV: float = Field(default=0.3, gt=0, description="smoothing of the derivative for cross-correlation")
    reference_distance_m: tuple[float, float] | None = Field(
        default=None, description="Ti4+ reference rows by distance from Pt (m); None = parent region (farthest quarter)"
    )
    ti3_shift_eV: float = Field(
        default=-1.7,
        description="shift of pure Ti3+ against Ti4+ as the chosen method measures it: -1.7 eV [Y14] for xcorr "
        "(it reproduces -1.7 on the §1.8 shapes); ~-0.85 eV for l3_centroid on the same shapes",
    )
    ratio_ti4: float = Field(default=1.30, description="L2/L3 of Ti4+ [Y14]")
    ratio_ti3: float = Field(default=1.25, description="L2/L3 of Ti3+ [Y14]")
    classify_by: Literal["shift", "ratio"] = "shift"
    classify_fraction: float = Field(default=0.5, gt=0, lt=1, description="Ti3+ when shift <= fraction x ti3_shift_eV")
    min_signal_fraction: float = Field(
        default=0.2, gt=0, description="rows whose L2,3 counts are below this fraction of the reference are not analysed (Pt)"
    )


@dataclass(frozen=True)
class TiResult:
    """Ti-L2,3 per row (NaN where there is no Ti signal, e.g. inside Pt) and the Ti3+ boundary."""

    distance_m: np.ndarray
    intensity: np.ndarray  # background-subtracted L2,3 counts in edge_eV
    shift_eV: np.ndarray  # against the Ti4+ reference
    l2_l3_ratio: np.ndarray
    f3_from_shift: np.ndarray  # shift / ti3_shift_eV, clipped to [0, 1] (linear-combination estimate)
    f3_from_ratio: np.ndarray  # (ratio_ti4 - ratio) / (ratio_ti4 - ratio_ti3), clipped to [0, 1]
    is_ti3: np.ndarray  # bool per row
    reference_rows: np.ndarray  # bool mask
    boundary_m: float  # distance from Pt where the Ti3+ region ends (0.0: no Ti3+ next to Pt)
    fit: PowerLawFit


def _steps(E: np.ndarray, shift: np.ndarray, p: TiParams) -> np.ndarray:
    """Continuum steps (2:1 at L3, L2; each rising 0 -> 1 x its height), per row shift, shape (rows, n)."""
    s = shift[..., None]
    a3 = 0.5 + np.arctan((E - p.step_L3_eV - s) / p.step_width_eV) / np.pi
    a2 = 0.5 + np.arctan((E - p.step_L2_eV - s) / p.step_width_eV) / np.pi
    return (2.0 * a3 + a2) / 3.0


def ti_analysis(
    image: np.ndarray,
    energy: EnergyAxis,
    position: PositionAxis,
    geometry: SlitGeometry,
    params: TiParams | None = None,
) -> TiResult:
    """Ti-L2,3 analysis of a core-window spectrum image (position, energy)."""
    p = params or TiParams()
    img = check_image(image, energy)
    if img.ndim != 2:
        raise AnalysisError(f"ti_analysis needs a (position, energy) image, got shape {img.shape}")
    fit = fit_power_law(img, energy, p.pre_edge_eV, p.method)
    sl = energy.window(p.edge_eV[0], p.post_edge_eV[1])
    sub_axis = energy.sub(sl)
    sig = img[:, sl] - fit.channel_counts(energy, sl)
    E = sub_axis.values_eV
    d = geometry.distance_from_pt_m(position)
    ref_rows = parent_mask(d, p.reference_distance_m)
    edge = sub_axis.window(*p.edge_eV)
    intensity = sig[:, edge].sum(axis=1)
    ref_level = float(np.mean(intensity[ref_rows]))
    valid = (d >= 0) & (intensity >= p.min_signal_fraction * ref_level)
    ref_spec = sig[ref_rows].mean(axis=0)

    if p.shift_method == "xcorr":
        # the reference spectrum is broadcast against every row: one FFT for the whole image
        shift = xcorr_shift(sig, np.broadcast_to(ref_spec, sig.shape), sub_axis, p.edge_eV, p.smooth_eV, True, 4.0)
    else:
        # L3 window moved with the row (two passes), so a shifted L3 stays whole and L2 stays out
        lo, hi = p.edge_eV[0], 0.5 * sum(p.split_search_eV)
        shift = np.zeros(sig.shape[0])
        # signed weights: clipping noisy counts at zero would bias the centroid towards the window centre
        ref_w = ref_spec * ((E >= lo) & (E < hi))
        ref_c = (ref_w * E).sum() / ref_w.sum()
        for _ in range(3):
            s = np.nan_to_num(shift)[:, None]
            w = sig * ((E >= lo + s) & (E < hi + s))
            with np.errstate(divide="ignore", invalid="ignore"):
                shift = (w * E).sum(1) / w.sum(1) - ref_c  # rows without Ti (Pt) become NaN/inf, masked below
    post = sub_axis.window(*p.post_edge_eV)
    steps = _steps(E, shift, p)
    h = sig[:, post].mean(axis=1) / steps[:, post].mean(axis=1)
    white = sig - h[:, None] * steps
    # split moved by each row's shift: fractional-channel boundary handled by cumulative sums
    cum = np.concatenate([np.zeros((white.shape[0], 1)), np.cumsum(white[:, edge], axis=1)], axis=1)
    b_lo = edge.start
    ss = sub_axis.window(*p.split_search_eV, min_channels=3)
    valley = -gaussian_filter1d(white, p.smooth_eV / sub_axis.scale_eV, axis=1, mode="nearest")[:, ss]
    split_pos = ss.start - b_lo + _parabolic_vertex(valley, np.argmax(valley, axis=1)) + 0.5
    split_pos = np.clip(split_pos, 1, edge.stop - b_lo - 1)
    j = np.floor(split_pos).astype(int)
    frac = split_pos - j
    rows = np.arange(white.shape[0])
    l3_counts = cum[rows, j] + frac * white[rows, b_lo + j]
    l2_counts = cum[:, -1] - l3_counts
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = l2_counts / l3_counts
    nan = np.full_like(shift, np.nan)
    valid &= np.isfinite(shift)
    shift = np.where(valid, shift, nan)
    ratio = np.where(valid, ratio, nan)
    f3s = np.clip(shift / p.ti3_shift_eV, 0, 1)
    f3r = np.clip((p.ratio_ti4 - ratio) / (p.ratio_ti4 - p.ratio_ti3), 0, 1)
    if p.classify_by == "shift":
        score, level = shift / p.ti3_shift_eV, p.classify_fraction
    else:
        score, level = (p.ratio_ti4 - ratio) / (p.ratio_ti4 - p.ratio_ti3), 0.5
    is_ti3 = valid & (score >= level)
    boundary = crossing_from_pt(d, np.where(valid, score, np.nan), level)
    return TiResult(
        distance_m=d,
        intensity=intensity,
        shift_eV=shift,
        l2_l3_ratio=ratio,
        f3_from_shift=f3s,
        f3_from_ratio=f3r,
        is_ti3=is_ti3,
        reference_rows=ref_rows,
        boundary_m=boundary,
        fit=fit,
    )
