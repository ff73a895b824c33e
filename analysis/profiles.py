"""Geometry along the slit: distance from the Pt electrode, parent region, threshold crossings.

The position axis runs along the slit across the battery layers; the Pt current collector sits at
one end of the field (physics.md §3.5: x = 0 at the Pt/electrode interface). Distances here are
measured from that interface into the electrolyte (m); rows with negative distance lie in Pt.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.analysis.axes import AnalysisError, PositionAxis


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
    intensity: np.ndarray, position: PositionAxis, pt_side: Literal["low", "high"] = "low", fraction: float = 0.5
) -> SlitGeometry:
    """Find the Pt/electrolyte interface from an electrolyte-only signal (e.g. the Ti-L2,3 edge counts).

    The signal is ~0 in Pt and flat in the electrolyte; the interface is where it first rises
    through `fraction` of its level in the far quarter of the field (median), walking from the Pt
    side, interpolated between rows. A simplification: assumes uniform thickness, so the signal
    level is the same everywhere in the electrolyte.
    """
    v = np.asarray(intensity, float)
    x = position.values_m
    if pt_side == "high":
        v, x = v[::-1], x[::-1]
    n = v.size
    far = np.median(v[int(0.75 * n) :])
    level = fraction * far
    above = v >= level
    if not above.any():
        raise AnalysisError("locate_interface: the signal never reaches the electrolyte level")
    i = int(np.argmax(above))
    if i == 0:
        xi = float(x[0])
    else:
        f = (level - v[i - 1]) / (v[i] - v[i - 1])
        xi = float(x[i - 1] + f * (x[i] - x[i - 1]))
    return SlitGeometry(interface_m=xi, pt_side=pt_side)
