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
* Ti3+ fraction f3 (default classifier): the linear-combination approach of [S:STO07] (§1.8,
  S = (1 - f3) S4 + f3 S3), by linear least squares of each row over the L2,3 window on two
  components, all rows in one solve. Both components are measured end members, as microscopists
  take them: S4 the mean of the Ti4+ reference rows (the parent), S3 the mean of the rows
  `ti3_reference_distance_m` from Pt (the most reduced rows). Nothing of the simulator's line
  tables is used. When S3 does not differ from S4 beyond counting noise (`ti3_min_distinct`), there
  is no Ti3+ in the field and f3 = 0. f3 = a3/(a3 + a4) is the share of the end-member spectrum:
  the Ti3+ fraction if the end-member rows are pure Ti3+ (if they are a mixture, f3 is relative to
  it). Its 1-sigma comes from the least-squares covariance with the row's own residual scatter. A
  running median over `median_rows` rows (default 5) removes single-row outliers before
  classification; the chromatic blur along the slit at 460 eV is a cusp of rms 12 nm (2 rows) with
  tails to the extreme ray at 38 nm (§1.7), so 5 rows (28 nm) cost little resolution.
* classification: Ti3+ where the smoothed f3 >= 0.5 (classify_by="fraction", default); or where
  shift <= `classify_fraction` x `ti3_shift_eV` (classify_by="shift"); or where L2/L3 <= the mean
  of 1.30 and 1.25 (classify_by="ratio"). The per-row xcorr shift is a poor classifier at low
  counts: a Ti3+ L3 (457.3 eV) lines up with the Ti4+ t2g line (457.0 eV) as well as with the
  eg line 1.7 eV above, so single rows read either ~-1.7 or ~-0.2 eV.
* Ti3+ shift (`ti3_shift_eV`): the Ti3+ part of the Ti3+ rows (each row minus its fitted Ti4+
  share, summed) against S4: the L3 and L2 maxima of the Ti3+ spectrum minus the highest-energy L3
  and L2 maxima of S4 (its eg lines; §1.8: Ti3+ centres = Ti4+ eg minus 1.7 eV [Y14]), each
  maximum by a parabola on the smoothed spectrum; the mean of L3 and L2.
