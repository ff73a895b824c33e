"""Least-squares fit of a blurred step ``a + b Phi((x - x0)/s)`` to a profile of rows.

For each candidate width s and midpoint x0 on a grid, a and b follow from linear least squares;
the (x0, s) of the smallest residual sum of squares wins. Used to place the Pt/electrolyte
interface (analysis/profiles.py) and to follow it from image to image (analysis/drift.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

#: candidate blur widths, in rows: from a sharp edge to a strongly blurred one
WIDTHS_ROWS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@dataclass(frozen=True)
class StepFit:
    x0_m: float  # midpoint
    width_m: float  # blur (the Gaussian's sigma)
    rss: float  # residual sum of squares (inf: no candidate had a step of the asked sign)


def step_rss(xs: np.ndarray, ys: np.ndarray, x0s: np.ndarray, s: float, rising_only: bool = False) -> np.ndarray:
    """Residual sum of squares of the best a + b Phi((x - x0)/s) for each candidate x0
    (inf where b <= 0 when `rising_only`)."""
    phi = ndtr((xs[None, :] - x0s[:, None]) / s)  # (candidates, rows)
    pm, ym = phi.mean(axis=1), ys.mean()
    dp = phi - pm[:, None]
    b = (dp @ (ys - ym)) / np.maximum((dp * dp).sum(axis=1), 1e-300)
    a = ym - b * pm
    rss = (((a[:, None] + b[:, None] * phi) - ys[None, :]) ** 2).sum(axis=1)
    return np.where(b > 0, rss, np.inf) if rising_only else rss


def fit_step(xs: np.ndarray, ys: np.ndarray, x_start: float, row_m: float, rising_only: bool = False) -> StepFit:
    """The best step on the grid x0 = x_start +- 3 rows (steps of 0.05 row) x `WIDTHS_ROWS`.
    When no candidate fits (only falling steps with `rising_only`), x0 is `x_start` and rss inf."""
    x0s = x_start + row_m * np.arange(-3.0, 3.0 + 1e-9, 0.05)
    best = StepFit(x_start, row_m, np.inf)
    for w in WIDTHS_ROWS:
        s = row_m * w
        rss = step_rss(xs, ys, x0s, s, rising_only)
        k = int(np.argmin(rss))
        if rss[k] < best.rss:
            best = StepFit(float(x0s[k]), float(s), float(rss[k]))
    return best


__all__ = ["StepFit", "WIDTHS_ROWS", "fit_step", "step_rss"]
