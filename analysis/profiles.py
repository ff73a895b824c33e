"""Geometry along the slit: distance from the Pt electrode, parent region, threshold crossings.

The position axis runs along the slit across the battery layers; the Pt current collector sits at
one end of the field (physics.md §3.5: x = 0 at the Pt/electrode interface). Distances here are
measured from that interface into the electrolyte (m); rows with negative distance lie in Pt.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import median_filter

from insitem.analysis.axes import AnalysisError, PositionAxis
from insitem.analysis.step_fit import fit_step


class SlitGeometry(BaseModel):
    """Where the Pt/electrolyte interface lies on the position axis and on which side Pt is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interface_m: float = Field(description="position (same frame as PositionAxis) of the Pt/electrolyte interface (m)")
    pt_side: Literal["low", "high"] = Field(default="low", description="Pt at lower or higher positions than the interface")

    def distance_from_pt_m(self, position: PositionAxis) -> np.ndarray:
        """Distance of each row from the interface into the electrolyte (m); negative inside Pt."""
        d = position.values_m - self.interface_m
        return d if self.pt_side == "low" else -d


def parent_mask(distance_m: np.ndarray, parent_distance_m: tuple[float, float] | None = None) -> np.ndarray:
    """Rows of the parent electrolyte, far from Pt.

    Default (None): the farthest quarter of the electrolyte rows (a stated choice: for the [Y14]
    profile, 2 sqrt(Dt) = 251 nm, the excess is below 1e-5 c0 beyond 850 nm, physics.md §3.5, so
    the far quarter of a 1.88 um field is parent material). Raises AnalysisError if fewer than 3 rows.
    """
    d = np.asarray(distance_m)
    if parent_distance_m is None:
        dmax = d.max()
        mask = d >= 0.75 * dmax
    else:
        lo, hi = parent_distance_m
        mask = (d >= lo) & (d <= hi)
    mask &= d >= 0
    if mask.sum() < 3:
        raise AnalysisError(f"parent region holds {int(mask.sum())} rows; need at least 3 electrolyte rows far from Pt")
    return mask


def crossing_from_pt(distance_m: np.ndarray, values: np.ndarray, level: float) -> float:
    """Distance (m) where `values`, walking away from Pt through the electrolyte, first fall below `level`.

    Linear interpolation between the last row at or above the level and the first row below it.
    Returns 0.0 when the first electrolyte row is already below the level (no such region) and the
    distance of the last row when the values never fall below it (the region leaves the field).
    NaN rows (no signal to judge) are skipped.
    """
    d = np.asarray(distance_m, float)
    v = np.asarray(values, float)
    order = np.argsort(d)
    keep = order[(d[order] >= 0) & np.isfinite(v[order])]
    d, v = d[keep], v[keep]
    if d.size == 0:
        raise AnalysisError("no electrolyte rows (all rows have negative distance from Pt)")
    below = ~(v >= level)
    if below[0]:
        return 0.0
    if not below.any():
        return float(d[-1])
    i = int(np.argmax(below))
    v0, v1 = v[i - 1], v[i]
    f = (v0 - level) / (v0 - v1)
    return float(d[i - 1] + f * (d[i] - d[i - 1]))


def locate_interface(
    intensity: np.ndarray,
    position: PositionAxis,
    pt_side: Literal["low", "high"] = "low",
    fraction: float = 0.5,
    fit_half_width_m: float | None = 60e-9,
) -> SlitGeometry:
    """Find the Pt/electrolyte interface from an electrolyte-only signal (e.g. the Ti-L2,3 edge counts).

    The signal is ~0 in Pt and rises, blurred along the slit (chromatic blur and the spectrometer's
    line spread, physics.md §1.7), to the electrolyte level. First estimate: where a 3-row running
    median first rises through `fraction` of the far quarter's level (median), walking from the Pt
    side. Then, unless `fit_half_width_m` is None, a blurred step a + b Phi((x - x0)/s) is fitted
    by least squares to the rows within that distance of the estimate (x0 on a grid of 1/20 row,
    s from 0.5 to 6 rows, a and b linear), and x0, the step's midpoint between its own local
    levels, is the interface. The fit uses ~20 rows instead of the two next to a crossing, so one
    noisy row moves it little, and its levels are the local ones (the electrode next to Pt reads
    lower Ti-L counts than the far electrolyte). Simplification: a symmetric blur.
    """
    v = np.asarray(intensity, float)
    x = position.values_m
    if pt_side == "high":
        v, x = v[::-1], x[::-1]
    n = v.size
    far = np.nanmedian(v[int(0.75 * n) :])
    level = fraction * far
    vm = median_filter(np.nan_to_num(v, nan=0.0), size=3, mode="nearest")
    above = vm >= level
    if not above.any():
        raise AnalysisError("locate_interface: the signal never reaches the electrolyte level")
    i = int(np.argmax(above))
    if i == 0:
        xi = float(x[0])
    else:
        f = (level - vm[i - 1]) / (vm[i] - vm[i - 1])
        xi = float(x[i - 1] + f * (x[i] - x[i - 1]))
    if fit_half_width_m is not None:
        xi = _fit_step(x, v, xi, fit_half_width_m, position.scale_m)
    return SlitGeometry(interface_m=xi, pt_side=pt_side)


def _fit_step(x: np.ndarray, v: np.ndarray, x_start: float, half_width_m: float, row_m: float) -> float:
    """Midpoint x0 of the least-squares blurred step a + b Phi((x - x0)/s) near x_start (a rising one)."""
    sel = (np.abs(x - x_start) <= half_width_m) & np.isfinite(v)
    if sel.sum() < 6:
        return x_start
    return fit_step(x[sel], v[sel], x_start, row_m, rising_only=True).x0_m
