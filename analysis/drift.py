"""Specimen position along the slit, measured from each spectrum image.

Every image of the layered cell shows the Pt/electrolyte interface as a step in the counts per
row: Pt and the electrolyte scatter differently into any energy window (thickness, density and
edges differ), whatever the Li does. The step's position in each image, against the first image,
is the specimen's drift along the slit.

Per image: the counts of every row summed over a band of energy channels give a profile; a
blurred step ``a + b Phi((x - x0)/s)`` (b of either sign) is fitted by least squares around the
steepest part of the (smoothed) profile; x0 is the position. Its 1-sigma uncertainty comes from
the curvature of the residual sum of squares at the minimum, with the noise variance taken from
the residuals (the standard least-squares estimate). Pure: arrays in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from insitem.analysis.axes import AnalysisError
from insitem.analysis.step_fit import fit_step, step_rss


@dataclass(frozen=True)
class StepPosition:
    """Position (m) of the interface step in one image, its 1-sigma uncertainty (m) and width (m)."""

    position_m: float
    sigma_m: float
    width_m: float


def row_profile(image: np.ndarray, channels: slice = slice(None)) -> np.ndarray:
    """Counts per row of a (rows, channels) image over `channels` (NaN-safe sum)."""
    data = np.asarray(image, float)[:, channels]
    return np.nansum(data, axis=1)


def step_position(
    profile: np.ndarray,
    position_m: np.ndarray,
    near_m: float | None = None,
    half_width_m: float = 60e-9,
) -> StepPosition:
    """Locate the strongest step of `profile` (counts per row at `position_m`).

    `near_m`: look for the step within 3 half-widths of this position (the previous image's),
    else at the steepest part of the whole profile.
    """
    v = np.asarray(profile, float)
    x = np.asarray(position_m, float)
    if v.shape != x.shape or v.size < 8:
        raise AnalysisError("step_position: the profile needs at least 8 rows and one position per row")
    row_m = float(abs(x[1] - x[0]))
    grad = np.gradient(uniform_filter1d(np.nan_to_num(v, nan=float(np.nanmedian(v))), size=5, mode="nearest"))
    allowed = np.ones(v.size, bool)
    if near_m is not None:
        allowed = np.abs(x - near_m) <= 3.0 * half_width_m
        if not allowed.any():
            raise AnalysisError("step_position: no rows near the previous position")
    x_start = float(x[np.argmax(np.where(allowed, np.abs(grad), -np.inf))])
    sel = (np.abs(x - x_start) <= half_width_m) & np.isfinite(v)
    if sel.sum() < 8:
        raise AnalysisError("step_position: fewer than 8 rows around the step")
    xs, ys = x[sel], v[sel]
    best = fit_step(xs, ys, x_start, row_m)
    x0, s = best.x0_m, best.width_m
    # refine x0 on a fine grid at the best width, then read the curvature of the RSS there
    fine = x0 + row_m * np.arange(-0.2, 0.2 + 1e-9, 0.01)
    rss_fine = step_rss(xs, ys, fine, s)
    k = int(np.argmin(rss_fine))
    x0, rss_min = float(fine[k]), float(rss_fine[k])
    h = 0.05 * row_m
    around = step_rss(xs, ys, np.array([x0 - h, x0, x0 + h]), s)
    curvature = (around[0] - 2.0 * around[1] + around[2]) / (h * h)
    dof = max(xs.size - 4, 1)
    noise_var = rss_min / dof
    sigma = float(np.sqrt(2.0 * noise_var / curvature)) if curvature > 0 else float("inf")
    return StepPosition(position_m=x0, sigma_m=sigma, width_m=s)


#: a local fit explaining less of the profile's variance than this (R^2) has lost the feature
MIN_LOCAL_R2 = 0.5


def register_shift(profile: np.ndarray, reference: np.ndarray, position_m: np.ndarray, centre_m: float,
                   half_width_m: float = 60e-9, max_shift_rows: float = 4.0, guess_m: float = 0.0,
                   max_search_rows: int = 48) -> StepPosition:
    """Shift (m) that best maps `reference` onto `profile` near `centre_m`: least squares of
    profile(x) = a + b reference(x - shift) over the rows within `half_width_m` of the centre,
    the reference interpolated linearly between rows. No model of the step's shape is assumed,
    so a cusp-shaped or asymmetric blur (the chromatic blur of core-loss windows) biases nothing;
    the shift is searched within `max_shift_rows` of `guess_m`; the uncertainty is read from the curvature of the residual sum of squares, as in
    `step_position`. `width_m` of the result is not estimated (NaN).

    When that local search has lost the feature (best shift at the end of the range, or a fit
    explaining less than `MIN_LOCAL_R2` of the variance: the specimen moved further than the guess
    allowed, as when an image comes late or the specimen jumps), whole-row shifts within
    `max_search_rows` of the guess are tried, each against the rows around the centre moved with it,
    and the local search runs again around the one whose fit explains most of the variance (R^2:
    least squares alone would prefer a featureless stretch, which a flat line fits better than a
    noisy reference)."""
    v = np.asarray(profile, float)
    ref = np.asarray(reference, float)
    x = np.asarray(position_m, float)
    row_m = abs(float(x[1] - x[0]))
    order = np.argsort(x)
    x_sorted, ref_sorted = x[order], ref[order]

    def rows(shift: float) -> tuple[np.ndarray, np.ndarray]:
        """The profile's rows around the centre moved by `shift - guess_m`."""
        sel = (np.abs(x - (centre_m + shift - guess_m)) <= half_width_m) & np.isfinite(v)
        if sel.sum() < 8:
            raise AnalysisError("register_shift: fewer than 8 rows around the feature")
        return x[sel], v[sel]

    def rss(shifts: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        moved = np.stack([np.interp(xs - d, x_sorted, ref_sorted) for d in shifts])
        mm, ym = moved.mean(axis=1), ys.mean()
        dm = moved - mm[:, None]
        b = (dm @ (ys - ym)) / np.maximum((dm * dm).sum(axis=1), 1e-300)
        a = ym - b * mm
        return (((a[:, None] + b[:, None] * moved) - ys[None, :]) ** 2).sum(axis=1)

    def r2(shift: float) -> float:
        xs, ys = rows(shift)
        total = float(((ys - ys.mean()) ** 2).sum())
        return 1.0 - float(rss(np.array([shift]), xs, ys)[0]) / total if total > 0 else 0.0

    def local(around: float) -> tuple[float, int, int, np.ndarray, np.ndarray]:
        xs, ys = rows(around)
        coarse = around + row_m * np.arange(-max_shift_rows, max_shift_rows + 1e-9, 0.05)
        k0 = int(np.argmin(rss(coarse, xs, ys)))
        return float(coarse[k0]), k0, coarse.size, xs, ys

    d0, k0, n0, xs, ys = local(guess_m)
    if not 0 < k0 < n0 - 1 or r2(d0) < MIN_LOCAL_R2:
        candidates = guess_m + row_m * np.arange(-max_search_rows, max_search_rows + 1)
        scores = []
        for g in candidates:
            try:
                scores.append(r2(float(g)))
            except AnalysisError:  # the moved rows run off the image
                scores.append(-np.inf)
        d0, _, _, xs, ys = local(float(candidates[int(np.argmax(scores))]))
    fine = d0 + row_m * np.arange(-0.06, 0.06 + 1e-9, 0.005)
    r = rss(fine, xs, ys)
    k = int(np.argmin(r))
    d, r_min = float(fine[k]), float(r[k])
    h = 0.05 * row_m
    around = rss(np.array([d - h, d, d + h]), xs, ys)
    curvature = (around[0] - 2.0 * around[1] + around[2]) / (h * h)
    noise_var = r_min / max(xs.size - 3, 1)
    sigma = float(np.sqrt(2.0 * noise_var / curvature)) if curvature > 0 else float("inf")
    return StepPosition(position_m=d, sigma_m=sigma, width_m=float("nan"))


@dataclass(frozen=True)
class DriftTrack:
    """Specimen displacement along the slit for a series of images, relative to the first (m)."""

    displacement_m: np.ndarray
    sigma_m: np.ndarray
    step_m: np.ndarray


def track_drift(images: list[np.ndarray] | np.ndarray, position_m: np.ndarray, channels: slice = slice(None),
                half_width_m: float = 60e-9) -> DriftTrack:
    """Displacement of the specimen in each image relative to the first.

    The interface step is located in the first image (`step_position`); every image's profile is
    then registered against the first image's around it (`register_shift`, following the step
    from image to image), so only a translation is assumed, not the step's shape. The
    uncertainty of each displacement is the registration's, which already holds both images'
    noise (the first image is the template)."""
    profiles = [row_profile(image, channels) for image in images]
    first = step_position(profiles[0], position_m, half_width_m=half_width_m)
    disp = [0.0]
    sig = [0.0]
    for p in profiles[1:]:
        r = register_shift(p, profiles[0], position_m, first.position_m + disp[-1], half_width_m=half_width_m,
                           guess_m=disp[-1])
        disp.append(r.position_m)
        sig.append(r.sigma_m)
    d = np.array(disp)
    return DriftTrack(displacement_m=d, sigma_m=np.array(sig), step_m=first.position_m + d)