* boundary: distance from Pt where the contiguous Ti3+ region next to Pt ends (interpolated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scipy.ndimage import gaussian_filter1d, median_filter

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
    post_edge_eV: tuple[float, float] = Field(
        default=(468.0, 471.0),
        description="continuum level right after the white lines (L2 eg ~464.4 eV + 3.6 eV); further out, the "
        "plasmon replica of the white lines (plural scattering, one plasmon above each line) lifts the level "
        "and reads L2/L3 low (docs/ex-situ-comparison.md)",
    )
    split_search_eV: tuple[float, float] = Field(
        default=(459.0, 462.4),
        description="L3/L2 split: the valley minimum inside this window (between the Ti4+ L3 eg line, 459.0 eV, "
        "and L2 t2g, 5.4 eV above L3 t2g, §1.8)",
    )
    step_L3_eV: float = Field(default=457.0, description="L3 continuum step (Ti4+; §1.8 [est])")
    step_L2_eV: float = Field(default=462.4, description="L2 continuum step: L3 + 5.4 eV spin-orbit of Ti oxides (§1.8)")
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
    classify_by: Literal["fraction", "shift", "ratio"] = "fraction"
    ti3_reference_distance_m: tuple[float, float] = Field(
        default=(30e-9, 90e-9),
        description="Ti3+ end-member rows by distance from Pt (m): the most reduced rows next to Pt, clear of the "
        "~40 nm chromatic blur of Pt into them (physics.md §1.7)",
    )
    ti3_min_distinct: float = Field(
        default=4.0, gt=0,
        description="the end-member rows count as Ti3+ only when their normalised spectrum differs from the Ti4+ "
        "reference by more than this chi^2 per channel (counting noise); otherwise there is no Ti3+ and f3 = 0",
    )
    median_rows: int = Field(default=5, ge=1, description="running median of f3 over this many rows (odd)")
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
    f3: np.ndarray  # Ti3+ fraction per row, two-component least squares (not clipped)
    f3_sigma: np.ndarray  # 1-sigma of f3 from the fit residuals
    f3_smoothed: np.ndarray  # running median of f3 over median_rows rows
    ti3_shift_eV: float  # xcorr shift of the summed Ti3+ rows against the Ti4+ reference (NaN: no Ti3+)
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


def _ti3_fraction(
    sig: np.ndarray, raw: np.ndarray, axis: EnergyAxis, edge: slice, s4_full: np.ndarray, d: np.ndarray,
    ref_rows: np.ndarray, p: TiParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(f3, its 1-sigma, a4, S3) per row from rows ~ a4 S4 + a3 S3 over `edge`, f3 = a3/(a3 + a4).

    Both references are measured (microscopists' end members): S4 the mean of the Ti4+ reference
    rows, S3 the mean of the `ti3_reference_distance_m` rows. When S3, scaled to S4's area, is
    within `ti3_min_distinct` chi^2 per channel of S4 (counting noise from the raw counts), the
    end-member rows hold no distinct Ti3+: f3 = 0 and S3 is None. f3 is the share of the
    end-member spectrum, i.e. the Ti3+ fraction if the end-member rows are pure Ti3+."""
    s4 = s4_full[edge]
    rows3 = parent_mask(d, p.ti3_reference_distance_m) & ~ref_rows
    zeros = np.zeros(sig.shape[0])
    if rows3.sum() < 2:
        return zeros, zeros, np.ones(sig.shape[0]), None
    s3 = sig[rows3].mean(axis=0)[edge]
    var3 = np.maximum(raw[rows3].mean(axis=0)[edge], 1.0) / rows3.sum()
    var4 = np.maximum(raw[ref_rows].mean(axis=0)[edge], 1.0) / max(ref_rows.sum(), 1)
    k = s3.sum() / s4.sum()
    chi2 = float(np.mean((s3 - k * s4) ** 2 / (var3 + k * k * var4)))
    if not chi2 > p.ti3_min_distinct:
        return zeros, zeros, np.ones(sig.shape[0]), None
    f3, sd, a4 = _fit_fraction(sig[:, edge], s4, s3)
    return f3, sd, a4, sig[rows3].mean(axis=0)


def _l3_l2_maxima(spec: np.ndarray, axis: EnergyAxis, p: TiParams, last: bool) -> tuple[float, float]:
    """Energies (eV) of the L3 and L2 white-line maxima of a background-subtracted spectrum: the
    local maxima of the smoothed spectrum below and above the L3/L2 valley, each refined by a
    parabola; `last`: take the highest-energy local maximum of each (the eg line of Ti4+), else
    the largest (the single merged line of Ti3+)."""
    E = axis.values_eV
    sm = gaussian_filter1d(spec, p.smooth_eV / axis.scale_eV, mode="nearest")
    ss = axis.window(*p.split_search_eV, min_channels=3)
    split = ss.start + int(np.argmin(sm[ss]))
    edge = axis.window(*p.edge_eV)
    out = []
    for lo, hi in ((edge.start, split), (split, edge.stop)):
        seg = sm[lo:hi]
        k = np.nonzero((seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:]) & (seg[1:-1] > 0.3 * seg.max()))[0] + 1
        if k.size == 0:
            return float("nan"), float("nan")
        j = int(k[-1]) if last else int(k[np.argmax(seg[k])])
        a, b, c = seg[j - 1], seg[j], seg[j + 1]
        den = a - 2 * b + c
        out.append(float(E[lo + j] + (0.5 * (a - c) / den if den != 0 else 0.0) * axis.scale_eV))
    return out[0], out[1]


def _ti3_line_shift(s3: np.ndarray, s4: np.ndarray, axis: EnergyAxis, p: TiParams) -> float:
    """Ti3+ white lines against the Ti4+ eg lines (eV) ([Y14]: ~-1.7 eV), from the data alone: the
    mean over L3 and L2 of (Ti3+ maximum - Ti4+ highest-energy maximum)."""
    l3_3, l2_3 = _l3_l2_maxima(s3, axis, p, last=False)
    l3_4, l2_4 = _l3_l2_maxima(s4, axis, p, last=True)
    return 0.5 * ((l3_3 - l3_4) + (l2_3 - l2_4))


def _fit_fraction(rows: np.ndarray, s4: np.ndarray, s3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares rows ~ a4 s4 + a3 s3 (all rows in one solve): f3 = a3/(a3 + a4), its 1-sigma, a4."""
    X = np.stack([s4, s3], 1)  # (n, 2)
    coef, *_ = np.linalg.lstsq(X, rows.T, rcond=None)  # (2, rows)
    a4, a3 = coef
    res = rows - (X @ coef).T
    s2 = (res * res).sum(axis=1) / max(rows.shape[1] - 2, 1)
    cov = np.linalg.inv(X.T @ X)  # times s2 per row
    tot = a3 + a4
    with np.errstate(divide="ignore", invalid="ignore"):
        f3 = a3 / tot
        # gradient of a3/(a3 + a4): (-a3, a4)/tot^2 for (a4, a3)
        g4, g3 = -a3 / tot**2, a4 / tot**2
        var = s2 * (g4 * g4 * cov[0, 0] + 2 * g4 * g3 * cov[0, 1] + g3 * g3 * cov[1, 1])
    return f3, np.sqrt(var), a4


def _running_median(v: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Running median over `size` rows of the valid entries (invalid rows stay NaN)."""
    if size <= 1:
        return np.where(valid, v, np.nan)
    idx = np.flatnonzero(valid)
    out = np.full(v.shape, np.nan)
    if idx.size:
        out[idx] = median_filter(v[idx], size=size, mode="nearest")
    return out


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
        for _ in range(8):
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
    f3, f3_sigma, a4, s3_ref = _ti3_fraction(sig, img[:, sl], sub_axis, edge, ref_spec, d, ref_rows, p)
    f3 = np.where(valid, f3, nan)
    f3_sigma = np.where(valid, f3_sigma, nan)
    f3_smooth = _running_median(f3, valid, p.median_rows)
    if p.classify_by == "fraction":
        score, level = f3_smooth, 0.5
    elif p.classify_by == "shift":
        score, level = shift / p.ti3_shift_eV, p.classify_fraction
    else:
        score, level = (p.ratio_ti4 - ratio) / (p.ratio_ti4 - p.ratio_ti3), 0.5
    is_ti3 = valid & (score >= level)
    boundary = crossing_from_pt(d, np.where(valid, score, np.nan), level)
    if is_ti3.any() and s3_ref is not None:
        # the Ti3+ part of the Ti3+ rows: each row minus its fitted Ti4+ share
        s3 = (sig[is_ti3] - a4[is_ti3, None] * ref_spec[None, :]).mean(axis=0)
        ti3_shift = _ti3_line_shift(s3, ref_spec, sub_axis, p)
    else:
        ti3_shift = float("nan")
    return TiResult(
        distance_m=d,
        intensity=intensity,
        shift_eV=shift,
        l2_l3_ratio=ratio,
        f3_from_shift=f3s,
        f3_from_ratio=f3r,
        f3=f3,
        f3_sigma=f3_sigma,
        f3_smoothed=f3_smooth,
        ti3_shift_eV=ti3_shift,
        is_ti3=is_ti3,
        reference_rows=ref_rows,
        boundary_m=boundary,
        fit=fit,
    )
