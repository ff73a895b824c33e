"""Electrochemical record analysis: redox peaks of a cyclic voltammogram and beam-induced current steps.

* ``redox_peaks``: the sweeps of a CV (split at the vertices of the applied potential), each smoothed
  over ``smooth_V``. A redox (Faradaic) peak is a current maximum (anodic on rising sweeps, cathodic on
  falling ones) that

  1. rises above the baseline extrapolated from the current before the wave: the peak current is
     measured from that baseline, not from zero (Bard & Faulkner, *Electrochemical Methods*, 2nd ed.
     2001, ch. 6 [recalled]; Elgrishi et al., J. Chem. Educ. 95 (2018) 197 [recalled]; "the peak
     current is the baseline-corrected current at the maximum of a feature ... the baseline current
     before the wave must be subtracted", sop4cv.com/chapters/PeakCurrent.html [seen]). The baseline
     is a straight line in potential (a resistor's and a constant charging current's shape) fitted to
     the smoothed current between the sweep's start and the maximum, points above it by more than two
     of its noise widths left out in turn (they are the wave), so it follows the current's own trend
     before the wave;
  2. falls again on its far side before the vertex (``find_peaks`` prominence);
  3. does both by more than ``min_prominence_sigma`` noise widths of the smoothed current (from the
     point-to-point scatter) and ``min_prominence_fraction`` of the sweep's current range, more than
     ``vertex_margin_V`` from the vertices.

  A resistor-like CV has none: its current is largest at the vertex (3), or, where a finite electrode
  runs out of charge on an ohmic ramp, the maximum is the end of a straight line the current was
  already following (no excess over the extrapolated baseline, 1). A finite (thin-layer) electrode's
  wave also ends when its charge is exhausted (Bard & Faulkner ch. 11, thin-layer cells [recalled]), so
  the collapse itself does not disqualify a peak: what distinguishes a wave is the current rising above
  the line it followed before (docs/decisions/0029). A CV without such maxima has "no clear redox
  peaks".
* ``beam_steps``: for every exposure, the mean current while the beam was on minus the mean over the
  same time just before it (beam blanked), with the standard error from the scatter of the readings.

Pure: arrays in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks


@dataclass(frozen=True)
class Peak:
    potential_V: float
    current_A: float
    prominence_A: float
    sweep: int
    direction: int  # +1 rising sweep (anodic peak), -1 falling sweep (cathodic peak)
    excess_A: float = 0.0  # above the baseline extrapolated from before the wave (the peak current i_p)


def sweeps(voltage_V: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, direction) of the monotonic runs of a staircase potential."""
    v = np.asarray(voltage_V, float)
    if v.size < 3:
        return []
    d = np.sign(np.diff(v))
    # carry flat stairs with the previous direction
    for k in range(1, d.size):
        if d[k] == 0:
            d[k] = d[k - 1]
    out = []
    start = 0
    for k in range(1, d.size):
        if d[k] != d[k - 1] and d[k] != 0:
            out.append((start, k + 1, int(d[k - 1])))
            start = k
    out.append((start, v.size, int(d[-1]) if d[-1] != 0 else 1))
    return out


def noise_sigma_A(current_A: np.ndarray) -> float:
    """White-noise width from the point-to-point differences (robust: MAD / sqrt 2)."""
    diff = np.diff(np.asarray(current_A, float))
    if diff.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2))


def pre_wave_baseline(v: np.ndarray, i: np.ndarray, min_points: int, min_fraction: float = 0.25) -> tuple[float, float]:
    """The baseline before a wave: (slope, intercept) in potential of the first segment of the
    continuous two-segment line (one hinge) that fits the current from the sweep's start to the
    maximum best in least squares. The hinge is the wave's foot (the intersection-of-tangents onset
    construction); a current that follows one straight line up to the maximum fits with the same slope
    on both sides, so its baseline is that line. The first segment holds at least ``min_fraction`` of
    the readings and ``min_points``, the second ``min_points``."""
    n = v.size
    lo = max(min_points, int(np.ceil(min_fraction * n)))
    hi = n - min_points
    if hi <= lo:
        coef = np.polyfit(v, i, 1)
        return float(coef[0]), float(coef[1])
    best = (np.inf, 0.0, 0.0)
    step = max(1, (hi - lo) // 200)
    for h in range(lo, hi + 1, step):
        basis = np.column_stack([np.ones(n), v, np.maximum((v - v[h]) * np.sign(v[-1] - v[0]), 0.0)])
        coef, *_ = np.linalg.lstsq(basis, i, rcond=None)
        sse = float(np.sum((basis @ coef - i) ** 2))
        if sse < best[0]:
            best = (sse, float(coef[1]), float(coef[0]))
    return best[1], best[2]


@dataclass(frozen=True)
class PeakCandidate:
    """A sweep maximum that passed the prominence and vertex tests, with the baseline it was measured
    from (``baseline_V``, ``baseline_A``: the extrapolated pre-wave line from the sweep's start to the
    maximum, in the sweep's current sign convention undone) and whether it rose above it (``peak``)."""

    peak: Peak
    need_A: float
    baseline_V: tuple[float, float]
    baseline_A: tuple[float, float]

    @property
    def is_wave(self) -> bool:
        return abs(self.peak.excess_A) >= self.need_A


def peak_candidates(voltage_V: np.ndarray, current_A: np.ndarray, *, smooth_V: float = 0.25,
                    min_prominence_sigma: float = 8.0, min_prominence_fraction: float = 0.15,
                    vertex_margin_V: float = 0.3, exclude: np.ndarray | None = None) -> list[PeakCandidate]:
    """Every sweep maximum that passes tests 2 and 3 of the module docstring, with its baseline and
    its excess over it (test 1 decides ``is_wave``). Arguments as ``redox_peaks``."""
    v = np.asarray(voltage_V, float)
    i = np.asarray(current_A, float)
    if exclude is not None and np.any(exclude) and not np.all(exclude):
        keep = ~np.asarray(exclude, bool)
        idx = np.arange(i.size)
        i = np.interp(idx, idx[keep], i[keep])
    sigma = noise_sigma_A(i)
    out: list[PeakCandidate] = []
    for n, (a, b, direction) in enumerate(sweeps(v)):
        vs, js = v[a:b], i[a:b] * direction
        if vs.size < 10:
            continue
        dv = float(np.median(np.abs(np.diff(vs)))) or 1e-3
        w = max(1, int(round(smooth_V / dv)))
        kern = np.ones(w) / w
        if js.size < w + 5:
            continue
        sm = np.convolve(js, kern, mode="valid")  # only windows inside the sweep (no padded ends)
        vm = np.convolve(vs, kern, mode="valid")
        span = float(sm.max() - sm.min())
        sigma_sm = sigma / np.sqrt(w)
        need = max(min_prominence_sigma * sigma_sm, min_prominence_fraction * span)
        idx, props = find_peaks(sm, prominence=need)
        lo, hi = float(vs.min()), float(vs.max())
        for k, prom in zip(idx, props["prominences"]):
            if vm[k] < lo + vertex_margin_V or vm[k] > hi - vertex_margin_V or k < 3:
                continue
            slope, icpt = pre_wave_baseline(vm[: k + 1], sm[: k + 1], w)
            excess = float(sm[k] - (slope * vm[k] + icpt))
            peak = Peak(float(vm[k]), float(sm[k] * direction), float(prom), n, direction, excess * direction)
            out.append(PeakCandidate(peak, float(need), (float(vm[0]), float(vm[k])),
                                     (float((slope * vm[0] + icpt) * direction), float((slope * vm[k] + icpt) * direction))))
    return out


def redox_peaks(voltage_V: np.ndarray, current_A: np.ndarray, *, smooth_V: float = 0.25,
                min_prominence_sigma: float = 8.0, min_prominence_fraction: float = 0.15,
                vertex_margin_V: float = 0.3, exclude: np.ndarray | None = None) -> list[Peak]:
    """Redox peaks of each sweep (see module docstring): the candidates that rose above their baseline.
    ``exclude``: readings to leave out (e.g. while the beam was on, whose induced current is not the
    cell's), bridged by linear interpolation."""
    return [c.peak for c in peak_candidates(voltage_V, current_A, smooth_V=smooth_V, min_prominence_sigma=min_prominence_sigma,
                                            min_prominence_fraction=min_prominence_fraction,
                                            vertex_margin_V=vertex_margin_V, exclude=exclude) if c.is_wave]


@dataclass(frozen=True)
class BeamStep:
    t_start_s: float
    potential_V: float
    step_A: float
    sigma_A: float


def beam_steps(t_s: np.ndarray, current_A: np.ndarray, voltage_V: np.ndarray, exposure_start_s: np.ndarray,
               exposure_s: np.ndarray, settle_s: float = 0.0) -> list[BeamStep]:
    """Current while each exposure's beam was on minus the blanked current interpolated under it.

    The blanked baseline is a straight line through the readings of the same length before and after
    the exposure (a sweeping potential changes the current by itself); exposures whose surroundings
    hold a sweep reversal or another exposure are skipped. ``sigma_A`` is the standard error of the
    step from the scatter about that line (interpolation: s^2 (1/n_on + 1/n_off + (t_on - t_off)^2/Sxx))."""
    t = np.asarray(t_s, float)
    i = np.asarray(current_A, float)
    v = np.asarray(voltage_V, float)
    starts = np.asarray(exposure_start_s, float)
    durs = np.asarray(exposure_s, float)
    out: list[BeamStep] = []
    for k, (t0, dur) in enumerate(zip(starts, durs)):
        on = (t > t0 + settle_s) & (t <= t0 + dur)
        off = ((t > t0 - dur) & (t <= t0)) | ((t > t0 + dur) & (t <= t0 + 2 * dur))
        others = np.delete(np.arange(starts.size), k)
        if np.any((starts[others] < t0 + 2 * dur) & (starts[others] + durs[others] > t0 - dur)):
            continue
        if on.sum() < 2 or off.sum() < 4:
            continue
        around = (t > t0 - dur) & (t <= t0 + 2 * dur)
        dv = np.diff(v[around])
        if np.any(dv > 0) and np.any(dv < 0):
            continue  # a vertex: the blanked current is not a straight line here
        coef = np.polyfit(t[off], i[off], 1)
        step = float(np.mean(i[on] - np.polyval(coef, t[on])))
        res = i[off] - np.polyval(coef, t[off])
        s2 = float(np.sum(res**2) / (off.sum() - 2))
        sxx = float(np.sum((t[off] - t[off].mean()) ** 2))
        var = s2 * (1 / on.sum() + 1 / off.sum() + (t[on].mean() - t[off].mean()) ** 2 / sxx)
        out.append(BeamStep(float(t0), float(np.mean(v[on])), step, float(np.sqrt(var))))
    return out
